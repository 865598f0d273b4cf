//! Rendering pages from the model (pure and deterministic: files in index
//! order, sorted versions and hashes), HTML through askama templates and
//! JSON through serde; and merging the pages of several indexes.

use std::borrow::Cow;
use std::collections::BTreeSet;

use askama::Template;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Serialize;

use std::io::Write;

use super::model::{CoreMetadata, FileEntry, Filename, Hashes, ProjectPage, ProjectStatus, Yanked};
use super::name::ProjectName;
use super::negotiate::PageFormat;
use super::wire;

/// Characters percent-encoded in a filename inside a link: everything that
/// could end or change a URL path segment, plus `+` (PyTorch-style names).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'+')
    .add(b'\'');

/// The relative link to a file under the project page.
pub fn file_url(filename: &Filename) -> String {
    utf8_percent_encode(filename.as_str(), SEGMENT).to_string()
}

/// One file as a rendered page shows it: the model's entry, borrowed, with
/// what the policy (a local yank) and metadata synthesis change. A page of
/// 15,000 files is rendered without copying one (measured: cloning every
/// entry to merge cost as much memory again as the page itself).
#[derive(Clone, Debug)]
pub struct Listed<'a> {
    pub entry: &'a FileEntry,
    /// Replaces the entry's yank state (a local yank).
    pub yanked: Option<Yanked>,
    /// Replaces the entry's core-metadata (synthesis).
    pub core_metadata: Option<CoreMetadata>,
}

impl<'a> Listed<'a> {
    pub fn new(entry: &'a FileEntry) -> Listed<'a> {
        Listed {
            entry,
            yanked: None,
            core_metadata: None,
        }
    }

    pub fn yanked(&self) -> &Yanked {
        self.yanked.as_ref().unwrap_or(&self.entry.yanked)
    }

    pub fn core_metadata(&self) -> &CoreMetadata {
        self.core_metadata
            .as_ref()
            .unwrap_or(&self.entry.core_metadata)
    }

    /// The HTML link: the encoded filename and its hash fragment.
    fn href(&self) -> String {
        let mut href = file_url(&self.entry.filename);
        if let Some((k, v)) = self.entry.preferred_hash() {
            href = format!("{href}#{k}={v}");
        }
        href
    }

    fn yanked_attr(&self) -> Option<&str> {
        match self.yanked() {
            Yanked::No => None,
            Yanked::Yes => Some(""),
            Yanked::Reason(r) => Some(r),
        }
    }

    fn metadata_attr(&self) -> Option<String> {
        match self.core_metadata() {
            CoreMetadata::Absent => None,
            CoreMetadata::Available(h) => Some(hash_attr(h).unwrap_or_else(|| "true".into())),
        }
    }

    fn gpg_sig_attr(&self) -> Option<&'static str> {
        self.entry.gpg_sig.map(|g| if g { "true" } else { "false" })
    }

    fn wire(&self) -> wire::File<'_> {
        let f = self.entry;
        wire::File {
            filename: Cow::Borrowed(f.filename.as_str()),
            url: Cow::Owned(file_url(&f.filename)),
            hashes: Cow::Borrowed(&f.hashes),
            requires_python: f.requires_python.as_deref().map(Cow::Borrowed),
            core_metadata: match self.core_metadata() {
                CoreMetadata::Absent => None,
                CoreMetadata::Available(h) if h.is_empty() => Some(wire::Metadata::Bool(true)),
                CoreMetadata::Available(h) => Some(wire::Metadata::Hashes(Cow::Borrowed(h))),
            },
            dist_info_metadata: None,
            data_dist_info_metadata: None,
            gpg_sig: f.gpg_sig,
            yanked: match self.yanked() {
                Yanked::No => None,
                Yanked::Yes => Some(wire::Yanked::Bool(true)),
                Yanked::Reason(r) => Some(wire::Yanked::Reason(Cow::Borrowed(r))),
            },
            size: f.size,
            upload_time: f.upload_time.as_deref().map(Cow::Borrowed),
            provenance: f.provenance.as_deref().map(Cow::Borrowed),
        }
    }
}

