//! A redb storage backend for the projections file that writes a commit's pages in runs of
//! adjacent pages.
//!
//! redb writes every dirty page of a commit with its own `pwrite`, in the order of its write
//! buffer's stripes, not of the file. The projections' pages are 4 KiB B-tree nodes, so a
//! rebuild made ~60 k single-page writes per million events, and the kernel's cost per write
//! (a page-cache folio, its accounting, ext4's block reservation) was a third of the writer
//! thread's time; the same bytes written 64 KiB at a time cost the kernel a quarter as much.
//! Here writes are held until the next `sync_data` (every commit ends with one) and then written
//! sorted by offset, each run of adjacent pages with one `pwrite`.
//!
//! Nothing changes for durability: `sync_data` writes everything held before it syncs, which is
//! all redb relies on (the kernel may reorder writes between syncs anyway). A read that overlaps
//! a held write or reaches past the end on disk, a write that overlaps a held one, and `set_len`
//! write what is held first, and `len` counts held writes, so the file always reads as if every
//! write had gone straight to it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use redb::{BackendError, StorageBackend};

/// Writes held before they are written regardless of the next sync: bounds the memory a large
/// transaction can hold here (redb's own write buffer is bounded by its cache size).
const MAX_HELD_BYTES: usize = 64 << 20;

/// Bytes of one `pwrite`: a run of adjacent pages is written in pieces of at most this.
const MAX_WRITE_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct GatheringFile {
    inner: redb::backends::FileBackend,
    /// The same open file, for the gathered writes (the inner backend keeps its own private).
    file: File,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// File offset -> where the written bytes sit in `bytes` (start, length). No two overlap.
    writes: BTreeMap<u64, (usize, usize)>,
    bytes: Vec<u8>,
    /// The file's length on disk.
    file_len: u64,
    /// Its length as read through the backend: past every held write.
    len: u64,
}

impl GatheringFile {
    pub(crate) fn new(file: File) -> io::Result<GatheringFile> {
        let ours = file.try_clone()?;
        let inner = redb::backends::FileBackend::new(file).map_err(io::Error::other)?;
        let len = inner.len()?;
        Ok(GatheringFile {
            inner,
            file: ours,
            held: Mutex::new(Held {
                file_len: len,
                len,
                ..Held::default()
            }),
        })
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // A panic while holding the lock leaves whole entries: `writes` and `bytes` are only
        // extended together, and cleared together after a flush.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes everything held.
    fn flush(&self) -> io::Result<()> {
        self.held().flush(&self.file)
    }
}

impl Held {
    fn overlaps(&self, offset: u64, len: usize) -> bool {
        let end = offset + len as u64;
        // Held writes do not overlap, so the last one starting before `end` ends last.
        let before = self.writes.range(..end).next_back();
        before.is_some_and(|(&start, &(_, n))| start + n as u64 > offset)
    }

    fn flush(&mut self, file: &File) -> io::Result<()> {
        for (offset, slices) in self.runs() {
            write_all_at(file, &slices, offset)?;
        }
        self.writes.clear();
        self.bytes.clear();
        self.file_len = self.len;
        Ok(())
    }

