//! The parsed model of a project page: one list of file entries keeping
//! every field of the simple API (PEP 503/592/629/658/691/700/740/792),
//! whatever format the upstream used. Pages are rendered from this model.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use url::Url;

/// A distribution filename: the last segment of a file URL, decoded once.
/// Never empty, `.` or `..`, and free of `/`, `\`, NUL and control
/// characters, so it can never act as a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Filename(Box<str>);

/// Longest filename accepted.
pub const MAX_FILENAME_LEN: usize = 255;

impl Filename {
    pub fn parse(raw: &str) -> Option<Filename> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_FILENAME_LEN
            && raw != "."
            && raw != ".."
            && !raw.chars().any(|c| c == '/' || c == '\\' || c.is_control());
        ok.then(|| Filename(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Filename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hashes by lower-case algorithm name (`sha256` → hex digest), sorted by
/// name. A sorted vector, not a `BTreeMap`: a page holds thousands of
/// them, nearly all with one hash, and a map's first node alone costs
/// about 560 bytes (measured: boto3's page took 5.1 MB parsed with maps).
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct Hashes(Vec<(String, String)>);

impl Hashes {
    pub fn new() -> Hashes {
        Hashes(Vec::new())
    }

    pub fn get(&self, name: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Sets `name`'s digest; returns the one it replaced.
    pub fn insert(&mut self, name: String, digest: String) -> Option<String> {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, digest)),
            Err(i) => {
                self.0.insert(i, (name, digest));
                None
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// By name, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The heap bytes it holds.
    pub fn heap_bytes(&self) -> u64 {
        alloc_cost(self.0.capacity() * std::mem::size_of::<(String, String)>())
            + self
                .0
                .iter()
                .map(|(k, v)| string_cost(k) + string_cost(v))
                .sum::<u64>()
    }
}

impl FromIterator<(String, String)> for Hashes {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Hashes {
        let mut h = Hashes::new();
        for (k, v) in iter {
            h.insert(k, v);
        }
        h.0.shrink_to_fit();
        h
    }
}

impl<const N: usize> From<[(String, String); N]> for Hashes {
    fn from(pairs: [(String, String); N]) -> Hashes {
        pairs.into_iter().collect()
    }
}

impl serde::Serialize for Hashes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Hashes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hashes, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// PEP 592 yanked state.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Yanked {
    #[default]
    No,
    Yes,
    Reason(String),
}

impl Yanked {
    pub fn is_yanked(&self) -> bool {
        !matches!(self, Yanked::No)
    }

    /// From an HTML `data-yanked` value (present = yanked, text = reason).
    pub fn from_attr(value: &str) -> Yanked {
        if value.is_empty() {
            Yanked::Yes
        } else {
            Yanked::Reason(value.to_owned())
        }
    }
}

/// PEP 658 core metadata availability.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum CoreMetadata {
    #[default]
    Absent,
    /// Available; the hashes may be empty (advertised as `true`).
    Available(Hashes),
}

impl CoreMetadata {
    /// From an HTML attribute value: `true`, empty, or `name=hex`.
    pub fn from_attr(value: &str) -> CoreMetadata {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("true") {
            return CoreMetadata::Available(Hashes::new());
        }
        if value.eq_ignore_ascii_case("false") {
            return CoreMetadata::Absent;
        }
        match parse_hash_pair(value) {
            Some((k, v)) => CoreMetadata::Available(Hashes::from([(k, v)])),
            None => CoreMetadata::Available(Hashes::new()),
        }
    }

    pub fn is_available(&self) -> bool {
        matches!(self, CoreMetadata::Available(_))
    }
}

/// Parses `name=hexdigest` (a URL fragment or attribute value).
pub fn parse_hash_pair(s: &str) -> Option<(String, String)> {
    let (name, value) = s.split_once('=')?;
    let name = name.trim().to_ascii_lowercase();
    let value = value.trim();
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let value_ok = !value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit());
    (name_ok && value_ok).then(|| (name, value.to_ascii_lowercase()))
}

/// Keeps only well-formed hash entries (lower-case names and hex digests).
pub fn clean_hashes(raw: Hashes) -> Hashes {
    raw.0
        .into_iter()
        .filter_map(|(k, v)| parse_hash_pair(&format!("{k}={v}")))
        .collect()
}

/// PEP 792 project status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectStatus {
    pub status: String,
    pub reason: Option<String>,
}