/// A page as it is rendered: the files of one or more index pages,
/// borrowed from them.
#[derive(Clone, Debug, Default)]
pub struct PageView<'a> {
    pub files: Vec<Listed<'a>>,
    pub versions: Option<BTreeSet<&'a str>>,
    pub project_status: Option<&'a ProjectStatus>,
}

impl<'a> PageView<'a> {
    /// One index's page as it is.
    pub fn of(page: &'a ProjectPage) -> PageView<'a> {
        merge([page], Strategy::FirstIndex)
    }
}

/// The API version a rendered page may claim: the highest whose fields are
/// all really present (PEP 629/700/740/792).
pub fn api_version(page: &PageView<'_>, format: PageFormat) -> &'static str {
    let has_status = page.project_status.is_some();
    let has_provenance = page.files.iter().any(|f| f.entry.provenance.is_some());
    let v11 = match format {
        PageFormat::Json => {
            page.versions.is_some() && page.files.iter().all(|f| f.entry.size.is_some())
        }
        PageFormat::Html => true,
    };
    match (v11, has_status, has_provenance) {
        (false, _, _) => "1.0",
        (true, true, _) => "1.4",
        (true, false, true) => "1.3",
        (true, false, false) if format == PageFormat::Json => "1.1",
        _ => "1.0",
    }
}

#[derive(Template)]
#[template(path = "project.html")]
struct ProjectHtml<'v, 'a> {
    name: &'v str,
    api_version: &'v str,
    status: Option<&'a ProjectStatus>,
    files: &'v [Listed<'a>],
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListHtml<'a> {
    names: &'a [ProjectName],
}

fn hash_attr(hashes: &Hashes) -> Option<String> {
    super::model::preferred(hashes).map(|(k, v)| format!("{k}={v}"))
}

/// The files of a JSON page, serialised one at a time as they are written.
struct JsonFiles<'v, 'a>(&'v [Listed<'a>]);

impl Serialize for JsonFiles<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for f in self.0 {
            seq.serialize_element(&f.wire())?;
        }
        seq.end()
    }
}

/// `wire::Page` with its files written as they go (same fields, same
/// order: the same bytes).
#[derive(Serialize)]
struct JsonPage<'v, 'a> {
    meta: Option<wire::Meta<'v>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Cow<'v, str>>,
    files: JsonFiles<'v, 'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<Vec<&'v str>>,
    #[serde(rename = "project-status", skip_serializing_if = "Option::is_none")]
    project_status: Option<wire::Status<'v>>,
}

/// Writes a project page to `out` as it renders (into a compressor, say):
/// nothing but `out` holds the whole page.
pub fn write_project(
    name: &ProjectName,
    page: &PageView<'_>,
    format: PageFormat,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let api_version = api_version(page, format);
    match format {
        PageFormat::Html => ProjectHtml {
            name: name.as_str(),
            api_version,
            status: page.project_status,
            files: &page.files,
        }
        .write_into(out),
        PageFormat::Json => {
            let doc = JsonPage {
                meta: Some(wire::Meta {
                    api_version: Some(Cow::Borrowed(api_version)),
                }),
                name: Some(Cow::Borrowed(name.as_str())),
                files: JsonFiles(&page.files),
                versions: page.versions.as_ref().map(|v| v.iter().copied().collect()),
                project_status: page.project_status.map(|s| wire::Status {
                    status: Some(Cow::Borrowed(&s.status)),
                    reason: s.reason.as_deref().map(Cow::Borrowed),
                }),
            };
            serde_json::to_writer(&mut *out, &doc).map_err(std::io::Error::other)?;
            out.write_all(b"\n")
        }
    }
}

/// Renders a project page into memory.
pub fn render_project(name: &ProjectName, page: &ProjectPage, format: PageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec fails only on a bug (a template error): an
    // incomplete page is then visible in tests.
    let _ = write_project(name, &PageView::of(page), format, &mut out);
    out
}

