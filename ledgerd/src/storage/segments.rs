//! The entries on disk: append-only segment files of framed records, the write-ahead log
//! that a commit's one `write` + one `fdatasync` makes durable.
//!
//! Everything else in the store (Merkle tiles, checkpoints, indexes, counters,
//! projections) is derived from these files and kept in sled, updated after the sync and
//! brought up to date from the segments at start (see `Log::open`).
//!
//! Layout (docs/FORMAT.md, "Storage"), all integers little-endian, under `<store>/log/`:
//!
//! ```text
//! <first seq, 20 digits>.seg   "LDGSEG\0\x01" ‖ u64 first seq ‖ frames
//! frame                        u32 length, the top bit set on a commit's last frame ‖
//!                              u32 CRC-32 of (u64 seq ‖ that u32 ‖ record) ‖ record ‖ zero padding to 8
//! <first seq, 20 digits>.idx   (sealed segments only) "LDGIDX\0\x01" ‖ u64 first ‖ u64 count ‖
//!                              u64 length ‖ u64 × ceil(count / 16) frame offsets ‖ u32 CRC-32
//! ```
//!
//! A record is the canonical leaf bytes of one entry (see [`crate::storage::stored`]); every frame starts at a
//! multiple of 8, so records are read in place. A segment is sealed (a new one begins)
//! once it passes [`SEGMENT_BYTES`]; the next file is created and synced, with its
//! directory, after the commit that filled it is acknowledged, so rolling over costs the
//! next commit no sync. An empty newest segment (made ahead, never used) is valid.
//!
//! Pre-zeroed tail: a background thread keeps the newest segment written with zeros (and
//! synced) up to [`FILL_AHEAD`] bytes past its last frame (never past [`SEGMENT_BYTES`]), so
//! that a commit overwrites blocks the file already has: its `fdatasync` then writes only
//! data, where an append that grows the file also commits the filesystem journal for the
//! new size (PostgreSQL zero-fills its WAL segments for the same reason). The filler
//! writes only past the writer's end, under the writer's lock, and is started after an
//! acknowledgement, never on the ack path, and not after a commit of over a quarter of
//! [`FILL_AHEAD`] (a stream's: its zeros would be overwritten at once, for no gain).
//!
//! Recovery: the newest segment is read to the end of its non-zero bytes (zeros after the
//! last frame are the pre-zeroed tail, not entries: a frame never has a zero length); a
//! frame cut short or failing its CRC at the end of those bytes was being written when the
//! process stopped: it was never synced, so never acknowledged, and it is cut off (the file
//! truncated and synced, so that no byte of it can later line up behind a new commit), with
//! the frames of the same commit before it (back to the last frame marked as a commit's
//! last): a commit lands whole or not at all. Damage anywhere else is an error.
//! `.idx` files are only an index: one that is missing or does not check is rebuilt.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use rkyv::util::AlignedVec;

/// The largest record (an entry's stored bytes) accepted.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// A segment takes no more commits once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// One offset is kept in memory (and in `.idx`) per this many entries.
pub const INDEX_EVERY: u64 = 16;
const SEG_MAGIC: &[u8; 8] = b"LDGSEG\0\x01";
const IDX_MAGIC: &[u8; 8] = b"LDGIDX\0\x01";
const HEADER: u64 = 16;
const FRAME_HEADER: usize = 8;
/// The bit of a frame's length field that marks a commit's last frame.
const COMMIT_END: u32 = 1 << 31;
/// How far past the newest segment's last frame the filler keeps the file written with
/// zeros (see the module docs): about two thousand single-entry commits, and little for a
/// daemon that starts and stops (every test's) to write.
pub const FILL_AHEAD: u64 = 1024 * 1024;
/// Commits this large are not followed by a fill: one sync's journal write is nothing
/// beside their data, and zeros written ahead of them would be overwritten at once (twice
/// the bytes for a stream's commits).
const NO_FILL_AFTER: u64 = FILL_AHEAD / 4;
/// Zeros written by the filler under one hold of the writer's lock.
const FILL_CHUNK: usize = 256 * 1024;
/// Bytes read at a time by scans.
const CHUNK: usize = 1 << 20;
/// Bytes read at a time for one entry looked up by seq.
const LOOKUP_CHUNK: usize = 8 * 1024;
/// Bytes read for a lookup past where the entry's frame should end (see
/// `SegmentReader::record`).
const LOOKUP_SLACK: u64 = 512;

/// Errors of the segment files.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "the entry log is damaged: {path} {detail}; the data dir was changed or the disk failed. Restore the data dir from backup"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error("the entry log's writer stopped after a failed write; restart ledgerd")]
    Poisoned,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io { path: path.to_path_buf(), source }
}

/// The file name of the segment (or index, with `ext`) starting at `first`.
fn file_name(first: u64, ext: &str) -> String {
    format!("{first:020}.{ext}")
}

/// The bytes of the frame of a record of `len` bytes, padding included.
pub fn frame_len(len: usize) -> usize {
    (FRAME_HEADER + len).next_multiple_of(8)
}

fn checksum(seq: u64, len_field: u32, record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&len_field.to_le_bytes());
    h.update(record);
    h.finalize()
}

/// Appends the frame of entry `seq` to `out`; `last` marks the last frame of a commit.
fn push_frame(out: &mut Vec<u8>, seq: u64, record: &[u8], last: bool) {
    let start = out.len();
    let len_field = record.len() as u32 | if last { COMMIT_END } else { 0 };
    out.extend_from_slice(&len_field.to_le_bytes());
    out.extend_from_slice(&checksum(seq, len_field, record).to_le_bytes());
    out.extend_from_slice(record);
    out.resize(start + frame_len(record.len()), 0);
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes)
}

/// One segment as far as it is durable.
#[derive(Clone)]
struct Seg {
    first: u64,
    count: u64,
    /// Bytes of the file that hold whole, synced frames.
    len: u64,
    file: Arc<File>,
    path: PathBuf,
    /// Offset of the frame of entry `first + i * INDEX_EVERY`.
    sparse: Vec<u64>,
}

impl Seg {
    fn end(&self) -> u64 {
        self.first + self.count
    }
}

/// Where to start reading for one seq: the segment's file and the indexed frame at or
/// before it.
struct Loc {
    file: Arc<File>,
    path: PathBuf,
    seq: u64,
    offset: u64,
    end_seq: u64,
    len: u64,
}

struct Shared {
    segs: Vec<Seg>,
}

