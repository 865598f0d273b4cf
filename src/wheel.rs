//! Reading a wheel's core metadata (`<name>-<version>.dist-info/METADATA`)
//! out of its zip, for PEP 658 metadata synthesis, from any `ReadAt` (a
//! local file, bytes in memory, or an upstream read by ranges).
//!
//! Bounded by design (`archive`): the end records are checked against the
//! real length and fixed caps, the central directory is streamed once and
//! only the METADATA candidates' names are kept, and the one entry is
//! inflated into at most `MAX_METADATA` bytes. Nothing an archive claims
//! is allocated.

mod archive;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

pub use archive::{ReadAt, MAX_DIRECTORY, MAX_ENTRIES, TAIL};

use crate::pypi::ProjectName;

/// The largest METADATA accepted (real ones are a few KiB; numpy's is 60).
pub const MAX_METADATA: u64 = 4 << 20;
/// The most top-level `*.dist-info/METADATA` entries looked at.
const MAX_CANDIDATES: usize = 16;

/// Why no metadata came out of a wheel.
#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    #[error("not a readable zip: {0}")]
    Zip(String),
    #[error("no .dist-info/METADATA named after the wheel")]
    NoMetadata,
    #[error("METADATA is larger than {MAX_METADATA} bytes")]
    TooLarge,
    /// Reading the bytes failed (an upstream range read, a local read).
    #[error("reading the wheel failed: {0}")]
    Io(#[from] std::io::Error),
}

impl WheelError {
    /// Whether the wheel itself is at fault (a retry cannot help), as
    /// opposed to the read failing.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, WheelError::Io(_))
    }
}

/// The normalized project name a wheel's file name starts with
/// (`Demo_Pkg-1.0-py3-none-any.whl` → `demo-pkg`).
fn wheel_project(wheel: &str) -> Option<ProjectName> {
    let stem = wheel.strip_suffix(".whl")?;
    ProjectName::parse(stem.split('-').next()?).ok()
}

/// Whether `entry` is a top-level `<dir>.dist-info/METADATA`.
fn is_candidate(entry: &str) -> bool {
    let mut parts = entry.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(dir), Some("METADATA"), None) if dir.ends_with(".dist-info")
    )
}

/// Which entry holds the METADATA: the one top-level
/// `<name>-<version>.dist-info/METADATA` whose name is the wheel's project
/// (normalized, as pip and uv compare them). None if there is none, or
/// several: pip and uv refuse such a wheel, so no metadata is made for it.
pub fn metadata_entry<'a>(wheel: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let project = wheel_project(wheel)?;
    let mut matching = names.filter(|n| {
        is_candidate(n)
            && n.split('-')
                .next()
                .and_then(|p| ProjectName::parse(p).ok())
                .is_some_and(|p| p == project)
    });
    match (matching.next(), matching.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// The METADATA bytes of `wheel` (its file name) read from `zip`.
pub fn read_metadata(zip: &mut dyn ReadAt, wheel: &str) -> Result<Vec<u8>, WheelError> {
    let directory = archive::locate(zip)?;
    let candidates = archive::scan(zip, directory, &is_candidate, MAX_CANDIDATES)?;
    let name = metadata_entry(wheel, candidates.iter().map(|e| e.name.as_str()))
        .ok_or(WheelError::NoMetadata)?;
    let entry = candidates
        .iter()
        .find(|e| e.name == name)
        .ok_or(WheelError::NoMetadata)?;
    archive::extract(zip, entry, directory.offset, MAX_METADATA)
}

/// A wheel in memory.
pub struct InMemory<'a>(pub &'a [u8]);

impl ReadAt for InMemory<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, len: u64) -> io::Result<Box<dyn Read + '_>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let end = usize::try_from(offset.saturating_add(len))
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        Ok(Box::new(&self.0[start..end]))
    }
}

/// A wheel in a local file (positioned reads; the file's offset is not
/// used, so a shared descriptor is fine).
pub struct OnDisk<'a> {
    file: &'a File,
    len: u64,
}

impl<'a> OnDisk<'a> {
    pub fn new(file: &'a File) -> io::Result<OnDisk<'a>> {
        Ok(OnDisk {
            file,
            len: file.metadata()?.len(),
        })
    }
}

impl ReadAt for OnDisk<'_> {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, len: u64) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(At {
            file: self.file,
            pos: offset,
            end: offset.saturating_add(len),
        }))
    }
}

