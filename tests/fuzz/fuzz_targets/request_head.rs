//! The request head parser: never panics; a complete request consumes no
//! more than it was given and keeps the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roxpi::http::{parse_request, Limits, Parsed};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(Parsed::Complete { request, consumed }) = parse_request(data, &limits) {
        assert!(consumed <= data.len());
        assert!(request.target().len() <= limits.max_target);
        assert!(request.body().len() <= limits.max_body);
    }
});
