//! Reading a wheel's core metadata (`<name>-<version>.dist-info/METADATA`)
//! out of its zip, for PEP 658 metadata synthesis. Pure over any
//! `Read + Seek` (a local file, or an upstream read by ranges): the zip
//! crate reads the central directory, then only the one entry. Bounded: a
//! METADATA larger than `MAX_METADATA` (a zip bomb, or garbage) is refused.

use std::io::{Read, Seek};

/// The largest METADATA accepted (real ones are a few KiB; numpy's is 60).
pub const MAX_METADATA: u64 = 4 << 20;

/// Why no metadata came out of a wheel.
#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    #[error("not a readable zip: {0}")]
    Zip(String),
    #[error("no .dist-info/METADATA in the wheel")]
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

/// The `.dist-info` directory a wheel's METADATA should be in, from its
/// file name (`demo_pkg-1.0-py3-none-any.whl` → `demo_pkg-1.0.dist-info`).
fn expected_dist_info(wheel: &str) -> Option<String> {
    let stem = wheel.strip_suffix(".whl")?;
    let mut parts = stem.splitn(3, '-');
    let (name, version) = (parts.next()?, parts.next()?);
    Some(format!("{name}-{version}.dist-info"))
}

/// Which entry holds the METADATA: `<x>.dist-info/METADATA` at the top
/// level; the one named after the wheel if several (case-insensitive, as
/// pip compares them), else the only one.
pub fn metadata_entry<'a>(wheel: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = names
        .filter(|n| {
            let mut parts = n.split('/');
            matches!(
                (parts.next(), parts.next(), parts.next()),
                (Some(dir), Some("METADATA"), None) if dir.ends_with(".dist-info") && !dir.is_empty()
            )
        })
        .collect();
    let expected = expected_dist_info(wheel).map(|e| e.to_ascii_lowercase());
    let by_name = candidates.iter().find(|n| {
        expected
            .as_deref()
            .is_some_and(|e| n.to_ascii_lowercase().starts_with(&format!("{e}/")))
    });
    match (by_name, candidates.as_slice()) {
        (Some(n), _) => Some(n),
        (None, [only]) => Some(only),
        _ => None,
    }
}

/// The METADATA bytes of `wheel` (its file name) read from `zip`.
pub fn read_metadata<R: Read + Seek>(zip: R, wheel: &str) -> Result<Vec<u8>, WheelError> {
    let mut archive = zip::ZipArchive::new(zip).map_err(to_error)?;
    let name = metadata_entry(wheel, archive.file_names())
        .ok_or(WheelError::NoMetadata)?
        .to_owned();
    let entry = archive.by_name(&name).map_err(to_error)?;
    if entry.size() > MAX_METADATA {
        return Err(WheelError::TooLarge);
    }
    let mut out = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
    // The declared size may lie: never read past the bound.
    entry.take(MAX_METADATA + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_METADATA {
        return Err(WheelError::TooLarge);
    }
    Ok(out)
}

fn to_error(e: zip::result::ZipError) -> WheelError {
    match e {
        zip::result::ZipError::Io(io) => WheelError::Io(io),
        other => WheelError::Zip(other.to_string()),
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
        let cases: [(&[&str], Option<&str>); 7] = [
            (
                &["demo_pkg/__init__.py", "Demo_Pkg-1.0.dist-info/METADATA"],
                Some("Demo_Pkg-1.0.dist-info/METADATA"),
            ),
            (
                &["demo_pkg-1.0.dist-info/METADATA"],
                Some("demo_pkg-1.0.dist-info/METADATA"),
            ),
            // Vendored dist-infos deeper down do not count.
            (
                &["x/y.dist-info/METADATA", "demo_pkg-1.0.dist-info/METADATA"],
                Some("demo_pkg-1.0.dist-info/METADATA"),
            ),
            (&["x/y.dist-info/METADATA"], None),
            (
                &["other-2.0.dist-info/METADATA"],
                Some("other-2.0.dist-info/METADATA"),
            ),
            (&["a-1.dist-info/METADATA", "b-1.dist-info/METADATA"], None),
            (
                &["Demo_Pkg-1.0.dist-info/RECORD", ".dist-info/METADATA"],
                Some(".dist-info/METADATA"),
            ),
        ];
        for (names, want) in cases {
            assert_eq!(metadata_entry(w, names.iter().copied()), want, "{names:?}");
        }
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
        assert_eq!(read_metadata(Cursor::new(&good), w).unwrap(), meta);
        let none = zip_of(&[("demo/__init__.py", b"x = 1\n")]);
        assert!(matches!(
            read_metadata(Cursor::new(&none), w),
            Err(WheelError::NoMetadata)
        ));
        let garbage = b"PK\x03\x04 this is not a zip".to_vec();
        let e = read_metadata(Cursor::new(&garbage), w).unwrap_err();
        assert!(e.is_permanent(), "{e}");
        let mut cut = good.clone();
        cut.truncate(good.len() / 2);
        assert!(read_metadata(Cursor::new(&cut), w).is_err());
        let huge = zip_of(&[(
            "demo-1.0.dist-info/METADATA",
            &vec![b'a'; (MAX_METADATA + 1) as usize],
        )]);
        assert!(matches!(
            read_metadata(Cursor::new(&huge), w),
            Err(WheelError::TooLarge)
        ));
    }
}
