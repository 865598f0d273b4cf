//! Parsing upstream index pages into the model: PEP 691 JSON with serde
//! (unknown keys tolerated, legacy key spellings accepted) and PEP 503 HTML
//! with the html5gum tokenizer (`<base>`, relative links, entities,
//! value-less attributes). Pure functions of (body, content type, URL).

use std::borrow::Cow;
use std::collections::BTreeSet;

use html5gum::{Token, Tokenizer};
use url::Url;

use super::model::{
    clean_hashes, clean_provenance, parse_hash_pair, CoreMetadata, FileEntry, Filename, Hashes,
    ProjectList, ProjectPage, ProjectStatus, Yanked,
};
use super::wire;

/// The serialisation of an upstream page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Html,
}

impl Format {
    /// From the upstream `Content-Type`; missing or unknown means HTML.
    pub fn from_content_type(ct: Option<&str>) -> Format {
        let essence = ct
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some(e) if e.starts_with("application/vnd.pypi.simple.") && e.ends_with("+json") => {
                Format::Json
            }
            Some("application/json") => Format::Json,
            _ => Format::Html,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("invalid simple-API JSON: {0}")]
    Json(String),
    #[error("unsupported simple-API major version {0}")]
    Version(String),
    #[error("the page is not HTML")]
    NotHtml,
}

fn check_version(meta: Option<&wire::Meta<'_>>) -> Result<(), ParseError> {
    let Some(v) = meta.and_then(|m| m.api_version.as_deref()) else {
        return Ok(());
    };
    match v.split('.').next() {
        Some("1") => Ok(()),
        _ => Err(ParseError::Version(v.to_owned())),
    }
}

/// Parses a project page.
pub fn parse_project_page(
    body: &[u8],
    format: Format,
    page_url: &Url,
) -> Result<ProjectPage, ParseError> {
    match format {
        Format::Json => parse_json_page(body, page_url),
        Format::Html => parse_html_page(body, page_url),
    }
}

/// Parses a project list (the root page of an index).
pub fn parse_project_list(body: &[u8], format: Format) -> Result<ProjectList, ParseError> {
    match format {
        Format::Json => {
            let list: wire::List =
                serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
            check_version(list.meta.as_ref())?;
            Ok(ProjectList {
                names: list
                    .projects
                    .into_iter()
                    .map(|p| p.name.into_owned())
                    .collect(),
            })
        }
        Format::Html => {
            let mut names = Vec::new();
            let mut in_anchor = false;
            let mut text = String::new();
            let mut saw_tag = false;
            for token in Tokenizer::new(body).flatten() {
                match token {
                    Token::StartTag(tag) => {
                        saw_tag = true;
                        if tag.name.as_slice() == b"a" {
                            in_anchor = true;
                            text.clear();
                        }
                    }
                    Token::String(s) if in_anchor => text.push_str(&String::from_utf8_lossy(&s)),
                    Token::EndTag(tag) if tag.name.as_slice() == b"a" => {
                        in_anchor = false;
                        let name = text.trim();
                        if !name.is_empty() {
                            names.push(name.to_owned());
                        }
                    }
                    _ => {}
                }
            }
            if !saw_tag && !body.iter().all(u8::is_ascii_whitespace) {
                return Err(ParseError::NotHtml);
            }
            Ok(ProjectList { names })
        }
    }
}

fn metadata_from_json(m: Option<wire::Metadata<'_>>) -> CoreMetadata {
    match m {
        None | Some(wire::Metadata::Bool(false)) => CoreMetadata::Absent,
        Some(wire::Metadata::Bool(true)) => CoreMetadata::Available(Hashes::new()),
        Some(wire::Metadata::Hashes(h)) => CoreMetadata::Available(clean_hashes(h.into_owned())),
    }
}

