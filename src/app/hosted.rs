//! The routes of hosted packages: uploads (`POST /hosted/<index>/`),
//! hosted files and their `.metadata` on the default route, and the page
//! of a claimed project (hosted files only: no upstream is asked).

use std::sync::Arc;
use std::time::Duration;

use super::{App, IndexGroup};
use crate::http::{Method, Request, Response};
use crate::index_cache::{Freshness, Times};
use crate::pypi::{negotiate_coding, negotiate_format, Filename, PageView, ProjectName};

impl App {
    /// `/hosted/…`: the upload URL of each hosted index.
    pub(super) fn hosted_route(self: &Arc<Self>, req: &Request) -> Response {
        let Some(hosted) = &self.hosted else {
            return Response::text(
                404,
                "no hosted index is configured (ROXPI_UPLOAD_TOKEN or [[hosted]])\n",
            );
        };
        let rest = req.path().strip_prefix(crate::hosted::PREFIX).unwrap_or("");
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        match segments.as_slice() {
            [index, project, file] if !index.is_empty() => {
                return self.hosted_admin(req, hosted, index, project, file)
            }
            [index] if !index.is_empty() => {}
            _ => return Response::text(404, "not found\n"),
        }
        let index = segments[0];
        match req.method() {
            Method::Post => hosted.upload(req, index),
            Method::Options => Response::new(204).header("Allow", "POST, OPTIONS"),
            m => Response::text(
                405,
                format!("{m} is not allowed here: uploads are POSTed\n"),
            )
            .header("Allow", "POST, OPTIONS"),
        }
    }

    /// `POST /hosted/<index>/<project>/<file>?action=yank&reason=…` (or
    /// `action=unyank`), with the admin token: PEP 592 yanks of hosted
    /// files.
    fn hosted_admin(
        &self,
        req: &Request,
        hosted: &crate::hosted::Hosted,
        index: &str,
        project: &str,
        file: &str,
    ) -> Response {
        if *req.method() != Method::Post {
            return Response::text(
                405,
                "yanks are POSTed: ?action=yank&reason=… or ?action=unyank\n",
            )
            .header("Allow", "POST");
        }
        if self.settings.admin_token.is_none() {
            return Response::text(403, "yanking needs ROXPI_ADMIN_TOKEN to be set\n");
        }
        if !self.authorized(req) {
            return Response::text(
                401,
                "an admin token is needed: Authorization: Bearer <ROXPI_ADMIN_TOKEN>\n",
            )
            .header("WWW-Authenticate", "Bearer realm=\"roxpi\"");
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let Ok(name) = ProjectName::parse(&decode(project)) else {
            return Response::text(400, "not a project name\n");
        };
        let action = super::pages::query_param(req.query(), "action").unwrap_or_default();
        let yanked = match action.as_str() {
            "yank" => Some(
                super::pages::query_param(req.query(), "reason")
                    .map(|r| decode(&r))
                    .unwrap_or_default(),
            ),
            "unyank" => None,
            other => {
                return Response::text(400, format!("action {other:?}: expected yank or unyank\n"))
            }
        };
        match hosted.set_yanked(index, &name, &decode(file), yanked) {
            Ok(true) => {
                log::info!("hosted {index}: {action} {name}/{file}");
                super::json_success()
            }
            Ok(false) => Response::text(404, format!("{name}/{file} is not hosted in {index}\n")),
            Err(e) => Response::text(500, format!("{e}\n")),
        }
    }

    /// A hosted file or `.metadata` of the default route, or a 404 for a
    /// claimed project's other files. `None`: not hosted, ask the indexes.
    pub(super) fn hosted_file(
        &self,
        req: &Request,
        up: &IndexGroup,
        name: &ProjectName,
        file: &Filename,
    ) -> Option<Response> {
        let hosted = self.hosted.as_ref().filter(|_| !up.hosted.is_empty())?;
        let Some((path, record, metadata)) = hosted.file(name, file, &up.hosted) else {
            return hosted.claims(name, &up.hosted).then(|| {
                Response::text(
                    404,
                    format!("{file} is not a file of the hosted project {name}\n"),
                )
                .log_tag("HOSTED")
            });
        };
        let opened = std::fs::File::open(&path).and_then(|f| {
            let len = f.metadata()?.len();
            Ok((f, len))
        });
        let (f, len) = match opened {
            Ok(x) => x,
            Err(e) => {
                log::error!("hosted file {}: {e}", path.display());
                return Some(Response::text(500, "the hosted file cannot be read\n"));
            }
        };
        let etag = match (&record.metadata_sha256, metadata) {
            (Some(m), true) => format!("\"{}\"", &m[..m.len().min(32)]),
            _ => format!("\"{}\"", &record.sha256[..record.sha256.len().min(32)]),
        };
        let content_type = if metadata {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        };
        let r = Response::new(200)
            .header("Content-Type", content_type)
            .header("ETag", etag.clone())
            .header("Cache-Control", "max-age=365000000, immutable")
            .header("X-Cache", "HOSTED")
            .log_tag("HOSTED");
        if crate::http::conditional::etag_matches(req.header("if-none-match"), &etag) {
            return Some(crate::http::conditional::not_modified(r));
        }
        Some(r.body(crate::http::FileRange {
            file: Arc::new(f),
            offset: 0,
            len,
        }))
    }

    /// The page of a project claimed by a hosted index: its hosted files
    /// alone, rendered now (pages of a few files; always current).
    pub(super) fn claimed_page(
        &self,
        req: &Request,
        up: &IndexGroup,
        name: &ProjectName,
    ) -> Option<Response> {
        let hosted = self.hosted.as_ref().filter(|_| !up.hosted.is_empty())?;
        if !hosted.claims(name, &up.hosted) {
            return None;
        }
        let Some(page) = hosted.page(name, &up.hosted) else {
            // Claimed by a record in the bucket whose file is on its way.
            return Some(
                Response::text(503, format!("{name} is hosted; its files are being taken from the bucket, retry shortly\n"))
                    .header("Retry-After", "5"),
            );
        };
        let format = negotiate_format(
            super::pages::query_param(req.query(), "format").as_deref(),
            req.header("accept"),
        )?;
        let coding = negotiate_coding(req.header("accept-encoding"))?;
        let (policy, _) = self.policy_for(up);
        let mut view = PageView::of(&page);
        self.apply_hosted_policy(name, &mut view, &policy);
        let mut body = Vec::new();
        if let Err(e) = crate::pypi::write_project(name, &view, format, &mut body) {
            log::error!("rendering the hosted page of {name} failed: {e}");
            return Some(Response::text(500, "the page could not be rendered\n"));
        }
        let view = super::pages::rendered(body, coding);
        let times = [Times {
            remaining: Duration::ZERO,
            age: Duration::ZERO,
            freshness: Freshness::Hit,
        }];
        Some(
            super::pages::page_response(req, &view, &times, format, coding)
                .header("X-Hosted", "claimed"),
        )
    }
}

impl App {
    /// A 401 for a project of a hosted index with a read token, read
    /// without it.
    pub(super) fn hosted_read_refused(
        &self,
        req: &Request,
        up: &IndexGroup,
        name: &ProjectName,
    ) -> Option<Response> {
        let token = self
            .hosted
            .as_ref()
            .filter(|_| !up.hosted.is_empty())?
            .read_token(name, &up.hosted)?;
        if token.presented_in(req) {
            return None;
        }
        self.read_refusals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(crate::access::read_refused())
    }

