//! The upload form parser (what twine and uv POST): any body, fed in any
//! chunking, never panics, keeps at most the file limit on disk and ends
//! in a form or a refusal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roxpi::hosted::upload::FormParser;

const MAX_FILE: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1) * 7;
    let path = std::env::temp_dir().join(format!("roxpi-fuzz-form-{}", std::process::id()));
    let Ok(file) = std::fs::File::create(&path) else {
        return;
    };
    let mut parser = FormParser::new("XyZ".into(), (path.clone(), file), MAX_FILE);
    let mut refused = false;
    for chunk in body.chunks(step) {
        if parser.push(chunk).is_err() {
            refused = true;
            break;
        }
    }
    if !refused {
        if let Ok(form) = parser.finish() {
            assert!(form.size <= MAX_FILE);
            assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(form.size));
        }
    }
    let _ = std::fs::remove_file(&path);
});
