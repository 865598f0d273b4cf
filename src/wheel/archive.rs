//! The parts of a zip archive that reading one entry needs, read within
//! fixed bounds: the end-of-central-directory record (zip64 included), a
//! streaming pass over the central directory, one local header. Every
//! size, count and offset in an archive is a claim: it is checked against
//! the real length and the caps below before anything is read or
//! allocated, and nothing is allocated from it. (The zip crate allocates
//! what the archive claims, and a failed allocation aborts the process.)
//!
//! The record layouts are APPNOTE.TXT 4.3.12–4.3.16 and 4.5.3.

use std::io::{self, Read};

use super::WheelError;

/// The most entries a central directory may claim (the largest real wheels
/// hold some tens of thousands).
pub const MAX_ENTRIES: u64 = 100_000;
/// The largest central directory read (it is streamed, never held).
pub const MAX_DIRECTORY: u64 = 16 << 20;
/// How many bytes at the end can hold the end record: the record, the
/// longest comment, and the zip64 locator before it.
pub const TAIL: u64 = EOCD_LEN + 0xFFFF + LOCATOR_LEN;

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: u64 = 22;
const LOCATOR_SIG: u32 = 0x0706_4b50;
const LOCATOR_LEN: u64 = 20;
const EOCD64_SIG: u32 = 0x0606_4b50;
const EOCD64_LEN: u64 = 56;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
const LOCAL_SIG: u32 = 0x0403_4b50;
const LOCAL_LEN: u64 = 30;
/// The zip64 extended-information extra field.
const ZIP64_EXTRA: u16 = 0x0001;

/// Positioned reads of a file whose length is known. The reader may be
/// the tail it already holds, a local file, or an upstream range request.
pub trait ReadAt {
    /// The file's length.
    fn size(&self) -> u64;
    /// The `len` bytes from `offset` (the caller keeps `offset + len`
    /// within `self.size()`); a reader that ends early is an error.
    fn read_at(&mut self, offset: u64, len: u64) -> io::Result<Box<dyn Read + '_>>;
}

/// The `len` bytes at `offset`, for the small records (the caller bounds
/// `len`).
fn read_vec(src: &mut dyn ReadAt, offset: u64, len: u64) -> Result<Vec<u8>, WheelError> {
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    src.read_at(offset, len)?.take(len).read_to_end(&mut out)?;
    if out.len() as u64 != len {
        return Err(WheelError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(out)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
    })
}

fn bad(why: impl Into<String>) -> WheelError {
    WheelError::Zip(why.into())
}

/// Where the central directory is, as the end records claim it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directory {
    pub offset: u64,
    pub size: u64,
    pub entries: u64,
}

/// The classic end record in `tail` (the last bytes of the file): its
/// position in `tail` and the directory it claims. The last signature
/// whose record fits is taken, as Python's zipfile does.
pub fn parse_eocd(tail: &[u8]) -> Option<(usize, Directory)> {
    let last = tail.len().checked_sub(EOCD_LEN as usize)?;
    (0..=last).rev().find_map(|at| {
        (u32_at(tail, at) == EOCD_SIG).then(|| {
            (
                at,
                Directory {
                    entries: u64::from(u16_at(tail, at + 10)),
                    size: u64::from(u32_at(tail, at + 12)),
                    offset: u64::from(u32_at(tail, at + 16)),
                },
            )
        })
    })
}

/// The zip64 end record's offset, from the locator's 20 bytes.
pub fn parse_locator(b: &[u8]) -> Option<u64> {
    (b.len() as u64 == LOCATOR_LEN && u32_at(b, 0) == LOCATOR_SIG).then(|| u64_at(b, 8))
}

/// The directory the zip64 end record's first 56 bytes claim. The record's
/// own size field is not used: nothing past the fixed part is read.
pub fn parse_eocd64(b: &[u8]) -> Option<Directory> {
    (b.len() as u64 == EOCD64_LEN && u32_at(b, 0) == EOCD64_SIG).then(|| Directory {
        entries: u64_at(b, 32),
        size: u64_at(b, 40),
        offset: u64_at(b, 48),
    })
}

