//! The durable, hash-chained, append-only log in one redb file.
//!
//! Tables (see `docs/design.md` for the byte layout and invariants):
//! - `meta`:   `&str -> &[u8]` — `format` (u32 LE), `head` (seq u64 LE ‖ hash 32 B)
//! - `blocks`: `u64 first seq -> block` (see [`crate::block`])
//! - `ids`:    `u64 run number << 32 | chunk -> sorted (xxh3(id), seq) pairs` (see
//!   [`crate::dedup`])

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::block::{self, Block, Hash};
use crate::dedup::IdIndex;
use crate::error::{Error, Result};
use crate::event::ArchivedStoredEvent;

/// Version of the stored bytes: the rkyv format features and the layouts of `block`/`dedup`.
/// Bump it on any change of them.
pub const FORMAT_VERSION: u32 = 2;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
pub(crate) const IDS: TableDefinition<u64, &[u8]> = TableDefinition::new("ids");

/// redb's page cache of the log file. Small on purpose: redb keeps the pages a commit wrote
/// in its cache, so a large one made bulk ingest fault in fresh memory for every byte it
/// stored (a quarter of the writer thread's time at 256 MiB). Log reads are sequential scans
/// or single blocks, which the kernel's page cache serves as well.
const LOG_CACHE_BYTES: usize = 32 << 20;
/// redb's page cache of the projections file, whose B-trees point queries walk. redb's
/// default (1 GiB) would be the whole memory budget.
pub(crate) const PROJECTIONS_CACHE_BYTES: usize = 256 << 20;
/// redb's page cache while a rebuild writes a new projections file: small, for the log's
/// reason — every page a commit writes stays in the cache, so at 256 MiB a 1 M-event rebuild
/// wrote each page into freshly faulted memory (0.1–0.2 s of 1.3 s, and 170 MB more RSS). The
/// file is reopened with [`PROJECTIONS_CACHE_BYTES`] once complete.
pub(crate) const REBUILD_CACHE_BYTES: usize = 32 << 20;

/// The newest event: its seq and chain hash. An auditor keeps it outside the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: [0; 32],
    };
    pub fn hash_hex(&self) -> String {
        block::hex(&self.hash)
    }
}

/// What became of one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored under this seq.
    Stored(u64),
    /// Its id was stored before, under this seq; nothing was stored.
    Duplicate(u64),
}

pub(crate) enum Db {
    Write(redb::Database),
    Read(redb::ReadOnlyDatabase),
}

impl Db {
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction> {
        Ok(match self {
            Db::Write(d) => d.begin_read()?,
            Db::Read(d) => d.begin_read()?,
        })
    }

    /// The database for writing, when this handle may write.
    pub(crate) fn writable(&self) -> Option<&redb::Database> {
        match self {
            Db::Write(d) => Some(d),
            Db::Read(_) => None,
        }
    }
}

/// An open ledger: the log file, and beside it the projections file (`<log>.proj`), derived
/// from the log and rebuilt from it whenever it is missing, stale or from another log.
pub struct Ledger {
    pub(crate) db: Db,
    /// The projections. A file of its own so that the projector's transactions never hold the
    /// log's write lock: redb has one writer at a time per file, and appends must not wait.
    /// Replaced whole by a rebuild; views hold the file they read open.
    proj: RwLock<Arc<Db>>,
    path: PathBuf,
    /// The head as of the last durable commit.
    pub(crate) head: Mutex<Head>,
    pub(crate) appended: Condvar,
    /// The in-memory side of the id set (see [`crate::dedup`]), loaded at the first append.
    /// Its mutex is the writer's lock: an appender holds it from the first read of the id set
    /// to its last commit, so appends in this process run one at a time.
    pub(crate) id_index: Mutex<Option<IdIndex>>,
    /// Serialises projection catch-ups in this process (each plans from a snapshot).
    pub(crate) projector: Mutex<()>,
    /// Set when the files could not be opened for writing (a read-only file system, no
    /// permission to write them, a full disk): the ledger is read as it is, and nothing brings
    /// its projections up to date.
    cannot_write: Option<String>,
}

