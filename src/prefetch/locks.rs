//! What a lock file asks for (pure): `requirements.txt` (pinned, with or
//! without `--hash`), `pylock.toml` (PEP 751), `uv.lock` and `poetry.lock`,
//! each read into the same list of wanted projects. Packages that do not
//! come from an index (a path, a git URL, the project itself) are noted and
//! left out: roxpi does not serve them.

use std::path::Path;
use std::str::FromStr;

use pep440_rs::VersionSpecifiers;
use serde::Deserialize;

use crate::pypi::ProjectName;

/// The lock file formats `roxpi prefetch` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Requirements,
    Pylock,
    Uv,
    Poetry,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "requirements" | "requirements.txt" => Ok(Format::Requirements),
            "pylock" | "pylock.toml" => Ok(Format::Pylock),
            "uv" | "uv.lock" => Ok(Format::Uv),
            "poetry" | "poetry.lock" => Ok(Format::Poetry),
            _ => Err(format!(
                "--format {s:?}: expected requirements, pylock, uv or poetry"
            )),
        }
    }
}

/// The format a file's name says: `uv.lock`, `poetry.lock`,
/// `pylock.toml` / `pylock.<name>.toml`, else `*.txt`.
pub fn detect(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    match name.as_str() {
        "uv.lock" => Some(Format::Uv),
        "poetry.lock" => Some(Format::Poetry),
        n if n == "pylock.toml" || (n.starts_with("pylock.") && n.ends_with(".toml")) => {
            Some(Format::Pylock)
        }
        n if n.ends_with(".txt") || n.ends_with(".in") => Some(Format::Requirements),
        _ => None,
    }
}

/// One file a lock names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub filename: String,
    /// Lower-case hex, when the lock gives one.
    pub sha256: Option<String>,
}

/// Which of a project's files are wanted.
#[derive(Clone, Debug, PartialEq)]
pub enum Pick {
    /// The files the lock names.
    Files(Vec<Named>),
    /// The files whose sha256 is one of these (`--hash` requirements).
    Hashes(Vec<String>),
    /// The files of the newest version these allow (`==1.2` pins one).
    Versions(VersionSpecifiers),
}

/// A project and the files wanted of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    pub project: ProjectName,
    pub pick: Pick,
}

/// A lock file read: what it wants, and the lines or packages left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lock {
    pub wanted: Vec<Wanted>,
    pub skipped: Vec<String>,
    /// Requirements files it includes (`-r FILE`), as written: relative
    /// to its own directory.
    pub includes: Vec<String>,
}

/// Reads `text` as `format`.
pub fn parse(format: Format, text: &str) -> Result<Lock, String> {
    match format {
        Format::Requirements => requirements(text),
        Format::Pylock => pylock(text),
        Format::Uv => uv_lock(text),
        Format::Poetry => poetry_lock(text),
    }
}

fn project(name: &str) -> Result<ProjectName, String> {
    ProjectName::parse(name).map_err(|e| format!("project name {name:?}: {e}"))
}

