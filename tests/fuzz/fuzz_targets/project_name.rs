//! Name normalisation (PEP 503): a parsed name is its own normal form.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roxpi::pypi::ProjectName;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = ProjectName::parse(s) {
        let again = ProjectName::parse(n.as_str()).expect("a normal name parses");
        assert_eq!(again, n);
        assert!(n
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    }
});
