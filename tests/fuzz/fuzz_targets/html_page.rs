//! HTML (PEP 503) page parsing, then rendering what was parsed: never
//! panics; every kept link is an http(s) URL with a safe filename.
#![no_main]
use libfuzzer_sys::fuzz_target;
use roxpi::pypi::{parse_project_page, render_project, Format, PageFormat, ProjectName};

fuzz_target!(|data: &[u8]| {
    let url = url::Url::parse("https://pypi.example/simple/demo/").unwrap();
    if let Ok(page) = parse_project_page(data, Format::Html, &url) {
        for f in &page.files {
            assert!(matches!(f.url.scheme(), "http" | "https"));
            assert!(!f.filename.as_str().contains('/'));
        }
        let name = ProjectName::parse("demo").unwrap();
        let _ = render_project(&name, &page, PageFormat::Html);
        let _ = render_project(&name, &page, PageFormat::Json);
    }
});