    /// The held writes in file order, adjacent ones gathered into runs of at most
    /// [`MAX_WRITE_BYTES`] and [`MAX_SLICES`] slices: `(offset, slices)`.
    fn runs(&self) -> Vec<(u64, Vec<&[u8]>)> {
        let mut runs: Vec<(u64, Vec<&[u8]>)> = Vec::new();
        let mut run_len = 0;
        for (&offset, &(at, n)) in &self.writes {
            let bytes = &self.bytes[at..at + n];
            match runs.last_mut() {
                Some((start, slices))
                    if *start + run_len as u64 == offset
                        && run_len + n <= MAX_WRITE_BYTES
                        && slices.len() < MAX_SLICES =>
                {
                    slices.push(bytes);
                    run_len += n;
                }
                _ => {
                    runs.push((offset, vec![bytes]));
                    run_len = n;
                }
            }
        }
        runs
    }
}

/// Slices of one vectored write (Linux's `IOV_MAX` is 1,024).
const MAX_SLICES: usize = 256;

/// Writes `slices` one after another from `offset`, with as few `pwritev`s as the kernel allows.
#[cfg(unix)]
fn write_all_at(file: &File, slices: &[&[u8]], mut offset: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let mut iov: Vec<libc::iovec> = slices
        .iter()
        .map(|s| libc::iovec {
            iov_base: s.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        })
        .collect();
    let mut first = 0;
    while first < iov.len() {
        let rest = &iov[first..];
        let offset_arg = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: every iovec points into a slice of `slices`, alive and unchanged for the call;
        // `rest.len()` ≤ MAX_SLICES fits a c_int.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                rest.as_ptr(),
                rest.len() as libc::c_int,
                offset_arg,
            )
        };
        if written < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if written == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        // Past what was written: whole slices, then into the next one.
        let mut left = written as usize;
        offset += left as u64;
        while left > 0 {
            let v = &mut iov[first];
            if left >= v.iov_len {
                left -= v.iov_len;
                first += 1;
            } else {
                // SAFETY: `left` < the slice's length, so the pointer stays inside it.
                v.iov_base = unsafe { (v.iov_base as *mut u8).add(left) } as *mut libc::c_void;
                v.iov_len -= left;
                left = 0;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
fn write_all_at(file: &File, slices: &[&[u8]], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    for slice in slices {
        let mut data = *slice;
        while !data.is_empty() {
            let n = file.seek_write(data, offset)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            data = &data[n..];
            offset += n as u64;
        }
    }
    Ok(())
}

impl StorageBackend for GatheringFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.held().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        {
            let mut held = self.held();
            // Past the end on disk, the file reads as if held writes had extended it.
            let past_end = offset + out.len() as u64 > held.file_len;
            if past_end || held.overlaps(offset, out.len()) {
                held.flush(&self.file)?;
            }
        }
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut held = self.held();
        held.flush(&self.file)?;
        self.inner.set_len(len)?;
        held.file_len = len;
        held.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.flush()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut held = self.held();
        if held.overlaps(offset, data.len()) || held.bytes.len() + data.len() > MAX_HELD_BYTES {
            held.flush(&self.file)?;
        }
        let at = held.bytes.len();
        held.bytes.extend_from_slice(data);
        held.writes.insert(offset, (at, data.len()));
        held.len = held.len.max(offset + data.len() as u64);
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        let flushed = self.flush();
        let closed = self.inner.close();
        flushed.and(closed)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::FileExt;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Pages from `page`, each filled with `fill`.
        Write {
            page: u64,
            pages: u64,
            fill: u8,
        },
        Read {
            page: u64,
            pages: u64,
        },
        SetLen {
            pages: u64,
        },
        Sync,
    }

    const PAGE: u64 = 512;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..48, 1u64..5, any::<u8>())
                .prop_map(|(page, pages, fill)| Op::Write { page, pages, fill }),
            3 => (0u64..48, 1u64..5).prop_map(|(page, pages)| Op::Read { page, pages }),
            1 => (0u64..56).prop_map(|pages| Op::SetLen { pages }),
            1 => Just(Op::Sync),
        ]
    }

    proptest! {
        /// Whatever was held, the backend reads as a file written straight through, and after
        /// `sync_data` the file itself holds every write, in the order written.
        #[test]
        fn reads_and_syncs_as_if_every_write_went_straight_to_the_file(
            ops in prop::collection::vec(op(), 1..80)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let file = std::fs::OpenOptions::new()
                .read(true).write(true).create(true).truncate(false)
                .open(&path).unwrap();
            let backend = GatheringFile::new(file).unwrap();
            let mut model: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Write { page, pages, fill } => {
                        let (at, n) = ((page * PAGE) as usize, (pages * PAGE) as usize);
                        backend.write(at as u64, &vec![fill; n]).unwrap();
                        if model.len() < at + n {
                            model.resize(at + n, 0);
                        }
                        model[at..at + n].fill(fill);
                    }
                    Op::Read { page, pages } => {
                        let (at, n) = ((page * PAGE) as usize, (pages * PAGE) as usize);
                        if at + n <= model.len() {
                            let mut out = vec![0xEE; n];
                            backend.read(at as u64, &mut out).unwrap();
                            prop_assert_eq!(&out[..], &model[at..at + n]);
                        }
                    }
                    Op::SetLen { pages } => {
                        backend.set_len(pages * PAGE).unwrap();
                        model.resize((pages * PAGE) as usize, 0);
                    }
                    Op::Sync => {
                        backend.sync_data().unwrap();
                        let on_disk = std::fs::read(&path).unwrap();
                        prop_assert_eq!(&on_disk[..], &model[..]);
                    }
                }
                prop_assert_eq!(backend.len().unwrap(), model.len() as u64);
            }
            backend.sync_data().unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let mut on_disk = vec![0; model.len()];
            file.read_exact_at(&mut on_disk, 0).unwrap();
            prop_assert_eq!(on_disk, model);
        }
    }

    /// Adjacent pages written in any order go out as one write; a gap or the size bound starts
    /// another.
    #[test]
    fn adjacent_pages_are_written_as_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let backend = GatheringFile::new(file).unwrap();
        for page in [3u64, 1, 2, 0, 7] {
            backend
                .write(page * PAGE, &[page as u8; PAGE as usize])
                .unwrap();
        }
        let big = 1 << 19;
        backend.write(1 << 20, &vec![1; big]).unwrap();
        backend
            .write((1 << 20) + big as u64, &vec![2; big])
            .unwrap();
        backend
            .write((1 << 20) + 2 * big as u64, &vec![3; big])
            .unwrap();
        let held = backend.held();
        let runs: Vec<(u64, usize)> = held
            .runs()
            .iter()
            .map(|(offset, slices)| (*offset, slices.iter().map(|s| s.len()).sum()))
            .collect();
        let p = PAGE as usize;
        assert_eq!(
            runs,
            [
                (0, 4 * p),
                (7 * PAGE, p),
                (1 << 20, 2 * big),
                ((1 << 20) + 2 * big as u64, big)
            ]
        );
    }
}
