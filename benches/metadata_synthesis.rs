//! Resolving through roxpi from an upstream that serves no PEP 658
//! metadata (pypiserver, devpi, many mirrors), with metadata synthesis on
//! and off: `uv pip compile` and `poetry lock` of a project whose 30 wheels
//! (a few of them several MB) form a dependency tree. Reports, per run, the
//! bytes the upstream sent for files and the wall time. Each run starts
//! cold (fresh roxpi cache, fresh client cache).
//!
//! `cargo bench --bench metadata_synthesis`. Needs uv on PATH; poetry is
//! taken from `target/ci-tools/poetry` (made by `.ci/run`) when present.

mod support;

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roxpi::http::conditional::{parse_range, RangeRequest};
use roxpi::http::{Response, Server, ServerConfig};
use sha2::{Digest, Sha256};

/// (name, version, dependencies, padding bytes): 30 wheels.
fn projects() -> Vec<(String, &'static str, Vec<String>, usize)> {
    let mut out = Vec::new();
    for i in 0..30 {
        // A tree: each project depends on the next two of its subtree.
        let deps: Vec<String> = [2 * i + 1, 2 * i + 2]
            .into_iter()
            .filter(|d| *d < 30)
            .map(|d| format!("bench-pkg-{d}"))
            .collect();
        // Three big wheels (8, 6, 4 MB), the rest 50–500 KB.
        let pad = match i {
            3 => 8 << 20,
            7 => 6 << 20,
            12 => 4 << 20,
            _ => 50_000 + i * 15_000,
        };
        out.push((format!("bench-pkg-{i}"), "1.0", deps, pad));
    }
    out
}

fn wheel(name: &str, version: &str, deps: &[String], pad: usize) -> Bytes {
    let module = name.replace('-', "_");
    let info = format!("{module}-{version}.dist-info");
    let mut metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
    for d in deps {
        metadata.push_str(&format!("Requires-Dist: {d}\n"));
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ pad as u64;
    let noise: Vec<u8> = (0..pad)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (path, body) in [
        (format!("{module}/__init__.py"), b"X = 1\n".to_vec()),
        (format!("{module}/data.bin"), noise),
        (format!("{info}/METADATA"), metadata.into_bytes()),
        (
            format!("{info}/WHEEL"),
            b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_vec(),
        ),
        (format!("{info}/RECORD"), Vec::new()),
    ] {
        z.start_file(path, stored).unwrap();
        z.write_all(&body).unwrap();
    }
    Bytes::from(z.finish().unwrap().into_inner())
}

struct Upstream {
    server: Server,
    file_bytes: Arc<AtomicU64>,
}

/// A JSON index without `core-metadata`, honouring `Range`, counting the
/// file bytes it sends.
fn upstream() -> Upstream {
    let mut files: Vec<(String, String, Bytes)> = Vec::new();
    for (name, version, deps, pad) in projects() {
        let filename = format!("{}-{version}-py3-none-any.whl", name.replace('-', "_"));
        let bytes = wheel(&name, version, &deps, pad);
        files.push((name, filename, bytes));
    }
    let files = Arc::new(files);
    let file_bytes = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&file_bytes);
    let server = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig::default(),
        move |req| {
            let parts: Vec<&str> = req.path().trim_matches('/').split('/').collect();
            match parts.as_slice() {
                ["simple", project] => {
                    let listed: Vec<serde_json::Value> = files
                        .iter()
                        .filter(|(n, _, _)| n == project)
                        .map(|(_, f, b)| {
                            serde_json::json!({
                                "filename": f,
                                "url": format!("/files/{f}"),
                                "hashes": {"sha256": hex::encode(Sha256::digest(b))},
                                "size": b.len(),
                            })
                        })
                        .collect();
                    if listed.is_empty() {
                        return Response::new(404);
                    }
                    let page = serde_json::json!({
                        "meta": {"api-version": "1.1"},
                        "name": project,
                        "files": listed,
                        "versions": ["1.0"],
                    });
                    Response::new(200)
                        .header("Content-Type", "application/vnd.pypi.simple.v1+json")
                        .body(page.to_string())
                }
                ["files", f] => {
                    let Some((_, _, b)) = files.iter().find(|(_, n, _)| n == f) else {
                        return Response::new(404);
                    };
                    let total = b.len() as u64;
                    let (status, body, range) = match parse_range(req.header("range"), total) {
                        RangeRequest::Partial(r) => (
                            206,
                            b.slice(r.start as usize..=r.end as usize),
                            Some(r.content_range(total)),
                        ),
                        _ => (200, b.clone(), None),
                    };
                    counted.fetch_add(body.len() as u64, Ordering::Relaxed);
                    let mut resp =
                        Response::new(status).header("Content-Type", "application/octet-stream");
                    if let Some(cr) = range {
                        resp = resp.header("Content-Range", cr);
                    }
                    resp.body(body)
                }
                _ => Response::new(404),
            }
        },
    )
    .unwrap();
    Upstream { server, file_bytes }
}