struct At<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in files {
            z.start_file(*name, opts).unwrap();
            z.write_all(body).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    #[test]
    fn which_entry_holds_the_metadata() {
        let w = "Demo_Pkg-1.0-py3-none-any.whl";
        let cases: [(&[&str], Option<&str>); 8] = [
            (
                &["demo_pkg/__init__.py", "Demo_Pkg-1.0.dist-info/METADATA"],
                Some("Demo_Pkg-1.0.dist-info/METADATA"),
            ),
            (
                &["demo.pkg-1.0.dist-info/METADATA"],
                Some("demo.pkg-1.0.dist-info/METADATA"),
            ),
            // Vendored dist-infos deeper down do not count.
            (
                &["x/y.dist-info/METADATA", "demo_pkg-1.0.dist-info/METADATA"],
                Some("demo_pkg-1.0.dist-info/METADATA"),
            ),
            (&["x/demo_pkg-1.0.dist-info/METADATA"], None),
            // Another project's dist-info: pip and uv refuse the wheel.
            (&["evil-6.6.dist-info/METADATA"], None),
            (
                &[
                    "demo_pkg-1.0.dist-info/METADATA",
                    "demo_pkg-2.0.dist-info/METADATA",
                ],
                None,
            ),
            (
                &["Demo_Pkg-1.0.dist-info/RECORD", ".dist-info/METADATA"],
                None,
            ),
            (&["demo_pkg-1.0.dist-info/METADATA/x"], None),
        ];
        for (names, want) in cases {
            assert_eq!(metadata_entry(w, names.iter().copied()), want, "{names:?}");
        }
    }

    fn read(bytes: &[u8], wheel: &str) -> Result<Vec<u8>, WheelError> {
        read_metadata(&mut InMemory(bytes), wheel)
    }

    #[test]
    fn reads_the_metadata_and_refuses_what_is_not_a_wheel() {
        let meta = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n";
        let good = zip_of(&[
            ("demo/__init__.py", b"x = 1\n"),
            ("demo-1.0.dist-info/METADATA", meta),
            ("demo-1.0.dist-info/RECORD", b""),
        ]);
        let w = "demo-1.0-py3-none-any.whl";
        assert_eq!(read(&good, w).unwrap(), meta);
        let none = zip_of(&[("demo/__init__.py", b"x = 1\n")]);
        assert!(matches!(read(&none, w), Err(WheelError::NoMetadata)));
        let garbage = b"PK\x03\x04 this is not a zip".to_vec();
        let e = read(&garbage, w).unwrap_err();
        assert!(e.is_permanent(), "{e}");
        let mut cut = good.clone();
        cut.truncate(good.len() / 2);
        assert!(read(&cut, w).is_err());
        let huge = zip_of(&[(
            "demo-1.0.dist-info/METADATA",
            &vec![b'a'; (MAX_METADATA + 1) as usize],
        )]);
        assert!(matches!(read(&huge, w), Err(WheelError::TooLarge)));
        // A flipped byte in the compressed entry: CRC or inflate error.
        let at = find(&good, meta).map_or_else(|| good.len() / 3, |p| p + 3);
        let mut flipped = good.clone();
        flipped[at] ^= 0x55;
        assert!(read(&flipped, w).is_err());
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn stored_entries_zip64_archives_and_comments_are_read() {
        let meta = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n";
        let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
        z.set_comment("a comment at the end");
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("demo-1.0.dist-info/METADATA", stored).unwrap();
        z.write_all(meta).unwrap();
        let commented = z.finish().unwrap().into_inner();
        let w = "demo-1.0-py3-none-any.whl";
        assert_eq!(read(&commented, w).unwrap(), meta);
        let zip64 = zip64_end(&zip_of(&[("demo-1.0.dist-info/METADATA", meta)]));
        assert_eq!(read(&zip64, w).unwrap(), meta);
        // The same with a zip64 record that lies about the entries.
        let mut lying = zip64.clone();
        let at = find(&lying, b"PK\x06\x06").unwrap();
        lying[at + 32..at + 40].copy_from_slice(&780_000_000_000_000u64.to_le_bytes());
        let e = read(&lying, w).unwrap_err();
        assert!(
            e.to_string().contains("claims 780000000000000 entries"),
            "{e}"
        );
    }

    /// `zip` (no comment) with zip64 end records: the classic record's
    /// fields saturated, the real ones in the zip64 record.
    fn zip64_end(zip: &[u8]) -> Vec<u8> {
        let (body, eocd) = zip.split_at(zip.len() - 22);
        let u = |at: usize, n: usize| {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&eocd[at..at + n]);
            u64::from_le_bytes(b)
        };
        let (entries, size, offset) = (u(10, 2), u(12, 4), u(16, 4));
        let mut out = body.to_vec();
        let record_at = out.len() as u64;
        out.extend(b"PK\x06\x06");
        out.extend(44u64.to_le_bytes());
        out.extend([45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for v in [entries, entries, size, offset] {
            out.extend(v.to_le_bytes());
        }
        out.extend(b"PK\x06\x07");
        out.extend([0; 4]);
        out.extend(record_at.to_le_bytes());
        out.extend([1, 0, 0, 0]);
        out.extend(b"PK\x05\x06");
        out.extend([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        out.extend([0xff; 8]);
        out.extend([0, 0]);
        out
    }

    #[test]
    fn a_file_on_disk_is_read_by_position() {
        let meta = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n";
        let bytes = zip_of(&[("demo-1.0.dist-info/METADATA", meta)]);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        let mut disk = OnDisk::new(&f).unwrap();
        assert_eq!(
            read_metadata(&mut disk, "demo-1.0-py3-none-any.whl").unwrap(),
            meta
        );
    }
}
