//! Rendering pages from the model (pure and deterministic: files in index
//! order, sorted versions and hashes), HTML through askama templates and
//! JSON through serde; and merging the pages of several indexes.

use std::borrow::Cow;
use std::collections::BTreeSet;

use askama::Template;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Serialize;

use super::model::{CoreMetadata, Filename, Hashes, ProjectPage, ProjectStatus, Yanked};
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

/// The API version a rendered page may claim: the highest whose fields are
/// all really present (PEP 629/700/740/792).
pub fn api_version(page: &ProjectPage, format: PageFormat) -> &'static str {
    let has_status = page.project_status.is_some();
    let has_provenance = page.files.iter().any(|f| f.provenance.is_some());
    let v11 = match format {
        PageFormat::Json => page.versions.is_some() && page.files.iter().all(|f| f.size.is_some()),
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

struct HtmlFile {
    href: String,
    filename: String,
    requires_python: Option<String>,
    yanked: Option<String>,
    core_metadata: Option<String>,
    gpg_sig: Option<&'static str>,
    provenance: Option<String>,
}

#[derive(Template)]
#[template(path = "project.html")]
struct ProjectHtml<'a> {
    name: &'a str,
    api_version: &'a str,
    status: Option<&'a ProjectStatus>,
    files: Vec<HtmlFile>,
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListHtml<'a> {
    names: &'a [ProjectName],
}

fn hash_attr(hashes: &Hashes) -> Option<String> {
    super::model::preferred(hashes).map(|(k, v)| format!("{k}={v}"))
}

/// Renders a project page.
pub fn render_project(name: &ProjectName, page: &ProjectPage, format: PageFormat) -> Vec<u8> {
    let api_version = api_version(page, format);
    match format {
        PageFormat::Html => {
            let files = page
                .files
                .iter()
                .map(|f| {
                    let mut href = file_url(&f.filename);
                    if let Some((k, v)) = f.preferred_hash() {
                        href = format!("{href}#{k}={v}");
                    }
                    HtmlFile {
                        href,
                        filename: f.filename.to_string(),
                        requires_python: f.requires_python.clone(),
                        yanked: match &f.yanked {
                            Yanked::No => None,
                            Yanked::Yes => Some(String::new()),
                            Yanked::Reason(r) => Some(r.clone()),
                        },
                        core_metadata: match &f.core_metadata {
                            CoreMetadata::Absent => None,
                            CoreMetadata::Available(h) => {
                                Some(hash_attr(h).unwrap_or_else(|| "true".into()))
                            }
                        },
                        gpg_sig: f.gpg_sig.map(|g| if g { "true" } else { "false" }),
                        provenance: f.provenance.clone(),
                    }
                })
                .collect();
            let t = ProjectHtml {
                name: name.as_str(),
                api_version,
                status: page.project_status.as_ref(),
                files,
            };
            // Rendering into a String cannot fail for these templates (no
            // fallible filters); an error would be a bug, shown as a comment.
            t.render()
                .unwrap_or_else(|e| format!("<!-- render error: {e} -->"))
                .into_bytes()
        }
        PageFormat::Json => {
            let files = page
                .files
                .iter()
                .map(|f| wire::File {
                    filename: Cow::Borrowed(f.filename.as_str()),
                    url: Cow::Owned(file_url(&f.filename)),
                    hashes: Cow::Borrowed(&f.hashes),
                    requires_python: f.requires_python.as_deref().map(Cow::Borrowed),
                    core_metadata: match &f.core_metadata {
                        CoreMetadata::Absent => None,
                        CoreMetadata::Available(h) if h.is_empty() => {
                            Some(wire::Metadata::Bool(true))
                        }
                        CoreMetadata::Available(h) => {
                            Some(wire::Metadata::Hashes(Cow::Borrowed(h)))
                        }
                    },
                    dist_info_metadata: None,
                    data_dist_info_metadata: None,
                    gpg_sig: f.gpg_sig,
                    yanked: match &f.yanked {
                        Yanked::No => None,
                        Yanked::Yes => Some(wire::Yanked::Bool(true)),
                        Yanked::Reason(r) => Some(wire::Yanked::Reason(Cow::Borrowed(r))),
                    },
                    size: f.size,
                    upload_time: f.upload_time.as_deref().map(Cow::Borrowed),
                    provenance: f.provenance.as_deref().map(Cow::Borrowed),
                })
                .collect();
            let doc = wire::Page {
                meta: Some(wire::Meta {
                    api_version: Some(Cow::Borrowed(api_version)),
                }),
                name: Some(Cow::Borrowed(name.as_str())),
                files,
                versions: page
                    .versions
                    .as_ref()
                    .map(|v| v.iter().map(|s| Cow::Borrowed(s.as_str())).collect()),
                project_status: page.project_status.as_ref().map(|s| wire::Status {
                    status: Some(Cow::Borrowed(&s.status)),
                    reason: s.reason.as_deref().map(Cow::Borrowed),
                }),
            };
            to_json(&doc)
        }
    }
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

/// Merges the pages of the indexes that have the project, in index order.
pub fn merge<'a>(
    pages: impl IntoIterator<Item = &'a ProjectPage>,
    strategy: Strategy,
) -> ProjectPage {
    let mut out = ProjectPage::default();
    let mut seen = std::collections::HashSet::new();
    for page in pages {
        for f in &page.files {
            if seen.insert(f.filename.clone()) {
                out.files.push(f.clone());
            }
        }
        if let Some(v) = &page.versions {
            out.versions
                .get_or_insert_with(BTreeSet::new)
                .extend(v.iter().cloned());
        }
        if out.project_status.is_none() {
            out.project_status = page.project_status.clone();
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
        assert_eq!(api_version(&p, PageFormat::Json), "1.1");
        assert_eq!(api_version(&p, PageFormat::Html), "1.0");
        p.files[0].provenance = Some("https://p.example/x".into());
        assert_eq!(api_version(&p, PageFormat::Json), "1.3");
        assert_eq!(api_version(&p, PageFormat::Html), "1.3");
        p.project_status = Some(ProjectStatus {
            status: "archived".into(),
            reason: None,
        });
        assert_eq!(api_version(&p, PageFormat::Json), "1.4");
        p.files[1].size = None;
        assert_eq!(api_version(&p, PageFormat::Json), "1.0");
        let mut q = sample();
        q.versions = None;
        assert_eq!(api_version(&q, PageFormat::Json), "1.0");
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
        let names: Vec<&str> = m.files.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo-1.0.tar.gz",
                "demo-1.0+cpu-py3-none-any.whl",
                "demo-2.0.tar.gz"
            ]
        );
        assert_eq!(
            m.files[0].hashes.get("sha256").unwrap(),
            "aa",
            "root wins a filename"
        );
        assert_eq!(m.versions.unwrap().len(), 2);
        let f = merge([&root, &extra], Strategy::FirstIndex);
        assert_eq!(f.files.len(), 2);
        let none = merge([&ProjectPage::default()], Strategy::Merge);
        assert!(none.versions.is_none());
    }
}