impl ProjectStatus {
    /// PEP 792 `quarantined`: no file of the project may be installed.
    pub fn is_quarantined(&self) -> bool {
        self.status.eq_ignore_ascii_case("quarantined")
    }
}

/// One distribution file of a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub filename: Filename,
    /// Absolute upstream URL, without fragment.
    pub url: Url,
    pub hashes: Hashes,
    pub requires_python: Option<String>,
    pub yanked: Yanked,
    pub core_metadata: CoreMetadata,
    pub gpg_sig: Option<bool>,
    pub size: Option<u64>,
    pub upload_time: Option<String>,
    /// PEP 740 provenance URL, kept only when absolute https.
    pub provenance: Option<String>,
}

impl FileEntry {
    /// A bare entry with only the required fields.
    pub fn new(filename: Filename, url: Url) -> FileEntry {
        FileEntry {
            filename,
            url,
            hashes: Hashes::new(),
            requires_python: None,
            yanked: Yanked::No,
            core_metadata: CoreMetadata::Absent,
            gpg_sig: None,
            size: None,
            upload_time: None,
            provenance: None,
        }
    }

    /// The hash used in HTML fragments and for verification: sha256 when
    /// present, else the strongest sha2 hash, else any.
    pub fn preferred_hash(&self) -> Option<(&str, &str)> {
        preferred(&self.hashes)
    }
}

/// The hash algorithms roxpi can check, in order of preference: the one
/// list both the page links (HTML fragments) and download verification use.
pub const HASH_PREFERENCE: [&str; 4] = ["sha256", "sha512", "sha384", "sha224"];

/// sha256 first, then sha512, sha384, sha224, then the first by name
/// (an unknown algorithm is kept, never dropped).
pub fn preferred(hashes: &Hashes) -> Option<(&str, &str)> {
    for name in HASH_PREFERENCE {
        if let Some(v) = hashes.get(name) {
            return Some((name, v.as_str()));
        }
    }
    hashes.iter().next().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// Keeps a provenance URL only if it is an absolute https URL (PEP 740).
pub fn clean_provenance(raw: Option<String>) -> Option<String> {
    let raw = raw?;
    let url = Url::parse(&raw).ok()?;
    (url.scheme() == "https").then_some(raw)
}

/// A parsed project page from one index.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProjectPage {
    pub files: Vec<FileEntry>,
    /// PEP 700 versions, when the upstream gave them.
    pub versions: Option<BTreeSet<String>>,
    pub project_status: Option<ProjectStatus>,
}

/// What one heap allocation of `n` bytes costs in memory: the allocator's
/// chunk header and alignment (glibc: 8 bytes, 16-byte steps, 32 at least;
/// mimalloc's size classes are no larger).
pub fn alloc_cost(n: usize) -> u64 {
    if n == 0 {
        0
    } else {
        (n.saturating_add(8 + 15) & !15).max(32) as u64
    }
}

/// A `BTreeMap`/`BTreeSet` of `len` elements of `elem` bytes: nodes of up
/// to 11 elements, about two-thirds full once it has grown.
fn btree_cost(len: usize, elem: usize) -> u64 {
    if len == 0 {
        return 0;
    }
    let node = alloc_cost(16 + 11 * elem);
    let nodes = if len <= 11 { 1 } else { len.div_ceil(7) };
    nodes as u64 * node
}

fn string_cost(s: &str) -> u64 {
    alloc_cost(s.len())
}

