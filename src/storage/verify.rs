//! Checking bytes against what the index advertised (one place for the
//! upstream, the bucket and stream-through): sha256 when
//! advertised (always computed: it is the cache key and the ETag), else the
//! strongest sha2 hash in `HASH_PREFERENCE` order; an unknown algorithm
//! gets only the length check.

use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use sha2::Digest;

use crate::pypi::model::HASH_PREFERENCE;
use crate::pypi::Hashes;

/// A length or hash that does not match what the index advertised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("upstream sends {got} bytes, the index says {want}")]
    Length { got: u64, want: u64 },
    #[error("upstream sent more than {0} bytes")]
    TooLong(u64),
    #[error("{algorithm} {got} != advertised {want}")]
    Hash {
        algorithm: &'static str,
        got: String,
        want: String,
    },
}

/// Hashes a body as it passes and checks it at the end.
pub struct Verifier {
    sha256: sha2::Sha256,
    other: Other,
    want_sha256: Option<String>,
}

enum Other {
    None,
    Sha512(sha2::Sha512, String),
    Sha384(sha2::Sha384, String),
    Sha224(sha2::Sha224, String),
}

impl Verifier {
    pub fn new(hashes: &Hashes) -> Verifier {
        // The first advertised algorithm in preference order decides.
        let chosen = HASH_PREFERENCE
            .iter()
            .find_map(|name| hashes.get(name).map(|v| (*name, v.clone())));
        let (want_sha256, other) = match chosen {
            Some(("sha256", v)) => (Some(v), Other::None),
            Some(("sha512", v)) => (None, Other::Sha512(sha2::Sha512::new(), v)),
            Some(("sha384", v)) => (None, Other::Sha384(sha2::Sha384::new(), v)),
            Some(("sha224", v)) => (None, Other::Sha224(sha2::Sha224::new(), v)),
            _ => (None, Other::None),
        };
        Verifier {
            sha256: sha2::Sha256::new(),
            other,
            want_sha256,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        match &mut self.other {
            Other::None => {}
            Other::Sha512(h, _) => h.update(data),
            Other::Sha384(h, _) => h.update(data),
            Other::Sha224(h, _) => h.update(data),
        }
    }

    /// The sha256 of everything seen, if the advertised hash matches.
    pub fn finish(self) -> Result<String, Mismatch> {
        let sha256 = hex::encode(self.sha256.finalize());
        let (algorithm, got, want) = match self.other {
            Other::None => match self.want_sha256 {
                Some(want) => ("sha256", sha256.clone(), want),
                None => return Ok(sha256),
            },
            Other::Sha512(h, w) => ("sha512", hex::encode(h.finalize()), w),
            Other::Sha384(h, w) => ("sha384", hex::encode(h.finalize()), w),
            Other::Sha224(h, w) => ("sha224", hex::encode(h.finalize()), w),
        };
        if got == want {
            Ok(sha256)
        } else {
            Err(Mismatch::Hash {
                algorithm,
                got,
                want,
            })
        }
    }
}

/// A body passed through as it arrives, except its newest chunk: that is
/// held back until the body has ended with the expected length and hash,
/// and replaced by an error (a cut connection) if it did not. Used for
/// stream-through, where no file on disk holds the bytes.
pub struct VerifiedRead<R> {
    inner: R,
    expected_len: Option<u64>,
    verifier: Option<Verifier>,
    /// The newest chunk: given out only once the next one (or a verified
    /// end) has arrived.
    held: Vec<u8>,
    /// Bytes cleared to go, and how many of them went.
    out: Vec<u8>,
    out_pos: usize,
    seen: u64,
    ended: bool,
}

const CHUNK: usize = 64 * 1024;

impl<R: Read> VerifiedRead<R> {
    pub fn new(inner: R, expected_len: Option<u64>, hashes: &Hashes) -> VerifiedRead<R> {
        VerifiedRead {
            inner,
            expected_len,
            verifier: Some(Verifier::new(hashes)),
            held: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            seen: 0,
            ended: false,
        }
    }

    /// The body ended: checks it, then clears the held chunk to go.
    fn finish(&mut self) -> io::Result<()> {
        if let Some(want) = self.expected_len.filter(|w| *w != self.seen) {
            return Err(io::Error::other(format!(
                "upstream body ended at {} of {want} bytes",
                self.seen
            )));
        }
        if let Some(v) = self.verifier.take() {
            v.finish().map_err(io::Error::other)?;
        }
        self.out = std::mem::take(&mut self.held);
        self.out_pos = 0;
        self.ended = true;
        Ok(())
    }
}

impl<R: Read> Read for VerifiedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_pos < self.out.len() {
                let n = (self.out.len() - self.out_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            let mut chunk = vec![0u8; CHUNK];
            let n = match self.inner.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.finish()?;
                continue;
            }
            self.seen += n as u64;
            if let Some(want) = self.expected_len.filter(|w| self.seen > *w) {
                return Err(io::Error::other(Mismatch::TooLong(want)));
            }
            if let Some(v) = self.verifier.as_mut() {
                v.update(&chunk[..n]);
            }
            chunk.truncate(n);
            self.out = std::mem::replace(&mut self.held, chunk);
            self.out_pos = 0;
        }
    }
}

