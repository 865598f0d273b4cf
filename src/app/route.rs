//! The router: a pure function from a request's path and query to a
//! `Route`. Names are normalised here (non-canonical ones become a 301),
//! filenames are percent-decoded exactly once and must be a single safe
//! segment, and anything else is a 404 or a 400 with a reason.

use crate::pypi::{Filename, ProjectName};

const GET_HEAD: &str = "GET, HEAD, OPTIONS";
const DELETE: &str = "DELETE, OPTIONS";

/// The two prefixes serving the same API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    Index,
    Simple,
}

impl Prefix {
    fn path(self) -> &'static str {
        match self {
            Prefix::Index => "/index/",
            Prefix::Simple => "/simple/",
        }
    }
}

/// Where a request goes (pure: from the path and query alone).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Home,
    /// Liveness.
    Health,
    /// Readiness.
    Ready,
    Metrics,
    List,
    Project(ProjectName),
    File(ProjectName, Filename),
    /// 301 to this location (absolute path plus query).
    Redirect(String),
    InvalidateList,
    InvalidateProject(ProjectName),
    NotFound,
    BadRequest(String),
}

impl Route {
    pub fn allow(&self) -> &'static str {
        match self {
            Route::InvalidateList | Route::InvalidateProject(_) => DELETE,
            _ => GET_HEAD,
        }
    }
}

fn decode_once(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Maps a path to a route.
pub fn route(path: &str, query: Option<&str>) -> Route {
    let with_query = |p: String| match query {
        Some(q) => format!("{p}?{q}"),
        None => p,
    };
    match path {
        "/" => return Route::Home,
        "/health" => return Route::Health,
        "/ready" => return Route::Ready,
        "/metrics" => return Route::Metrics,
        "/index" => return Route::Redirect(with_query("/index/".into())),
        "/simple" => return Route::Redirect(with_query("/simple/".into())),
        "/cache/list" => return Route::InvalidateList,
        _ => {}
    }
    if let Some(raw) = path.strip_prefix("/cache/") {
        return match decode_once(raw).map(|n| ProjectName::parse(&n)) {
            Some(Ok(name)) => Route::InvalidateProject(name),
            Some(Err(e)) => Route::BadRequest(e.to_string()),
            None => Route::BadRequest("invalid percent-encoding".into()),
        };
    }
    let (prefix, rest) = if let Some(r) = path.strip_prefix("/index/") {
        (Prefix::Index, r)
    } else if let Some(r) = path.strip_prefix("/simple/") {
        (Prefix::Simple, r)
    } else {
        return Route::NotFound;
    };
    under(prefix.path(), rest, query)
}

/// Maps the rest of a path under an index prefix (`/simple/`, or a route's
/// `/pytorch-cu121/simple/`) to a route; redirects stay under `prefix`.
pub fn under(prefix: &str, rest: &str, query: Option<&str>) -> Route {
    let with_query = |p: String| match query {
        Some(q) => format!("{p}?{q}"),
        None => p,
    };
    if rest.is_empty() {
        return Route::List;
    }
    // At most three segments matter (name, file, anything more).
    let segments: Vec<&str> = rest.splitn(3, '/').collect();
    let Some(raw_name) = decode_once(segments[0]) else {
        return Route::BadRequest("invalid percent-encoding".into());
    };
    let name = match ProjectName::parse(&raw_name) {
        Ok(n) => n,
        // Not a name: nothing can live there.
        Err(_) => return Route::NotFound,
    };
    let canonical = name.as_str() == segments[0];
    // Made only for a redirect (a hit allocates nothing here).
    let base = || format!("{prefix}{name}/");
    match segments.as_slice() {
        [_] => Route::Redirect(with_query(base())),
        [_, ""] if canonical => Route::Project(name),
        [_, ""] => Route::Redirect(with_query(base())),
        [_, file] if !file.is_empty() => {
            if !canonical {
                return Route::Redirect(with_query(format!("{}{file}", base())));
            }
            match decode_once(file).as_deref().and_then(Filename::parse) {
                Some(f) => Route::File(name, f),
                None => Route::NotFound,
            }
        }
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ProjectName {
        ProjectName::parse(s).unwrap()
    }

    fn file(s: &str) -> Filename {
        Filename::parse(s).unwrap()
    }

    #[test]
    fn routes() {
        let cases: Vec<(&str, Option<&str>, Route)> = vec![
            ("/", None, Route::Home),
            ("/health", None, Route::Health),
            ("/ready", None, Route::Ready),
            ("/metrics", None, Route::Metrics),
            ("/index/", None, Route::List),
            ("/simple/", None, Route::List),
            (
                "/index",
                Some("format=x"),
                Route::Redirect("/index/?format=x".into()),
            ),
            ("/index/numpy/", None, Route::Project(name("numpy"))),
            ("/simple/numpy/", None, Route::Project(name("numpy"))),
            (
                "/index/numpy",
                None,
                Route::Redirect("/index/numpy/".into()),
            ),
            (
                "/index/NumPy/",
                Some("format=json"),
                Route::Redirect("/index/numpy/?format=json".into()),
            ),
            (
                "/simple/Foo.Bar",
                None,
                Route::Redirect("/simple/foo-bar/".into()),
            ),
            (
                "/index/Foo_Bar/foo_bar-1.0.tar.gz",
                None,
                Route::Redirect("/index/foo-bar/foo_bar-1.0.tar.gz".into()),
            ),
            (
                "/index/numpy/numpy-1.0.whl",
                None,
                Route::File(name("numpy"), file("numpy-1.0.whl")),
            ),
            (
                "/index/torch/torch-2.0%2Bcpu.whl",
                None,
                Route::File(name("torch"), file("torch-2.0+cpu.whl")),
            ),
            (
                "/index/torch/torch-2.0%252Bcpu.whl",
                None,
                Route::File(name("torch"), file("torch-2.0%2Bcpu.whl")),
            ),
            (
                "/index/numpy/numpy-1.0.whl.metadata",
                None,
                Route::File(name("numpy"), file("numpy-1.0.whl.metadata")),
            ),
            ("/index/numpy/..", None, Route::NotFound),
            ("/index/numpy/%2e%2e", None, Route::NotFound),
            ("/index/numpy/a%2Fb", None, Route::NotFound),
            ("/index/numpy/a%5Cb", None, Route::NotFound),
            ("/index/numpy/a%00b", None, Route::NotFound),
            ("/index/numpy/a/b", None, Route::NotFound),
            ("/index/../etc/passwd", None, Route::NotFound),
            (
                "/index/%ff/",
                None,
                Route::BadRequest("invalid percent-encoding".into()),
            ),
            ("/index/-bad-/", None, Route::NotFound),
            ("/cache/list", None, Route::InvalidateList),
            (
                "/cache/Jinja2",
                None,
                Route::InvalidateProject(name("jinja2")),
            ),
            ("/nothing", None, Route::NotFound),
            ("/indexes/", None, Route::NotFound),
        ];
        for (path, query, want) in cases {
            assert_eq!(route(path, query), want, "{path} {query:?}");
        }
        let long = format!("/index/{}/", "a".repeat(300));
        assert_eq!(route(&long, None), Route::NotFound);
        assert!(matches!(route("/cache/a%2Fb", None), Route::BadRequest(_)));
    }
}