/// Whether a claimed directory is possible in a file whose end records
/// start at `end`, and within the caps.
pub fn check_directory(d: Directory, end: u64) -> Result<Directory, WheelError> {
    if d.entries > MAX_ENTRIES {
        return Err(bad(format!(
            "the central directory claims {} entries (at most {MAX_ENTRIES} are read)",
            d.entries
        )));
    }
    if d.size > MAX_DIRECTORY {
        return Err(bad(format!(
            "the central directory claims {} bytes (at most {MAX_DIRECTORY} are read)",
            d.size
        )));
    }
    if d.offset.checked_add(d.size).is_none_or(|e| e > end) {
        return Err(bad("the central directory lies outside the file"));
    }
    if d.entries.saturating_mul(CENTRAL_LEN as u64) > d.size {
        return Err(bad("the central directory is too small for its entries"));
    }
    Ok(d)
}

/// Finds and checks the central directory of `src`.
pub fn locate(src: &mut dyn ReadAt) -> Result<Directory, WheelError> {
    let len = src.size();
    let tail_start = len.saturating_sub(TAIL);
    let tail = read_vec(src, tail_start, len - tail_start)?;
    let (at, classic) = parse_eocd(&tail).ok_or_else(|| bad("no end of central directory"))?;
    let eocd = tail_start + at as u64;
    // A zip64 locator right before the classic record takes precedence.
    let locator = match eocd.checked_sub(LOCATOR_LEN) {
        Some(l) if l >= tail_start => {
            let from = usize::try_from(l - tail_start).unwrap_or(usize::MAX);
            tail.get(from..from + LOCATOR_LEN as usize)
                .and_then(parse_locator)
        }
        Some(l) => parse_locator(&read_vec(src, l, LOCATOR_LEN)?),
        None => None,
    };
    drop(tail);
    let Some(eocd64) = locator else {
        return check_directory(classic, eocd);
    };
    let locator_at = eocd - LOCATOR_LEN;
    if eocd64
        .checked_add(EOCD64_LEN)
        .is_none_or(|e| e > locator_at)
    {
        return Err(bad("the zip64 end record lies outside the file"));
    }
    let record = read_vec(src, eocd64, EOCD64_LEN)?;
    let d =
        parse_eocd64(&record).ok_or_else(|| bad("no zip64 end record where the locator points"))?;
    // The record's size counts from after its first 12 bytes and ends
    // where the locator starts (extensible data included).
    if u64_at(&record, 4)
        .checked_add(eocd64 + 12)
        .is_none_or(|e| e > locator_at)
    {
        return Err(bad(
            "the zip64 end record claims more bytes than precede the locator",
        ));
    }
    check_directory(d, eocd64)
}

/// One central-directory entry, as far as reading it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub flags: u16,
    pub method: u16,
    pub crc32: u32,
    pub compressed: u64,
    pub uncompressed: u64,
    pub local_offset: u64,
}

/// Applies the zip64 extra field in `extra` to the fields that are
/// saturated (all ones) in the fixed part, in the order APPNOTE gives.
pub fn apply_zip64(entry: &mut Entry, extra: &[u8]) -> Result<(), WheelError> {
    let saturated = |v: u64| v == u64::from(u32::MAX);
    let needs = saturated(entry.uncompressed)
        || saturated(entry.compressed)
        || saturated(entry.local_offset);
    if !needs {
        return Ok(());
    }
    let mut at = 0;
    while at + 4 <= extra.len() {
        let (id, size) = (u16_at(extra, at), usize::from(u16_at(extra, at + 2)));
        let body = extra
            .get(at + 4..at + 4 + size)
            .ok_or_else(|| bad("an extra field runs past its entry"))?;
        if id == ZIP64_EXTRA {
            let mut fields = body.chunks_exact(8).map(|c| u64_at(c, 0));
            for field in [
                &mut entry.uncompressed,
                &mut entry.compressed,
                &mut entry.local_offset,
            ] {
                if saturated(*field) {
                    *field = fields
                        .next()
                        .ok_or_else(|| bad("a zip64 extra field is too short"))?;
                }
            }
            return Ok(());
        }
        at += 4 + size;
    }
    Err(bad("a zip64 entry without its extra field"))
}