/// What only the writer (and the zero filler, past the writer's end) touches: the active
/// file and its buffer.
struct Writer {
    frames: Vec<u8>,
    /// The next segment, created and synced ahead of need: (its first seq, path, file).
    next: Option<(u64, PathBuf, File)>,
    /// The newest segment as the writer and the filler see it.
    tail: Option<Tail>,
    /// The zero filler, while one runs.
    filler: Option<JoinHandle<()>>,
    poisoned: bool,
}

/// The newest segment's file: where the next frame goes, and how far the file is written
/// (frames, then zeros).
struct Tail {
    file: Arc<File>,
    path: PathBuf,
    end: u64,
    zeroed_to: u64,
    /// Bytes of the last commit written here.
    last_commit: u64,
}

/// The segment files of one store (see the module docs). Shared by readers and the writer.
pub struct Segments {
    dir: PathBuf,
    segment_bytes: u64,
    shared: RwLock<Shared>,
    writer: Arc<Mutex<Writer>>,
}

fn lock(w: &Mutex<Writer>) -> std::sync::MutexGuard<'_, Writer> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_lock(l: &RwLock<Shared>) -> std::sync::RwLockReadGuard<'_, Shared> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock(l: &RwLock<Shared>) -> std::sync::RwLockWriteGuard<'_, Shared> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// `fsync` of a directory, so that files created or renamed in it stay.
pub fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Segments {
    /// Opens the segments in `dir` (creating the directory and a first segment when there
    /// are none), trimming a torn tail (see the module docs).
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Segments, SegmentError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut firsts = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io(dir))? {
            let item = item.map_err(io(dir))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(first) = name.strip_suffix(".seg").and_then(|n| n.parse::<u64>().ok()) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        if firsts.is_empty() {
            create_segment(dir, 0)?;
            sync_dir(dir)?;
            firsts.push(0);
        }
        let mut segs: Vec<Seg> = Vec::with_capacity(firsts.len());
        let newest = firsts.len() - 1;
        for (i, first) in firsts.into_iter().enumerate() {
            let path = dir.join(file_name(first, "seg"));
            let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io(&path))?;
            if let Some(prev) = segs.last()
                && prev.end() != first
            {
                return Err(SegmentError::Damaged {
                    path,
                    detail: format!(
                        "starts at entry {first}, but the segment before it ends at {}",
                        prev.end()
                    ),
                });
            }
            let seg = if i == newest {
                // The one segment a crash can have cut mid-frame.
                let (seg, trimmed) = scan_segment(file, path, first, true)?;
                if trimmed > 0 {
                    tracing::warn!(
                        bytes = trimmed,
                        "cut a partly written, never acknowledged frame off the entry log"
                    );
                }
                seg
            } else {
                match load_index(dir, first, &file) {
                    Some((count, len, sparse)) => {
                        Seg { first, count, len, file: Arc::new(file), path, sparse }
                    }
                    None => {
                        let (seg, _) = scan_segment(file, path, first, false)?;
                        write_index(dir, &seg)?;
                        seg
                    }
                }
            };
            segs.push(seg);
        }
        let tail = match segs.last() {
            Some(g) => Some(Tail {
                file: g.file.clone(),
                path: g.path.clone(),
                end: g.len,
                zeroed_to: g.file.metadata().map_err(io(&g.path))?.len().max(g.len),
                last_commit: 0,
            }),
            None => None,
        };
        Ok(Segments {
            dir: dir.to_path_buf(),
            segment_bytes,
            shared: RwLock::new(Shared { segs }),
            writer: Arc::new(Mutex::new(Writer {
                frames: Vec::new(),
                next: None,
                tail,
                filler: None,
                poisoned: false,
            })),
        })
    }

    /// One past the last durable entry.
    pub fn end(&self) -> u64 {
        read_lock(&self.shared).segs.last().map_or(0, Seg::end)
    }

    /// Bytes of the durable frames and headers, all segments together.
    pub fn bytes(&self) -> u64 {
        read_lock(&self.shared).segs.iter().map(|s| s.len).sum()
    }

    /// Appends the records of entries `first..` (consecutive seqs from the current end)
    /// with one `write` and one `fdatasync`; they are visible to readers only after that.
    /// A failure poisons the writer: what reached the file is unknown. Returns the offset
    /// of the first record's frame in its segment file; the others follow it, each
    /// [`frame_len`] of the one before.
    pub fn append<'a>(
        &self,
        first: u64,
        records: impl Iterator<Item = &'a [u8]>,
    ) -> Result<u64, SegmentError> {
        let mut w = lock(&self.writer);
        if w.poisoned {
            return Err(SegmentError::Poisoned);
        }
        let (file, path, offset, seg_first, seg_count) = {
            let s = read_lock(&self.shared);
            let last = s.segs.last().ok_or(SegmentError::Poisoned)?;
            if last.end() != first {
                return Err(SegmentError::Damaged {
                    path: last.path.clone(),
                    detail: format!("was asked to append entry {first} after entry {}", last.end()),
                });
            }
            (last.file.clone(), last.path.clone(), last.len, last.first, last.count)
        };
        if offset >= self.segment_bytes && seg_count > 0 {
            drop(w);
            self.roll(first)?;
            return self.append(first, records);
        }
        let mut frames = std::mem::take(&mut w.frames);
        frames.clear();
        let mut sparse = Vec::new();
        let mut seq = first;
        let mut records = records.peekable();
        while let Some(r) = records.next() {
            if (seq - seg_first).is_multiple_of(INDEX_EVERY) {
                sparse.push(offset + frames.len() as u64);
            }
            push_frame(&mut frames, seq, r, records.peek().is_none());
            seq += 1;
        }
        if crate::storage::failpoint::reached("torn-entries-write") {
            let _ = file.write_all_at(&frames[..frames.len() / 2], offset).and_then(|()| file.sync_data());
            crate::storage::failpoint::abort("torn-entries-write");
        }
        let result = file.write_all_at(&frames, offset).and_then(|()| file.sync_data()).map_err(io(&path));
        let written = frames.len() as u64;
        w.frames = frames;
        if let Err(e) = result {
            w.poisoned = true;
            return Err(e);
        }
        if let Some(t) = w.tail.as_mut() {
            t.end = offset + written;
            t.zeroed_to = t.zeroed_to.max(t.end);
            t.last_commit = written;
        }
        let mut s = write_lock(&self.shared);
        if let Some(last) = s.segs.last_mut() {
            last.count += seq - first;
            last.len += written;
            last.sparse.extend(sparse);
        }
        Ok(offset)
    }

    /// Work that belongs after an acknowledgement: once the newest segment is full, writes
    /// its `.idx` and creates and syncs the next file (named by the seq the next commit
    /// gets), so that rolling over costs the next commit no sync; otherwise starts the
    /// zero filler when the pre-zeroed tail runs short (see the module docs).
    pub fn prepare_next(&self) -> Result<(), SegmentError> {
        let s = read_lock(&self.shared);
        let Some(last) = s.segs.last() else { return Ok(()) };
        let end = last.end();
        let mut w = lock(&self.writer);
        if last.len < self.segment_bytes || last.count == 0 {
            self.fill_ahead(&mut w);
            return Ok(());
        }
        if w.next.as_ref().is_some_and(|n| n.0 == end) {
            return Ok(());
        }
        write_index(&self.dir, last)?;
        let path = self.dir.join(file_name(end, "seg"));
        let file = create_file(&path, end)?;
        sync_dir(&self.dir)?;
        w.next = Some((end, path, file));
        Ok(())
    }

    /// Starts the zero filler when the newest segment is written less than half of
    /// [`FILL_AHEAD`] past its last frame and none runs.
    fn fill_ahead(&self, w: &mut Writer) {
        if w.poisoned || w.filler.as_ref().is_some_and(|f| !f.is_finished()) {
            return;
        }
        let Some(t) = w.tail.as_ref() else { return };
        if t.last_commit > NO_FILL_AFTER {
            return;
        }
        let target = (t.end + FILL_AHEAD).min(self.segment_bytes);
        if t.zeroed_to >= (t.end + FILL_AHEAD / 2).min(target) {
            return;
        }
        let (writer, file, path) = (self.writer.clone(), t.file.clone(), t.path.clone());
        if let Some(done) = w.filler.take() {
            let _ = done.join();
        }
        let spawned = std::thread::Builder::new()
            .name("segment-zero-fill".into())
            .spawn(move || fill_zeros(&writer, &file, &path, target));
        match spawned {
            Ok(handle) => w.filler = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the segment zero filler; appends grow the file")
            }
        }
    }

    /// Waits for the zero filler, if one runs (a clean stop; tests that read the files).
    pub fn settle(&self) {
        let filler = lock(&self.writer).filler.take();
        if let Some(f) = filler {
            let _ = f.join();
        }
    }

    /// Seals the newest segment and starts the next at `first`.
    fn roll(&self, first: u64) -> Result<(), SegmentError> {
        let mut w = lock(&self.writer);
        let (path, file) = match w.next.take() {
            Some((at, path, file)) if at == first => (path, file),
            _ => {
                let path = self.dir.join(file_name(first, "seg"));
                let file = create_file(&path, first)?;
                sync_dir(&self.dir)?;
                if let Some(last) = read_lock(&self.shared).segs.last() {
                    write_index(&self.dir, last)?;
                }
                (path, file)
            }
        };
        let file = Arc::new(file);
        w.tail = Some(Tail {
            file: file.clone(),
            path: path.clone(),
            end: HEADER,
            zeroed_to: HEADER,
            last_commit: 0,
        });
        let mut s = write_lock(&self.shared);
        s.segs.push(Seg { first, count: 0, len: HEADER, file, path, sparse: Vec::new() });
        Ok(())
    }

    /// Calls `f` with the segment holding `seq` (under the read lock) and its indexed group
    /// holding `seq`: the group's first seq, and the offsets of its first frame and of its
    /// end; `None` when the log does not hold `seq`.
    fn with_group<T>(&self, seq: u64, f: impl FnOnce(&Seg, (u64, u64, u64)) -> T) -> Option<T> {
        let s = read_lock(&self.shared);
        let i = s.segs.partition_point(|g| g.first <= seq).checked_sub(1)?;
        let g = &s.segs[i];
        if seq >= g.end() {
            return None;
        }
        let k = ((seq - g.first) / INDEX_EVERY) as usize;
        let start = *g.sparse.get(k)?;
        let end = g.sparse.get(k + 1).copied().unwrap_or(g.len);
        Some(f(g, (g.first + k as u64 * INDEX_EVERY, start, end)))
    }

    fn locate(&self, seq: u64) -> Option<Loc> {
        self.with_group(seq, |g, (first, offset, _)| Loc {
            file: g.file.clone(),
            path: g.path.clone(),
            seq: first,
            offset,
            end_seq: g.end(),
            len: g.len,
        })
    }

    /// Calls `f(seq, record)` for every entry in `lo..hi`, in order, reading each segment
    /// sequentially, until it returns `Ok(false)`.
    pub fn scan<E: From<SegmentError>>(
        &self,
        lo: u64,
        hi: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, E>,
    ) -> Result<(), E> {
        self.scan_located(lo, hi, |seq, _, record| f(seq, record))
    }

    /// [`Segments::scan`], also giving each record's frame offset in its segment file.
    pub fn scan_located<E: From<SegmentError>>(
        &self,
        lo: u64,
        hi: u64,
        mut f: impl FnMut(u64, u64, &[u8]) -> Result<bool, E>,
    ) -> Result<(), E> {
        let mut seq = lo;
        while seq < hi {
            let Some(loc) = self.locate(seq) else { return Ok(()) };
            let mut cursor = Cursor::new(loc, CHUNK);
            cursor.advance_to(seq)?;
            let stop = hi.min(cursor.end_seq);
            while cursor.seq < stop {
                let (seq, offset) = (cursor.seq, cursor.buf_off + cursor.pos as u64);
                if !f(seq, offset, cursor.record()?)? {
                    return Ok(());
                }
                cursor.step()?;
            }
            seq = stop;
        }
        Ok(())
    }

    /// Replaces everything from entry `from` on with `records` (entries `from..`), as one
    /// segment: for forensic tooling and tests, with the daemon stopped (see
    /// `Store::tamper`). Writes with a correct CRC, as an attacker could.
    pub fn rewrite_from(&self, from: u64, records: &[Vec<u8>]) -> Result<(), SegmentError> {
        self.settle();
        let mut s = write_lock(&self.shared);
        let i = s.segs.partition_point(|g| g.first <= from).saturating_sub(1);
        // Keep the records of the segment holding `from` that come before it.
        let mut kept = Vec::new();
        let start = s.segs.get(i).map_or(0, |g| g.first);
        if let Some(g) = s.segs.get(i) {
            let loc = Loc {
                file: g.file.clone(),
                path: g.path.clone(),
                seq: g.first,
                offset: HEADER,
                end_seq: g.end(),
                len: g.len,
            };
            let mut cursor = Cursor::new(loc, CHUNK);
            while cursor.seq < from.min(g.end()) {
                kept.push(cursor.record()?.to_vec());
                cursor.step()?;
            }
        }
        for g in s.segs.drain(i..) {
            std::fs::remove_file(&g.path).map_err(io(&g.path))?;
            let _ = std::fs::remove_file(self.dir.join(file_name(g.first, "idx")));
        }
        let path = self.dir.join(file_name(start, "seg"));
        let file = create_file(&path, start)?;
        let mut frames = Vec::new();
        for (seq, r) in (start..).zip(kept.iter().chain(records)) {
            push_frame(&mut frames, seq, r, true);
        }
        file.write_all_at(&frames, HEADER).and_then(|()| file.sync_data()).map_err(io(&path))?;
        sync_dir(&self.dir)?;
        drop(s);
        let (seg, _) = scan_segment(file, path, start, false)?;
        lock(&self.writer).tail = Some(Tail {
            file: seg.file.clone(),
            path: seg.path.clone(),
            end: seg.len,
            zeroed_to: seg.len,
            last_commit: 0,
        });
        write_lock(&self.shared).segs.push(seg);
        Ok(())
    }
}