fn parse_json_page(body: &[u8], page_url: &Url) -> Result<ProjectPage, ParseError> {
    let page: wire::Page =
        serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    check_version(page.meta.as_ref())?;
    let mut files = Vec::with_capacity(page.files.len());
    for f in page.files {
        let Some((url, _fragment)) = resolve_file_url(page_url, &f.url) else {
            log::debug!("skipping file with unusable URL {:?}", f.url);
            continue;
        };
        let Some(filename) = Filename::parse(&f.filename) else {
            log::debug!("skipping file with unusable name {:?}", f.filename);
            continue;
        };
        let mut entry = FileEntry::new(filename, url);
        entry.hashes = clean_hashes(f.hashes.into_owned());
        entry.requires_python = f
            .requires_python
            .map(Cow::into_owned)
            .filter(|s| !s.trim().is_empty());
        entry.yanked = match f.yanked {
            None | Some(wire::Yanked::Bool(false)) => Yanked::No,
            Some(wire::Yanked::Bool(true)) => Yanked::Yes,
            Some(wire::Yanked::Reason(r)) if r.is_empty() => Yanked::Yes,
            Some(wire::Yanked::Reason(r)) => Yanked::Reason(r.into_owned()),
        };
        entry.core_metadata = metadata_from_json(
            f.core_metadata
                .or(f.dist_info_metadata)
                .or(f.data_dist_info_metadata),
        );
        entry.gpg_sig = f.gpg_sig;
        entry.size = f.size;
        entry.upload_time = f.upload_time.map(Cow::into_owned);
        entry.provenance = clean_provenance(f.provenance.map(Cow::into_owned));
        files.push(entry);
    }
    Ok(ProjectPage {
        files,
        versions: page
            .versions
            .map(|v| v.into_iter().map(Cow::into_owned).collect::<BTreeSet<_>>()),
        project_status: page.project_status.and_then(|s| {
            Some(ProjectStatus {
                status: s.status?.into_owned(),
                reason: s.reason.map(Cow::into_owned),
            })
        }),
    })
}