/// Streams the central directory `d` of `src` and keeps the entries whose
/// name `keep` accepts (at most `max_kept`; more is an error). Only the
/// kept names are allocated; everything else is read past.
pub fn scan(
    src: &mut dyn ReadAt,
    d: Directory,
    keep: &dyn Fn(&str) -> bool,
    max_kept: usize,
) -> Result<Vec<Entry>, WheelError> {
    let mut reader =
        io::BufReader::with_capacity(16 * 1024, src.read_at(d.offset, d.size)?.take(d.size));
    let mut kept = Vec::new();
    let mut fixed = [0u8; CENTRAL_LEN];
    let mut name = Vec::new();
    let mut extra = Vec::new();
    for _ in 0..d.entries {
        reader.read_exact(&mut fixed).map_err(short)?;
        if u32_at(&fixed, 0) != CENTRAL_SIG {
            return Err(bad("a central directory entry without its signature"));
        }
        let (n, e, c) = (
            usize::from(u16_at(&fixed, 28)),
            u64::from(u16_at(&fixed, 30)),
            u64::from(u16_at(&fixed, 32)),
        );
        name.resize(n, 0);
        reader.read_exact(&mut name).map_err(short)?;
        let wanted = std::str::from_utf8(&name).is_ok_and(keep);
        if wanted {
            extra.resize(e as usize, 0);
            reader.read_exact(&mut extra).map_err(short)?;
            skip(&mut reader, c)?;
        } else {
            skip(&mut reader, e + c)?;
            continue;
        }
        if kept.len() == max_kept {
            return Err(bad(format!("more than {max_kept} candidate entries")));
        }
        let mut entry = Entry {
            name: String::from_utf8_lossy(&name).into_owned(),
            flags: u16_at(&fixed, 8),
            method: u16_at(&fixed, 10),
            crc32: u32_at(&fixed, 16),
            compressed: u64::from(u32_at(&fixed, 20)),
            uncompressed: u64::from(u32_at(&fixed, 24)),
            local_offset: u64::from(u32_at(&fixed, 42)),
        };
        apply_zip64(&mut entry, &extra)?;
        kept.push(entry);
    }
    Ok(kept)
}

fn short(e: io::Error) -> WheelError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        bad("the central directory ends inside an entry")
    } else {
        WheelError::Io(e)
    }
}

fn skip(reader: &mut impl Read, n: u64) -> Result<(), WheelError> {
    let skipped = io::copy(&mut reader.take(n), &mut io::sink())?;
    if skipped != n {
        return Err(bad("the central directory ends inside an entry"));
    }
    Ok(())
}

