//! The legacy upload form (what `twine upload` and `uv publish` send): a
//! `multipart/form-data` body parsed as it arrives by `multer`, driven
//! without an async runtime. The server pushes each chunk it reads
//! (`BodySink::write`); the parser is polled with a no-op waker until it
//! needs more bytes, so it never waits: its stream answers `Pending` when
//! the pushed bytes are used up. The `content` part goes to a staging file
//! and into sha256 as it streams; the other fields are small (64 KiB each
//! at most) and kept. Nothing of the file is held in memory.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use multer::{Constraints, Field, Multipart, SizeLimit};
use sha2::{Digest, Sha256};

use super::check::Refusal;

/// Largest value of a form field other than `content`.
const MAX_FIELD: u64 = 64 * 1024;
/// Form fields kept (twine sends about 25; classifiers repeat).
const MAX_FIELDS: usize = 512;

/// The bytes pushed so far and not yet taken by the parser.
#[derive(Default)]
struct Fed {
    chunks: VecDeque<Bytes>,
    ended: bool,
}

/// The parser's input: `Pending` when everything pushed was taken.
struct Feed(Arc<Mutex<Fed>>);

impl Stream for Feed {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut fed = crate::lock(&self.0);
        match fed.chunks.pop_front() {
            Some(b) => Poll::Ready(Some(Ok(b))),
            None if fed.ended => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

/// The form as received: the file staged and hashed, the fields kept.
pub struct Form {
    pub fields: Vec<(String, String)>,
    /// The `content` part's file name.
    pub filename: String,
    pub staged: PathBuf,
    pub size: u64,
    pub sha256: String,
}

impl Form {
    /// The first value of a field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the `content` part is being written to.
struct Content {
    filename: String,
    file: File,
    size: u64,
    sha: Sha256,
}

/// A form being parsed.
pub struct FormParser {
    fed: Arc<Mutex<Fed>>,
    multipart: Multipart<'static>,
    field: Option<(Field<'static>, Option<String>)>,
    text: Vec<u8>,
    fields: Vec<(String, String)>,
    content: Option<Content>,
    staging: (PathBuf, Option<File>),
    max_file: u64,
    done: bool,
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: Option<&str>) -> Result<String, Refusal> {
    let ct = content_type.unwrap_or("");
    multer::parse_boundary(ct).map_err(|_| {
        Refusal(format!(
            "an upload is a multipart/form-data body, not {:?}",
            ct
        ))
    })
}

impl FormParser {
    /// A parser writing the file part to `staged` (created by the caller),
    /// refusing a file over `max_file` bytes.
    pub fn new(boundary: String, staged: (PathBuf, File), max_file: u64) -> FormParser {
        let fed = Arc::new(Mutex::new(Fed::default()));
        let limits = SizeLimit::new()
            .whole_stream(max_file.saturating_add(4 << 20))
            .per_field(MAX_FIELD)
            .for_field("content", max_file);
        let multipart = Multipart::with_constraints(
            Feed(Arc::clone(&fed)),
            boundary,
            Constraints::new().size_limit(limits),
        );
        FormParser {
            fed,
            multipart,
            field: None,
            text: Vec::new(),
            fields: Vec::new(),
            content: None,
            staging: (staged.0, Some(staged.1)),
            max_file,
            done: false,
        }
    }

    /// Takes the next bytes of the body and parses as far as they go.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        crate::lock(&self.fed)
            .chunks
            .push_back(Bytes::copy_from_slice(bytes));
        self.drive()
    }

    /// The body ended: the form, if it is whole.
    pub fn finish(mut self) -> Result<Form, Refusal> {
        crate::lock(&self.fed).ended = true;
        self.drive()?;
        if !self.done {
            return Err(Refusal("the multipart body ended early".into()));
        }
        let Some(content) = self.content.take() else {
            return Err(Refusal("the form has no file (`content`)".into()));
        };
        content
            .file
            .sync_all()
            .map_err(|e| Refusal(format!("staging the upload failed: {e}")))?;
        Ok(Form {
            fields: std::mem::take(&mut self.fields),
            filename: content.filename,
            staged: self.staging.0.clone(),
            size: content.size,
            sha256: hex::encode(content.sha.finalize()),
        })
    }

    /// Polls the parser until it needs bytes it does not have.
    fn drive(&mut self) -> Result<(), Refusal> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            if self.done {
                return Ok(());
            }
            if let Some((field, _)) = &mut self.field {
                match Pin::new(field).poll_next(&mut cx) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(Some(Ok(chunk))) => self.take_chunk(&chunk)?,
                    Poll::Ready(Some(Err(e))) => return Err(form_error(e, self.max_file)),
                    Poll::Ready(None) => self.end_field()?,
                }
                continue;
            }
            match self.multipart.poll_next_field(&mut cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Ok(None)) => self.done = true,
                Poll::Ready(Ok(Some(field))) => self.start_field(field)?,
                Poll::Ready(Err(e)) => return Err(form_error(e, self.max_file)),
            }
        }
    }

    fn start_field(&mut self, field: Field<'static>) -> Result<(), Refusal> {
        let name = field.name().map(str::to_owned);
        if name.as_deref() == Some("content") {
            if self.content.is_some() {
                return Err(Refusal(
                    "the form has two files; upload one at a time".into(),
                ));
            }
            let filename = field.file_name().unwrap_or("").to_owned();
            let Some(file) = self.staging.1.take() else {
                return Err(Refusal("the form has two files".into()));
            };
            self.content = Some(Content {
                filename,
                file,
                size: 0,
                sha: Sha256::new(),
            });
        } else if self.fields.len() >= MAX_FIELDS {
            return Err(Refusal(format!("the form has over {MAX_FIELDS} fields")));
        }
        self.text.clear();
        self.field = Some((field, name));
        Ok(())
    }

    fn take_chunk(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        let is_content = self
            .field
            .as_ref()
            .is_some_and(|(_, n)| n.as_deref() == Some("content"));
        match (&mut self.content, is_content) {
            (Some(c), true) => {
                c.size += chunk.len() as u64;
                c.sha.update(chunk);
                c.file
                    .write_all(chunk)
                    .map_err(|e| Refusal(format!("staging the upload failed: {e}")))
            }
            _ => {
                // Bounded by the parser's per-field limit.
                self.text.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    fn end_field(&mut self) -> Result<(), Refusal> {
        let Some((_, name)) = self.field.take() else {
            return Ok(());
        };
        match name.as_deref() {
            Some("content") | None => {}
            Some(name) => {
                let value = String::from_utf8(std::mem::take(&mut self.text))
                    .map_err(|_| Refusal(format!("the form field {name:?} is not UTF-8")))?;
                self.fields.push((name.to_owned(), value));
            }
        }
        Ok(())
    }
}

fn form_error(e: multer::Error, max_file: u64) -> Refusal {
    match e {
        multer::Error::FieldSizeExceeded { field_name, .. }
            if field_name.as_deref() == Some("content") =>
        {
            Refusal(format!(
                "the file is over the upload limit of {} (ROXPI_UPLOAD_MAX)",
                crate::human::human_bytes(max_file)
            ))
        }
        multer::Error::StreamSizeExceeded { .. } => Refusal(format!(
            "the upload is over the limit of {} (ROXPI_UPLOAD_MAX)",
            crate::human::human_bytes(max_file)
        )),
        other => Refusal(format!("the upload form is malformed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, value) in parts {
            out.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"");
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
            if let Some(f) = filename {
                out.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
            }
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    fn parser(dir: &std::path::Path, max: u64) -> FormParser {
        let path = dir.join("staged");
        let file = File::create(&path).unwrap();
        FormParser::new("XyZ".into(), (path, file), max)
    }

    #[test]
    fn a_form_fed_byte_by_byte_or_whole_gives_the_same_fields_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let body = form(&[
            (":action", None, b"file_upload"),
            ("name", None, b"acme-lib"),
            ("classifiers", None, b"A"),
            ("classifiers", None, b"B"),
            ("content", Some("acme_lib-1.0.tar.gz"), &file),
            ("sha256_digest", None, b"abc"),
        ]);
        for step in [1, 7, 4096, body.len()] {
            let mut p = parser(dir.path(), 1 << 20);
            for piece in body.chunks(step) {
                p.push(piece).unwrap();
            }
            let f = p.finish().unwrap();
            assert_eq!(f.filename, "acme_lib-1.0.tar.gz");
            assert_eq!(f.size, file.len() as u64);
            assert_eq!(f.sha256, hex::encode(Sha256::digest(&file)));
            assert_eq!(std::fs::read(&f.staged).unwrap(), file, "step {step}");
            assert_eq!(f.field(":action"), Some("file_upload"));
            assert_eq!(f.field("sha256_digest"), Some("abc"));
            let classifiers: Vec<&str> = f
                .fields
                .iter()
                .filter(|(n, _)| n == "classifiers")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(classifiers, ["A", "B"]);
        }
    }

    #[test]
    fn broken_and_oversized_forms_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![b'x'; 5000];
        let body = form(&[("content", Some("a-1.0.tar.gz"), &big)]);
        let mut p = parser(dir.path(), 4000);
        let err = p.push(&body).err().unwrap();
        assert!(err.0.contains("ROXPI_UPLOAD_MAX"), "{err}");

        let mut p = parser(dir.path(), 1 << 20);
        p.push(&body[..body.len() - 20]).unwrap();
        let err = p.finish().err().unwrap();
        assert!(
            err.0.contains("malformed") || err.0.contains("early"),
            "{err}"
        );

        let mut p = parser(dir.path(), 1 << 20);
        p.push(&form(&[("name", None, b"x")])).unwrap();
        assert!(p.finish().err().unwrap().0.contains("no file"));

        let long = vec![b'n'; 70_000];
        let mut p = parser(dir.path(), 1 << 20);
        assert!(p.push(&form(&[("summary", None, &long)])).is_err());

        assert!(boundary(Some("application/json")).is_err());
        assert_eq!(
            boundary(Some("multipart/form-data; boundary=abc")).unwrap(),
            "abc"
        );
    }
}