impl Drop for Segments {
    fn drop(&mut self) {
        self.settle();
    }
}

/// The zero filler's thread: writes zeros into `file` from the writer's end (or from where
/// the file is written to, whichever is further) up to `target`, a chunk at a time under
/// the writer's lock, then syncs them. Stops early when the file is no longer the newest
/// segment or the writer failed. A failure only costs speed (appends then grow the file),
/// so it is logged, not returned.
fn fill_zeros(writer: &Mutex<Writer>, file: &Arc<File>, path: &Path, target: u64) {
    let zeros = vec![0u8; FILL_CHUNK];
    let mut wrote = false;
    loop {
        let mut w = lock(writer);
        if w.poisoned {
            break;
        }
        let Some(t) = w.tail.as_mut().filter(|t| Arc::ptr_eq(&t.file, file)) else { break };
        let start = t.zeroed_to.max(t.end);
        if start >= target {
            break;
        }
        let n = (target - start).min(FILL_CHUNK as u64) as usize;
        if let Err(e) = file.write_all_at(&zeros[..n], start) {
            tracing::warn!(error = %e, path = %path.display(), "cannot pre-zero the entry log; appends grow the file");
            break;
        }
        t.zeroed_to = start + n as u64;
        wrote = true;
    }
    if wrote && let Err(e) = file.sync_data() {
        tracing::warn!(error = %e, path = %path.display(), "cannot sync the pre-zeroed entry log");
    }
}

