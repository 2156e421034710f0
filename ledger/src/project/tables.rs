//! Table definitions of the projections, in the projections file (`<log>.proj`). All of them
//! can be dropped and rebuilt from the log.
//!
//! | table | key | value | what for |
//! |---|---|---|---|
//! | `proj_meta` | `&str` | `u64` | `applied`: the last seq applied; `version` |
//! | `proj_log` | `&str` | 32 bytes | `applied_hash`: the log's chain hash at `applied` |
//! | `runs` | run id | rkyv [`super::run::RunState`] (with its events' seqs) | `show`, folds, `--at` |
//! | `runs_by_start` | (started ms, run id) | `()` | `runs` listing in time order |
//! | `children` | (parent id, child id) | first seq linking them | trees |
//! | `doc_events` | (doctype, name, seq) | [`DocRecord`] (rkyv) | record histories, read without the log |
//! | `completions` | (ts ms, seq) | run id | `current_run` |
//! | `active` | run id | `()` | active runs now |
//! | `active_at` | seq (multiple of [`CHECKPOINT_EVERY`]) | run ids ([`encode_ids`]) | `state --at` |
//! | `completions_max_at` | seq (multiple of [`CHECKPOINT_EVERY`]) | greatest `completions` key of seq ≤ it | `state --at` |

use redb::{ReadableTable, TableDefinition};

use crate::error::Result;

/// A checkpoint of the active-run set is kept every this many events, so `state --at N` reads
/// at most this many events past the nearest checkpoint.
pub const CHECKPOINT_EVERY: u64 = 65_536;

/// Layout version of the projection tables and of `RunState`; a mismatch on open makes the
/// projections rebuild from the log.
pub const PROJECTION_VERSION: u64 = 5;

pub(crate) const PROJ_META: TableDefinition<&str, u64> = TableDefinition::new("proj_meta");
pub(crate) const PROJ_LOG: TableDefinition<&str, &[u8]> = TableDefinition::new("proj_log");
pub(crate) const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
pub(crate) const RUNS_BY_START: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("runs_by_start");
pub(crate) const CHILDREN: TableDefinition<(&str, &str), u64> = TableDefinition::new("children");
pub(crate) const DOC_EVENTS: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("doc_events");
pub(crate) const COMPLETIONS: TableDefinition<(i64, u64), &str> =
    TableDefinition::new("completions");
pub(crate) const ACTIVE: TableDefinition<&str, ()> = TableDefinition::new("active");
pub(crate) const ACTIVE_AT: TableDefinition<u64, &[u8]> = TableDefinition::new("active_at");
/// `current_run` as of seq N walks `completions` down from the greatest key of a completion
/// with seq ≤ N; without this bound it first skipped every later completion (half the table
/// for a seq halfway through the log: 140 ms at 10 M events).
pub(crate) const COMPLETIONS_MAX_AT: TableDefinition<u64, (i64, u64)> =
    TableDefinition::new("completions_max_at");

/// One change of a record as `doc_events` stores it: all that `trace` shows of it, so a trace
/// reads no log block (a 64 KiB value per change, cold at 10 M events).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct DocRecord {
    pub ts_ms: i64,
    pub change: crate::event::DocChange,
    pub run_id: String,
    pub data: Option<crate::event::JsonText>,
    pub before: Option<crate::event::JsonText>,
}

/// [`DocRecord`], borrowing its strings from the event; archives as [`DocRecord`]'s archive
/// (fields in the same order; a test compares the bytes).
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(as = ArchivedDocRecord)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, <__S as rkyv::rancor::Fallible>::Error: rkyv::rancor::Source))]
pub(crate) struct DocRecordRef<'a> {
    pub ts_ms: i64,
    pub change: crate::event::DocChange,
    #[rkyv(with = rkyv::with::AsOwned, omit_bounds)]
    pub run_id: std::borrow::Cow<'a, str>,
    #[rkyv(with = rkyv::with::Map<rkyv::with::AsOwned>, omit_bounds)]
    pub data: Option<std::borrow::Cow<'a, str>>,
    #[rkyv(with = rkyv::with::Map<rkyv::with::AsOwned>, omit_bounds)]
    pub before: Option<std::borrow::Cow<'a, str>>,
}

