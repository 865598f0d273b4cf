//! `Range` parsing: a partial range always lies inside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roxpi::http::conditional::{parse_range, RangeRequest};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8])) % (1 << 40);
    let Ok(header) = std::str::from_utf8(&data[8..]) else {
        return;
    };
    if let RangeRequest::Partial(r) = parse_range(Some(header), len) {
        assert!(r.start <= r.end, "{header:?} {len}: {r:?}");
        assert!(r.end < len, "{header:?} {len}: {r:?}");
    }
});