/// Creates a segment file holding only its header, synced.
fn create_file(path: &Path, first: u64) -> Result<File, SegmentError> {
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).map_err(io(path))?;
    let mut header = [0u8; HEADER as usize];
    header[..8].copy_from_slice(SEG_MAGIC);
    header[8..].copy_from_slice(&first.to_le_bytes());
    file.write_all_at(&header, 0).and_then(|()| file.sync_all()).map_err(io(path))?;
    Ok(file)
}

fn create_segment(dir: &Path, first: u64) -> Result<File, SegmentError> {
    create_file(&dir.join(file_name(first, "seg")), first)
}

/// Reads a whole segment: its entries, their offsets, and the end of its whole frames.
/// With `trim_tail`, a damaged frame at the very end of the file is cut off (the torn
/// write of a commit that was never acknowledged); otherwise any damage is an error.
/// Returns the segment and how many bytes were cut.
fn scan_segment(file: File, path: PathBuf, first: u64, trim_tail: bool) -> Result<(Seg, u64), SegmentError> {
    let size = file.metadata().map_err(io(&path))?.len();
    let damaged = |detail: String| SegmentError::Damaged { path: path.clone(), detail };
    let mut header = [0u8; HEADER as usize];
    file.read_exact_at(&mut header, 0).map_err(|_| damaged("has no complete header".into()))?;
    if &header[..8] != SEG_MAGIC || u64_at(&header, 8) != Some(first) {
        return Err(damaged(format!(
            "does not start with the header of a segment beginning at entry {first}"
        )));
    }
    let file = Arc::new(file);
    let loc = Loc {
        file: file.clone(),
        path: path.clone(),
        seq: first,
        offset: HEADER,
        end_seq: u64::MAX,
        len: size,
    };
    // Past the last non-zero byte there are only zeros: the pre-zeroed tail (or the
    // padding of the last frame), never a frame.
    let data_end = data_end(&file, &path, size)?;
    let mut c = Cursor::new(loc, CHUNK);
    let mut sparse = Vec::new();
    // Where the last whole commit ends: (offset, seq, entries of `sparse`).
    let mut committed = (HEADER, first, 0usize);
    let mut damage = None;
    loop {
        let offset = c.buf_off + c.pos as u64;
        if offset >= data_end {
            break;
        }
        match c.check_frame(size - offset)? {
            Ok((len, last)) => {
                if (c.seq - first).is_multiple_of(INDEX_EVERY) {
                    sparse.push(offset);
                }
                c.pos += frame_len(len);
                c.seq += 1;
                if last {
                    committed = (offset + frame_len(len) as u64, c.seq, sparse.len());
                }
            }
            Err(why) => {
                // Torn only if nothing whole can follow: the frame runs to (or past) the
                // end of the file's non-zero bytes.
                let claimed =
                    u32_at(&c.buf, c.pos).map_or(u64::MAX, |l| frame_len((l & !COMMIT_END) as usize) as u64);
                let runs_to_end =
                    size - offset < FRAME_HEADER as u64 || offset.saturating_add(claimed) >= data_end;
                if !(trim_tail && runs_to_end) {
                    return Err(damaged(why));
                }
                damage = Some(why);
                break;
            }
        }
    }
    let (end, end_seq, indexed) = committed;
    if data_end <= end {
        return Ok((Seg { first, count: end_seq - first, len: end, file, path, sparse }, 0));
    }
    // A commit that did not reach the disk whole: cut it off, if this is the tail. The
    // file is truncated (and synced) rather than left behind the new end, so that none of
    // its bytes can line up behind a later commit; the filler zeroes the tail again.
    if !trim_tail {
        return Err(damaged(damage.unwrap_or_else(|| format!("ends inside a commit, after byte {end}"))));
    }
    file.set_len(end).and_then(|()| file.sync_all()).map_err(io(&path))?;
    sparse.truncate(indexed);
    Ok((Seg { first, count: end_seq - first, len: end, file, path, sparse }, data_end - end))
}