/// A list of run ids as `active_at` stores it: each id's length (u32, little-endian), then its
/// bytes. (Separators would not do: an id is any string of 1 to 256 bytes, line breaks too.)
pub(crate) fn encode_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::new();
    for id in ids {
        // Ids come from events and parent links: far below 4 GiB.
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// The ids of [`encode_ids`]; `None` when the bytes are not such a list.
pub(crate) fn decode_ids(mut bytes: &[u8]) -> Option<Vec<&str>> {
    let mut ids = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        let (id, rest) = rest.split_at_checked(len)?;
        ids.push(std::str::from_utf8(id).ok()?);
        bytes = rest;
    }
    Some(ids)
}

/// Whether every table of this layout is there, of this version: [`create_all`] would change
/// nothing.
pub(crate) fn all_present(tx: &redb::ReadTransaction) -> Result<bool> {
    use redb::TableHandle;
    let all = [
        PROJ_META.name(),
        PROJ_LOG.name(),
        RUNS.name(),
        RUNS_BY_START.name(),
        CHILDREN.name(),
        DOC_EVENTS.name(),
        COMPLETIONS.name(),
        ACTIVE.name(),
        ACTIVE_AT.name(),
        COMPLETIONS_MAX_AT.name(),
    ];
    if !crate::log::tables_present(tx, &all)? {
        return Ok(false);
    }
    let version = tx.open_table(PROJ_META)?.get("version")?.map(|v| v.value());
    Ok(version == Some(PROJECTION_VERSION))
}

pub(crate) fn create_all(tx: &redb::WriteTransaction) -> Result<()> {
    // Tables of another layout are dropped before they are opened with this layout's types;
    // the missing version then makes the projections rebuild from the log.
    let version = tx.open_table(PROJ_META)?.get("version")?.map(|v| v.value());
    if version.is_some_and(|v| v != PROJECTION_VERSION) {
        drop_all(tx)?;
    }
    tx.open_table(PROJ_META)?;
    tx.open_table(PROJ_LOG)?;
    tx.open_table(RUNS)?;
    tx.open_table(RUNS_BY_START)?;
    tx.open_table(CHILDREN)?;
    tx.open_table(DOC_EVENTS)?;
    tx.open_table(COMPLETIONS)?;
    tx.open_table(ACTIVE)?;
    tx.open_table(ACTIVE_AT)?;
    tx.open_table(COMPLETIONS_MAX_AT)?;
    Ok(())
}

/// Drops every projection table (then recreates them empty).
pub(crate) fn drop_all(tx: &redb::WriteTransaction) -> Result<()> {
    tx.delete_table(PROJ_META)?;
    tx.delete_table(PROJ_LOG)?;
    tx.delete_table(RUNS)?;
    tx.delete_table(RUNS_BY_START)?;
    tx.delete_table(CHILDREN)?;
    tx.delete_table(DOC_EVENTS)?;
    tx.delete_table(COMPLETIONS)?;
    tx.delete_table(ACTIVE)?;
    tx.delete_table(ACTIVE_AT)?;
    tx.delete_table(COMPLETIONS_MAX_AT)?;
    create_all(tx)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn id_lists_round_trip_whatever_the_ids_hold() {
        let ids = ["a\nb", "c\r", "", "x\u{0}y", "é"];
        let bytes = encode_ids(ids);
        assert_eq!(decode_ids(&bytes), Some(ids.to_vec()));
        assert_eq!(decode_ids(&[]), Some(vec![]));
        assert_eq!(decode_ids(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_ids(&[1, 0, 0, 0, 0xff]), None);
    }

    /// The borrowed twin encodes to the owned record's bytes (strings longer than the 8 bytes
    /// kept inline, so their order shows).
    #[test]
    fn borrowed_doc_record_encodes_as_the_owned_one() {
        let owned = DocRecord {
            ts_ms: 17,
            change: crate::event::DocChange::Updated,
            run_id: "r-0123456789".into(),
            data: Some(r#"{"name":"Task-1","done":true}"#.into()),
            before: Some(r#"{"name":"Task-1","done":false}"#.into()),
        };
        let twin = DocRecordRef {
            ts_ms: owned.ts_ms,
            change: owned.change,
            run_id: Cow::Borrowed(&owned.run_id),
            data: owned.data.as_deref().map(Cow::Borrowed),
            before: owned.before.as_deref().map(Cow::Borrowed),
        };
        let expected = rkyv::to_bytes::<rkyv::rancor::Error>(&owned).unwrap();
        let got =
            rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&twin, Vec::new()).unwrap();
        assert_eq!(got, expected.as_slice());
    }
}
