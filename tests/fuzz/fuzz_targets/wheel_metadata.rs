//! The wheel reader of metadata synthesis: any bytes as a wheel never
//! panic, and what comes out is bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roxpi::wheel::{read_metadata, InMemory, MAX_METADATA};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = read_metadata(&mut InMemory(data), "demo-1.0-py3-none-any.whl") {
        assert!(m.len() as u64 <= MAX_METADATA);
    }
});