/// Renders the project list (names already normalised and sorted).
pub fn render_list(names: &[ProjectName], format: PageFormat) -> Vec<u8> {
    match format {
        PageFormat::Html => ListHtml { names }
            .render()
            .unwrap_or_else(|e| format!("<!-- render error: {e} -->"))
            .into_bytes(),
        PageFormat::Json => to_json(&wire::List {
            meta: Some(wire::Meta {
                api_version: Some(Cow::Borrowed("1.0")),
            }),
            projects: names
                .iter()
                .map(|n| wire::ListEntry {
                    name: Cow::Borrowed(n.as_str()),
                })
                .collect(),
        }),
    }
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serialising plain structs of strings and numbers cannot fail.
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// How pages of several indexes combine into one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Union of files (first index wins a filename), root first.
    Merge,
    /// The first index that has the project is the whole answer.
    FirstIndex,
}

/// Merges the pages of the indexes that have the project, in index order
/// (borrowed: nothing is copied).
pub fn merge<'a>(
    pages: impl IntoIterator<Item = &'a ProjectPage>,
    strategy: Strategy,
) -> PageView<'a> {
    let mut out = PageView::default();
    let pages: Vec<&ProjectPage> = pages.into_iter().collect();
    // One page (the usual case): no duplicate check needed.
    let single = strategy == Strategy::FirstIndex || pages.len() <= 1;
    let mut seen = std::collections::HashSet::new();
    for page in pages {
        for f in &page.files {
            if single || seen.insert(f.filename.as_str()) {
                out.files.push(Listed::new(f));
            }
        }
        if let Some(v) = &page.versions {
            out.versions
                .get_or_insert_with(BTreeSet::new)
                .extend(v.iter().map(String::as_str));
        }
        // The first status given, except that a quarantine on any merged
        // index wins: the project is quarantined on this route (fail
        // closed; the file route refuses its files alike).
        let quarantined = |s: Option<&ProjectStatus>| s.is_some_and(ProjectStatus::is_quarantined);
        if out.project_status.is_none()
            || quarantined(page.project_status.as_ref()) && !quarantined(out.project_status)
        {
            out.project_status = page.project_status.as_ref().or(out.project_status);
        }
        if strategy == Strategy::FirstIndex {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pypi::model::FileEntry;
    use url::Url;

    fn entry(name: &str) -> FileEntry {
        FileEntry::new(
            Filename::parse(name).unwrap(),
            Url::parse(&format!("https://up.example/f/{name}")).unwrap(),
        )
    }

    fn sample() -> ProjectPage {
        let mut a = entry("demo-1.0.tar.gz");
        a.hashes.insert("sha256".into(), "aa".into());
        a.hashes.insert("md5".into(), "bb".into());
        a.requires_python = Some(">=3.8".into());
        a.size = Some(10);
        let mut b = entry("demo-1.0+cpu-py3-none-any.whl");
        b.yanked = Yanked::Reason("bad \"build\"".into());
        b.core_metadata = CoreMetadata::Available(Hashes::from([("sha256".into(), "cc".into())]));
        b.size = Some(20);
        b.upload_time = Some("2024-01-01T00:00:00Z".into());
        ProjectPage {
            files: vec![a, b],
            versions: Some(BTreeSet::from(["1.0".to_owned()])),
            project_status: None,
        }
    }

    #[test]
    fn html_page() {
        let name = ProjectName::parse("demo").unwrap();
        let html = String::from_utf8(render_project(&name, &sample(), PageFormat::Html)).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(
            html.contains(r#"<meta name="pypi:repository-version" content="1.0">"#),
            "{html}"
        );
        assert!(html.contains("<title>demo</title>"));
        assert!(html.contains(r#"<a href="demo-1.0.tar.gz#sha256=aa" data-requires-python="&#62;=3.8">demo-1.0.tar.gz</a><br />"#), "{html}");
        assert!(
            html.contains(r#"href="demo-1.0%2Bcpu-py3-none-any.whl""#),
            "{html}"
        );
        assert!(
            html.contains(r#"data-yanked="bad &#34;build&#34;""#),
            "{html}"
        );
        assert!(
            html.contains(r#"data-core-metadata="sha256=cc" data-dist-info-metadata="sha256=cc""#),
            "{html}"
        );
        assert!(!html.contains("data-gpg-sig"));
    }

    #[test]
    fn json_page() {
        let name = ProjectName::parse("demo").unwrap();
        let body = render_project(&name, &sample(), PageFormat::Json);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["meta"]["api-version"], "1.1");
        assert_eq!(v["name"], "demo");
        assert_eq!(v["files"][0]["url"], "demo-1.0.tar.gz");
        assert_eq!(v["files"][0]["hashes"]["sha256"], "aa");
        assert_eq!(v["files"][0]["requires-python"], ">=3.8");
        assert!(v["files"][0].get("yanked").is_none());
        assert!(v["files"][0].get("core-metadata").is_none());
        assert_eq!(v["files"][1]["url"], "demo-1.0%2Bcpu-py3-none-any.whl");
        assert_eq!(v["files"][1]["yanked"], "bad \"build\"");
        assert_eq!(v["files"][1]["core-metadata"]["sha256"], "cc");
        assert!(v["files"][1].get("dist-info-metadata").is_none());
        assert!(v["files"][1].get("data-dist-info-metadata").is_none());
        assert_eq!(v["versions"], serde_json::json!(["1.0"]));
        // Deterministic: same input, same bytes.
        assert_eq!(body, render_project(&name, &sample(), PageFormat::Json));
    }

    #[test]
    fn api_versions() {
        let mut p = sample();
        assert_eq!(api_version(&PageView::of(&p), PageFormat::Json), "1.1");
        assert_eq!(api_version(&PageView::of(&p), PageFormat::Html), "1.0");
        p.files[0].provenance = Some("https://p.example/x".into());
        assert_eq!(api_version(&PageView::of(&p), PageFormat::Json), "1.3");
        assert_eq!(api_version(&PageView::of(&p), PageFormat::Html), "1.3");
        p.project_status = Some(ProjectStatus {
            status: "archived".into(),
            reason: None,
        });
        assert_eq!(api_version(&PageView::of(&p), PageFormat::Json), "1.4");
        p.files[1].size = None;
        assert_eq!(api_version(&PageView::of(&p), PageFormat::Json), "1.0");
        let mut q = sample();
        q.versions = None;
        assert_eq!(api_version(&PageView::of(&q), PageFormat::Json), "1.0");
    }

    #[test]
    fn lists() {
        let names: Vec<ProjectName> = ["a-b", "numpy"]
            .iter()
            .map(|n| ProjectName::parse(n).unwrap())
            .collect();
        let html = String::from_utf8(render_list(&names, PageFormat::Html)).unwrap();
        assert!(html.contains(r#"<a href="a-b/">a-b</a><br />"#), "{html}");
        let json: serde_json::Value =
            serde_json::from_slice(&render_list(&names, PageFormat::Json)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"meta":{"api-version":"1.0"},"projects":[{"name":"a-b"},{"name":"numpy"}]})
        );
    }

    #[test]
    fn merging() {
        let mut root = sample();
        root.versions = Some(BTreeSet::from(["1.0".to_owned()]));
        let mut extra = ProjectPage {
            files: vec![entry("demo-1.0.tar.gz"), entry("demo-2.0.tar.gz")],
            versions: Some(BTreeSet::from(["2.0".to_owned()])),
            project_status: None,
        };
        extra.files[0]
            .hashes
            .insert("sha256".into(), "different".into());
        let m = merge([&root, &extra], Strategy::Merge);
        let names: Vec<&str> = m.files.iter().map(|f| f.entry.filename.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo-1.0.tar.gz",
                "demo-1.0+cpu-py3-none-any.whl",
                "demo-2.0.tar.gz"
            ]
        );
        assert_eq!(
            m.files[0].entry.hashes.get("sha256").unwrap(),
            "aa",
            "root wins a filename"
        );
        assert_eq!(m.versions.unwrap().len(), 2);
        let f = merge([&root, &extra], Strategy::FirstIndex);
        assert_eq!(f.files.len(), 2);
        let empty = ProjectPage::default();
        let none = merge([&empty], Strategy::Merge);
        assert!(none.versions.is_none());
    }
}
