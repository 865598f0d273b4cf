//! A lying remote wheel, as metadata synthesis reads it by ranges: the
//! input gives the length the upstream claims, how it answers range reads
//! (short, or running on past what was asked), and the archive bytes.
//! Run with `-malloc_limit_mb` and `-rss_limit_mb`: no claim in the
//! archive or from the upstream may turn into an allocation.
#![no_main]
use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use roxpi::wheel::{read_metadata, ReadAt, MAX_METADATA};

struct Lying<'a> {
    claimed: u64,
    /// Bit 0: answers run on past the asked range with endless bytes.
    /// Bit 1: answers stop one byte short.
    answers: u8,
    archive: &'a [u8],
}

impl ReadAt for Lying<'_> {
    fn size(&self) -> u64 {
        self.claimed
    }

    fn read_at(&mut self, offset: u64, len: u64) -> io::Result<Box<dyn Read + '_>> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.archive.len());
        let mut end = usize::try_from(offset.saturating_add(len))
            .unwrap_or(usize::MAX)
            .min(self.archive.len());
        if self.answers & 2 != 0 {
            end = end.saturating_sub(1).max(start);
        }
        let held: Box<dyn Read> = Box::new(&self.archive[start..end]);
        Ok(if self.answers & 1 != 0 {
            Box::new(held.chain(io::repeat(b'P')))
        } else {
            held
        })
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (head, archive) = data.split_at(9);
    let mut claimed = [0u8; 8];
    claimed.copy_from_slice(&head[..8]);
    let mut wheel = Lying {
        // Mostly near the real length, sometimes anything at all.
        claimed: match head[8] >> 2 {
            0 => u64::from_le_bytes(claimed),
            n => (archive.len() as u64).wrapping_add(u64::from(n) % 8).wrapping_sub(4),
        },
        answers: head[8] & 3,
        archive,
    };
    if let Ok(m) = read_metadata(&mut wheel, "demo-1.0-py3-none-any.whl") {
        assert!(m.len() as u64 <= MAX_METADATA);
    }
});