    /// What hosted files change on a route's pages: bumped by every upload
    /// and yank (0 where nothing is hosted).
    pub(super) fn hosted_generation(&self, up: &IndexGroup) -> u64 {
        match &self.hosted {
            Some(h) if !up.hosted.is_empty() => h.generation(),
            _ => 0,
        }
    }

    /// The hosted files of `name` on the default route.
    pub(super) fn hosted_page(
        &self,
        up: &IndexGroup,
        name: &ProjectName,
    ) -> Option<crate::pypi::ProjectPage> {
        self.hosted
            .as_ref()
            .filter(|_| !up.hosted.is_empty())?
            .page(name, &up.hosted)
    }

    /// The hosted projects, for the default route's project list.
    pub(super) fn hosted_projects(&self, up: &IndexGroup) -> Vec<ProjectName> {
        match &self.hosted {
            Some(h) if !up.hosted.is_empty() => h.projects(&up.hosted).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The policy over hosted files: deny and yank rules apply, the
    /// release cooldown does not (one's own builds are trusted), so each
    /// file is judged as if its cooldown had passed.
    fn apply_hosted_policy(
        &self,
        name: &ProjectName,
        page: &mut PageView<'_>,
        policy: &crate::policy::Policy,
    ) {
        if policy.is_empty() {
            return;
        }
        let later = crate::policy::latest();
        page.files.retain_mut(
            |listed| match self.verdict(policy, name, listed.entry, later) {
                crate::policy::Verdict::Deny(reason) => {
                    let file = listed.entry.filename.as_str();
                    self.audit
                        .record("deny", "removed", name, Some(file), &reason);
                    false
                }
                crate::policy::Verdict::Yank(reason) => {
                    if !listed.yanked().is_yanked() {
                        listed.yanked = Some(crate::pypi::Yanked::Reason(reason));
                    }
                    true
                }
                _ => true,
            },
        );
    }
}
