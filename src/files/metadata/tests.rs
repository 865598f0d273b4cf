use super::*;

#[test]
fn content_ranges() {
    let cases = [
        ("bytes 0-9/10", Some((0, 9, 10))),
        ("bytes 100-199/1000", Some((100, 199, 1000))),
        ("bytes 5-4/10", None),
        ("bytes 0-10/10", None),
        ("bytes */10", None),
        ("items 0-9/10", None),
        ("bytes 0-9/*", None),
    ];
    for (v, want) in cases {
        assert_eq!(parse_content_range(v), want, "{v}");
    }
}

#[test]
fn metadata_keys_are_derived_and_distinct() {
    let w = CacheKey::parse(&"ab".repeat(32)).unwrap();
    let m = metadata_key(&w);
    assert_ne!(m, w);
    assert_eq!(m, metadata_key(&w));
    assert_eq!(m.as_str().len(), 64);
}

/// An upstream that answers file requests with `F` (and nothing else).
struct Files<F>(F);

impl<F> Origin for Files<F>
where
    F: Fn(&Url, Option<&str>) -> crate::origin::Streamed + Send + Sync,
{
    fn fetch_project(
        &self,
        index: &Index,
        _: &crate::pypi::ProjectName,
        _: &crate::origin::Validators,
    ) -> Result<crate::origin::PageFetch, OriginError> {
        Err(OriginError::status(&index.url, 500))
    }

    fn fetch_list(&self, index: &Index) -> Result<Option<crate::pypi::ProjectList>, OriginError> {
        Err(OriginError::status(&index.url, 500))
    }

    fn open_file(
        &self,
        _: &Index,
        url: &Url,
        range: Option<&str>,
    ) -> Result<crate::origin::Streamed, OriginError> {
        Ok((self.0)(url, range))
    }
}

fn streamed(
    url: &Url,
    status: u16,
    content_range: Option<String>,
    body: Vec<u8>,
) -> crate::origin::Streamed {
    crate::origin::Streamed {
        status,
        content_length: Some(body.len() as u64),
        content_range,
        final_url: url.clone(),
        body: Box::new(io::Cursor::new(body)),
    }
}

/// Answers every range with a 206 claiming a huge range and no body.
fn boasting() -> Files<impl Fn(&Url, Option<&str>) -> crate::origin::Streamed> {
    Files(|url: &Url, _: Option<&str>| {
        let claim = "bytes 0-999999999999999/1000000000000000".to_owned();
        streamed(url, 206, Some(claim), Vec::new())
    })
}

/// Answers the tail of `wheel` (a suffix range) and a 500 to any other.
fn tail_only(wheel: Vec<u8>) -> Files<impl Fn(&Url, Option<&str>) -> crate::origin::Streamed> {
    Files(move |url: &Url, range: Option<&str>| {
        let Some(n) = range.and_then(|r| r.strip_prefix("bytes=-")) else {
            return streamed(url, 500, None, Vec::new());
        };
        let len = wheel.len();
        let start = len.saturating_sub(n.parse().unwrap_or(0));
        let range = format!("bytes {start}-{}/{len}", len - 1);
        streamed(url, 206, Some(range), wheel[start..].to_vec())
    })
}

fn test_source(name: &str) -> Source {
    let index = Index::new(
        crate::origin::IndexId::ROOT,
        &crate::origin::IndexConfig::new(
            Url::parse("http://index.invalid/simple/").unwrap(),
            Duration::from_secs(60),
        ),
    );
    Source {
        index,
        url: Url::parse(&format!("http://index.invalid/f/{name}")).unwrap(),
        hashes: Hashes::new(),
        size: None,
    }
}

#[test]
fn a_failed_range_read_is_the_upstreams_failure() {
    use std::io::Write as _;
    // METADATA first, then 200 KiB: its entry lies before the tail.
    let mut z = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("demo-1.0.dist-info/METADATA", stored).unwrap();
    z.write_all(b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
        .unwrap();
    z.start_file("demo/data.bin", stored).unwrap();
    z.write_all(&vec![7u8; 200 * 1024]).unwrap();
    let wheel = z.finish().unwrap().into_inner();
    let source = test_source("demo-1.0-py3-none-any.whl");
    let origin = tail_only(wheel);
    let flight = Flight::default();
    let mut reader = RangeReader::new(&origin, &source, &flight).unwrap_or_else(|_| panic!("tail"));
    let e = read_metadata(&mut reader, "demo-1.0-py3-none-any.whl").unwrap_err();
    let Failure::Failed(FileError::Origin(o)) = range_failure(e, &source.url) else {
        panic!("an upstream failure")
    };
    assert!(matches!(*o, OriginError::Status { status: 500, .. }), "{o}");
    // A body cut short is the upstream's too.
    let cut = WheelError::Io(io::ErrorKind::UnexpectedEof.into());
    assert!(matches!(
        range_failure(cut, &source.url),
        Failure::Failed(FileError::Origin(_))
    ));
}

#[test]
fn a_range_answer_larger_than_asked_is_refused_before_allocating() {
    let source = test_source("a-1.0-py3-none-any.whl");
    let Err(Failure::Failed(e)) = RangeReader::new(&boasting(), &source, &Flight::default()) else {
        panic!("refused")
    };
    assert!(e.to_string().contains("larger than asked"), "{e}");
}
