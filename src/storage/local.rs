// Size: one concept (the local LRU on disk: layout, restart scan, reserve, commit, hot files).
//! The local disk backend: a size-capped LRU of files under the cache dir.
//!
//! Layout (nothing else in the cache dir is ever scanned or deleted):
//! - `roxpi.lock` — `flock`ed for the life of the process: two roxpi
//!   processes never share a cache dir.
//! - `CACHEDIR.TAG` — tells backup tools to skip the dir.
//! - `files/<k0k1>/<key>_<len>_<sha256>` — published files; the name records
//!   the length and content hash, checked at restart.
//! - `tmp/` — downloads in progress (count toward the cap); emptied at start.
//! - `staging/` — files larger than the cap, streamed and not kept (their
//!   names are unlinked at once); emptied at start.
//! - `pages/<k0k1>/<key>_<len>_<sha256>` — saved pages (`Item::Page`):
//!   the same LRU and bound as the files, apart only so that an operator
//!   sees them. The per-index folders of earlier builds (`pages/<id>/`,
//!   `route-pages/`) are removed at start.
//!
//! Rules: space is reserved before a download starts (in-flight bytes count,
//! so the cap holds at every moment); commit = `fsync` file, atomic rename,
//! `fsync` directory (a saved page: the rename only); a published file is never modified in place (eviction
//! only unlinks, so open readers keep their bytes); hits refresh recency and
//! touch the file's mtime at most hourly, and recency is rebuilt from mtimes
//! at restart. Lock rule: the LRU mutex is held only for bookkeeping, never
//! across file I/O — victims are unlinked after it is released.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use lru::LruCache;

use super::{CacheKey, Item, Lookup, Space, Storage, Stored, StoredBody, TempFile, Usage};

const TOUCH_EVERY: Duration = Duration::from_secs(3600);
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by roxpi.\n# For information about cache directory tags see https://bford.info/cachedir/\n";

struct Meta {
    len: u64,
    sha256: Arc<str>,
    path: PathBuf,
    touched: Instant,
    /// When the file was published (Last-Modified; stable across touches).
    modified: SystemTime,
    /// An open handle, kept for the most recently used files only.
    handle: Option<Arc<File>>,
    /// The bytes of a small hot file (≤ `HOT_FILE`), kept instead of a
    /// handle: a hit is then one `writev` of head and body.
    bytes: Option<Bytes>,
    /// A saved page (under `pages/`), not a file.
    page: bool,
}

/// Files up to this size are kept in memory while hot (see `Meta::bytes`).
pub const HOT_FILE: u64 = 64 * 1024;

/// Memory for hot small files: an eighth of the cap, at most 8 MiB.
fn hot_budget(cap: u64) -> u64 {
    (cap / 8).min(8 << 20)
}

/// Open handles kept for hot files (a hit then costs no `open`/`fstat`):
/// at most 64, and a sixteenth of the descriptor limit, so they never eat
/// the reserve kept for upstream sockets and downloads.
fn open_handles() -> std::num::NonZeroUsize {
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024);
    let n = usize::try_from(nofile / 16).unwrap_or(64).clamp(2, 64);
    std::num::NonZeroUsize::new(n).unwrap_or(std::num::NonZeroUsize::MIN)
}

struct Lru {
    map: LruCache<CacheKey, Meta>,
    /// Bytes of every entry (files and saved pages: one bound).
    used: u64,
    /// Saved pages among them: how many, and their bytes.
    pages: usize,
    page_bytes: u64,
    reserved: u64,
    /// Keys whose `Meta::handle` is set, least recently used first out.
    handles: LruCache<CacheKey, ()>,
    /// Keys whose `Meta::bytes` is set, and the bytes they hold.
    hot: LruCache<CacheKey, ()>,
    hot_bytes: u64,
    hot_budget: u64,
}

impl Lru {
    /// Adds an entry to the books (replacing any under the same key).
    fn insert(&mut self, key: CacheKey, meta: Meta) -> Option<Meta> {
        self.count(&meta, true);
        let old = self.map.put(key, meta);
        if let Some(old) = &old {
            self.count(old, false);
        }
        old
    }

    /// Counts an entry in or out.
    fn count(&mut self, m: &Meta, add: bool) {
        let (n, bytes) = (usize::from(m.page), if m.page { m.len } else { 0 });
        if add {
            self.used += m.len;
            self.pages += n;
            self.page_bytes += bytes;
        } else {
            self.used -= m.len;
            self.pages -= n;
            self.page_bytes -= bytes;
        }
    }