fn builder(cache_bytes: usize) -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(cache_bytes);
    // One process writes; others may open read-only and follow its commits.
    b.set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
    b
}

impl Ledger {
    /// Opens the ledger at `path` for writing, creating it when missing.
    ///
    /// # Errors
    /// [`Error::Busy`] when another process has it open for writing; [`Error::NotALedger`]
    /// for a file that is not a ledger of this format.
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger> {
        let path = path.as_ref().to_path_buf();
        let db = builder(LOG_CACHE_BYTES)
            .create(&path)
            .map_err(|e| open_error(&path, e))?;
        let proj = open_projections(&path)?;
        Ledger::with_db(Db::Write(db), proj, path)
    }

    /// Opens an existing ledger for reading: for writing when no other process has it (so that
    /// projections can catch up), else read-only beside that writer.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Ledger> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(Error::NotFound(format!(
                "{}: no ledger here (create one with `runledger ingest` or `runledger demo`, or \
                 pass --db)",
                path.display()
            )));
        }
        let opened = builder(LOG_CACHE_BYTES).open(&path);
        let cannot_write = match &opened {
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => not_writable(e),
            _ => None,
        };
        match opened {
            Ok(db) => {
                let proj = open_projections(&path)?;
                Ledger::with_db(Db::Write(db), proj, path)
            }
            // Read-only beside the process writing it, which keeps the projections current.
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Ledger::read_only(path, None),
            // An audit copy on read-only media, or a full disk: it can still be read and
            // verified.
            Err(_) if cannot_write.is_some() => Ledger::read_only(path, cannot_write),
            Err(e) => Err(open_error(&path, e)),
        }
    }

    fn read_only(path: PathBuf, cannot_write: Option<String>) -> Result<Ledger> {
        let db = builder(LOG_CACHE_BYTES)
            .open_read_only(&path)
            .map_err(|e| open_error(&path, e))?;
        // Whoever wrote the log created the projections file when it opened it.
        let proj_path = projections_path(&path);
        if !proj_path.exists() {
            return Err(Error::Storage(format!(
                "{}: no projections file beside the log, and it cannot be created here ({}); \
                 copy it with the log, or run `runledger rebuild` on a writable copy",
                proj_path.display(),
                cannot_write
                    .as_deref()
                    .unwrap_or("another process writes this ledger"),
            )));
        }
        let proj = builder(PROJECTIONS_CACHE_BYTES)
            .open_read_only(&proj_path)
            .map_err(|e| open_error(&proj_path, e))?;
        let mut ledger = Ledger::with_db(Db::Read(db), Db::Read(proj), path)?;
        ledger.cannot_write = cannot_write;
        Ok(ledger)
    }

    /// The error of a write through a read-only handle: [`Error::Busy`] beside another writer,
    /// else [`Error::ReadOnly`] with why.
    pub(crate) fn not_writable(&self) -> Error {
        let path = self.path.clone();
        match &self.cannot_write {
            Some(why) => Error::ReadOnly {
                path,
                why: why.clone(),
            },
            None => Error::Busy { path },
        }
    }

    /// Why this handle cannot write the ledger's files when nothing else holds them (a
    /// read-only file system, no permission, a full disk); `None` when it can, or when only
    /// another process writing them keeps it read-only.
    pub fn cannot_write(&self) -> Option<&str> {
        self.cannot_write.as_deref()
    }

    fn with_db(db: Db, proj: Db, path: PathBuf) -> Result<Ledger> {
        // A ledger made before is only read here: a write transaction on every open cost a
        // commit (an fsync) per command, and failed every command on a full disk.
        let unmade = match &db {
            Db::Write(d) if !made_before(d, &path)? => Some(d),
            _ => None,
        };
        if let Some(d) = unmade {
            let tx = d.begin_write()?;
            {
                let mut meta = tx.open_table(META)?;
                let format = meta.get("format")?.map(|v| v.value().to_vec());
                match format {
                    None => {
                        meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())?;
                    }
                    Some(v) => check_format(&path, &v)?,
                }
                tx.open_table(BLOCKS)?;
                tx.open_table(IDS)?;
            }
            tx.commit()?;
        }
        let ledger = Ledger {
            db,
            proj: RwLock::new(Arc::new(proj)),
            path,
            head: Mutex::new(Head::EMPTY),
            appended: Condvar::new(),
            id_index: Mutex::new(None),
            projector: Mutex::new(()),
            cannot_write: None,
        };
        let head = ledger.read_head()?;
        *ledger.lock_head() = head;
        Ok(ledger)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this handle may write (no other process had the file open for writing).
    pub fn is_writable(&self) -> bool {
        matches!(self.db, Db::Write(_))
    }

    pub(crate) fn write_db(&self) -> Result<&redb::Database> {
        self.db.writable().ok_or_else(|| self.not_writable())
    }

    /// The projections file as it is now.
    pub(crate) fn proj(&self) -> Arc<Db> {
        // A panic elsewhere cannot leave the Arc half-written.
        self.proj.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes `db`, already renamed to the projections path, the projections from now on.
    /// The file it replaces stays open while views read it.
    pub(crate) fn replace_projections(&self, db: redb::Database) {
        *self.proj.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Db::Write(db));
    }

    pub(crate) fn lock_head(&self) -> MutexGuard<'_, Head> {
        // A panic while holding the lock cannot leave the head half-written (it is Copy).
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The head as stored (for a read-only handle: as the writer last committed it).
    pub fn head(&self) -> Result<Head> {
        match &self.db {
            Db::Write(_) => Ok(*self.lock_head()),
            Db::Read(_) => self.read_head(),
        }
    }

    fn read_head(&self) -> Result<Head> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let head = match meta.get("head")? {
            Some(v) => decode_head(v.value()).ok_or_else(|| Error::Corrupt {
                seq: 0,
                why: "head record has the wrong length".into(),
            })?,
            None => Head::EMPTY,
        };
        Ok(head)
    }

    /// Blocks until the head passes `seq` or `timeout` elapses; returns the head.
    pub fn wait_for_append(&self, seq: u64, timeout: std::time::Duration) -> Head {
        let guard = self.lock_head();
        let (guard, _) = self
            .appended
            .wait_timeout_while(guard, timeout, |h| h.seq <= seq)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    /// A consistent snapshot for reading events.
    pub fn reader(&self) -> Result<LogReader> {
        let tx = self.db.begin_read()?;
        let head = {
            let meta = tx.open_table(META)?;
            let h = match meta.get("head")? {
                Some(v) => decode_head(v.value()),
                None => Some(Head::EMPTY),
            };
            h.ok_or_else(|| Error::Corrupt {
                seq: 0,
                why: "head record has the wrong length".into(),
            })?
        };
        let blocks = tx.open_table(BLOCKS)?;
        Ok(LogReader { blocks, head })
    }
}

