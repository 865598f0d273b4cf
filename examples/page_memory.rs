//! Measures what parsed fixture pages cost in RSS (run with
//! MALLOC_ARENA_MAX=1): `cargo run --release --example page_memory`.
use std::io::Read;

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pypi-pages");
    let url = url::Url::parse("https://pypi.org/simple/x/").unwrap();
    let names: Vec<String> = std::env::args().skip(1).collect();
    for name in &names {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(dir.join(format!("{name}.json.gz"))).unwrap(),
        )
        .read_to_end(&mut raw)
        .unwrap();
        let before = rss_kib();
        let n = 8;
        let pages: Vec<_> = (0..n)
            .map(|_| {
                roxpi::pypi::parse_project_page(&raw, roxpi::pypi::Format::Json, &url).unwrap()
            })
            .collect();
        let after = rss_kib();
        println!(
            "{name}: raw {} KiB, {} files, RSS per parsed copy {} KiB, accounted {} KiB",
            raw.len() / 1024,
            pages[0].files.len(),
            (after - before) / n as u64,
            roxpi::index_cache::page_bytes(&pages[0]) / 1024
        );
    }
}
