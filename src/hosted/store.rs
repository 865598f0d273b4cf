//! Where hosted files live on disk: a plain layout an operator can back up
//! with `cp -a` or `rclone`:
//!
//! ```text
//! <root>/<index>/<project>/<filename>            the file
//! <root>/<index>/<project>/<filename>.metadata   a wheel's METADATA (PEP 658)
//! <root>/<index>/<project>/<filename>.json       its record: the commit point
//! <root>/.staging/                               uploads being received
//! ```
//!
//! A file is listed only once its record exists, and the record is renamed
//! into place last (after the file and its metadata, each fsynced): a
//! crash at any point leaves no listed file without its bytes. What a
//! crash leaves behind (staging files, files without a record) is removed
//! at `open`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::pypi::ProjectName;

/// What roxpi keeps about a hosted file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    /// RFC 3339, UTC.
    pub upload_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_python: Option<String>,
    /// The sha256 of the `.metadata` beside it (wheels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_sha256: Option<String>,
    /// Yanked (PEP 592), with its reason (may be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yanked: Option<String>,
}

/// What a commit did.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    Stored,
    /// The same file name with the same bytes was there already.
    AlreadyThere,
}

/// Why a commit was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The same file name with other bytes (PyPI: "File already exists").
    #[error("File already exists: {0} was uploaded before with other contents")]
    Conflict(String),
    #[error("invalid hosted index name {0:?}")]
    BadIndex(String),
    #[error("storing the upload failed: {0}")]
    Io(#[from] io::Error),
}

/// The hosted files under one root.
pub struct HostedStore {
    root: PathBuf,
    next: AtomicU64,
    /// Held while a record is checked and written (commit, yank, removal):
    /// two uploads of one file name never interleave.
    records: std::sync::Mutex<()>,
}

const STAGING: &str = ".staging";
const RECORD: &str = ".json";
const METADATA: &str = ".metadata";

