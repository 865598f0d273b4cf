//! Times rendering and gzip levels on the real fixture pages:
//! `cargo run --release --example gzip_levels`. The numbers behind the
//! level roxpi compresses index pages with (docs/architecture.md, "Memory").
use std::io::{Read, Write};
use std::time::Instant;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pypi-pages");
    let url = url::Url::parse("https://pypi.org/simple/x/").unwrap();
    for name in ["boto3", "numpy", "pydantic-core"] {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(dir.join(format!("{name}.json.gz"))).unwrap(),
        )
        .read_to_end(&mut raw)
        .unwrap();
        let page = roxpi::pypi::parse_project_page(&raw, roxpi::pypi::Format::Json, &url).unwrap();
        let pname = roxpi::pypi::ProjectName::from_upstream(name).unwrap();
        for format in [roxpi::pypi::PageFormat::Json, roxpi::pypi::PageFormat::Html] {
            let t = Instant::now();
            let body = roxpi::pypi::render_project(&pname, &page, format);
            let render = t.elapsed();
            print!(
                "{name} {format:?}: {} KiB rendered in {render:?};",
                body.len() / 1024
            );
            for level in [1, 3, 6, 9] {
                let t = Instant::now();
                let mut enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(Vec::new(), flate2::Compression::new(level));
                enc.write_all(&body).unwrap();
                let out = enc.finish().unwrap();
                print!(" gzip {level}: {} KiB {:?};", out.len() / 1024, t.elapsed());
            }
            println!();
        }
    }
}