/// One past the last non-zero byte of the file (at least [`HEADER`]), reading backwards
/// from its end a chunk at a time: the pre-zeroed tail costs at most [`FILL_AHEAD`] bytes read.
fn data_end(file: &File, path: &Path, size: u64) -> Result<u64, SegmentError> {
    let mut buf = vec![0u8; CHUNK];
    let mut hi = size;
    while hi > HEADER {
        let lo = hi.saturating_sub(CHUNK as u64).max(HEADER);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo).map_err(io(path))?;
        if let Some(i) = chunk.iter().rposition(|b| *b != 0) {
            return Ok(lo + i as u64 + 1);
        }
        hi = lo;
    }
    Ok(HEADER)
}

/// Moves the unread bytes of `buf` to its front and reads up to `want` bytes in total.
fn refill(
    file: &File,
    path: &Path,
    buf: &mut AlignedVec<16>,
    buf_off: &mut u64,
    pos: &mut usize,
    want: usize,
) -> Result<(), SegmentError> {
    let keep = buf.len() - *pos;
    if *pos > 0 {
        buf.as_mut_slice().copy_within(*pos.., 0);
        buf.resize(keep, 0);
        *buf_off += *pos as u64;
        *pos = 0;
    }
    let at = *buf_off + keep as u64;
    let add = want.saturating_sub(keep);
    if add == 0 {
        return Ok(());
    }
    buf.resize(keep + add, 0);
    let n = read_full(file, &mut buf.as_mut_slice()[keep..], at).map_err(io(path))?;
    buf.resize(keep + n, 0);
    Ok(())
}