/// Whether the log file holds this format's tables already (checking the format it records).
fn made_before(d: &redb::Database, path: &Path) -> Result<bool> {
    use redb::TableHandle;
    let tx = d.begin_read()?;
    if !tables_present(&tx, &[META.name(), BLOCKS.name(), IDS.name()])? {
        return Ok(false);
    }
    match tx.open_table(META)?.get("format")? {
        Some(v) => check_format(path, v.value()).map(|()| true),
        None => Ok(false),
    }
}

/// Whether `tx` sees a table of each of these names.
pub(crate) fn tables_present(tx: &redb::ReadTransaction, names: &[&str]) -> Result<bool> {
    use redb::TableHandle;
    let present: Vec<String> = tx.list_tables()?.map(|t| t.name().to_owned()).collect();
    Ok(names.iter().all(|n| present.iter().any(|p| p == n)))
}

/// Where the projections of the log at `log` live: `<log>.proj`.
pub fn projections_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".proj");
    PathBuf::from(p)
}

/// Where a rebuild writes new projections before they replace `<log>.proj`:
/// `<log>.proj.rebuild`.
pub fn rebuilding_path(log: &Path) -> PathBuf {
    let mut p = projections_path(log).into_os_string();
    p.push(".rebuild");
    PathBuf::from(p)
}

