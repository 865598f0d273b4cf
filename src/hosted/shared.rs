//! Hosted files in the bucket (`ROXPI_STORAGE=s3` or `tiered`), so that a
//! fleet shares them. The bucket holds the disk's layout under
//! `<prefix>hosted/`: `<index>/<project>/<file>`, its `.metadata`, and its
//! `.json` record, written last (the commit point there too).
//!
//! - An upload is committed on disk, then published: the file PUT and read
//!   back with its sha256 checked, its metadata, then its record. The
//!   client's 200 waits for that, parked (no worker waits); a failed
//!   publish takes the local commit back and answers 503.
//! - Every node mirrors the bucket's records it lacks (`roxpi-hosted-sync`,
//!   every `sync_every`): the file fetched into staging with its sha256
//!   checked against the record, then committed as an upload is. Yank
//!   changes follow the same way. Hosted files are then served from disk,
//!   also offline.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::store::Record;
use super::Hosted;
use crate::http::{Later, Response, Waker};
use crate::pypi::ProjectName;
use crate::storage::s3::Bucket;

/// Most objects one sync lists (a bucket's count is a claim: the listing
/// stops there, with a warning).
const MAX_KEYS: usize = 200_000;
/// Largest record or `.metadata` object read.
const MAX_SMALL: u64 = 16 << 20;

/// What the publish thread is asked.
pub(super) enum Job {
    /// An upload committed on disk: publish it and tell `done`.
    Upload {
        index: String,
        project: ProjectName,
        record: Record,
        done: Arc<Done>,
    },
    /// A record changed on disk (a yank): publish it.
    Record {
        index: String,
        project: ProjectName,
        record: Record,
    },
}

/// A publish's outcome (once known).
type Outcome = Option<Result<(), String>>;

/// A publish's outcome, and the parked request to wake.
#[derive(Default)]
pub(super) struct Done {
    state: Mutex<(Outcome, Option<Waker>)>,
}