    /// Removes an entry and its handle; returns it.
    fn remove(&mut self, key: &CacheKey) -> Option<Meta> {
        self.handles.pop(key);
        let m = self.map.pop(key)?;
        self.forget_hot(key, &m);
        self.count(&m, false);
        Some(m)
    }

    /// Gives back the hot-bytes budget of a removed entry.
    fn forget_hot(&mut self, key: &CacheKey, m: &Meta) {
        if let Some(b) = &m.bytes {
            self.hot.pop(key);
            self.hot_bytes -= b.len() as u64;
        }
    }

    /// Keeps the bytes of a small file in memory, dropping the least
    /// recently used ones beyond the budget.
    fn keep_bytes(&mut self, key: &CacheKey, bytes: &Bytes) {
        let size = bytes.len() as u64;
        if size > self.hot_budget {
            return;
        }
        match self.map.peek_mut(key) {
            Some(meta) if meta.bytes.is_none() => meta.bytes = Some(bytes.clone()),
            _ => return,
        }
        self.hot_bytes += size;
        self.hot.put(key.clone(), ());
        while self.hot_bytes > self.hot_budget {
            let Some((old, ())) = self.hot.pop_lru() else {
                break;
            };
            if let Some(b) = self.map.peek_mut(&old).and_then(|m| m.bytes.take()) {
                self.hot_bytes -= b.len() as u64;
            }
        }
    }

    /// Keeps `file` open for `key`, closing the least recently used handle
    /// beyond the limit.
    fn keep_handle(&mut self, key: &CacheKey, file: &Arc<File>) {
        if let Some(meta) = self.map.peek_mut(key) {
            meta.handle = Some(Arc::clone(file));
            if let Some((old, ())) = self.handles.push(key.clone(), ()) {
                if old != *key {
                    if let Some(m) = self.map.peek_mut(&old) {
                        m.handle = None;
                    }
                }
            }
        }
    }
}

struct Shared {
    lru: Mutex<Lru>,
    evictions: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Lru> {
        // Counters and map are updated together without panicking code in
        // between; a poisoned lock is still consistent.
        crate::lock(&self.lru)
    }
}

impl Space for Shared {
    fn release(&self, bytes: u64) {
        let mut lru = self.lock();
        lru.reserved = lru.reserved.saturating_sub(bytes);
    }
}

pub struct LocalStorage {
    files: PathBuf,
    pages: PathBuf,
    tmp: PathBuf,
    staging: PathBuf,
    cap: u64,
    /// `false` for the staging-only store of `ROXPI_STORAGE=s3`: every
    /// file is staged, nothing is kept.
    keeps: bool,
    shared: Arc<Shared>,
    next_tmp: AtomicU64,
    _lock: File,
}

/// Why the cache dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use cache dir {0} (ROXPI_CACHE_DIR): {1}")]
    Io(PathBuf, io::Error),
    #[error("cache dir {0} (ROXPI_CACHE_DIR) is in use by another roxpi process (lock on {0}/roxpi.lock)")]
    Locked(PathBuf),
}

