//! When roxpi first saw each file that has no upload time, for
//! `untimed = "first-seen"`: kept in `<cache dir>/first-seen` (one line
//! per file: unix seconds, a space, the file's cache key), read at start,
//! appended as new files appear on pages. A damaged line is skipped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::storage::CacheKey;

#[derive(Debug, Default)]
pub struct FirstSeen {
    seen: Mutex<HashMap<CacheKey, SystemTime>>,
    /// The record, created at the first sighting (`None`: memory only).
    path: Option<PathBuf>,
    log: Mutex<Option<File>>,
}

/// One line of the file (pure).
fn parse_line(line: &str) -> Option<(CacheKey, SystemTime)> {
    let (secs, key) = line.trim().split_once(' ')?;
    let secs: u64 = secs.parse().ok()?;
    Some((
        CacheKey::parse(key)?,
        UNIX_EPOCH + Duration::from_secs(secs),
    ))
}

impl FirstSeen {
    /// The record at `path`: read if it exists, created at the first
    /// sighting.
    pub fn open(path: &Path) -> io::Result<FirstSeen> {
        let mut seen = HashMap::new();
        match File::open(path) {
            Ok(f) => {
                for line in io::BufReader::new(f).lines() {
                    if let Some((k, t)) = parse_line(&line?) {
                        seen.entry(k).or_insert(t);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(FirstSeen {
            seen: Mutex::new(seen),
            path: Some(path.to_owned()),
            log: Mutex::new(None),
        })
    }

    /// When `key` was first seen; `now` (recorded) if never before.
    pub fn get_or_record(&self, key: &CacheKey, now: SystemTime) -> SystemTime {
        let mut seen = crate::lock(&self.seen);
        if let Some(t) = seen.get(key) {
            return *t;
        }
        seen.insert(key.clone(), now);
        drop(seen);
        if let Some(path) = &self.path {
            let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let mut log = crate::lock(&self.log);
            if log.is_none() {
                *log = OpenOptions::new().create(true).append(true).open(path).ok();
            }
            let written = match log.as_mut() {
                Some(f) => writeln!(f, "{secs} {}", key.as_str()),
                None => Err(io::Error::other("cannot open the record")),
            };
            if let Err(e) = written {
                log::warn!(
                    "cannot record when a file was first seen ({}): {e}",
                    path.display()
                );
            }
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sightings_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("first-seen");
        let key = CacheKey::parse(&"ab".repeat(32)).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let f = FirstSeen::open(&path).unwrap();
        assert!(!path.exists(), "created at the first sighting only");
        assert_eq!(f.get_or_record(&key, t0), t0);
        assert_eq!(f.get_or_record(&key, t0 + Duration::from_secs(99)), t0);
        drop(f);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"garbage\n")
            .unwrap();
        let again = FirstSeen::open(&path).unwrap();
        assert_eq!(
            again.get_or_record(&key, t0 + Duration::from_secs(5000)),
            t0
        );
        assert_eq!(parse_line("12 nothex"), None);
    }
}