/// `sha256:HEX` → lower-case hex; other algorithms → `None`.
fn sha256_of(hash: &str) -> Option<String> {
    let (algo, hex) = hash.split_once([':', '='])?;
    (algo.eq_ignore_ascii_case("sha256")
        && hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    .then(|| hex.to_ascii_lowercase())
}

/// The file name at the end of a URL (fragment and query dropped,
/// percent-decoded).
fn filename_of_url(url: &str) -> Option<String> {
    let path = url.split(['#', '?']).next()?;
    let last = path.rsplit('/').next().filter(|s| !s.is_empty())?;
    Some(
        percent_encoding::percent_decode_str(last)
            .decode_utf8()
            .ok()?
            .into_owned(),
    )
}

// --- requirements.txt ---------------------------------------------------

/// pip's requirements format: one requirement per logical line (`\`
/// continues it), `#` comments, `--hash=sha256:…` options.
fn requirements(text: &str) -> Result<Lock, String> {
    let mut lock = Lock::default();
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    for (i, raw) in joined.lines().enumerate() {
        let line = match raw.find('#') {
            Some(0) => "",
            Some(at) if raw[..at].ends_with(char::is_whitespace) => &raw[..at],
            _ => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        if let Some(path) = include_of(line) {
            lock.includes.push(path.to_owned());
            continue;
        }
        if line.starts_with('-') {
            lock.skipped
                .push(format!("line {}: option {line:?}", i + 1));
            continue;
        }
        match requirement(line) {
            Ok(Some(w)) => lock.wanted.push(w),
            Ok(None) => lock
                .skipped
                .push(format!("line {}: {line:?} (not from an index)", i + 1)),
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    Ok(lock)
}

/// The file a `-r FILE` / `--requirement FILE` (or `=FILE`) line names.
fn include_of(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("--requirement")
        .or_else(|| line.strip_prefix("-r"))?;
    let path = rest.strip_prefix('=').unwrap_or(rest).trim();
    (!path.is_empty() && (rest.starts_with([' ', '\t', '=']))).then_some(path)
}

/// `name[extras] specifiers ; marker --hash=…` → what it wants; `None` for
/// a direct reference (`name @ url`, a path).
fn requirement(line: &str) -> Result<Option<Wanted>, String> {
    let mut hashes = Vec::new();
    let mut words = Vec::new();
    for word in line.split_whitespace() {
        match word
            .strip_prefix("--hash=")
            .or_else(|| word.strip_prefix("--hash:"))
        {
            Some(h) => {
                hashes.push(sha256_of(h).ok_or_else(|| format!("hash {h:?}: expected sha256:HEX"))?)
            }
            None if word.starts_with("--") => {}
            None => words.push(word),
        }
    }
    let req = words.join(" ");
    let req = req.split(';').next().unwrap_or("").trim();
    let end = req
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(req.len());
    let (name, mut rest) = req.split_at(end);
    if name.is_empty() {
        return Ok(None);
    }
    rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('[') {
        rest = after
            .split_once(']')
            .map(|(_, r)| r.trim_start())
            .unwrap_or("");
    }
    if rest.starts_with('@') {
        return Ok(None);
    }
    let project = project(name)?;
    let pick = if hashes.is_empty() {
        let spec = rest.trim_start_matches('(').trim_end_matches(')').trim();
        if spec.is_empty() {
            return Err(format!("{name}: not pinned (name==version, or --hash)"));
        }
        Pick::Versions(
            VersionSpecifiers::from_str(spec)
                .map_err(|e| format!("{name}: version {spec:?}: {e}"))?,
        )
    } else {
        Pick::Hashes(hashes)
    };
    Ok(Some(Wanted { project, pick }))
}

// --- pylock.toml (PEP 751) ----------------------------------------------

#[derive(Deserialize)]
struct Pylock {
    #[serde(rename = "lock-version")]
    lock_version: Option<String>,
    #[serde(default)]
    packages: Vec<PylockPackage>,
}

#[derive(Deserialize)]
struct PylockPackage {
    name: String,
    sdist: Option<PylockFile>,
    #[serde(default)]
    wheels: Vec<PylockFile>,
}

#[derive(Deserialize)]
struct PylockFile {
    name: Option<String>,
    url: Option<String>,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
}

fn pylock(text: &str) -> Result<Lock, String> {
    let doc: Pylock = toml::from_str(text).map_err(|e| format!("pylock.toml: {e}"))?;
    match doc.lock_version.as_deref() {
        Some(v) if v.starts_with("1.") || v == "1" => {}
        other => return Err(format!("pylock.toml: lock-version {other:?}, expected 1.x")),
    }
    let mut lock = Lock::default();
    for p in doc.packages {
        let files: Vec<Named> = p
            .sdist
            .iter()
            .chain(&p.wheels)
            .filter_map(|f| {
                Some(Named {
                    filename: f
                        .name
                        .clone()
                        .or_else(|| f.url.as_deref().and_then(filename_of_url))?,
                    sha256: f.hashes.get("sha256").map(|h| h.to_ascii_lowercase()),
                })
            })
            .collect();
        push_files(&mut lock, &p.name, files)?;
    }
    Ok(lock)
}

fn push_files(lock: &mut Lock, name: &str, files: Vec<Named>) -> Result<(), String> {
    if files.is_empty() {
        lock.skipped.push(format!("{name} (not from an index)"));
    } else {
        lock.wanted.push(Wanted {
            project: project(name)?,
            pick: Pick::Files(files),
        });
    }
    Ok(())
}

// --- uv.lock --------------------------------------------------------------

#[derive(Deserialize)]
struct UvLock {
    #[serde(default)]
    package: Vec<UvPackage>,
}

#[derive(Deserialize)]
struct UvPackage {
    name: String,
    #[serde(default)]
    source: toml::Table,
    sdist: Option<UvFile>,
    #[serde(default)]
    wheels: Vec<UvFile>,
}

#[derive(Deserialize)]
struct UvFile {
    url: Option<String>,
    hash: Option<String>,
}

fn uv_lock(text: &str) -> Result<Lock, String> {
    let doc: UvLock = toml::from_str(text).map_err(|e| format!("uv.lock: {e}"))?;
    let mut lock = Lock::default();
    for p in doc.package {
        if !p.source.contains_key("registry") {
            lock.skipped.push(format!("{} (not from an index)", p.name));
            continue;
        }
        let files = p
            .sdist
            .iter()
            .chain(&p.wheels)
            .filter_map(|f| {
                Some(Named {
                    filename: filename_of_url(f.url.as_deref()?)?,
                    sha256: f.hash.as_deref().and_then(sha256_of),
                })
            })
            .collect();
        push_files(&mut lock, &p.name, files)?;
    }
    Ok(lock)
}

// --- poetry.lock ----------------------------------------------------------

#[derive(Deserialize)]
struct PoetryLock {
    #[serde(default)]
    package: Vec<PoetryPackage>,
}

#[derive(Deserialize)]
struct PoetryPackage {
    name: String,
    #[serde(default)]
    files: Vec<PoetryFile>,
    source: Option<PoetrySource>,
}

#[derive(Deserialize)]
struct PoetryFile {
    file: String,
    hash: Option<String>,
}

#[derive(Deserialize)]
struct PoetrySource {
    #[serde(rename = "type")]
    kind: String,
}

fn poetry_lock(text: &str) -> Result<Lock, String> {
    let doc: PoetryLock = toml::from_str(text).map_err(|e| format!("poetry.lock: {e}"))?;
    let mut lock = Lock::default();
    for p in doc.package {
        if p.source.as_ref().is_some_and(|s| s.kind != "legacy") {
            lock.skipped.push(format!("{} (not from an index)", p.name));
            continue;
        }
        let files = p
            .files
            .into_iter()
            .map(|f| Named {
                sha256: f.hash.as_deref().and_then(sha256_of),
                filename: f.file,
            })
            .collect();
        push_files(&mut lock, &p.name, files)?;
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const H2: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn names(lock: &Lock) -> Vec<&str> {
        lock.wanted.iter().map(|w| w.project.as_str()).collect()
    }

    fn files(w: &Wanted) -> Vec<(&str, Option<&str>)> {
        match &w.pick {
            Pick::Files(f) => f
                .iter()
                .map(|n| (n.filename.as_str(), n.sha256.as_deref()))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requirements_with_and_without_hashes() {
        let text = format!(
            "# made by pip-compile\n\
             Requests==2.32.3 \\\n    --hash=sha256:{H1} \\\n    --hash=sha256:{H2}\n    # via x\n\
             rich[jupyter]==13.9.4 ; python_version >= \"3.8\"\n\
             idna>=3,<4\n\
             --index-url http://x/simple/\n\
             demo @ https://example.org/demo-1.0.tar.gz\n\
             -e ./local\n\
             -r base.txt\n\
             --requirement=dev/more.txt\n\
             -rnot-an-include.txt\n"
        );
        let lock = parse(Format::Requirements, &text).unwrap();
        assert_eq!(names(&lock), ["requests", "rich", "idna"]);
        assert_eq!(
            lock.wanted[0].pick,
            Pick::Hashes(vec![H1.into(), H2.into()])
        );
        assert_eq!(
            lock.wanted[1].pick,
            Pick::Versions(VersionSpecifiers::from_str("==13.9.4").unwrap())
        );
        assert_eq!(lock.skipped.len(), 4, "{:?}", lock.skipped);
        assert_eq!(lock.includes, ["base.txt", "dev/more.txt"]);
        for bad in ["requests\n", "requests==\n", "x==1 --hash=md5:00\n"] {
            assert!(parse(Format::Requirements, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uv_lock_skips_the_project_itself() {
        let text = format!(
            r#"version = 1
requires-python = ">=3.12"

[[package]]
name = "app"
version = "0.1.0"
source = {{ virtual = "." }}

[[package]]
name = "idna"
version = "3.10"
source = {{ registry = "http://127.0.0.1:5000/index/" }}
sdist = {{ url = "http://127.0.0.1:5000/index/idna/idna-3.10.tar.gz", hash = "sha256:{H1}", size = 10 }}
wheels = [
    {{ url = "http://127.0.0.1:5000/files/x/idna-3.10-py3-none-any.whl#sha256={H2}", hash = "sha256:{H2}", size = 5 }},
]
"#
        );
        let lock = parse(Format::Uv, &text).unwrap();
        assert_eq!(names(&lock), ["idna"]);
        assert_eq!(
            files(&lock.wanted[0]),
            [
                ("idna-3.10.tar.gz", Some(H1)),
                ("idna-3.10-py3-none-any.whl", Some(H2))
            ]
        );
        assert_eq!(lock.skipped, ["app (not from an index)"]);
    }

    #[test]
    fn poetry_and_pylock() {
        let poetry = format!(
            r#"[[package]]
name = "idna"
version = "3.10"
files = [
    {{file = "idna-3.10-py3-none-any.whl", hash = "sha256:{H2}"}},
]

[package.source]
type = "legacy"
url = "http://127.0.0.1:5000/simple"
reference = "roxpi"

[[package]]
name = "mine"
version = "1"
files = []

[package.source]
type = "git"
url = "https://example.org/mine.git"
"#
        );
        let lock = parse(Format::Poetry, &poetry).unwrap();
        assert_eq!(
            files(&lock.wanted[0]),
            [("idna-3.10-py3-none-any.whl", Some(H2))]
        );
        assert_eq!(lock.skipped, ["mine (not from an index)"]);

        let pylock = format!(
            r#"lock-version = "1.0"
created-by = "test"

[[packages]]
name = "idna"
version = "3.10"
sdist = {{ url = "https://x/idna-3.10.tar.gz", hashes = {{ sha256 = "{H1}" }} }}
wheels = [{{ name = "idna-3.10-py3-none-any.whl", url = "https://x/w", hashes = {{ sha256 = "{H2}" }} }}]

[[packages]]
name = "local"
directory = {{ path = "." }}
"#
        );
        let lock = parse(Format::Pylock, &pylock).unwrap();
        assert_eq!(
            files(&lock.wanted[0]),
            [
                ("idna-3.10.tar.gz", Some(H1)),
                ("idna-3.10-py3-none-any.whl", Some(H2))
            ]
        );
        assert_eq!(lock.skipped, ["local (not from an index)"]);
        assert!(parse(Format::Pylock, "lock-version = \"2.0\"\n").is_err());
        assert!(parse(Format::Uv, "[[package]\n").is_err());
    }

    #[test]
    fn formats_by_name() {
        let cases = [
            ("a/uv.lock", Some(Format::Uv)),
            ("poetry.lock", Some(Format::Poetry)),
            ("pylock.toml", Some(Format::Pylock)),
            ("pylock.dev.toml", Some(Format::Pylock)),
            ("requirements-dev.txt", Some(Format::Requirements)),
            ("Cargo.lock", None),
        ];
        for (path, want) in cases {
            assert_eq!(detect(Path::new(path)), want, "{path}");
        }
    }
}
