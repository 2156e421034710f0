//! `DIR/manifest.json`: what an export directory holds — every file with its row count and seq
//! range, the seq the exports have reached, and the tables' columns.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::table::TABLES;
use crate::error::{Error, Result};

/// Version of the exported tables' layout; bumped when a column changes meaning or type.
pub const SCHEMA_VERSION: u32 = 1;

/// The manifest of an export directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// `parquet`, `ndjson` or `csv`: one directory holds one format.
    pub format: String,
    /// The last seq exported: the next incremental export starts after it.
    pub last_seq: u64,
    /// Each export run, oldest first.
    pub exports: Vec<ExportRecord>,
    /// Every data file, relative to the directory.
    pub files: Vec<FileEntry>,
    pub tables: BTreeMap<String, TableInfo>,
}

/// One `runledger export` that wrote to the directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportRecord {
    pub from_seq: u64,
    pub to_seq: u64,
    /// RFC 3339, server time.
    pub exported_at: String,
    /// The `--since`/`--until` filters on event time, if any.
    pub since: Option<String>,
    pub until: Option<String>,
    pub rows: BTreeMap<String, u64>,
}

/// One data file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub table: String,
    /// Relative path: `<table>/date=YYYY-MM-DD/part-<from>-<to>.<ext>`.
    pub path: String,
    pub date: String,
    pub rows: u64,
    pub bytes: u64,
    /// Smallest and largest seq of the rows (`last_seq` for runs, `seq` otherwise).
    pub min_seq: u64,
    pub max_seq: u64,
    /// The seq range of the export that wrote the file.
    pub export_from_seq: u64,
    pub export_to_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableInfo {
    pub columns: Vec<ColumnInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

impl Manifest {
    pub fn new(format: &str) -> Manifest {
        let tables = TABLES
            .iter()
            .map(|t| {
                let columns = t
                    .columns
                    .iter()
                    .map(|(n, ty)| ColumnInfo {
                        name: (*n).to_owned(),
                        ty: ty.name().to_owned(),
                    })
                    .collect();
                (t.name.to_owned(), TableInfo { columns })
            })
            .collect();
        Manifest {
            schema_version: SCHEMA_VERSION,
            format: format.to_owned(),
            last_seq: 0,
            exports: Vec::new(),
            files: Vec::new(),
            tables,
        }
    }

    /// Reads `dir/manifest.json`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join("manifest.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(super::at(&path)(e)),
        };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!("{} is not an export manifest: {e}", path.display()))
        })?;
        if m.schema_version != SCHEMA_VERSION {
            return Err(Error::Invalid(format!(
                "{} has schema version {}, this build writes {SCHEMA_VERSION}: export to a new directory",
                path.display(),
                m.schema_version
            )));
        }
        Ok(Some(m))
    }

    /// Writes `dir/manifest.json` atomically (a temporary file renamed over it).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(".manifest.json.tmp");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Invalid(format!("manifest: {e}")))?;
        std::fs::write(&tmp, text + "\n").map_err(super::at(&tmp))?;
        let path = dir.join("manifest.json");
        std::fs::rename(&tmp, &path).map_err(super::at(&path))?;
        Ok(())
    }

    /// Adds files, replacing entries with the same path (a range exported again).
    pub fn add_files(&mut self, files: &[FileEntry]) {
        self.files
            .retain(|f| !files.iter().any(|n| n.path == f.path));
        self.files.extend(files.iter().cloned());
    }

    /// Rows per table over all files.
    pub fn rows(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> =
            TABLES.iter().map(|t| (t.name.to_owned(), 0)).collect();
        for f in &self.files {
            *out.entry(f.table.clone()).or_default() += f.rows;
        }
        out
    }
}
