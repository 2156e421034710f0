#!/usr/bin/env python3
"""Reads a `runledger export --format parquet` directory back with DuckDB and checks it against
the manifest and against `runledger stats --json`.

usage: python3 tests/duckdb_check.py EXPORT_DIR STATS_JSON_FILE

Checks:
- every table's row count (over `DIR/<table>/*/*.parquet`, hive partitioning) equals the sum of
  its files' rows in `DIR/manifest.json`, and every file the manifest lists exists;
- the `date` partition column equals the UTC day of the rows' time;
- timestamps are TIMESTAMP WITH TIME ZONE and seqs BIGINT;
- for every group of the stats answer, runs / completed / failed / cancelled and the p50, p95,
  p99 and max durations equal DuckDB's count() and quantile_disc() over the latest row of each
  run (by last_seq).
Exits 0 when everything agrees, 1 (with the differences on stderr) otherwise.
"""

import json
import os
import sys

import duckdb

COLUMN_OF = {
    "operation": "operation",
    "doctype": "doctype",
    "template": "root_template",
    "owner": "owner",
    "agent": "agent",
    "status": "status",
}


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, stats_path = sys.argv[1], sys.argv[2]
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    with open(stats_path) as f:
        stats = json.load(f)
    problems = []
    con = duckdb.connect()

    expected = {}
    for entry in manifest["files"]:
        expected[entry["table"]] = expected.get(entry["table"], 0) + entry["rows"]
        if not os.path.exists(os.path.join(out, entry["path"])):
            problems.append(f"manifest lists {entry['path']}, which is missing")
    for table in ("runs", "events", "doc_changes"):
        want = expected.get(table, 0)
        if want == 0:
            continue
        glob = os.path.join(out, table, "*", "*.parquet")
        con.execute(
            f"create or replace view {table} as "
            f"select * from read_parquet('{glob}', hive_partitioning=true)"
        )
        got = con.execute(f"select count(*) from {table}").fetchone()[0]
        if got != want:
            problems.append(f"{table}: {got} rows in parquet, manifest says {want}")
        else:
            print(f"{table}: {got} rows, as the manifest says")

    types = dict(con.execute("select column_name, column_type from (describe events)").fetchall())
    if types.get("ts") != "TIMESTAMP WITH TIME ZONE":
        problems.append(f"events.ts is {types.get('ts')}, not TIMESTAMP WITH TIME ZONE")
    if types.get("seq") != "BIGINT":
        problems.append(f"events.seq is {types.get('seq')}, not BIGINT")
    bad_days = con.execute(
        "select count(*) from events "
        "where cast(date as varchar) <> strftime(ts at time zone 'UTC', '%Y-%m-%d')"
    ).fetchone()[0]
    if bad_days:
        problems.append(f"{bad_days} events lie in a date partition other than their UTC day")

    # The latest row of each run (an incremental export may have written a run more than once).
    con.execute(
        "create or replace view latest_runs as select * from runs "
        "qualify row_number() over (partition by run_id order by last_seq desc) = 1"
    )
    column = COLUMN_OF[stats.get("by", "operation")]
    rows = con.execute(
        f"""
        select {column} as key, count(*) as runs,
               count(*) filter (where status = 'completed') as completed,
               count(*) filter (where status = 'failed') as failed,
               count(*) filter (where status = 'cancelled') as cancelled,
               quantile_disc(duration_ms, 0.5) as p50_ms,
               quantile_disc(duration_ms, 0.95) as p95_ms,
               quantile_disc(duration_ms, 0.99) as p99_ms,
               max(duration_ms) as max_ms
        from latest_runs group by all
        """
    ).fetchall()
    names = ["key", "runs", "completed", "failed", "cancelled", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
    duck = {r[0]: dict(zip(names, r)) for r in rows}
    checked = 0
    for group in stats["groups"]:
        d = duck.get(group["key"])
        if d is None:
            problems.append(f"group {group['key']!r}: not in the export")
            continue
        for k in names[1:]:
            if d[k] != group[k]:
                problems.append(
                    f"group {group['key']!r}: {k} is {group[k]} in stats, {d[k]} in DuckDB"
                )
        checked += 1
    if len(duck) != len(stats["groups"]):
        problems.append(f"{len(duck)} groups in DuckDB, {len(stats['groups'])} in stats")
    print(f"{checked} groups by {column}: counts and p50/p95/p99/max agree with quantile_disc")

    for p in problems:
        print("MISMATCH:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