/// Resolves a file link against the page URL; returns the URL without its
/// fragment and the fragment. Only http(s) URLs are usable.
fn resolve_file_url(base: &Url, href: &str) -> Option<(Url, Option<String>)> {
    let mut url = base.join(href.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let fragment = url.fragment().map(str::to_owned);
    url.set_fragment(None);
    Some((url, fragment))
}

/// The filename of a file URL: its last path segment, percent-decoded once.
fn filename_of(url: &Url) -> Option<Filename> {
    let segment = url.path_segments()?.next_back()?;
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    Filename::parse(&decoded)
}

fn attr(tag: &html5gum::StartTag<()>, name: &str) -> Option<String> {
    tag.attributes
        .iter()
        .find(|(k, _)| k.as_slice() == name.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

fn parse_html_page(body: &[u8], page_url: &Url) -> Result<ProjectPage, ParseError> {
    let mut base = page_url.clone();
    let mut files = Vec::new();
    let mut status: Option<String> = None;
    let mut status_reason: Option<String> = None;
    let mut saw_tag = false;
    for token in Tokenizer::new(body).flatten() {
        let Token::StartTag(tag) = token else {
            continue;
        };
        saw_tag = true;
        match tag.name.as_slice() {
            b"base" => {
                if let Some(b) = attr(&tag, "href").and_then(|h| page_url.join(&h).ok()) {
                    base = b;
                }
            }
            b"meta" => match attr(&tag, "name").as_deref() {
                Some("pypi:project-status") => status = attr(&tag, "content"),
                Some("pypi:project-status-reason") => status_reason = attr(&tag, "content"),
                _ => {}
            },
            b"a" => {
                let Some(href) = attr(&tag, "href") else {
                    continue;
                };
                let Some((url, fragment)) = resolve_file_url(&base, &href) else {
                    log::debug!("skipping link with unusable URL {href:?}");
                    continue;
                };
                let Some(filename) = filename_of(&url) else {
                    log::debug!("skipping link without a usable filename {href:?}");
                    continue;
                };
                let mut entry = FileEntry::new(filename, url);
                if let Some((k, v)) = fragment.as_deref().and_then(parse_hash_pair) {
                    entry.hashes.insert(k, v);
                }
                entry.requires_python =
                    attr(&tag, "data-requires-python").filter(|s| !s.trim().is_empty());
                if let Some(y) = attr(&tag, "data-yanked") {
                    entry.yanked = Yanked::from_attr(&y);
                }
                if let Some(m) = attr(&tag, "data-core-metadata")
                    .or_else(|| attr(&tag, "data-dist-info-metadata"))
                {
                    entry.core_metadata = CoreMetadata::from_attr(&m);
                }
                entry.gpg_sig = attr(&tag, "data-gpg-sig").map(|v| v.eq_ignore_ascii_case("true"));
                // Not in PEP 700 for HTML, but uv reads them.
                entry.size = attr(&tag, "data-size").and_then(|s| s.trim().parse().ok());
                entry.upload_time = attr(&tag, "data-upload-time").filter(|s| !s.is_empty());
                entry.provenance = clean_provenance(attr(&tag, "data-provenance"));
                files.push(entry);
            }
            _ => {}
        }
    }
    if !saw_tag && !body.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::NotHtml);
    }
    Ok(ProjectPage {
        files,
        versions: None,
        project_status: status.map(|status| ProjectStatus {
            status,
            reason: status_reason,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("https://files.example/simple/numpy/").unwrap()
    }

    #[test]
    fn format_detection() {
        let cases = [
            (Some("application/vnd.pypi.simple.v1+json"), Format::Json),
            (
                Some("application/vnd.pypi.simple.v1+json; charset=utf-8"),
                Format::Json,
            ),
            (
                Some("application/vnd.pypi.simple.latest+json"),
                Format::Json,
            ),
            (Some("application/json"), Format::Json),
            (Some("text/html; charset=utf-8"), Format::Html),
            (Some("application/vnd.pypi.simple.v1+html"), Format::Html),
            (None, Format::Html),
            (Some("application/octet-stream"), Format::Html),
        ];
        for (ct, want) in cases {
            assert_eq!(Format::from_content_type(ct), want, "{ct:?}");
        }
    }

    #[test]
    fn html_page_with_every_attribute() {
        let html = br#"<!DOCTYPE html><html><head>
            <meta name="pypi:repository-version" content="1.1">
            <meta name="pypi:project-status" content="archived">
            <base href="/packages/">
            </head><body>
            <a href="a/numpy-1.0.tar.gz#sha256=AABB" data-requires-python="&gt;=3.8">numpy-1.0.tar.gz</a><br/>
            <a href="https://cdn.example/numpy-1.0-py3-none-any.whl#md5=00" data-yanked data-core-metadata="sha256=cc" data-gpg-sig="false">x</a>
            <a href="torch-2.0%2Bcu118-cp311-none-any.whl" data-yanked="broken build" data-dist-info-metadata>y</a>
            <a href="mailto:someone@example">mail</a>
            <a>no href</a>
            <a href="../">parent</a>
            </body></html>"#;
        let page = parse_project_page(html, Format::Html, &url()).unwrap();
        assert_eq!(page.files.len(), 3, "{:#?}", page.files);
        let f = &page.files[0];
        assert_eq!(f.filename.as_str(), "numpy-1.0.tar.gz");
        assert_eq!(
            f.url.as_str(),
            "https://files.example/packages/a/numpy-1.0.tar.gz"
        );
        assert_eq!(f.hashes.get("sha256").map(String::as_str), Some("aabb"));
        assert_eq!(f.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(f.yanked, Yanked::No);
        assert_eq!(f.core_metadata, CoreMetadata::Absent);
        let f = &page.files[1];
        assert_eq!(
            f.url.as_str(),
            "https://cdn.example/numpy-1.0-py3-none-any.whl"
        );
        assert_eq!(f.yanked, Yanked::Yes);
        assert_eq!(f.gpg_sig, Some(false));
        assert!(
            matches!(&f.core_metadata, CoreMetadata::Available(h) if h.get("sha256").is_some_and(|v| v == "cc"))
        );
        let f = &page.files[2];
        assert_eq!(f.filename.as_str(), "torch-2.0+cu118-cp311-none-any.whl");
        assert_eq!(f.yanked, Yanked::Reason("broken build".into()));
        assert_eq!(f.core_metadata, CoreMetadata::Available(Hashes::new()));
        assert_eq!(page.project_status.unwrap().status, "archived");
    }

    #[test]
    fn json_page_with_every_field() {
        let json = br#"{"meta":{"api-version":"1.4","_last-serial":5},"name":"numpy",
          "versions":["1.0","2.0"],"project-status":{"status":"active"},"alternate-locations":[],
          "files":[
            {"filename":"numpy-1.0.tar.gz","url":"../../packages/numpy-1.0.tar.gz","hashes":{"sha256":"AB","bogus":"zz"},
             "requires-python":">=3.8","yanked":"bad","core-metadata":{"sha256":"cd"},
             "data-dist-info-metadata":{"sha256":"cd"},"size":10,"upload-time":"2024-01-01T00:00:00Z",
             "provenance":"https://pypi.example/prov","unknown":1},
            {"filename":"numpy-2.0.whl","url":"https://cdn.example/numpy-2.0.whl","hashes":{},"yanked":false,
             "dist-info-metadata":true,"gpg-sig":true,"provenance":"http://insecure/"},
            {"filename":"../evil","url":"https://cdn.example/evil","hashes":{}},
            {"filename":"ftp.whl","url":"ftp://cdn.example/ftp.whl","hashes":{}}
          ]}"#;
        let page = parse_project_page(json, Format::Json, &url()).unwrap();
        assert_eq!(page.files.len(), 2);
        let f = &page.files[0];
        assert_eq!(
            f.url.as_str(),
            "https://files.example/packages/numpy-1.0.tar.gz"
        );
        assert_eq!(f.hashes.len(), 1);
        assert_eq!(f.hashes.get("sha256").unwrap(), "ab");
        assert_eq!(f.yanked, Yanked::Reason("bad".into()));
        assert_eq!(f.size, Some(10));
        assert_eq!(f.upload_time.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(f.provenance.as_deref(), Some("https://pypi.example/prov"));
        let f = &page.files[1];
        assert_eq!(f.yanked, Yanked::No);
        assert_eq!(f.core_metadata, CoreMetadata::Available(Hashes::new()));
        assert_eq!(f.gpg_sig, Some(true));
        assert_eq!(f.provenance, None);
        assert_eq!(
            page.versions.unwrap().into_iter().collect::<Vec<_>>(),
            ["1.0", "2.0"]
        );
        assert_eq!(page.project_status.unwrap().status, "active");
    }

    #[test]
    fn an_upload_time_of_another_type_leaves_the_file_untimed() {
        for odd in ["1704067200", "null", "{}", "[1]", "true", "\"\""] {
            let json = format!(
                r#"{{"meta":{{"api-version":"1.1"}},"name":"x","files":[
                  {{"filename":"x-1.0.tar.gz","url":"x-1.0.tar.gz","hashes":{{}},"upload-time":{odd}}},
                  {{"filename":"x-2.0.tar.gz","url":"x-2.0.tar.gz","hashes":{{}},"upload-time":"2024-01-01T00:00:00Z"}}]}}"#
            );
            let page = parse_project_page(json.as_bytes(), Format::Json, &url())
                .unwrap_or_else(|e| panic!("{odd}: {e}"));
            assert_eq!(page.files.len(), 2, "{odd}");
            let first = page.files[0].upload_time.as_deref();
            assert!(first.is_none() || first == Some(""), "{odd}: {first:?}");
            assert_eq!(
                page.files[1].upload_time.as_deref(),
                Some("2024-01-01T00:00:00Z")
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases: &[(&[u8], Format)] = &[
            (b"{not json", Format::Json),
            (b"[]", Format::Json),
            (b"{\"files\": 5}", Format::Json),
            (
                b"{\"meta\":{\"api-version\":\"2.0\"},\"files\":[]}",
                Format::Json,
            ),
            (b"\x00\x01\x02 binary", Format::Html),
            (b"just some text", Format::Html),
        ];
        for (body, format) in cases {
            assert!(
                parse_project_page(body, *format, &url()).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // Tag soup is still HTML: no files, no error.
        let page = parse_project_page(b"<html><a href=>", Format::Html, &url()).unwrap();
        assert!(page.files.is_empty());
        // An empty body is a page without files.
        assert!(parse_project_page(b"", Format::Html, &url())
            .unwrap()
            .files
            .is_empty());
    }

    #[test]
    fn project_lists() {
        let html = b"<html><body><a href='/simple/numpy/'>numpy</a><a href='x/'> Foo.Bar </a></body></html>";
        let list = parse_project_list(html, Format::Html).unwrap();
        assert_eq!(list.names, ["numpy", "Foo.Bar"]);
        let json = br#"{"meta":{"api-version":"1.0"},"projects":[{"name":"numpy"},{"name":"scipy","_x":1}]}"#;
        let list = parse_project_list(json, Format::Json).unwrap();
        assert_eq!(list.names, ["numpy", "scipy"]);
        assert!(parse_project_list(b"nonsense", Format::Json).is_err());
    }
}
