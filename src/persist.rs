//! The last good copy of every project page, kept on disk in the cache dir
//! (`pages/<index>/<project>`), so that a restarted roxpi with its upstream
//! down — or in `ROXPI_OFFLINE` mode — still serves every page (and so every
//! cached file) it had. Each file holds the upstream's answer as received
//! (decoded), behind a one-line header, and is parsed again on load: the
//! parser stays the single source of truth. Files are replaced by atomic
//! rename; a damaged one is ignored and replaced by the next fetch.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use url::Url;

use crate::origin::{Index, RawPage};
use crate::pypi::{parse_project_page, Format, ProjectName, ProjectPage};

const MAGIC: &str = "roxpi-page-v1";

/// Saved pages not refreshed for this long are deleted at startup: the
/// dir holds what is in use, not every project ever asked for.
const KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

pub struct PageStore {
    dir: PathBuf,
}

/// A page read back from disk and how old it is.
pub struct Persisted {
    pub page: ProjectPage,
    pub age: Duration,
}

impl PageStore {
    /// `dir` is `<cache dir>/pages`.
    pub fn open(dir: &Path) -> io::Result<PageStore> {
        fs::create_dir_all(dir)?;
        prune(dir, KEEP_FOR);
        Ok(PageStore {
            dir: dir.to_owned(),
        })
    }

    /// One directory per index URL (without credentials), so a changed
    /// configuration never mixes pages of different indexes.
    fn path(&self, index: &Index, name: &ProjectName) -> PathBuf {
        let id = hex::encode(Sha256::digest(index.url.as_str().as_bytes()));
        self.dir.join(&id[..16]).join(name.as_str())
    }

    pub fn save(&self, index: &Index, name: &ProjectName, raw: &RawPage) -> io::Result<()> {
        let path = self.path(index, name);
        let dir = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(dir)?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let format = match raw.format {
            Format::Json => "json",
            Format::Html => "html",
        };
        let mut data = format!("{MAGIC} {format} {secs} {}\n", raw.url).into_bytes();
        data.extend_from_slice(&raw.body);
        let tmp = dir.join(format!(".{}.{}.tmp", name.as_str(), std::process::id()));
        fs::write(&tmp, &data)?;
        fs::rename(&tmp, &path)
    }

    pub fn remove(&self, index: &Index, name: &ProjectName) {
        let _ = fs::remove_file(self.path(index, name));
    }

    pub fn load(&self, index: &Index, name: &ProjectName) -> Option<Persisted> {
        let path = self.path(index, name);
        let data = fs::read(&path).ok()?;
        let parsed = parse_saved(&data);
        if parsed.is_none() {
            log::warn!("ignoring damaged saved page {}", path.display());
        }
        parsed
    }
}

/// Deletes saved pages (and leftover temp files) older than `keep`. Only
/// the two levels of roxpi's own layout are looked at.
fn prune(dir: &Path, keep: Duration) {
    let now = SystemTime::now();
    let Ok(indexes) = fs::read_dir(dir) else {
        return;
    };
    for index in indexes.flatten() {
        let Ok(pages) = fs::read_dir(index.path()) else {
            continue;
        };
        for page in pages.flatten() {
            let stale = page
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > keep)
                .unwrap_or(false);
            let temp = page.file_name().to_string_lossy().ends_with(".tmp");
            if stale || temp {
                let _ = fs::remove_file(page.path());
            }
        }
    }
}

/// Parses a saved page (pure).
fn parse_saved(data: &[u8]) -> Option<Persisted> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&data[..nl]).ok()?;
    let mut parts = header.splitn(4, ' ');
    if parts.next()? != MAGIC {
        return None;
    }
    let format = match parts.next()? {
        "json" => Format::Json,
        "html" => Format::Html,
        _ => return None,
    };
    let secs: u64 = parts.next()?.parse().ok()?;
    let url = Url::parse(parts.next()?).ok()?;
    let page = parse_project_page(&data[nl + 1..], format, &url).ok()?;
    let saved = UNIX_EPOCH + Duration::from_secs(secs);
    let age = SystemTime::now().duration_since(saved).unwrap_or_default();
    Some(Persisted { page, age })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        Index::new(
            crate::origin::IndexId::ROOT,
            &crate::config::IndexConfig {
                url: Url::parse("https://u:p@pypi.example/simple/").unwrap(),
                ttl: Duration::from_secs(60),
            },
        )
    }

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = PageStore::open(dir.path()).unwrap();
        let name = ProjectName::parse("Demo.Pkg").unwrap();
        let raw = RawPage {
            format: Format::Html,
            url: Url::parse("https://pypi.example/simple/demo-pkg/").unwrap(),
            body: b"<a href='../../f/demo-1.0.tar.gz#sha256=aa'>demo-1.0.tar.gz</a>".to_vec(),
        };
        store.save(&index(), &name, &raw).unwrap();
        let got = store.load(&index(), &name).expect("saved page");
        assert_eq!(got.page.files.len(), 1);
        assert_eq!(
            got.page.files[0].url.as_str(),
            "https://pypi.example/f/demo-1.0.tar.gz"
        );
        assert!(got.age < Duration::from_secs(5));
        // No credentials on disk.
        let text =
            String::from_utf8_lossy(&fs::read(store.path(&index(), &name)).unwrap()).into_owned();
        assert!(!text.contains("u:p@"));
        for damaged in [
            &b""[..],
            b"garbage",
            b"roxpi-page-v1 xml 1 https://x/\nbody",
            b"roxpi-page-v1 json 1 https://x/\n{broken",
        ] {
            assert!(parse_saved(damaged).is_none());
        }
        store.remove(&index(), &name);
        assert!(store.load(&index(), &name).is_none());
    }

    #[test]
    fn old_pages_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = PageStore::open(dir.path()).unwrap();
        let raw = RawPage {
            format: Format::Html,
            url: Url::parse("https://pypi.example/simple/a/").unwrap(),
            body: b"<a href='a-1.tar.gz'>a-1.tar.gz</a>".to_vec(),
        };
        let (old, new) = (
            ProjectName::parse("old").unwrap(),
            ProjectName::parse("new").unwrap(),
        );
        store.save(&index(), &old, &raw).unwrap();
        store.save(&index(), &new, &raw).unwrap();
        let old_path = store.path(&index(), &old);
        let long_ago = SystemTime::now() - Duration::from_secs(40 * 24 * 3600);
        fs::File::options()
            .write(true)
            .open(&old_path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let store = PageStore::open(dir.path()).unwrap();
        assert!(store.load(&index(), &old).is_none(), "pruned");
        assert!(store.load(&index(), &new).is_some(), "kept");
    }
}