fn open_projections(log: &Path) -> Result<Db> {
    Ok(Db::Write(create_projections(
        &projections_path(log),
        PROJECTIONS_CACHE_BYTES,
    )?))
}

/// Opens (creating when missing) a projections file at `path` with its tables and a page
/// cache of `cache_bytes`.
pub(crate) fn create_projections(path: &Path, cache_bytes: usize) -> Result<redb::Database> {
    if let Opened::Db(db) = open_projections_file(path, cache_bytes)? {
        return Ok(db);
    }
    // Projections are derived from the log: a file that is not a readable database (damaged,
    // or left half-created by a kill: redb writes its magic number last) is built again.
    std::fs::remove_file(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match open_projections_file(path, cache_bytes)? {
        Opened::Db(db) => Ok(db),
        Opened::Damaged => Err(Error::Storage(format!(
            "{}: a new projections file could not be read back",
            path.display()
        ))),
    }
}

enum Opened {
    Db(redb::Database),
    /// The file's content is not a readable database.
    Damaged,
}

/// Opens a projections file and creates its tables; [`Opened::Damaged`] when redb finds the
/// content unreadable — or panics on it: on some damaged pages (a page type it does not know)
/// redb panics rather than returning an error.
fn open_projections_file(path: &Path, cache_bytes: usize) -> Result<Opened> {
    let attempt = std::panic::catch_unwind(|| -> Result<Opened> {
        let db = match builder(cache_bytes).create(path) {
            Ok(db) => db,
            Err(e) if unreadable(&e) => return Ok(Opened::Damaged),
            Err(e) => return Err(open_error(path, e)),
        };
        // Not dropped while unwinding from a panic: closing writes the allocator state, which
        // could meet the damage again (a second panic aborts). The file handle is leaked then.
        let db = std::mem::ManuallyDrop::new(db);
        let made = (|| -> Result<()> {
            // Only read when the tables are there (see `made_before`).
            if crate::project::tables::all_present(&db.begin_read()?)? {
                return Ok(());
            }
            let tx = db.begin_write()?;
            crate::project::tables::create_all(&tx)?;
            tx.commit()?;
            Ok(())
        })();
        let db = std::mem::ManuallyDrop::into_inner(db);
        made.map(|()| Opened::Db(db))
    });
    attempt.unwrap_or(Ok(Opened::Damaged))
}

/// Why an open for writing failed for want of write access or space, if it did.
fn not_writable(e: &std::io::Error) -> Option<String> {
    use std::io::ErrorKind as K;
    let kinds = [
        K::ReadOnlyFilesystem,
        K::PermissionDenied,
        K::StorageFull,
        K::FileTooLarge,
    ];
    kinds.contains(&e.kind()).then(|| e.to_string())
}

/// Whether opening failed on the file's content (rather than on access to it).
fn unreadable(e: &redb::DatabaseError) -> bool {
    use redb::{DatabaseError as D, StorageError as S};
    match e {
        D::Storage(S::Corrupted(_)) | D::UpgradeRequired(_) | D::RepairAborted => true,
        D::Storage(S::Io(io)) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Busy {
            path: path.to_path_buf(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        other => Error::NotALedger {
            path: path.to_path_buf(),
            why: other.to_string(),
        },
    }
}

fn check_format(path: &Path, v: &[u8]) -> Result<()> {
    let got = <[u8; 4]>::try_from(v).map(u32::from_le_bytes).ok();
    if got != Some(FORMAT_VERSION) {
        return Err(Error::NotALedger {
            path: path.to_path_buf(),
            why: format!(
                "format version {} where this build reads {FORMAT_VERSION}",
                got.map_or("?".into(), |g| g.to_string())
            ),
        });
    }
    Ok(())
}

/// The head as `meta` stores it: seq (u64 LE) then the chain hash.
pub(crate) fn encode_head(h: &Head) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(&h.seq.to_le_bytes());
    out[8..].copy_from_slice(&h.hash);
    out
}

fn decode_head(v: &[u8]) -> Option<Head> {
    if v.len() != 40 {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&v[..8]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&v[8..]);
    Some(Head {
        seq: u64::from_le_bytes(seq),
        hash,
    })
}

/// A stored block, `(first seq, bytes)`, read in place.
pub(crate) type StoredBlock = (u64, redb::AccessGuard<'static, &'static [u8]>);

/// A read snapshot of the log. Events are handed to closures as rkyv archives read in place.
pub struct LogReader {
    /// Holds the snapshot open (redb's tables keep their transaction alive).
    blocks: redb::ReadOnlyTable<u64, &'static [u8]>,
    head: Head,
}

impl LogReader {
    pub fn head(&self) -> Head {
        self.head
    }

    /// Calls `f` with the event at `seq`; `Ok(None)` when there is none.
    pub fn with_event<T>(
        &self,
        seq: u64,
        f: impl FnOnce(&ArchivedStoredEvent) -> T,
    ) -> Result<Option<T>> {
        self.with_archive(seq, |archive| block::access(seq, archive).map(f))?
            .transpose()
    }

    /// Calls `f` with the raw archive bytes of the event at `seq` (not yet checked);
    /// `Ok(None)` when there is none.
    pub(crate) fn with_archive<T>(
        &self,
        seq: u64,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>> {
        if seq == 0 || seq > self.head.seq {
            return Ok(None);
        }
        let Some((k, v)) = self.blocks.range(..=seq)?.next_back().transpose()? else {
            return Ok(None);
        };
        let block = Block::new(k.value(), v.value())?;
        let i = (seq - k.value()) as usize;
        if i >= block.len() {
            return Ok(None);
        }
        let (_, archive) = block.entry(i)?;
        Ok(Some(f(archive)))
    }

    /// Calls `f` with every event of `from..=to` (clamped to the head) in seq order, with its
    /// chain hash; `f` returns `false` to stop early.
    pub fn scan(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(&Hash, &ArchivedStoredEvent) -> Result<bool>,
    ) -> Result<()> {
        self.scan_entries(from, to, |seq, hash, archive| {
            f(hash, block::access(seq, archive)?)
        })
    }

    /// Like [`Self::scan`], with each event's raw archive bytes (checked access is up to `f`).
    pub fn scan_entries(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &Hash, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let from = from.max(1);
        let to = to.min(self.head.seq);
        if from > to {
            return Ok(());
        }
        for item in self.blocks.range(self.block_holding(from)?..=to)? {
            let (k, v) = item?;
            let block = Block::new(k.value(), v.value())?;
            for i in 0..block.len() {
                let seq = block.first_seq() + i as u64;
                if seq < from {
                    continue;
                }
                if seq > to {
                    return Ok(());
                }
                let (hash, archive) = block.entry(i)?;
                if !f(seq, hash, archive)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The first seq of the block holding `seq` (`seq` itself when no block starts at or
    /// before it).
    fn block_holding(&self, seq: u64) -> Result<u64> {
        Ok(match self.blocks.range(..=seq)?.next_back().transpose()? {
            Some((k, _)) => k.value(),
            None => seq,
        })
    }

    /// The stored blocks holding seqs `from..=to`, `(first seq, bytes)`, held so that their
    /// events can be read in place after the call.
    pub(crate) fn blocks(&self, from: u64, to: u64) -> Result<Vec<StoredBlock>> {
        let mut out = Vec::new();
        for item in self.blocks.range(self.block_holding(from)?..=to)? {
            let (k, v) = item?;
            out.push((k.value(), v));
        }
        Ok(out)
    }

    /// Calls `f` with each raw block `(first seq, bytes)` in order: for verification, which
    /// must see the bytes before trusting their structure.
    pub fn raw_blocks(&self, mut f: impl FnMut(u64, &[u8]) -> Result<bool>) -> Result<()> {
        for item in self.blocks.iter()? {
            let (k, v) = item?;
            if !f(k.value(), v.value())? {
                break;
            }
        }
        Ok(())
    }
}