/// `<key>_<len>_<sha256>` → its parts.
fn parse_name(name: &str) -> Option<(CacheKey, u64, String)> {
    let mut parts = name.split('_');
    let key = CacheKey::parse(parts.next()?)?;
    let len = parts.next()?.parse().ok()?;
    let sha = parts.next()?;
    if parts.next().is_some() || CacheKey::parse(sha).is_none() {
        return None;
    }
    Some((key, len, sha.to_owned()))
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalStorage {
    /// Opens (creating) the cache dir, takes its lock, cleans leftovers and
    /// rebuilds the LRU from what is there.
    pub fn open(dir: &Path, cap: u64) -> Result<LocalStorage, OpenError> {
        LocalStorage::open_with(dir, cap, true)
    }

    /// The cache dir of `ROXPI_STORAGE=s3`: locked and cleaned like the
    /// local cache, but files are only staged (streamed to their clients
    /// while they go to the bucket), never kept, and the `files/` of an
    /// earlier local cache is left alone.
    pub fn staging_only(dir: &Path) -> Result<LocalStorage, OpenError> {
        LocalStorage::open_with(dir, 0, false)
    }

    // Long: opening in order: lock, tag, folders, leftovers, scan, books, trim.
    fn open_with(dir: &Path, cap: u64, keeps: bool) -> Result<LocalStorage, OpenError> {
        let io_err = |e| OpenError::Io(dir.to_owned(), e);
        fs::create_dir_all(dir).map_err(io_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("roxpi.lock"))
            .map_err(io_err)?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(OpenError::Locked(dir.to_owned())),
            Err(e) => return Err(io_err(e.into())),
        }
        let tag = dir.join("CACHEDIR.TAG");
        if !tag.exists() {
            fs::write(&tag, CACHEDIR_TAG).map_err(io_err)?;
        }
        let (files, tmp, staging) = (dir.join("files"), dir.join("tmp"), dir.join("staging"));
        let pages = dir.join("pages");
        for d in [&files, &pages, &tmp, &staging] {
            fs::create_dir_all(d).map_err(io_err)?;
        }
        remove_old_pages(dir, &pages);
        // Leftovers of a previous run: nothing there is complete.
        for d in [&tmp, &staging] {
            for entry in fs::read_dir(d).map_err(io_err)?.flatten() {
                log::info!("removing leftover {}", entry.path().display());
                let _ = fs::remove_file(entry.path());
            }
        }
        let mut found = match keeps {
            true => scan_kept(&[&files, &pages]).map_err(io_err)?,
            false => Vec::new(),
        };
        found.sort_by_key(|(mtime, ..)| *mtime);
        let mut lru = Lru {
            map: LruCache::unbounded(),
            used: 0,
            pages: 0,
            page_bytes: 0,
            reserved: 0,
            handles: LruCache::new(open_handles()),
            hot: LruCache::unbounded(),
            hot_bytes: 0,
            hot_budget: hot_budget(cap),
        };
        let now = Instant::now();
        for (modified, key, len, sha256, path) in found {
            let meta = Meta {
                len,
                sha256: sha256.into(),
                page: path.starts_with(&pages),
                path,
                touched: now,
                modified,
                handle: None,
                bytes: None,
            };
            lru.insert(key, meta);
        }
        let storage = LocalStorage {
            files,
            pages,
            tmp,
            staging,
            cap,
            keeps,
            shared: Arc::new(Shared {
                lru: Mutex::new(lru),
                evictions: AtomicU64::new(0),
            }),
            next_tmp: AtomicU64::new(0),
            _lock: lock,
        };
        // The cap may have shrunk since the last run.
        let victims = storage.make_room(&mut storage.shared.lock(), 0);
        storage.unlink(victims);
        let u = storage.usage();
        if !keeps {
            log::info!("staging dir {}: files are not kept here", dir.display());
            return Ok(storage);
        }
        log::info!(
            "file cache {}: {} files, {} bytes of {}",
            dir.display(),
            u.files,
            u.used,
            cap
        );
        Ok(storage)
    }

    /// Evicts least recently used files until `extra` more bytes fit;
    /// returns the paths to unlink after the lock is released. Their bytes
    /// stay counted (as reserved) until `unlink` gives them back, so the cap
    /// also holds while the unlinks are pending.
    fn make_room(&self, lru: &mut Lru, extra: u64) -> Vec<(PathBuf, u64)> {
        let mut victims = Vec::new();
        let mut freed = 0;
        while lru.used + lru.reserved - freed + extra > self.cap {
            let Some((key, meta)) = lru.map.pop_lru() else {
                break;
            };
            lru.handles.pop(&key);
            lru.forget_hot(&key, &meta);
            lru.count(&meta, false);
            lru.reserved += meta.len;
            freed += meta.len;
            self.shared.evictions.fetch_add(1, Ordering::Relaxed);
            victims.push((meta.path, meta.len));
        }
        victims
    }

    fn unlink(&self, victims: Vec<(PathBuf, u64)>) {
        for (path, len) in victims {
            remove_all(vec![path]);
            self.shared.release(len);
        }
    }

    /// Opens a published file for a hit and keeps it hot: a small file's
    /// bytes in memory, a larger one's handle.
    fn open_kept(&self, key: &CacheKey, path: &Path, len: u64) -> io::Result<StoredBody> {
        let mut file = File::open(path)?;
        if len > HOT_FILE {
            let file = Arc::new(file);
            self.shared.lock().keep_handle(key, &file);
            return Ok(StoredBody::Local(file));
        }
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        io::Read::read_to_end(&mut io::Read::take(&mut file, len + 1), &mut buf)?;
        if buf.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} bytes on disk, {len} expected", buf.len()),
            ));
        }
        let bytes = Bytes::from(buf);
        self.shared.lock().keep_bytes(key, &bytes);
        Ok(StoredBody::Memory(bytes))
    }

    /// A temp file that is streamed and never kept (no space reserved).
    fn staged(&self, key: &CacheKey, len: u64) -> io::Result<TempFile> {
        let path = self.staging.join(self.tmp_name(key));
        let file = create_new(&path)?;
        // Anonymous from now on: nothing to clean up, whatever happens.
        fs::remove_file(&path)?;
        Ok(TempFile::staged(Arc::new(file), key.clone(), len))
    }

    fn tmp_name(&self, key: &CacheKey) -> String {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        format!("{}.{}.{n}.part", key.as_str(), std::process::id())
    }
}