fn read_full(file: &File, mut out: &mut [u8], mut at: u64) -> std::io::Result<usize> {
    let mut total = 0;
    while !out.is_empty() {
        match file.read_at(out, at) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                at += n as u64;
                out = &mut out[n..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

fn load_index(dir: &Path, first: u64, seg: &File) -> Option<(u64, u64, Vec<u64>)> {
    let bytes = std::fs::read(dir.join(file_name(first, "idx"))).ok()?;
    let body = bytes.len().checked_sub(4)?;
    if bytes.get(..8)? != IDX_MAGIC || u32_at(&bytes, body)? != crc32fast::hash(&bytes[..body]) {
        return None;
    }
    let (f, count, len) = (u64_at(&bytes, 8)?, u64_at(&bytes, 16)?, u64_at(&bytes, 24)?);
    let n = count.div_ceil(INDEX_EVERY) as usize;
    if f != first || body != 32 + 8 * n || seg.metadata().ok()?.len() != len {
        return None;
    }
    let sparse = (0..n).map(|i| u64_at(&bytes, 32 + 8 * i)).collect::<Option<Vec<_>>>()?;
    Some((count, len, sparse))
}

/// Writes a sealed segment's `.idx` (temporary file, then rename; it needs no sync: a
/// missing or damaged one is rebuilt from the segment).
fn write_index(dir: &Path, g: &Seg) -> Result<(), SegmentError> {
    let mut out = Vec::with_capacity(36 + 8 * g.sparse.len());
    out.extend_from_slice(IDX_MAGIC);
    for v in [g.first, g.count, g.len] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for o in &g.sparse {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    let path = dir.join(file_name(g.first, "idx"));
    let tmp = dir.join(file_name(g.first, "idx.tmp"));
    std::fs::write(&tmp, &out).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Reads the frames of one segment in order, a buffer at a time.
struct Cursor {
    file: Arc<File>,
    path: PathBuf,
    buf: AlignedVec<16>,
    buf_off: u64,
    pos: usize,
    /// The entry whose frame is at `pos`.
    seq: u64,
    end_seq: u64,
    len: u64,
    chunk: usize,
}

impl Cursor {
    fn new(loc: Loc, chunk: usize) -> Cursor {
        Cursor {
            file: loc.file,
            path: loc.path,
            buf: AlignedVec::new(),
            buf_off: loc.offset,
            pos: 0,
            seq: loc.seq,
            end_seq: loc.end_seq,
            len: loc.len,
            chunk,
        }
    }

    fn damaged(&self, detail: String) -> SegmentError {
        SegmentError::Damaged { path: self.path.clone(), detail }
    }

    /// Makes `need` bytes from `pos` available.
    fn ensure(&mut self, need: usize) -> Result<(), SegmentError> {
        if self.buf.len() - self.pos >= need {
            return Ok(());
        }
        let left = self.len.saturating_sub(self.buf_off + self.buf.len() as u64);
        let want = need.max(self.chunk).min(self.buf.len() - self.pos + left as usize);
        refill(&self.file, &self.path, &mut self.buf, &mut self.buf_off, &mut self.pos, want)?;
        if self.buf.len() - self.pos < need {
            return Err(self.damaged(format!("ends inside the frame of entry {}", self.seq)));
        }
        Ok(())
    }

    fn frame(&mut self) -> Result<usize, SegmentError> {
        if self.seq >= self.end_seq {
            return Err(self.damaged(format!("has no entry {}", self.seq)));
        }
        self.ensure(FRAME_HEADER)?;
        let len = (u32_at(&self.buf, self.pos).unwrap_or(0) & !COMMIT_END) as usize;
        if len == 0 {
            return Err(self.damaged(format!("has an empty frame for entry {}", self.seq)));
        }
        self.ensure(frame_len(len))?;
        Ok(len)
    }

    /// Checks the frame at the cursor, `left` bytes before the end of the file: its
    /// record's length, or why it is not a whole frame.
    fn check_frame(&mut self, left: u64) -> Result<Result<(usize, bool), String>, SegmentError> {
        let offset = self.buf_off + self.pos as u64;
        if left < FRAME_HEADER as u64 {
            return Ok(Err(format!("ends inside the frame at byte {offset}")));
        }
        self.ensure(FRAME_HEADER)?;
        let len_field = u32_at(&self.buf, self.pos).unwrap_or(0);
        let len = (len_field & !COMMIT_END) as usize;
        if len == 0 || len > 2 * MAX_RECORD_BYTES {
            return Ok(Err(format!("has a frame of {len} bytes at byte {offset}")));
        }
        if frame_len(len) as u64 > left {
            return Ok(Err(format!("ends inside the frame at byte {offset}")));
        }
        self.ensure(frame_len(len))?;
        let crc = u32_at(&self.buf, self.pos + 4).unwrap_or(0);
        if crc
            != checksum(
                self.seq,
                len_field,
                &self.buf[self.pos + FRAME_HEADER..self.pos + FRAME_HEADER + len],
            )
        {
            return Ok(Err(format!("holds entry {} with a wrong checksum at byte {offset}", self.seq)));
        }
        if self.buf[self.pos + FRAME_HEADER + len..self.pos + frame_len(len)].iter().any(|b| *b != 0) {
            return Ok(Err(format!("holds entry {} with non-zero padding at byte {offset}", self.seq)));
        }
        Ok(Ok((len, len_field & COMMIT_END != 0)))
    }

    /// The record at the cursor.
    fn record(&mut self) -> Result<&[u8], SegmentError> {
        let len = self.frame()?;
        Ok(&self.buf[self.pos + FRAME_HEADER..self.pos + FRAME_HEADER + len])
    }

    /// Moves to the next entry.
    fn step(&mut self) -> Result<(), SegmentError> {
        let len = self.frame()?;
        self.pos += frame_len(len);
        self.seq += 1;
        Ok(())
    }

    /// Moves to the indexed group `(first seq, offset, end offset to read)` of the same file
    /// (whose entries end at `end_seq`, its synced frames at `len`): within the buffer
    /// when it holds the group's first frame, else reading from there on, the group's
    /// bytes at a time, into the same buffer.
    fn jump(&mut self, (seq, offset, group_end): (u64, u64, u64), end_seq: u64, len: u64) {
        (self.end_seq, self.len) = (end_seq, len);
        self.chunk = (group_end.saturating_sub(offset) as usize).clamp(FRAME_HEADER, LOOKUP_CHUNK);
        self.seq = seq;
        if offset >= self.buf_off && offset < self.buf_off + self.buf.len() as u64 {
            self.pos = (offset - self.buf_off) as usize;
            return;
        }
        self.buf.clear();
        self.buf_off = offset;
        self.pos = 0;
    }

    fn advance_to(&mut self, seq: u64) -> Result<(), SegmentError> {
        while self.seq < seq {
            self.step()?;
        }
        Ok(())
    }
}

/// Reads entries by seq, keeping its place: reading seqs in increasing order reads each
/// segment sequentially (see `Store::reader`).
#[derive(Default)]
pub struct SegmentReader {
    cursor: Option<Cursor>,
}

impl SegmentReader {
    /// Moves the cursor to `(seq, offset, end offset to read)` in segment `g` (see
    /// [`Cursor::jump`]), keeping its buffer's allocation when it moves to another file.
    fn place(&mut self, g: &Seg, at: (u64, u64, u64)) {
        match self.cursor.as_mut() {
            Some(c) if Arc::ptr_eq(&c.file, &g.file) => c.jump(at, g.end(), g.len),
            _ => {
                // The allocation only: its bytes are another file's.
                let mut buf = self.cursor.take().map(|c| c.buf).unwrap_or_default();
                buf.clear();
                let loc = Loc {
                    file: g.file.clone(),
                    path: g.path.clone(),
                    seq: at.0,
                    offset: at.1,
                    end_seq: g.end(),
                    len: g.len,
                };
                let mut cursor = Cursor::new(loc, LOOKUP_CHUNK);
                cursor.buf = buf;
                cursor.jump(at, g.end(), g.len);
                self.cursor = Some(cursor);
            }
        }
    }

    /// The record of entry `seq`, whose frame an index says is the `len` bytes at `offset`
    /// in its segment file (see `projections::agent_index`), or `None` when the log does not
    /// hold it.
    ///
    /// One `pread` of the frame, unless the reader's buffer already holds it.
    /// The offset is only trusted when it lies in `seq`'s indexed group and the frame read
    /// there checks (its CRC covers the seq): otherwise the entry is read as
    /// [`SegmentReader::record`] reads it, so a stale or damaged index costs time only.
    pub fn record_at<'r>(
        &'r mut self,
        segments: &Segments,
        seq: u64,
        at: (u64, u64),
    ) -> Result<Option<&'r [u8]>, SegmentError> {
        match self.jump_exact(segments, seq, at)? {
            Some(len) => {
                let Some(cursor) = self.cursor.as_ref() else { return Ok(None) };
                Ok(Some(&cursor.buf[cursor.pos + FRAME_HEADER..cursor.pos + FRAME_HEADER + len]))
            }
            None => self.record(segments, seq),
        }
    }

    /// Places the cursor on the frame at `offset` if it is a whole frame of entry `seq`
    /// (see [`SegmentReader::record_at`]): the length of its record, or `None` when it is
    /// not.
    fn jump_exact(
        &mut self,
        segments: &Segments,
        seq: u64,
        (offset, frame): (u64, u64),
    ) -> Result<Option<usize>, SegmentError> {
        let placed = segments.with_group(seq, |g, (_, group_start, group_end)| {
            if offset < group_start || offset >= group_end || !offset.is_multiple_of(8) {
                return None;
            }
            // The frame (a longer one than said is read on by a second `pread`).
            let guess = offset.saturating_add(frame.max(FRAME_HEADER as u64)).min(group_end);
            self.place(g, (seq, offset, guess));
            Some(group_end)
        });
        let (Some(Some(group_end)), Some(cursor)) = (placed, self.cursor.as_mut()) else { return Ok(None) };
        match cursor.check_frame(group_end - offset) {
            Ok(Ok((len, _))) => Ok(Some(len)),
            // Not a frame of this seq there: the cursor's place is wrong, so it is dropped,
            // and the caller reads the entry from its group's start (and reports damage,
            // if that is what it is).
            Ok(Err(_)) | Err(SegmentError::Damaged { .. }) => {
                self.cursor = None;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The record of entry `seq`, or `None` when the log does not hold it.
    ///
    /// A lookup reads the frames of the indexed group holding `seq` up to it (one `pread`
    /// of a few KiB, into the buffer the reader keeps), unless the reader's place or its
    /// buffer already holds them.
    pub fn record<'r>(&'r mut self, segments: &Segments, seq: u64) -> Result<Option<&'r [u8]>, SegmentError> {
        let reuse = matches!(&self.cursor, Some(c) if c.seq <= seq && seq < c.end_seq
            && (seq - c.seq) < INDEX_EVERY);
        if !reuse {
            let placed = segments.with_group(seq, |g, (first, offset, group_end)| {
                // Frames are read up to about where `seq`'s should end (frames of one group
                // are much alike in size), with some to spare; a frame past that is read by
                // a second `pread`.
                let nth = seq - first + 1;
                let guess = offset + (group_end - offset) * nth / INDEX_EVERY + LOOKUP_SLACK;
                self.place(g, (first, offset, guess.min(group_end)));
            });
            if placed.is_none() {
                return Ok(None);
            }
        }
        let Some(cursor) = self.cursor.as_mut() else { return Ok(None) };
        cursor.advance_to(seq)?;
        cursor.record().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Vec<u8> {
        vec![(seq % 251) as u8; 1 + (seq as usize * 7) % 300]
    }

    fn all(s: &Segments) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        s.scan::<SegmentError>(0, u64::MAX, |seq, r| {
            out.push((seq, r.to_vec()));
            Ok(true)
        })
        .expect("scan");
        out
    }

    #[test]
    fn appends_roll_over_and_read_back_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Segments::open(dir.path(), 4096).expect("open");
        let mut seq = 0u64;
        for commit in 0..60u64 {
            let recs: Vec<Vec<u8>> = (seq..seq + commit % 7 + 1).map(rec).collect();
            s.append(seq, recs.iter().map(Vec::as_slice)).expect("append");
            seq += recs.len() as u64;
            s.prepare_next().expect("prepare");
        }
        assert_eq!(s.end(), seq);
        let files = std::fs::read_dir(dir.path()).expect("dir").count();
        assert!(files > 4, "several segments and indexes: {files}");
        let expect: Vec<(u64, Vec<u8>)> = (0..seq).map(|i| (i, rec(i))).collect();
        assert_eq!(all(&s), expect);
        let mut reader = SegmentReader::default();
        for i in (0..seq).rev().step_by(5).chain(0..seq) {
            assert_eq!(reader.record(&s, i).expect("read"), Some(rec(i).as_slice()), "seq {i}");
        }
        // Jumps forward and back, within a group, within the reader's buffer, across
        // files (issue 17: the reader keeps one buffer and reads a group at a time).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = x % seq;
            for j in [i, (i + 1 + x % 40).min(seq - 1)] {
                assert_eq!(reader.record(&s, j).expect("read"), Some(rec(j).as_slice()), "seq {j}");
            }
        }
        assert_eq!(reader.record(&s, seq).expect("read"), None);
        drop(s);
        // Without the indexes too: they are rebuilt.
        let reopened = Segments::open(dir.path(), 4096).expect("reopen");
        assert_eq!(all(&reopened), expect);
        for e in std::fs::read_dir(dir.path()).expect("dir") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "idx") {
                std::fs::remove_file(p).expect("rm idx");
            }
        }
        let reopened = Segments::open(dir.path(), 4096).expect("reopen without idx");
        assert_eq!(all(&reopened), expect);
        reopened.append(seq, [rec(seq).as_slice()].into_iter()).expect("append after reopen");
        assert_eq!(reopened.end(), seq + 1);
    }

    /// Issue 17: a lookup at the frame offset an index kept (what `append` and
    /// `scan_located` give) reads the same record as one from the group's start; and an
    /// offset that is wrong (another entry's frame, inside a frame, unaligned, in another
    /// group, past the end) is never trusted: the record read is still the seq's own.
    #[test]
    fn lookups_at_a_kept_offset_read_the_record_and_wrong_offsets_fall_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Segments::open(dir.path(), 4096).expect("open");
        let mut offsets = Vec::new();
        let len = |i: u64| frame_len(rec(i).len()) as u64;
        let mut seq = 0u64;
        for commit in 0..60u64 {
            let recs: Vec<Vec<u8>> = (seq..seq + commit % 7 + 1).map(rec).collect();
            let mut at = s.append(seq, recs.iter().map(Vec::as_slice)).expect("append");
            for r in &recs {
                offsets.push(at);
                at += frame_len(r.len()) as u64;
            }
            seq += recs.len() as u64;
            s.prepare_next().expect("prepare");
        }
        let mut scanned = Vec::new();
        s.scan_located::<SegmentError>(0, seq, |i, at, r| {
            assert_eq!(r, rec(i).as_slice());
            scanned.push(at);
            Ok(true)
        })
        .expect("scan");
        assert_eq!(scanned, offsets, "append and scan_located give the same offsets");
        let mut reader = SegmentReader::default();
        for i in (0..seq).step_by(3).chain((0..seq).rev()) {
            let at = offsets[i as usize];
            assert_eq!(
                reader.record_at(&s, i, (at, len(i))).expect("read"),
                Some(rec(i).as_slice()),
                "seq {i}"
            );
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = x % seq;
            let other = offsets[((i + 1 + x % 5) % seq) as usize];
            let wrong =
                [other, offsets[i as usize] + 8, offsets[i as usize] + 3, 0, 16, u64::MAX - 7, x & !7];
            let bad = wrong[(x >> 32) as usize % wrong.len()];
            // A length too short, too long, or nothing like it is only how much is read.
            let bad_len = [len(i), 0, 8, len(i) + 64, u64::MAX][(x >> 40) as usize % 5];
            for place in [(bad, len(i)), (offsets[i as usize], bad_len), (bad, bad_len)] {
                let got = reader.record_at(&s, i, place).expect("read");
                assert_eq!(got, Some(rec(i).as_slice()), "seq {i} at {place:?}");
            }
            // And the reader's place after a wrong offset is still right.
            let j = (i + 1).min(seq - 1);
            assert_eq!(reader.record(&s, j).expect("read"), Some(rec(j).as_slice()), "seq {j}");
            assert_eq!(
                reader.record_at(&s, j, (offsets[j as usize], len(j))).expect("read"),
                Some(rec(j).as_slice()),
                "seq {j}"
            );
        }
        assert_eq!(reader.record_at(&s, seq, (16, 8)).expect("read"), None);
    }

    fn newest(dir: &Path) -> PathBuf {
        let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("e").path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        segs.pop().expect("a segment")
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_before_it_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Segments::open(dir.path(), SEGMENT_BYTES).expect("open");
        let recs: Vec<Vec<u8>> = (0..10).map(rec).collect();
        // Two commits: entries 0..6, then 6..10.
        s.append(0, recs[..6].iter().map(Vec::as_slice)).expect("append");
        s.append(6, recs[6..].iter().map(Vec::as_slice)).expect("append");
        let size = s.bytes();
        drop(s);
        let path = newest(dir.path());
        // Every cut inside the second commit (inside a frame, or between two of its
        // frames), and garbage after its last whole frame, is a write that never finished:
        // the whole commit is cut off, the first kept.
        let full = std::fs::read(&path).expect("read");
        let at = |n: u64| HEADER as usize + (0..n).map(|i| frame_len(rec(i).len())).sum::<usize>();
        let first_commit = at(6);
        for cut in [at(9) + 1, at(9) + 7, full.len() - 1, at(8), at(7), at(6) + 3] {
            std::fs::write(&path, &full[..cut]).expect("write");
            let s = Segments::open(dir.path(), SEGMENT_BYTES).expect("open cuts the tail");
            assert_eq!((s.end(), s.bytes()), (6, first_commit as u64), "cut at {cut}");
        }
        let mut garbage = full[..at(9) + 5].to_vec();
        garbage.extend_from_slice(&[0xab; 3]);
        std::fs::write(&path, &garbage).expect("write");
        assert_eq!(Segments::open(dir.path(), SEGMENT_BYTES).expect("open").end(), 6);
        let mut zeros = full.clone();
        zeros.extend_from_slice(&[0u8; 100]);
        std::fs::write(&path, &zeros).expect("write");
        let s = Segments::open(dir.path(), SEGMENT_BYTES).expect("open");
        assert_eq!((s.end(), s.bytes()), (10, size));
        drop(s);
        // A flipped byte in an earlier record is damage, not a torn write.
        for (at, why) in [(HEADER as usize + 16 + 8 + 2, "wrong checksum"), (HEADER as usize + 9, "padding")]
        {
            let mut flipped = full.clone();
            flipped[at] ^= 1;
            std::fs::write(&path, &flipped).expect("write");
            let err = Segments::open(dir.path(), SEGMENT_BYTES).err().expect("damage");
            assert!(err.to_string().contains(why), "{err}");
        }
        // So is a header that names the wrong first entry.
        let mut wrong = full;
        wrong[8] = 5;
        std::fs::write(&path, &wrong).expect("write");
        assert!(Segments::open(dir.path(), SEGMENT_BYTES).is_err());
    }

    /// Bytes of `path` past `from` that are not zero.
    fn nonzero_after(path: &Path, from: u64) -> usize {
        std::fs::read(path).expect("read")[from as usize..].iter().filter(|b| **b != 0).count()
    }

    #[test]
    fn a_pre_zeroed_segment_with_a_crash_torn_tail_recovers_exactly_the_acknowledged_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg_bytes = 1 << 20;
        let s = Segments::open(dir.path(), seg_bytes).expect("open");
        let recs: Vec<Vec<u8>> = (0..20).map(rec).collect();
        // Two acknowledged commits (0..6, 6..10), each followed by its after-ack work.
        s.append(0, recs[..6].iter().map(Vec::as_slice)).expect("append");
        s.prepare_next().expect("after ack");
        s.append(6, recs[6..10].iter().map(Vec::as_slice)).expect("append");
        s.prepare_next().expect("after ack");
        s.settle();
        let acked = s.bytes();
        drop(s);
        let path = newest(dir.path());
        let size = std::fs::metadata(&path).expect("meta").len();
        assert_eq!(size, seg_bytes, "the tail is written with zeros up to the segment size");
        assert_eq!(nonzero_after(&path, acked), 0);
        // The third commit (10..15) overwrote the zeros and the process stopped before its
        // sync: any prefix of its frames reached the disk, the rest is still zeros (the last
        // cut keeps all but the last record byte: its frame's padding is zeros anyway).
        let mut torn = Vec::new();
        for seq in 10..15 {
            push_frame(&mut torn, seq, &recs[seq as usize], seq == 14);
        }
        let pristine = std::fs::read(&path).expect("read");
        let last_frame = torn.len() - frame_len(recs[14].len());
        for cut in [
            1,
            7,
            8,
            20,
            frame_len(recs[10].len()),
            last_frame,
            last_frame + 9,
            last_frame + FRAME_HEADER + recs[14].len() - 1,
        ] {
            std::fs::write(&path, &pristine).expect("restore");
            let f = OpenOptions::new().write(true).open(&path).expect("open file");
            f.write_all_at(&torn[..cut], acked).expect("torn write");
            drop(f);
            let s = Segments::open(dir.path(), seg_bytes).expect("open cuts the torn commit");
            assert_eq!((s.end(), s.bytes()), (10, acked), "cut at {cut}");
            assert_eq!(nonzero_after(&path, acked), 0, "cut at {cut}: no byte of it is left behind");
            // The next commit reuses the seqs and the place; with the tail zeroed again, a
            // start after it finds exactly it, never the torn frames that lined up behind.
            s.append(10, [recs[10].as_slice()].into_iter()).expect("append");
            s.prepare_next().expect("after ack");
            s.settle();
            drop(s);
            let s = Segments::open(dir.path(), seg_bytes).expect("reopen");
            assert_eq!(all(&s), (0..11).map(|i| (i, rec(i))).collect::<Vec<_>>(), "cut at {cut}");
        }
        // Written whole (synced, not yet acknowledged when the process stopped): adopted.
        std::fs::write(&path, &pristine).expect("restore");
        let f = OpenOptions::new().write(true).open(&path).expect("open file");
        f.write_all_at(&torn, acked).expect("whole write");
        drop(f);
        assert_eq!(Segments::open(dir.path(), seg_bytes).expect("open").end(), 15);
        // Damage before the zero tail is still damage, not a torn write.
        let mut flipped = pristine;
        flipped[HEADER as usize + 16 + 8 + 2] ^= 1;
        std::fs::write(&path, &flipped).expect("write");
        let err = Segments::open(dir.path(), seg_bytes).err().expect("damage");
        assert!(err.to_string().contains("wrong checksum"), "{err}");
    }

    #[test]
    fn rewriting_replaces_and_truncates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Segments::open(dir.path(), 2048).expect("open");
        for seq in 0..40u64 {
            s.append(seq, [rec(seq).as_slice()].into_iter()).expect("append");
        }
        s.rewrite_from(25, &[vec![9u8; 5]]).expect("rewrite");
        assert_eq!(s.end(), 26);
        let got = all(&s);
        assert_eq!(got[25], (25, vec![9u8; 5]));
        assert_eq!(got[24], (24, rec(24)));
        drop(s);
        assert_eq!(all(&Segments::open(dir.path(), 2048).expect("reopen")).len(), 26);
    }
}
