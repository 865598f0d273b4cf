//! The file route, thin: find the file on the project pages (the cached
//! pages, even expired: a hit never waits on a page refresh), then hand it
//! to `files::Files`, which owns everything else.

use std::sync::Arc;

use super::error::{self, Failure};
use super::{App, IndexGroup};
use crate::files::Wanted;
use crate::http::{Request, Response};
use crate::index_cache::{Doc, Freshness, Key, Resolved, Snapshot};
use crate::origin::IndexId;
use crate::pypi::{CoreMetadata, FileEntry, Filename, ProjectName};

impl App {
    /// A distribution file or its `.metadata`. The project page is the
    /// copy at hand, even expired; without one the request parks until it
    /// is fetched, like a page request (no worker waits).
    pub(super) fn file(
        self: &Arc<Self>,
        req: &Request,
        up: Arc<IndexGroup>,
        name: ProjectName,
        file: Filename,
    ) -> Response {
        if let Some(refused) = self.denied_project(&up, &name) {
            return refused;
        }
        if let Some(refused) = self.hosted_read_refused(req, &up, &name) {
            return refused;
        }
        if let Some(hosted) = self.hosted_file(req, &up, &name, &file) {
            return hosted;
        }
        let key = Key::Project(name.clone());
        let resolution = up
            .index_cache
            .start_resolution(&key, up.strategy, false, true);
        let file_up = Arc::clone(&up);
        self.after_resolution(req, up, resolution, move |app, req, resolved| {
            app.file_on_pages(req, &file_up, name, file, resolved)
        })
    }

    /// The file, once the indexes have answered.
    fn file_on_pages(
        &self,
        req: &Request,
        up: &IndexGroup,
        name: ProjectName,
        file: Filename,
        resolved: Resolved,
    ) -> Response {
        let found = match resolved {
            Resolved::Found(found) => found,
            Resolved::NotFound => return Response::text(404, "project not found in any index\n"),
            Resolved::Failed(e) => return error::respond(&Failure::Page(&e)),
        };
        let synthesizes = |e: &FileEntry| self.files.synthesizes(e);
        let Some((id, entry, part)) = find_file(&found, &file, &synthesizes) else {
            return Response::text(404, format!("{file} is not listed on the project page\n"));
        };
        if let Some(refused) = self.refused_file(up, &found, &name, entry) {
            return refused;
        }
        let index = &up.index_cache.indexes()[id.get()];
        let wanted = Wanted {
            index,
            entry,
            metadata: part != Part::File,
            synthesized: part == Part::MadeMetadata,
            filename: &file,
        };
        self.files.serve(req, wanted).respond(super::file_error)
    }
}

impl App {
    /// A 403 for a file the policy refuses: its project is quarantined
    /// upstream (PEP 792; also for cached, stale and offline copies), it is
    /// denied, or it is in its cooldown under `cooldown-mode = "deny"`.
    /// Audited. (In `hide` mode a young file is served when asked for: a
    /// lock file made before keeps installing.)
    fn refused_file(
        &self,
        up: &IndexGroup,
        found: &[(IndexId, Arc<Snapshot>, Freshness)],
        name: &ProjectName,
        entry: &FileEntry,
    ) -> Option<Response> {
        // Quarantined on any index of the route: no file of the project
        // (the merged page lists none either).
        let quarantined = found.iter().any(|(_, snap, _)| {
            matches!(&*snap.doc, Doc::Page(p) if p.project_status.as_ref().is_some_and(crate::pypi::model::ProjectStatus::is_quarantined))
        });
        let (rule, reason) = if quarantined {
            (
                "quarantine",
                "the upstream quarantined this project (PEP 792)".to_owned(),
            )
        } else {
            let (policy, _) = self.policy_for(up);
            if policy.is_empty() {
                return None;
            }
            let verdict = self.verdict(&policy, name, entry, std::time::SystemTime::now());
            (verdict.rule()?, verdict.refusal()?)
        };
        let file = entry.filename.as_str();
        self.audit
            .record(rule, "refused", name, Some(file), &reason);
        Some(
            Response::text(403, format!("{file}: {reason}\n"))
                .header("Cache-Control", "no-store")
                .log_tag("POLICY"),
        )
    }
}

/// What of a listed file is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    File,
    /// Its `.metadata`, from the upstream.
    Metadata,
    /// Its `.metadata`, made here (synthesis).
    MadeMetadata,
}

/// Finds a file (or the distribution of a `.metadata` file) on the pages,
/// first index first. Metadata is found only where the upstream advertises
/// it, or where it is made here (`synthesizes`).
fn find_file<'a>(
    found: &'a [(IndexId, Arc<Snapshot>, Freshness)],
    file: &Filename,
    synthesizes: &dyn Fn(&FileEntry) -> bool,
) -> Option<(IndexId, &'a FileEntry, Part)> {
    for (i, snap, _) in found {
        if let Some(e) = snap.file(file.as_str()) {
            return Some((*i, e, Part::File));
        }
        if let Some(dist) = file.as_str().strip_suffix(".metadata") {
            if let Some(e) = snap.file(dist) {
                if matches!(e.core_metadata, CoreMetadata::Available(_)) {
                    return Some((*i, e, Part::Metadata));
                }
                if synthesizes(e) {
                    return Some((*i, e, Part::MadeMetadata));
                }
            }
        }
    }
    None
}