/// A kept entry found at start: its mtime, key, length, sha256 and path.
type Found = (SystemTime, CacheKey, u64, String, PathBuf);

/// Every complete entry under `dirs` (`<k0k1>/<key>_<len>_<sha256>`);
/// anything else in their subfolders is removed.
fn scan_kept(dirs: &[&Path]) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut subs: Vec<fs::DirEntry> = Vec::new();
    for d in dirs {
        subs.extend(fs::read_dir(d)?.flatten());
    }
    for sub in subs {
        let sub_name = sub.file_name().to_string_lossy().into_owned();
        let sub_ok = sub_name.len() == 2 && sub_name.bytes().all(|b| b.is_ascii_hexdigit());
        if !sub_ok || !sub.path().is_dir() {
            continue;
        }
        for entry in fs::read_dir(sub.path())?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata();
            match (parse_name(&name), meta) {
                (Some((key, len, sha)), Ok(m))
                    if m.is_file() && m.len() == len && key.as_str().starts_with(&sub_name) =>
                {
                    let mtime = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    found.push((mtime, key, len, sha, path));
                }
                _ => {
                    log::warn!("removing {} (not a complete cached file)", path.display());
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
    Ok(found)
}

/// Removes the saved pages of earlier builds (one folder per index,
/// named by 16 hex digits; `route-pages/`): their bytes were counted apart.
fn remove_old_pages(dir: &Path, pages: &Path) {
    let old = fs::read_dir(pages)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().len() == 16)
        .map(|e| e.path())
        .chain(Some(dir.join("route-pages")).filter(|p| p.is_dir()));
    for p in old {
        log::info!("removing saved pages of an earlier build: {}", p.display());
        let _ = fs::remove_dir_all(&p);
    }
}

fn remove_all(paths: Vec<PathBuf>) {
    for p in paths {
        if let Err(e) = fs::remove_file(&p) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("cannot evict {}: {e}", p.display());
            }
        }
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

impl Storage for LocalStorage {
    fn lookup(&self, key: &CacheKey) -> Lookup {
        let (path, len, sha256, touch, modified, kept) = {
            let mut lru = self.shared.lock();
            let Some(meta) = lru.map.get_mut(key) else {
                return Lookup::Miss;
            };
            let touch = meta.touched.elapsed() >= TOUCH_EVERY;
            if touch {
                meta.touched = Instant::now();
            }
            let kept = match (&meta.bytes, &meta.handle) {
                (Some(b), _) => Some(StoredBody::Memory(b.clone())),
                (None, Some(f)) => Some(StoredBody::Local(Arc::clone(f))),
                (None, None) => None,
            };
            let found = (
                // The path is needed only to open or touch the file.
                (kept.is_none() || touch).then(|| meta.path.clone()),
                meta.len,
                Arc::clone(&meta.sha256),
                touch,
                meta.modified,
                kept,
            );
            match &found.5 {
                Some(StoredBody::Memory(_)) => {
                    lru.hot.promote(key);
                }
                Some(_) => {
                    lru.handles.promote(key);
                }
                None => {}
            }
            found
        };
        let body = match (kept, &path) {
            (Some(body), _) => body,
            (None, None) => return Lookup::Miss,
            (None, Some(path)) => match self.open_kept(key, path, len) {
                Ok(body) => body,
                Err(e) => {
                    // Gone behind our back (or evicted just now): a miss.
                    log::warn!("cached file {} unreadable: {e}", path.display());
                    let mut lru = self.shared.lock();
                    if lru.map.peek(key).is_some_and(|m| m.path == *path) {
                        lru.remove(key);
                    }
                    return Lookup::Miss;
                }
            },
        };
        if let Some(path) = path.filter(|_| touch) {
            // Keeps recency across restarts (atime is unreliable).
            let _ = File::open(path).and_then(|f| f.set_modified(SystemTime::now()));
        }
        Lookup::Hit(Stored {
            body,
            len,
            sha256,
            modified,
        })
    }

    fn create(&self, item: &Item, len: u64) -> io::Result<TempFile> {
        let key = item.key();
        if len > self.cap || !self.keeps {
            return self.staged(key, len);
        }
        let (victims, fits) = {
            let mut lru = self.shared.lock();
            let v = self.make_room(&mut lru, len);
            // The victims' bytes are gone from disk before this file is
            // created (same thread, below).
            let pending: u64 = v.iter().map(|(_, l)| l).sum();
            let fits = lru.used + lru.reserved - pending + len <= self.cap;
            if fits {
                lru.reserved += len;
            }
            (v, fits)
        };
        self.unlink(victims);
        if !fits {
            // Downloads in flight already hold the space: this one is
            // streamed to its clients but not kept.
            log::info!(
                "no room for {} ({len} bytes) while other downloads run: not kept",
                key.as_str()
            );
            return self.staged(key, len);
        }
        let space: Arc<dyn Space> = self.shared.clone();
        let path = self.tmp.join(self.tmp_name(key));
        match create_new(&path) {
            Ok(file) => Ok(TempFile {
                file: Arc::new(file),
                len,
                key: key.clone(),
                page: !item.is_file(),
                path: Some(path),
                space: Some((space, len)),
            }),
            Err(e) => {
                space.release(len);
                Err(e)
            }
        }
    }

    fn commit(&self, mut temp: TempFile, sha256: &str) -> io::Result<Stored> {
        let Some(tmp_path) = temp.path.clone() else {
            // Staged: served from the temp file itself, never kept.
            return Ok(Stored {
                body: StoredBody::Local(Arc::clone(&temp.file)),
                len: temp.len,
                sha256: sha256.into(),
                modified: SystemTime::now(),
            });
        };
        // A file is durable before it is published. A saved page is not
        // synced (a page fetch or load must not wait for the disk): a page
        // damaged by a power cut fails its length check at restart or its
        // parse on load, and is fetched again.
        if !temp.page {
            temp.file.sync_all()?;
        }
        let key = temp.key.clone();
        let root = if temp.page { &self.pages } else { &self.files };
        let dir = root.join(&key.as_str()[..2]);
        fs::create_dir_all(&dir)?;
        let final_path = dir.join(format!("{}_{}_{sha256}", key.as_str(), temp.len));
        fs::rename(&tmp_path, &final_path)?;
        if !temp.page {
            fsync_dir(&dir)?;
        }
        // Published: the temp file's drop must neither delete nor release.
        temp.path = None;
        let (_, reserved) = temp
            .space
            .take()
            .unwrap_or_else(|| (self.shared.clone(), 0));
        let replaced = {
            let mut lru = self.shared.lock();
            lru.reserved = lru.reserved.saturating_sub(reserved);
            let old = lru.remove(&key);
            lru.insert(
                key,
                Meta {
                    len: temp.len,
                    sha256: sha256.into(),
                    path: final_path.clone(),
                    touched: Instant::now(),
                    modified: SystemTime::now(),
                    handle: None,
                    bytes: None,
                    page: temp.page,
                },
            );
            old.map(|m| m.path)
        };
        if let Some(p) = replaced.filter(|p| *p != final_path) {
            remove_all(vec![p]);
        }
        let modified = temp
            .file
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Stored {
            body: StoredBody::Local(Arc::clone(&temp.file)),
            len: temp.len,
            sha256: sha256.into(),
            modified,
        })
    }

    fn remove(&self, item: &Item) {
        let gone = self.shared.lock().remove(item.key()).map(|m| m.path);
        remove_all(gone.into_iter().collect());
    }

    fn usage(&self) -> Usage {
        let lru = self.shared.lock();
        Usage {
            files: lru.map.len(),
            used: lru.used,
            pages: lru.pages,
            page_bytes: lru.page_bytes,
            reserved: lru.reserved,
            cap: self.cap,
            evictions: self.shared.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