impl FileEntry {
    /// The heap bytes this entry holds beyond its own struct.
    pub fn heap_bytes(&self) -> u64 {
        // What the sizes below miss (spare capacity, allocator rounding),
        // measured against RSS on the fixture pages: about 64 bytes.
        const SLACK: u64 = 64;
        let opt = |s: &Option<String>| s.as_deref().map_or(0, string_cost);
        SLACK
            + string_cost(self.filename.as_str())
            + string_cost(self.url.as_str())
            + self.hashes.heap_bytes()
            + opt(&self.requires_python)
            + match &self.yanked {
                Yanked::Reason(r) => string_cost(r),
                _ => 0,
            }
            + match &self.core_metadata {
                CoreMetadata::Available(h) => h.heap_bytes(),
                CoreMetadata::Absent => 0,
            }
            + opt(&self.upload_time)
            + opt(&self.provenance)
    }
}

impl ProjectPage {
    /// Every heap byte this page holds: the file list, each entry's
    /// strings and maps, the versions and the status. The index cache's
    /// bound counts this (measured against RSS in `examples/page_memory`).
    pub fn heap_bytes(&self) -> u64 {
        alloc_cost(self.files.capacity() * std::mem::size_of::<FileEntry>())
            + self.files.iter().map(FileEntry::heap_bytes).sum::<u64>()
            + self.versions.as_ref().map_or(0, |v| {
                btree_cost(v.len(), 24) + v.iter().map(|s| string_cost(s)).sum::<u64>()
            })
            + self.project_status.as_ref().map_or(0, |s| {
                string_cost(&s.status) + s.reason.as_deref().map_or(0, string_cost)
            })
    }
}

/// Names in an index's project list, as the upstream spelt them.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProjectList {
    pub names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames() {
        let good = [
            "numpy-1.0-py3-none-any.whl",
            "a.tar.gz",
            "torch-2.0+cu118-cp311.whl",
            "x",
        ];
        for f in good {
            assert!(Filename::parse(f).is_some(), "{f}");
        }
        let long = "a".repeat(MAX_FILENAME_LEN + 1);
        let bad = [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            "../etc/passwd",
            long.as_str(),
        ];
        for f in bad {
            assert!(Filename::parse(f).is_none(), "{f:?}");
        }
    }

    #[test]
    fn hash_pairs() {
        let cases = [
            ("sha256=ABCdef01", Some(("sha256", "abcdef01"))),
            ("SHA256=ab", Some(("sha256", "ab"))),
            ("md5=00ff", Some(("md5", "00ff"))),
            ("sha256=", None),
            ("sha256", None),
            ("=ab", None),
            ("sha256=xyz", None),
            ("sha 256=ab", None),
        ];
        for (input, want) in cases {
            let got = parse_hash_pair(input);
            assert_eq!(
                got.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn core_metadata_attr_values() {
        let sha = Hashes::from([("sha256".to_owned(), "ab".to_owned())]);
        let cases = [
            ("", CoreMetadata::Available(Hashes::new())),
            ("true", CoreMetadata::Available(Hashes::new())),
            ("sha256=AB", CoreMetadata::Available(sha)),
            ("false", CoreMetadata::Absent),
        ];
        for (input, want) in cases {
            assert_eq!(CoreMetadata::from_attr(input), want, "{input:?}");
        }
    }

    #[test]
    fn preferred_hash_order() {
        let h = |pairs: &[(&str, &str)]| -> Hashes {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            preferred(&h(&[("md5", "1"), ("sha256", "2")])),
            Some(("sha256", "2"))
        );
        assert_eq!(
            preferred(&h(&[("md5", "1"), ("sha512", "3")])),
            Some(("sha512", "3"))
        );
        assert_eq!(preferred(&h(&[("blake2b", "4")])), Some(("blake2b", "4")));
        assert_eq!(preferred(&Hashes::new()), None);
    }

    #[test]
    fn provenance_only_absolute_https() {
        assert!(
            clean_provenance(Some("https://pypi.org/integrity/x/1/f/provenance".into())).is_some()
        );
        assert!(clean_provenance(Some("http://example.com/p".into())).is_none());
        assert!(clean_provenance(Some("/relative".into())).is_none());
        assert!(clean_provenance(None).is_none());
    }
}