/// A resolver run against an index URL in a work dir.
type Client<'a> = dyn Fn(&str, &Path) + 'a;

fn have(tool: &Path) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One cold resolution: (upstream file bytes, wall time).
fn resolve(up: &Upstream, synthesize: bool, client: &Client<'_>) -> (u64, Duration) {
    let cache = tempfile::tempdir().unwrap();
    let index = format!("http://{}/simple/", up.server.local_addr());
    let cache_dir = cache.path().display().to_string();
    let roxpi = support::start_roxpi(&[
        "--index-url",
        &index,
        "--log",
        "off",
        "--cache-dir",
        &cache_dir,
        "--synthesize-metadata",
        if synthesize { "on" } else { "off" },
    ]);
    let url = format!("http://{}/simple/", roxpi.local_addr());
    let work = tempfile::tempdir().unwrap();
    let before = up.file_bytes.load(Ordering::Relaxed);
    let started = Instant::now();
    client(&url, work.path());
    let took = started.elapsed();
    roxpi.shutdown(Duration::from_secs(2));
    (up.file_bytes.load(Ordering::Relaxed) - before, took)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run the client");
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let uv = PathBuf::from("uv");
    let poetry = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-tools/poetry/bin/poetry");
    if !have(&uv) {
        eprintln!("this bench needs uv on PATH (pip install uv)");
        std::process::exit(2);
    }
    let up = upstream();
    let wheels: u64 = projects().iter().map(|p| p.3 as u64).sum();
    println!(
        "30 wheels, about {:.1} MB in all, upstream without PEP 658 metadata; cold runs",
        wheels as f64 / 1e6
    );
    println!(
        "{:<22} {:>10} {:>18} {:>10}",
        "client", "synthesis", "upstream file MB", "wall s"
    );
    let uv_compile = |url: &str, dir: &Path| {
        std::fs::write(dir.join("req.in"), "bench-pkg-0\n").unwrap();
        run(Command::new("uv")
            .args([
                "pip",
                "compile",
                "--no-config",
                "--python",
                "python3",
                "req.in",
            ])
            .args(["--index-url", url, "--cache-dir"])
            .arg(dir.join("uv-cache"))
            .arg("-o")
            .arg(dir.join("req.txt"))
            .current_dir(dir));
    };
    let poetry_lock = |url: &str, dir: &Path| {
        std::fs::write(
            dir.join("pyproject.toml"),
            format!("[project]\nname = \"client\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"bench-pkg-0\"]\n\n[tool.poetry]\npackage-mode = false\n\n[[tool.poetry.source]]\nname = \"roxpi\"\nurl = \"{url}\"\npriority = \"primary\"\n"),
        )
        .unwrap();
        run(Command::new(&poetry)
            .arg("lock")
            .current_dir(dir)
            .env("POETRY_CACHE_DIR", dir.join("cache"))
            .env("POETRY_CONFIG_DIR", dir.join("config"))
            .env("POETRY_NO_INTERACTION", "1"));
    };
    let mut clients: Vec<(&str, &Client<'_>)> = vec![("uv pip compile", &uv_compile)];
    if have(&poetry) {
        clients.push(("poetry lock", &poetry_lock));
    } else {
        eprintln!("(no poetry at {}: run .ci/run once)", poetry.display());
    }
    for (label, client) in clients {
        for synthesize in [false, true] {
            let (bytes, took) = resolve(&up, synthesize, client);
            println!(
                "{label:<22} {:>10} {:>18.2} {:>10.2}",
                if synthesize { "on" } else { "off" },
                bytes as f64 / 1e6,
                took.as_secs_f64()
            );
        }
    }
    up.server.shutdown(Duration::from_secs(2));
}