/// The uncompressed bytes of `entry` (found in the directory at
/// `directory_offset`), at most `max` of them.
pub fn extract(
    src: &mut dyn ReadAt,
    entry: &Entry,
    directory_offset: u64,
    max: u64,
) -> Result<Vec<u8>, WheelError> {
    if entry.flags & 1 != 0 {
        return Err(bad(format!("{} is encrypted", entry.name)));
    }
    if entry.uncompressed > max {
        return Err(WheelError::TooLarge);
    }
    // Deflate never grows data by more than a few bytes per 16 KiB block.
    if entry.compressed > max + max / 64 + 1024 {
        return Err(WheelError::TooLarge);
    }
    if entry
        .local_offset
        .checked_add(LOCAL_LEN)
        .is_none_or(|e| e > directory_offset)
    {
        return Err(bad("a local header lies outside the file"));
    }
    let local = read_vec(src, entry.local_offset, LOCAL_LEN)?;
    if u32_at(&local, 0) != LOCAL_SIG {
        return Err(bad("a local header without its signature"));
    }
    let data = entry.local_offset
        + LOCAL_LEN
        + u64::from(u16_at(&local, 26))
        + u64::from(u16_at(&local, 28));
    if data
        .checked_add(entry.compressed)
        .is_none_or(|e| e > directory_offset)
    {
        return Err(bad(format!(
            "{} runs into the central directory",
            entry.name
        )));
    }
    let raw = src.read_at(data, entry.compressed)?.take(entry.compressed);
    let mut body: Box<dyn Read + '_> = match entry.method {
        0 => Box::new(raw),
        8 => Box::new(flate2::read::DeflateDecoder::new(raw)),
        m => return Err(bad(format!("{} uses compression method {m}", entry.name))),
    };
    let mut out = Vec::with_capacity(usize::try_from(entry.uncompressed).unwrap_or(0));
    body.by_ref()
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidInput || e.kind() == io::ErrorKind::InvalidData {
                bad(format!("{} does not inflate: {e}", entry.name))
            } else {
                WheelError::Io(e)
            }
        })?;
    if out.len() as u64 > max {
        return Err(WheelError::TooLarge);
    }
    if out.len() as u64 != entry.uncompressed {
        return Err(bad(format!(
            "{} is not the size its entry claims",
            entry.name
        )));
    }
    let mut crc = flate2::Crc::new();
    crc.update(&out);
    if crc.sum() != entry.crc32 {
        return Err(bad(format!("{} fails its CRC-32", entry.name)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eocd(entries: u16, size: u32, offset: u32, comment: &[u8]) -> Vec<u8> {
        let mut b = EOCD_SIG.to_le_bytes().to_vec();
        b.extend([0, 0, 0, 0]);
        b.extend(entries.to_le_bytes());
        b.extend(entries.to_le_bytes());
        b.extend(size.to_le_bytes());
        b.extend(offset.to_le_bytes());
        b.extend((comment.len() as u16).to_le_bytes());
        b.extend(comment);
        b
    }

    #[test]
    fn end_records() {
        let plain = eocd(3, 200, 1000, b"");
        let d = |entries, size, offset| Directory {
            entries,
            size,
            offset,
        };
        assert_eq!(parse_eocd(&plain), Some((0, d(3, 200, 1000))));
        let mut with_comment = b"junk".to_vec();
        with_comment.extend(eocd(1, 46, 5, b"a comment"));
        assert_eq!(parse_eocd(&with_comment), Some((4, d(1, 46, 5))));
        assert_eq!(parse_eocd(&plain[1..]), None);
        assert_eq!(parse_eocd(b""), None);

        let mut loc = LOCATOR_SIG.to_le_bytes().to_vec();
        loc.extend([0; 4]);
        loc.extend(77u64.to_le_bytes());
        loc.extend([1, 0, 0, 0]);
        assert_eq!(parse_locator(&loc), Some(77));
        assert_eq!(parse_locator(&loc[..19]), None);

        let mut e64 = EOCD64_SIG.to_le_bytes().to_vec();
        e64.extend((1u64 << 56).to_le_bytes()); // a lying record size: unused
        e64.extend([0; 4 + 4 + 4 + 8]);
        e64.extend(780_000_000_000_000u64.to_le_bytes());
        e64.extend(4096u64.to_le_bytes());
        e64.extend(64u64.to_le_bytes());
        assert_eq!(parse_eocd64(&e64), Some(d(780_000_000_000_000, 4096, 64)));
    }

    #[test]
    fn claimed_directories_are_checked_before_reading() {
        let d = |entries, size, offset| Directory {
            entries,
            size,
            offset,
        };
        let cases = [
            (d(10, 460, 100), 560, true),
            (d(0, 0, 0), 0, true),
            (d(10, 460, 101), 560, false), // past the end records
            (d(10, 459, 100), 560, false), // 46 bytes per entry at least
            (d(MAX_ENTRIES + 1, MAX_DIRECTORY, 0), u64::MAX, false),
            (d(780_000_000_000_000, 4096, 64), 1 << 20, false),
            (d(1, MAX_DIRECTORY + 1, 0), u64::MAX, false),
            (d(1, u64::MAX, u64::MAX), u64::MAX, false), // overflow
        ];
        for (dir, end, ok) in cases {
            assert_eq!(
                check_directory(dir, end).is_ok(),
                ok,
                "{dir:?} before {end}"
            );
        }
    }

    #[test]
    fn zip64_extra_fields_fill_the_saturated_fields_in_order() {
        let entry = |u, c, o| Entry {
            name: "x".into(),
            flags: 0,
            method: 8,
            crc32: 0,
            compressed: c,
            uncompressed: u,
            local_offset: o,
        };
        let max = u64::from(u32::MAX);
        let extra = |vals: &[u64]| {
            let mut b = vec![0x0a, 0x00, 0x04, 0x00, 1, 2, 3, 4]; // another field first
            b.extend(ZIP64_EXTRA.to_le_bytes());
            b.extend(((vals.len() * 8) as u16).to_le_bytes());
            for v in vals {
                b.extend(v.to_le_bytes());
            }
            b
        };
        let mut e = entry(max, 5, max);
        apply_zip64(&mut e, &extra(&[1 << 40, 1 << 33])).unwrap();
        assert_eq!(
            (e.uncompressed, e.compressed, e.local_offset),
            (1 << 40, 5, 1 << 33)
        );
        let mut e = entry(1, 2, 3);
        apply_zip64(&mut e, b"").unwrap();
        assert_eq!((e.uncompressed, e.compressed, e.local_offset), (1, 2, 3));
        assert!(apply_zip64(&mut entry(max, max, 0), &extra(&[1])).is_err());
        assert!(apply_zip64(&mut entry(max, 0, 0), b"").is_err());
        assert!(apply_zip64(&mut entry(max, 0, 0), &[1, 0, 200, 0, 1]).is_err());
    }
}
