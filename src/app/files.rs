//! The file route, thin: find the file on the project pages (the cached
//! pages, even expired: a hit never waits on a page refresh), then hand it
//! to `files::Files`, which owns everything else.

use std::sync::Arc;

use super::error::{self, Failure};
use super::App;
use crate::files::Wanted;
use crate::http::{Request, Response};
use crate::index_cache::{Freshness, Key, Resolved, Snapshot};
use crate::origin::IndexId;
use crate::pypi::{CoreMetadata, FileEntry, Filename, ProjectName};

impl App {
    /// A distribution file or its `.metadata`.
    pub(super) fn file(&self, req: &Request, name: ProjectName, file: Filename) -> Response {
        let key = Key::Project(name);
        let found = match self
            .pages
            .resolve(&key, self.settings.strategy, false, true)
        {
            Resolved::Found(found) => found,
            Resolved::NotFound => return Response::text(404, "project not found in any index\n"),
            Resolved::Failed(e) => return error::respond(&Failure::Page(&e)),
        };
        let synthesizes = |e: &FileEntry| self.files.synthesizes(e);
        let Some((id, entry, part)) = find_file(&found, &file, &synthesizes) else {
            return Response::text(404, format!("{file} is not listed on the project page\n"));
        };
        let index = &self.pages.indexes()[id.get()];
        let wanted = Wanted {
            index,
            entry,
            metadata: part != Part::File,
            synthesized: part == Part::MadeMetadata,
            filename: &file,
        };
        self.files.serve(req, wanted)
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