/// Whether `name` may name a hosted index (a directory): lower-case
/// letters, digits, `-` and `_`, not empty, not starting with `.`.
pub fn valid_index(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl HostedStore {
    /// Opens (creating) `root`, removing what an interrupted upload left.
    pub fn open(root: &Path) -> io::Result<HostedStore> {
        fs::create_dir_all(root.join(STAGING))?;
        for e in fs::read_dir(root.join(STAGING))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        for index in fs::read_dir(root)?.flatten().filter(|e| e.path().is_dir()) {
            if index.file_name() == STAGING {
                continue;
            }
            for project in fs::read_dir(index.path())?.flatten() {
                sweep(&project.path())?;
            }
        }
        Ok(HostedStore {
            root: root.to_owned(),
            next: AtomicU64::new(0),
            records: std::sync::Mutex::new(()),
        })
    }

    /// A new staging file for an upload being received (removed at the
    /// next `open` if it is never committed).
    pub fn stage(&self) -> io::Result<(PathBuf, File)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join(STAGING)
            .join(format!("{}-{n}.part", std::process::id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    fn dir(&self, index: &str, project: &ProjectName) -> Result<PathBuf, CommitError> {
        if !valid_index(index) {
            return Err(CommitError::BadIndex(index.to_owned()));
        }
        Ok(self.root.join(index).join(project.as_str()))
    }

    /// Moves a staged, checked upload into place: the file, its metadata,
    /// then its record (the commit point), each fsynced.
    pub fn commit(
        &self,
        index: &str,
        project: &ProjectName,
        staged: &Path,
        record: &Record,
        metadata: Option<&[u8]>,
    ) -> Result<Committed, CommitError> {
        let dir = self.dir(index, project)?;
        let _one_at_a_time = crate::lock(&self.records);
        fs::create_dir_all(&dir)?;
        let target = dir.join(&record.filename);
        if let Some(old) = read_record(&dir.join(format!("{}{RECORD}", record.filename)))? {
            let _ = fs::remove_file(staged);
            return if old.sha256 == record.sha256 {
                Ok(Committed::AlreadyThere)
            } else {
                Err(CommitError::Conflict(record.filename.clone()))
            };
        }
        File::open(staged)?.sync_all()?;
        fs::rename(staged, &target)?;
        if let Some(m) = metadata {
            write_atomically(
                &self.root,
                &dir.join(format!("{}{METADATA}", record.filename)),
                m,
            )?;
        }
        let json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        write_atomically(
            &self.root,
            &dir.join(format!("{}{RECORD}", record.filename)),
            &json,
        )?;
        File::open(&dir)?.sync_all()?;
        Ok(Committed::Stored)
    }

    /// The committed files of a project, by file name.
    pub fn list(&self, index: &str, project: &ProjectName) -> io::Result<Vec<Record>> {
        let Ok(dir) = self.dir(index, project) else {
            return Ok(Vec::new());
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(RECORD) {
                if let Some(r) = read_record(&e.path())? {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| a.filename.cmp(&b.filename));
        Ok(out)
    }

    /// The projects of an index with at least one committed file.
    pub fn projects(&self, index: &str) -> Vec<ProjectName> {
        let Ok(dir) = self.root_of(index) else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| ProjectName::parse(&e.file_name().to_string_lossy()).ok())
            .filter(|p| self.list(index, p).is_ok_and(|l| !l.is_empty()))
            .collect()
    }

    fn root_of(&self, index: &str) -> Result<PathBuf, CommitError> {
        if !valid_index(index) {
            return Err(CommitError::BadIndex(index.to_owned()));
        }
        Ok(self.root.join(index))
    }

    /// The path of a committed file (`None` if it has no record).
    pub fn path(&self, index: &str, project: &ProjectName, filename: &str) -> Option<PathBuf> {
        let dir = self.dir(index, project).ok()?;
        if filename.contains(['/', '\\']) || filename.starts_with('.') {
            return None;
        }
        dir.join(format!("{filename}{RECORD}"))
            .is_file()
            .then(|| dir.join(filename))
    }

    /// The record of a committed file.
    pub fn record(&self, index: &str, project: &ProjectName, filename: &str) -> Option<Record> {
        let dir = self.dir(index, project).ok()?;
        if filename.contains(['/', '\\']) || filename.starts_with('.') {
            return None;
        }
        read_record(&dir.join(format!("{filename}{RECORD}"))).ok()?
    }

    /// Takes a committed file back: its record first (it is no longer
    /// listed), then its bytes.
    pub fn remove(&self, index: &str, project: &ProjectName, filename: &str) -> io::Result<()> {
        let Ok(dir) = self.dir(index, project) else {
            return Ok(());
        };
        if filename.contains(['/', '\\']) || filename.starts_with('.') {
            return Ok(());
        }
        let _one_at_a_time = crate::lock(&self.records);
        for suffix in [RECORD, METADATA, ""] {
            match fs::remove_file(dir.join(format!("{filename}{suffix}"))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Yanks (`Some(reason)`) or unyanks (`None`) a committed file;
    /// `false` if there is no such file.
    pub fn set_yanked(
        &self,
        index: &str,
        project: &ProjectName,
        filename: &str,
        yanked: Option<String>,
    ) -> Result<bool, CommitError> {
        let dir = self.dir(index, project)?;
        if filename.contains(['/', '\\']) || filename.starts_with('.') {
            return Ok(false);
        }
        let _one_at_a_time = crate::lock(&self.records);
        let at = dir.join(format!("{filename}{RECORD}"));
        let Some(mut record) = read_record(&at)? else {
            return Ok(false);
        };
        record.yanked = yanked;
        let json = serde_json::to_vec_pretty(&record).map_err(io::Error::other)?;
        write_atomically(&self.root, &at, &json)?;
        Ok(true)
    }
}

/// A record, or `None` when there is none (a broken one is an error).
fn read_record(path: &Path) -> io::Result<Option<Record>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` through a staged file, fsynced, then renamed.
fn write_atomically(root: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    static N: AtomicU64 = AtomicU64::new(0);
    let tmp = root.join(STAGING).join(format!(
        "{}-w{}.part",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Removes files a crash left without a record in one project directory.
fn sweep(dir: &Path) -> io::Result<()> {
    let names: Vec<String> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for name in &names {
        let base = name
            .strip_suffix(METADATA)
            .unwrap_or(name.strip_suffix(RECORD).unwrap_or(name));
        if !names.iter().any(|n| *n == format!("{base}{RECORD}")) {
            let _ = fs::remove_file(dir.join(name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(filename: &str, sha: &str) -> Record {
        Record {
            filename: filename.into(),
            sha256: sha.into(),
            size: 3,
            upload_time: "2026-12-03T00:00:00Z".into(),
            requires_python: Some(">=3.8".into()),
            metadata_sha256: None,
            yanked: None,
        }
    }

    fn staged(store: &HostedStore, bytes: &[u8]) -> PathBuf {
        let (path, mut f) = store.stage().unwrap();
        f.write_all(bytes).unwrap();
        path
    }

    #[test]
    fn commits_lists_refuses_other_bytes_and_yanks() {
        let dir = tempfile::tempdir().unwrap();
        let store = HostedStore::open(dir.path()).unwrap();
        let p = ProjectName::parse("acme-lib").unwrap();
        let wheel = "acme_lib-1.0-py3-none-any.whl";
        let s = staged(&store, b"abc");
        let got = store
            .commit(
                "local",
                &p,
                &s,
                &record(wheel, "aa"),
                Some(b"Name: acme-lib\n"),
            )
            .unwrap();
        assert_eq!(got, Committed::Stored);
        assert!(!s.exists());
        let file = store.path("local", &p, wheel).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"abc");
        assert_eq!(
            fs::read(
                dir.path()
                    .join("local/acme-lib")
                    .join(format!("{wheel}.metadata"))
            )
            .unwrap(),
            b"Name: acme-lib\n"
        );
        assert_eq!(store.list("local", &p).unwrap(), [record(wheel, "aa")]);

        // The same bytes again: fine; other bytes: refused, nothing changes.
        let s = staged(&store, b"abc");
        assert_eq!(
            store
                .commit("local", &p, &s, &record(wheel, "aa"), None)
                .unwrap(),
            Committed::AlreadyThere
        );
        let s = staged(&store, b"xyz");
        let e = store
            .commit("local", &p, &s, &record(wheel, "bb"), None)
            .unwrap_err();
        assert!(matches!(e, CommitError::Conflict(_)), "{e}");
        assert!(!s.exists(), "a refused upload leaves nothing in staging");
        assert_eq!(fs::read(&file).unwrap(), b"abc");

        assert!(store
            .set_yanked("local", &p, wheel, Some("broken".into()))
            .unwrap());
        assert_eq!(
            store.list("local", &p).unwrap()[0].yanked.as_deref(),
            Some("broken")
        );
        assert!(!store.set_yanked("local", &p, "nope.whl", None).unwrap());

        for bad in ["", "../x", "Local", ".staging"] {
            let s = staged(&store, b"abc");
            assert!(matches!(
                store.commit(bad, &p, &s, &record(wheel, "aa"), None),
                Err(CommitError::BadIndex(_))
            ));
        }
        assert_eq!(store.path("local", &p, "../../etc/passwd"), None);
    }

    #[test]
    fn concurrent_uploads_of_one_name_keep_one_file_and_its_own_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(HostedStore::open(dir.path()).unwrap());
        let p = ProjectName::parse("acme-lib").unwrap();
        let wheel = "acme_lib-1.0-py3-none-any.whl";
        let results: Vec<(String, Result<Committed, String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let (store, p) = (std::sync::Arc::clone(&store), p.clone());
                    scope.spawn(move || {
                        let bytes = vec![b'a' + i; 100_000];
                        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                        let s = staged(&store, &bytes);
                        let r = store
                            .commit("local", &p, &s, &record(wheel, &sha), None)
                            .map_err(|e| e.to_string());
                        (sha, r)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let stored: Vec<&String> = results
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Committed::Stored)))
            .map(|(sha, _)| sha)
            .collect();
        assert_eq!(stored.len(), 1, "{results:?}");
        let kept = store.list("local", &p).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            &kept[0].sha256, stored[0],
            "the record is the stored file's"
        );
        let bytes = fs::read(store.path("local", &p, wheel).unwrap()).unwrap();
        assert_eq!(
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            *stored[0],
            "the file is the recorded one"
        );
    }

    #[test]
    fn what_a_crash_leaves_is_invisible_and_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = HostedStore::open(dir.path()).unwrap();
        let p = ProjectName::parse("acme-lib").unwrap();
        let kept = "acme_lib-1.0.tar.gz";
        let s = staged(&store, b"kept");
        store
            .commit("local", &p, &s, &record(kept, "aa"), None)
            .unwrap();
        // A crash after the file's rename, before its record: and one
        // in the middle of receiving.
        let half = "acme_lib-2.0.tar.gz";
        fs::write(dir.path().join("local/acme-lib").join(half), b"half").unwrap();
        let receiving = staged(&store, b"partial");
        assert_eq!(store.path("local", &p, half), None);
        assert_eq!(store.list("local", &p).unwrap().len(), 1);
        drop(store);

        let store = HostedStore::open(dir.path()).unwrap();
        assert!(!dir.path().join("local/acme-lib").join(half).exists());
        assert!(!receiving.exists());
        assert_eq!(store.list("local", &p).unwrap(), [record(kept, "aa")]);
        assert!(store.path("local", &p, kept).is_some());
    }
}