impl Done {
    fn finish(&self, r: Result<(), String>) {
        let waker = {
            let mut s = crate::lock(&self.state);
            s.0 = Some(r);
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn subscribe(&self, w: Waker) {
        let ready = {
            let mut s = crate::lock(&self.state);
            if s.0.is_none() {
                s.1 = Some(w.clone());
            }
            s.0.is_some()
        };
        if ready {
            w.wake();
        }
    }

    fn result(&self) -> Outcome {
        crate::lock(&self.state).0.clone()
    }
}

/// The bucket side of the hosted files.
pub(super) struct Sharing {
    pub bucket: Arc<Bucket>,
    pub jobs: crossbeam_channel::Sender<Job>,
}

impl Hosted {
    /// Shares the hosted files through `bucket`: starts the publish and
    /// sync threads (a sync every `every`).
    pub fn share(self: &Arc<Self>, bucket: Arc<Bucket>, every: Duration) -> std::io::Result<()> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        if self.sharing.set(Sharing { bucket, jobs: tx }).is_err() {
            return Ok(());
        }
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("roxpi-hosted-publish".into())
            .spawn(move || {
                for job in rx {
                    let Some(h) = weak.upgrade() else { return };
                    h.run(job);
                }
            })?;
        // A node serves nothing before it knows the fleet's hosted names
        // (a listing, no file): else a fresh node would take a claimed name
        // from the upstream. The files follow in the background.
        match self.listing() {
            Ok(keys) => log::info!("hosted: the bucket holds {} record(s)", keys.len()),
            Err(e) => log::warn!(
                "hosted: the bucket could not be listed at start ({e}); names other nodes host are not claimed until it can"
            ),
        }
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("roxpi-hosted-sync".into())
            .spawn(move || loop {
                let Some(h) = weak.upgrade() else { return };
                let started = Instant::now();
                match h.sync() {
                    Ok(0) => {}
                    Ok(n) => log::info!(
                        "hosted: {n} file(s) taken from the bucket in {:?}",
                        started.elapsed()
                    ),
                    Err(e) => log::warn!("hosted: syncing with the bucket failed: {e}"),
                }
                drop(h);
                std::thread::sleep(every);
            })?;
        Ok(())
    }

    /// The answer to an upload committed on disk: at once without a
    /// bucket, else once it is published (parked meanwhile).
    pub(super) fn published(
        &self,
        index: &str,
        project: &ProjectName,
        record: Record,
        deadline: Instant,
    ) -> Response {
        let Some(sharing) = self.sharing.get() else {
            return Response::text(200, "OK\n");
        };
        let done = Arc::new(Done::default());
        let job = Job::Upload {
            index: index.to_owned(),
            project: project.clone(),
            record,
            done: Arc::clone(&done),
        };
        if sharing.jobs.send(job).is_err() {
            return Response::text(503, "the bucket publisher stopped\n");
        }
        let watched = Arc::clone(&done);
        Response::later(Later {
            deadline,
            subscribe: Box::new(move |w| watched.subscribe(w)),
            resume: Box::new(move |_| {
                match done.result() {
                Some(Ok(())) => Response::text(200, "OK\n"),
                Some(Err(e)) => Response::text(
                    503,
                    format!("the bucket did not take the upload ({e}); nothing was kept, retry\n"),
                )
                .header("Retry-After", "5"),
                None => Response::text(
                    504,
                    "the upload is kept here but not yet in the bucket; other nodes get it once it is\n",
                ),
            }
            }),
        })
    }

    /// A changed record goes to the bucket too (without waiting).
    pub(super) fn republish(&self, index: &str, project: &ProjectName, record: Record) {
        if let Some(s) = self.sharing.get() {
            let _ = s.jobs.send(Job::Record {
                index: index.to_owned(),
                project: project.clone(),
                record,
            });
        }
    }

    fn key(&self, bucket: &Bucket, index: &str, project: &ProjectName, name: &str) -> String {
        format!("{}hosted/{index}/{project}/{name}", bucket.prefix())
    }

    fn run(&self, job: Job) {
        let Some(sharing) = self.sharing.get() else {
            return;
        };
        let bucket = &sharing.bucket;
        match job {
            Job::Upload {
                index,
                project,
                record,
                done,
            } => {
                let r = self.publish(bucket, &index, &project, &record);
                if let Err(e) = &r {
                    log::error!(
                        "hosted {index}: {project}/{} not published to the bucket: {e}; taken back",
                        record.filename
                    );
                    if let Err(e) = self.store.remove(&index, &project, &record.filename) {
                        log::error!("hosted {index}: taking back {}: {e}", record.filename);
                    }
                    self.stats.files.fetch_sub(1, Ordering::Relaxed);
                    self.stats.bytes.fetch_sub(record.size, Ordering::Relaxed);
                    self.note_local(&index, &project);
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                done.finish(r);
            }
            Job::Record {
                index,
                project,
                record,
            } => {
                let key = self.key(
                    bucket,
                    &index,
                    &project,
                    &format!("{}.json", record.filename),
                );
                let r = serde_json::to_vec_pretty(&record)
                    .map_err(|e| e.to_string())
                    .and_then(|json| bucket.put_bytes(&key, &json).map_err(|e| e.to_string()));
                if let Err(e) = r {
                    log::warn!(
                        "hosted {index}: record of {} not published: {e}",
                        record.filename
                    );
                }
            }
        }
    }

    /// The file (read back and checked), its metadata, then its record.
    fn publish(
        &self,
        bucket: &Bucket,
        index: &str,
        project: &ProjectName,
        record: &Record,
    ) -> Result<(), String> {
        let name = &record.filename;
        let path = self
            .store
            .path(index, project, name)
            .ok_or("the committed file is gone")?;
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let key = self.key(bucket, index, project, name);
        bucket
            .put_file(&key, &file, record.size)
            .map_err(|e| e.to_string())?;
        // Read back: the bucket holds exactly these bytes.
        let obj = bucket
            .get(&key, None)
            .map_err(|e| e.to_string())?
            .ok_or("the object is not there after its PUT")?;
        let (len, sha) = digest(obj.body.take(record.size.saturating_add(1)))?;
        if len != record.size || sha != record.sha256 {
            return Err(format!(
                "the object read back has {len} bytes with sha256 {sha}, not {} with {}",
                record.size, record.sha256
            ));
        }
        if record.metadata_sha256.is_some() {
            let mut m = path.into_os_string();
            m.push(".metadata");
            let bytes = std::fs::read(&m).map_err(|e| e.to_string())?;
            bucket
                .put_bytes(&format!("{key}.metadata"), &bytes)
                .map_err(|e| e.to_string())?;
        }
        let json = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
        bucket
            .put_bytes(&format!("{key}.json"), &json)
            .map_err(|e| e.to_string())
    }

    /// The bucket's records (index, project, file name, key); the names
    /// they claim are noted for `claims`.
    fn listing(&self) -> Result<Vec<(String, ProjectName, String, String)>, String> {
        let Some(sharing) = self.sharing.get() else {
            return Ok(Vec::new());
        };
        let bucket = &sharing.bucket;
        let base = format!("{}hosted/", bucket.prefix());
        let keys = bucket.list(&base, MAX_KEYS).map_err(|e| e.to_string())?;
        if keys.len() >= MAX_KEYS {
            log::warn!("hosted: the bucket lists {MAX_KEYS} objects or more under {base}; the rest are not taken");
        }
        let mut records = Vec::new();
        for (key, _) in keys {
            let Some(rest) = key
                .strip_prefix(&base)
                .and_then(|k| k.strip_suffix(".json"))
            else {
                continue;
            };
            let mut parts = rest.splitn(3, '/');
            let (Some(index), Some(project), Some(name)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(project) = ProjectName::parse(project) else {
                continue;
            };
            if self.index(index).is_none() || name.contains('/') {
                continue;
            }
            records.push((index.to_owned(), project, name.to_owned(), key));
        }
        let mut names = super::Hosts::new();
        for (index, project, _, _) in &records {
            names
                .entry(project.clone())
                .or_default()
                .insert(index.clone());
        }
        *crate::lock(&self.remote) = names;
        Ok(records)
    }

    /// Takes every record of the bucket this node lacks (or whose yank
    /// changed). Returns the files taken.
    fn sync(&self) -> Result<usize, String> {
        let Some(sharing) = self.sharing.get() else {
            return Ok(0);
        };
        let bucket = &sharing.bucket;
        let mut taken = 0;
        for (index, project, name, key) in self.listing()? {
            let (index, name) = (index.as_str(), name.as_str());
            let local = self.store.record(index, &project, name);
            let remote: Record = match bucket.get_bytes(&key, MAX_SMALL) {
                Ok(Some(b)) => match serde_json::from_slice(&b) {
                    Ok(r) => r,
                    Err(e) => {
                        log::warn!("hosted: {key}: not a record: {e}");
                        continue;
                    }
                },
                Ok(None) => continue,
                Err(e) => return Err(e.to_string()),
            };
            if remote.filename != name {
                continue;
            }
            match local {
                Some(l) if l.sha256 == remote.sha256 => {
                    if l.yanked != remote.yanked {
                        let _ = self.store.set_yanked(index, &project, name, remote.yanked);
                        self.generation.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Some(_) => log::warn!(
                    "hosted {index}: {project}/{name} differs between this node and the bucket; this node's copy is kept"
                ),
                None => {
                    self.take(bucket, index, &project, &remote)?;
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }

    /// One file from the bucket, checked, committed on disk.
    fn take(
        &self,
        bucket: &Bucket,
        index: &str,
        project: &ProjectName,
        record: &Record,
    ) -> Result<(), String> {
        let check = super::check::parse_filename(&record.filename).map_err(|r| r.0)?;
        if check.project != *project {
            return Err(format!("{}: not a file of {project}", record.filename));
        }
        let key = self.key(bucket, index, project, &record.filename);
        let obj = bucket
            .get(&key, None)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{key}: the record is there, the file is not"))?;
        let (path, mut file) = self.store.stage().map_err(|e| e.to_string())?;
        let staged = scopeguard(path.clone());
        let mut sha = Sha256::new();
        let mut len = 0u64;
        let mut body = obj.body.take(record.size.saturating_add(1));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = body.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            len += n as u64;
            file.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        }
        let got = hex::encode(sha.finalize());
        if len != record.size || got != record.sha256 {
            return Err(format!(
                "{key}: {len} bytes with sha256 {got}, the record says {} with {}",
                record.size, record.sha256
            ));
        }
        let metadata = match &record.metadata_sha256 {
            None => None,
            Some(want) => {
                let m = bucket
                    .get_bytes(&format!("{key}.metadata"), MAX_SMALL)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{key}.metadata is missing"))?;
                if hex::encode(Sha256::digest(&m)) != *want {
                    return Err(format!("{key}.metadata does not match its record"));
                }
                Some(m)
            }
        };
        let committed = self
            .store
            .commit(index, project, &path, record, metadata.as_deref())
            .map_err(|e| e.to_string())?;
        drop(staged);
        if committed == super::store::Committed::Stored {
            self.stats.files.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes.fetch_add(record.size, Ordering::Relaxed);
        }
        self.note_local(index, project);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// Removes a staging file when dropped (it is gone once committed).
struct Staged(std::path::PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scopeguard(path: std::path::PathBuf) -> Staged {
    Staged(path)
}

/// Length and sha256 of a stream.
fn digest(mut r: impl Read) -> Result<(u64, String), String> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok((len, hex::encode(sha.finalize())));
        }
        sha.update(&buf[..n]);
        len += n as u64;
    }
}
