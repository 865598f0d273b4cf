//! Benchmark of the warm index path (cache lookup + negotiation + the
//! pre-rendered, pre-compressed bytes) through the real server, against
//! nginx serving the very same bytes as a static file, in the same run.
//!
//! A fake upstream (roxpi's own server module, in-process) serves a JSON
//! project page of 200 files; roxpi (the library, in-process, default
//! settings) proxies it; wrk sends pip's and uv's real `Accept` and
//! `Accept-Encoding` headers. Run via `benches/run.sh` or
//! `cargo bench --bench index_path`.

mod support;

use std::time::Duration;

use roxpi::http::{Response, Server, ServerConfig};
use support::{header_row, require_tools, row, start_nginx};

const PIP_ACCEPT: &str = "Accept: application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
const UV_ACCEPT: &str = "Accept: application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

fn upstream_page() -> String {
    let files: Vec<String> = (0..200)
        .map(|i| {
            format!(
                r#"{{"filename":"demo-1.{i}.0-py3-none-any.whl","url":"https://files.example/demo-1.{i}.0-py3-none-any.whl","hashes":{{"sha256":"{:064x}"}},"requires-python":">=3.8","size":{},"upload-time":"2024-01-01T00:00:00Z","core-metadata":{{"sha256":"{:064x}"}}}}"#,
                i, 1000 + i, i + 7
            )
        })
        .collect();
    let versions: Vec<String> = (0..200).map(|i| format!("\"1.{i}.0\"")).collect();
    format!(
        r#"{{"meta":{{"api-version":"1.1"}},"name":"demo","files":[{}],"versions":[{}]}}"#,
        files.join(","),
        versions.join(",")
    )
}

fn main() {
    require_tools();
    support::pin_self();
    let secs = support::seconds();
    let page = upstream_page();
    let upstream = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
        move |_req| {
            Response::new(200)
                .header("Content-Type", "application/vnd.pypi.simple.v1+json")
                .body(page.clone())
        },
    )
    .unwrap();
    let index = format!("http://{}/simple/", upstream.local_addr());
    let roxpi =
        support::start_roxpi(&["--index-url", &index, "--index-ttl", "3600", "--log", "off"]);
    let url = format!("http://{}/simple/demo/", roxpi.local_addr());

    let dir = tempfile::tempdir().unwrap();
    let mut bodies = Vec::new();
    for (name, accept) in [("pip", PIP_ACCEPT), ("uv", UV_ACCEPT)] {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-H",
                accept,
                "-H",
                "Accept-Encoding: gzip, deflate",
                &url,
            ])
            .output()
            .expect("curl (warms the cache and captures the bytes)");
        assert!(!out.stdout.is_empty(), "warming failed");
        bodies.push((name, out.stdout));
    }
    let files: Vec<(&str, &[u8])> = bodies.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let (nginx, nginx_addr) = start_nginx(
        dir.path(),
        &files,
        "location / { add_header Content-Encoding gzip; add_header Vary \"Accept, Accept-Encoding\"; }",
    );
    println!(
        "warm project page (200 files, JSON, gzip {} bytes), wrk keep-alive, {secs}s per point",
        bodies[0].1.len()
    );
    header_row();
    for (client, accept) in [("pip", PIP_ACCEPT), ("uv", UV_ACCEPT)] {
        let headers = [accept, "Accept-Encoding: gzip, deflate"];
        let nginx_url = format!("http://{nginx_addr}/{client}");
        for c in [1u32, 16, 64, 256] {
            let (ours, theirs) = support::compare(&url, &nginx_url, c, secs, &headers);
            row(
                &format!("roxpi warm page ({client})"),
                c,
                &ours,
                Some(&theirs),
            );
            row("nginx same bytes", c, &theirs, None);
        }
    }
    drop(nginx);
    roxpi.shutdown(Duration::from_secs(2));
    upstream.shutdown(Duration::from_secs(2));
}