/// Bytes copied at a time.
const COPY_CHUNK: usize = 256 * 1024;

/// Why copying a body into a temp file stopped.
pub enum Copy {
    /// Reading the body failed after this many bytes.
    Read(io::Error, u64),
    /// More bytes than the length.
    TooLong,
    /// Writing the temp file failed.
    Write(io::Error),
}

/// Copies `body` into `temp`, at most `len` bytes, hashing as it goes;
/// calls `progress` with the bytes written after each chunk. Returns the
/// bytes written (the caller checks them against `len`).
pub fn copy_verified(
    mut body: Box<dyn Read + Send>,
    temp: &super::TempFile,
    verifier: &mut Verifier,
    len: u64,
    mut progress: impl FnMut(u64),
) -> Result<u64, Copy> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut written: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e, written)),
        };
        if written + n as u64 > len {
            return Err(Copy::TooLong);
        }
        verifier.update(&buf[..n]);
        temp.file
            .write_all_at(&buf[..n], written)
            .map_err(Copy::Write)?;
        written += n as u64;
        progress(written);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(pairs: &[(&str, &str)]) -> Hashes {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn verification_table() {
        let data = b"hello";
        let sha256 = hex::encode(sha2::Sha256::digest(data));
        let sha512 = hex::encode(sha2::Sha512::digest(data));
        let sha224 = hex::encode(sha2::Sha224::digest(data));
        let cases: Vec<(Hashes, Option<&str>)> = vec![
            (hashes(&[("sha256", &sha256)]), None),
            (hashes(&[("sha256", &"0".repeat(64))]), Some("sha256")),
            (hashes(&[("sha512", &sha512)]), None),
            (hashes(&[("sha512", "00")]), Some("sha512")),
            // sha256 wins over a wrong sha512 only when it is advertised.
            (hashes(&[("sha256", &sha256), ("sha512", "00")]), None),
            (hashes(&[("sha224", &sha224), ("md5", "00")]), None),
            // Unknown algorithms: length check only.
            (hashes(&[("blake2b", "00")]), None),
            (Hashes::new(), None),
        ];
        for (h, fails) in cases {
            let mut v = Verifier::new(&h);
            v.update(&data[..2]);
            v.update(&data[2..]);
            match (v.finish(), fails) {
                (Ok(got), None) => assert_eq!(got, sha256, "{h:?}"),
                (Err(Mismatch::Hash { algorithm, .. }), Some(a)) => assert_eq!(algorithm, a),
                (other, want) => panic!("{h:?}: {other:?}, wanted failure {want:?}"),
            }
        }
    }

    fn read_all(mut r: impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            match r.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn stream_through_never_completes_a_wrong_body() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let good = hashes(&[("sha256", &hex::encode(sha2::Sha256::digest(&data)))]);
        let mut wrong = data.clone();
        wrong[150_000] ^= 1;
        let long = [&data[..], b"x"].concat();
        let len = Some(data.len() as u64);
        let none = Hashes::new();
        // (body, expected length, hashes, ok)
        let cases: Vec<(&[u8], Option<u64>, &Hashes, bool)> = vec![
            (&data, len, &good, true),
            (&data, None, &good, true),
            (&wrong, len, &good, false),
            (&wrong, None, &good, false),
            (&data[..199_999], len, &good, false),
            (&data[..199_999], None, &good, false),
            (&long, len, &good, false),
            (&long, None, &good, false),
            (&data[..10], len, &none, false),
            (&wrong, None, &none, true),
        ];
        for (i, (body, len, h, ok)) in cases.into_iter().enumerate() {
            let mut r = VerifiedRead::new(body, len, h);
            // Whatever is given out before the end stops short of the whole.
            let mut given = Vec::new();
            let mut buf = [0u8; 4096];
            let result = loop {
                match r.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => given.extend_from_slice(&buf[..n]),
                    Err(e) => break Err(e),
                }
            };
            assert_eq!(result.is_ok(), ok, "case {i}");
            if ok {
                assert_eq!(given, body, "case {i}");
            } else {
                assert!(
                    given.len() < body.len().max(1),
                    "case {i}: {} given",
                    given.len()
                );
            }
        }
        assert_eq!(
            read_all(VerifiedRead::new(&data[..], len, &good)).unwrap(),
            data
        );
    }
}
