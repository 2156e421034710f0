//! The exported tables: their columns and types, and one row as cells.

/// A column's type, as Parquet, NDJSON and CSV write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// Int64 (seqs are u64 in the ledger but stay far below 2^63; Int64 reads everywhere,
    /// Spark included).
    Int,
    /// Timestamp(ms, UTC) in Parquet; RFC 3339 text in NDJSON and CSV.
    Ts,
    /// UTF-8 text.
    Str,
    /// JSON text (a string column in Parquet and CSV; the value itself in NDJSON).
    Json,
}

impl ColType {
    pub fn name(self) -> &'static str {
        match self {
            ColType::Int => "int64",
            ColType::Ts => "timestamp_ms_utc",
            ColType::Str => "string",
            ColType::Json => "json",
        }
    }
}

/// One exported table.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, ColType)],
}

use ColType::*;

pub const RUNS: Table = Table {
    name: "runs",
    columns: &[
        ("run_id", Str),
        ("operation", Str),
        ("doctype", Str),
        ("template", Str),
        ("root_run_id", Str),
        ("root_template", Str),
        ("status", Str),
        ("parent_run_id", Str),
        ("chain_id", Str),
        ("step_id", Str),
        ("step_index", Int),
        ("owner", Str),
        ("agent", Str),
        ("role", Str),
        ("started_at", Ts),
        ("ended_at", Ts),
        ("duration_ms", Int),
        ("events", Int),
        ("first_seq", Int),
        ("last_seq", Int),
        ("input", Json),
        ("output", Json),
        ("error", Json),
    ],
};

pub const EVENTS: Table = Table {
    name: "events",
    columns: &[
        ("seq", Int),
        ("ts", Ts),
        ("ingested_at", Ts),
        ("type", Str),
        ("run_id", Str),
        ("id", Str),
        ("body", Json),
    ],
};

pub const DOC_CHANGES: Table = Table {
    name: "doc_changes",
    columns: &[
        ("seq", Int),
        ("ts", Ts),
        ("kind", Str),
        ("doctype", Str),
        ("name", Str),
        ("run_id", Str),
        ("root_run_id", Str),
        ("template", Str),
        ("data", Json),
        ("before", Json),
    ],
};

pub const TABLES: [&Table; 3] = [&RUNS, &EVENTS, &DOC_CHANGES];

/// One value of a row; its variant follows the column's [`ColType`] (or is `Null`).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    /// ms since the Unix epoch.
    Ts(i64),
    Str(String),
    /// JSON text.
    Json(String),
}

impl Cell {
    pub fn opt_str(s: Option<&str>) -> Cell {
        s.map_or(Cell::Null, |s| Cell::Str(s.to_owned()))
    }
    pub fn opt_json(s: Option<&str>) -> Cell {
        s.map_or(Cell::Null, |s| Cell::Json(s.to_owned()))
    }
    pub fn opt_int(v: Option<i64>) -> Cell {
        v.map_or(Cell::Null, Cell::Int)
    }
    pub fn opt_ts(v: Option<i64>) -> Cell {
        v.map_or(Cell::Null, Cell::Ts)
    }
}

/// A row: one cell per column of its table.
pub type Row = Vec<Cell>;
