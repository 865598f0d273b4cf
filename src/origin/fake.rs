//! An in-process `Origin` for unit tests: no sockets. It answers from
//! tables, can fail in each way a real upstream fails, can be held (every
//! call blocks until `release`), and records every call it gets.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Condvar, Mutex, MutexGuard};

use url::Url;

use super::{Index, Origin, OriginError, PageFetch, RawPage, Streamed, Validators};
use crate::pypi::{Format, ProjectList, ProjectName, ProjectPage};

/// A way to fail.
#[derive(Clone, Copy, Debug)]
pub enum Fail {
    Timeout,
    Refused,
    Status(u16),
    Garbage,
    /// As the real upstream answers in offline mode.
    Offline,
}

/// How a page request is answered.
#[derive(Clone, Debug)]
pub enum PageAnswer {
    Page(ProjectPage),
    NotFound,
    Fail(Fail),
}

/// How a file request is answered.
#[derive(Clone, Debug)]
pub enum FileAnswer {
    /// These bytes, announcing `content_length` (`None`: no length), cut
    /// with an error after `cut_at` bytes if set.
    Body {
        data: Vec<u8>,
        content_length: Option<u64>,
        cut_at: Option<usize>,
    },
    Fail(Fail),
}

impl FileAnswer {
    pub fn ok(data: &[u8]) -> FileAnswer {
        FileAnswer::Body {
            data: data.to_vec(),
            content_length: Some(data.len() as u64),
            cut_at: None,
        }
    }
}

#[derive(Default)]
struct State {
    pages: HashMap<String, PageAnswer>,
    files: HashMap<String, FileAnswer>,
    held: bool,
    calls: Vec<String>,
    /// Validators sent with each page (default: none).
    validators: HashMap<String, Validators>,
}

#[derive(Default)]
pub struct FakeOrigin {
    state: Mutex<State>,
    released: Condvar,
}

fn fail(url: &Url, f: Fail) -> OriginError {
    match f {
        Fail::Timeout => OriginError::timeout(url),
        Fail::Refused => OriginError::connect(url, "connection refused"),
        Fail::Status(s) => OriginError::status(url, s),
        Fail::Garbage => OriginError::garbage(url, "not a page"),
        Fail::Offline => OriginError::offline(url),
    }
}

impl FakeOrigin {
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    pub fn set_page(&self, name: &str, answer: PageAnswer) {
        self.lock().pages.insert(name.to_owned(), answer);
    }

    /// The validators `name`'s page is sent with; a request carrying the
    /// same `ETag` back gets `NotModified`.
    pub fn set_validators(&self, name: &str, v: Validators) {
        self.lock().validators.insert(name.to_owned(), v);
    }

    pub fn set_file(&self, url: &str, answer: FileAnswer) {
        self.lock().files.insert(url.to_owned(), answer);
    }

    /// Every call blocks from now until `release`.
    pub fn hold(&self) {
        self.lock().held = true;
    }

    pub fn release(&self) {
        self.lock().held = false;
        self.released.notify_all();
    }

    /// Calls so far, as `page <name>`, `list`, `file <url> <range>`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    /// Records the call, then waits while held.
    fn enter(&self, call: String) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        st.calls.push(call);
        while st.held {
            st = self.released.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st
    }
}

impl Origin for FakeOrigin {
    fn fetch_project(
        &self,
        index: &Index,
        name: &ProjectName,
        known: &Validators,
    ) -> Result<PageFetch, OriginError> {
        let conditional = if known.can_revalidate() {
            " conditional"
        } else {
            ""
        };
        let st = self.enter(format!("page {name}{conditional}"));
        let url = index.project_url(name);
        let validators = st
            .validators
            .get(name.as_str())
            .cloned()
            .unwrap_or_default();
        match st.pages.get(name.as_str()).cloned() {
            Some(PageAnswer::Page(_)) if known.etag.is_some() && known.etag == validators.etag => {
                Ok(PageFetch::NotModified)
            }
            Some(PageAnswer::Page(page)) => Ok(PageFetch::Found(
                page,
                Box::new(RawPage {
                    format: Format::Json,
                    url,
                    body: bytes::Bytes::new(),
                    validators,
                }),
            )),
            Some(PageAnswer::NotFound) | None => Ok(PageFetch::NotFound),
            Some(PageAnswer::Fail(f)) => Err(fail(&url, f)),
        }
    }

    fn fetch_list(&self, _index: &Index) -> Result<Option<ProjectList>, OriginError> {
        let st = self.enter("list".into());
        Ok(Some(ProjectList {
            names: st.pages.keys().cloned().collect(),
        }))
    }

    fn open_file(
        &self,
        _index: &Index,
        url: &Url,
        range: Option<&str>,
    ) -> Result<Streamed, OriginError> {
        let st = self.enter(format!("file {url} {}", range.unwrap_or("-")));
        match st.files.get(url.as_str()).cloned() {
            None => Err(fail(url, Fail::Status(404))),
            Some(FileAnswer::Fail(f)) => Err(fail(url, f)),
            Some(FileAnswer::Body {
                data,
                content_length,
                cut_at,
            }) => {
                // Ranges are answered `bytes=N-` only (all the code asks).
                let start = range
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|n| n.parse::<usize>().ok());
                let (status, body, content_range, len) = match start {
                    Some(s) if s <= data.len() => (
                        206,
                        data[s..].to_vec(),
                        Some(format!(
                            "bytes {s}-{}/{}",
                            data.len().max(1) - 1,
                            data.len()
                        )),
                        Some((data.len() - s) as u64),
                    ),
                    _ => (200, data, None, content_length),
                };
                Ok(Streamed {
                    status,
                    content_length: len,
                    content_range,
                    final_url: url.clone(),
                    body: Box::new(Cut {
                        data: body,
                        pos: 0,
                        cut_at,
                    }),
                })
            }
        }
    }
}

/// A body that fails after `cut_at` bytes.
struct Cut {
    data: Vec<u8>,
    pos: usize,
    cut_at: Option<usize>,
}

impl Read for Cut {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let end = self.cut_at.unwrap_or(self.data.len()).min(self.data.len());
        if self.pos >= end {
            return match self.cut_at {
                Some(_) => Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut")),
                None => Ok(0),
            };
        }
        let n = (end - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
