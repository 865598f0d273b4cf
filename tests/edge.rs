//! The edge release: the static aarch64 binary under qemu, the scratch
//! image run from its own root filesystem, probes under a stampede,
//! readiness transitions, Prometheus metrics (promtool) and the Grafana
//! dashboard. The tools come from `.ci/run` (release.sh, buildah,
//! qemu-user-static, prometheus); without them these tests print why and
//! skip, in CI they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fake_index::{FakeFile, FakeIndex, FakeProject, Fault};
use crate::util::{
    blob, get, have, have_file, metric, request, roxpi_on, roxpi_under_ulimit, wait_until, walk,
    within, ChildServer, Client,
};

const LIMIT: Duration = Duration::from_secs(300);
const WHEEL: &str = "demo-1.0-py3-none-any.whl";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fake upstream with project `demo` and one wheel of `len` bytes.
fn fake(len: usize) -> FakeIndex {
    let fake = FakeIndex::start(BTreeMap::new());
    fake.add_project(
        "root",
        "demo",
        FakeProject {
            files: vec![FakeFile::new(WHEEL, blob(len, 3))],
            versions: vec![],
            ..Default::default()
        },
    );
    fake
}

/// Once ready: a page, the file (twice: miss, then hit) and the probes.
fn serves_a_page_and_a_file(addr: SocketAddr, fake: &FakeIndex) {
    assert_eq!(get(addr, "/health").status, 200);
    crate::util::wait_until(Duration::from_secs(30), "ready", || {
        get(addr, "/ready").status == 200
    });
    let page = get(addr, "/index/demo/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains(WHEEL), "{}", page.text());
    let want = fake.file("root", "demo", WHEEL).bytes;
    for tag in ["MISS", "HIT"] {
        let r = get(addr, &format!("/index/demo/{WHEEL}"));
        assert_eq!(r.status, 200);
        assert!(r.body == want, "the file's bytes differ");
        assert_eq!(r.header("x-cache"), Some(tag));
    }
}

#[test]
fn the_aarch64_binary_serves_under_qemu() {
    let bin = repo().join("target/aarch64-unknown-linux-musl/release/roxpi");
    if !have_file(&bin, "contrib/release.sh builds it")
        || !have("qemu-aarch64-static", &["--version"])
    {
        return;
    }
    within(LIMIT, move || {
        // An aarch64 ELF (e_machine 183), statically linked: no interpreter.
        let elf = std::fs::read(&bin).unwrap();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 183, "not aarch64");
        assert!(!has_interpreter(&elf), "dynamically linked");
        let size = elf.len();
        assert!(size <= 8 << 20, "{size} bytes, over 8 MB");
        let out = Command::new("qemu-aarch64-static")
            .arg(&bin)
            .arg("--version")
            .output()
            .unwrap();
        let version = String::from_utf8_lossy(&out.stdout);
        assert!(version.starts_with("roxpi "), "{version}");
        let f = fake(300_000);
        let cache = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("qemu-aarch64-static");
        cmd.arg(&bin)
            .env_clear()
            .env("HOME", home.path())
            .env("ROXPI_BIND", "127.0.0.1:0")
            .env("ROXPI_INDEX_URL", f.url("root"))
            .env("ROXPI_CACHE_DIR", cache.path());
        let server = ChildServer::start(cmd);
        serves_a_page_and_a_file(server.addr, &f);
        println!("aarch64 binary: {size} bytes; {}", version.trim());
    });
}

/// Whether an ELF64 file has a PT_INTERP program header (a loader).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&elf[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let p = phoff + i * phentsize;
        u32::from_le_bytes([elf[p], elf[p + 1], elf[p + 2], elf[p + 3]]) == 3
    })
}

/// `buildah` with the daemonless storage the tests use.
fn buildah(args: &[&str]) -> String {
    let out = Command::new("buildah")
        .args(["--storage-driver", "vfs"])
        .args(args)
        .current_dir(repo())
        .output()
        .expect("buildah runs");
    assert!(
        out.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes the working container and the image when the test ends.
struct Built {
    image: String,
    container: String,
}

impl Drop for Built {
    fn drop(&mut self) {
        for args in [
            vec!["umount", self.container.as_str()],
            vec!["rm", self.container.as_str()],
            vec!["rmi", "-f", self.image.as_str()],
        ] {
            let _ = Command::new("buildah")
                .args(["--storage-driver", "vfs"])
                .args(&args)
                .output();
        }
    }
}

#[test]
fn the_image_holds_everything_roxpi_needs() {
    let bin = repo().join("target/dist/linux-amd64/roxpi");
    if !have("buildah", &["--version"]) || !have_file(&bin, "contrib/release.sh builds it") {
        return;
    }
    within(LIMIT, move || {
        let image = format!("localhost/roxpi-test-{}", std::process::id());
        buildah(&[
            "bud",
            "--isolation",
            "chroot",
            "-f",
            "contrib/Dockerfile",
            "-t",
            &image,
            ".",
        ]);
        let container = buildah(&["from", &image]);
        let built = Built {
            image,
            container: container.clone(),
        };
        let root = PathBuf::from(buildah(&["mount", &container]));
        // Nothing but the binary, the CA bundle and the cache volume.
        let files: BTreeSet<String> = walk(&root)
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        let want: BTreeSet<String> = ["roxpi", "etc/ssl/certs/ca-certificates.crt", "cache/README"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(files, want);
        let config = |field: &str| buildah(&["inspect", "--format", field, &built.container]);
        let user = config("{{.OCIv1.Config.User}}");
        assert_eq!(user, "65532:65532", "a non-root user");
        assert!(config("{{.OCIv1.Config.ExposedPorts}}").contains("5000/tcp"));
        assert!(config("{{.OCIv1.Config.Volumes}}").contains("/cache"));
        let env: Vec<String> = config("{{range .OCIv1.Config.Env}}{{println .}}{{end}}")
            .lines()
            .map(str::to_owned)
            .collect();
        // The image's own settings, as a container engine would give them
        // (TLS: the bundle in the image; there is no system store).
        let f = fake(200_000);
        let mut cmd = Command::new("chroot");
        cmd.arg(format!("--userspec={user}"))
            .arg(&root)
            .arg("/roxpi")
            .env_clear();
        for e in &env {
            if let Some((k, v)) = e.split_once('=') {
                cmd.env(k, v);
            }
        }
        assert!(env
            .iter()
            .any(|e| e == "ROXPI_CA_FILE=/etc/ssl/certs/ca-certificates.crt"));
        cmd.env("ROXPI_BIND", "127.0.0.1:0")
            .env("ROXPI_INDEX_URL", f.url("root"));
        let server = ChildServer::start(cmd);
        serves_a_page_and_a_file(server.addr, &f);
        drop(server);
        // The cache went to the volume, written as the image's user.
        let kept = walk(&root.join("cache/files"));
        assert_eq!(kept.len(), 1);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&kept[0]).unwrap().uid(), 65532);
        drop(built);
    });
}

/// `/health` on a fresh connection, as a prober sends it: its latency.
fn probe(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    let status = std::str::from_utf8(&buf[9..12]).unwrap().parse().unwrap();
    (status, started.elapsed())
}

/// 100 probes, one every 10 ms: the 99th percentile.
fn probe_p99(addr: SocketAddr) -> Duration {
    let mut times: Vec<Duration> = (0..100)
        .map(|_| {
            let (status, t) = probe(addr, "/health");
            assert_eq!(status, 200);
            std::thread::sleep(Duration::from_millis(10));
            t
        })
        .collect();
    times.sort();
    times[98]
}

#[test]
fn health_answers_at_once_under_a_stampede() {
    within(LIMIT, || {
        let f = fake(16 << 20);
        let (server, _cache, _home) =
            roxpi_on(&f, &[("ROXPI_WORKERS", "2"), ("ROXPI_LOG", "warn")]);
        let addr = server.addr;
        // Cache the 16 MB file first.
        assert_eq!(get(addr, &format!("/index/demo/{WHEEL}")).status, 200);

        // 1. 64 requests whose upstream hangs (distinct projects).
        f.set_fault(Fault::Hang(Duration::from_secs(60)));
        let hung: Vec<Client> = (0..64)
            .map(|i| {
                let mut c = Client::new(addr);
                c.send(format!("GET /index/hung-{i}/ HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                c
            })
            .collect();
        wait_until(Duration::from_secs(10), "64 parked requests", || {
            metric(addr, "roxpi_http_waiting_requests") >= 64
        });
        let hung_p99 = probe_p99(addr);
        drop(hung);
        f.set_fault(Fault::None);

        // 2. 500 slow readers of the 16 MB file (they read nothing).
        let accepted = metric(addr, "roxpi_http_connections_accepted_total");
        let readers: Vec<TcpStream> = (0..500)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(
                    format!("GET /index/demo/{WHEEL} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
                )
                .unwrap();
                s
            })
            .collect();
        wait_until(Duration::from_secs(10), "500 readers accepted", || {
            metric(addr, "roxpi_http_connections_accepted_total") >= accepted + 500
        });
        let readers_p99 = probe_p99(addr);
        drop(readers);
        println!(
            "/health p99 over 100 probes: {:.1} ms with 64 hung upstream requests, {:.1} ms with 500 slow readers of a 16 MB file (2 workers); {} answered by the accept thread",
            hung_p99.as_secs_f64() * 1000.0,
            readers_p99.as_secs_f64() * 1000.0,
            metric(addr, "roxpi_http_probes_total")
        );
        // Generous bounds: the figures are in the line above.
        assert!(hung_p99 < Duration::from_secs(1), "{hung_p99:?}");
        assert!(readers_p99 < Duration::from_secs(1), "{readers_p99:?}");
    });
}

#[test]
fn probes_are_answered_beyond_the_connection_cap() {
    within(LIMIT, || {
        let f = fake(1000);
        let cache = tempfile::tempdir().unwrap();
        // 64 descriptors: a cap of 32 connections.
        let cmd = roxpi_under_ulimit("-n 64", &f, cache.path());
        let server = ChildServer::start(cmd);
        let addr = server.addr;
        let idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // A page request is shed once the server has taken them (over the
        // cap, /metrics is shed too: the 503 is the one observable)…
        let mut shed = request(addr, "GET", "/index/demo/", &[]);
        wait_until(Duration::from_secs(5), "a page request shed", || {
            shed = request(addr, "GET", "/index/demo/", &[]);
            shed.status == 503
        });
        assert!(shed.text().contains("connections"), "{}", shed.text());
        // …a probe is not.
        for _ in 0..20 {
            assert_eq!(probe(addr, "/health").0, 200);
            assert_eq!(probe(addr, "/ready").0, 200);
        }
        drop(idle);
    });
}

#[test]
fn ready_follows_startup_and_cache_write_failures() {
    within(LIMIT, || {
        // A cache dir with 200,000 files: scanning it takes a moment, and
        // roxpi listens meanwhile.
        let cache = tempfile::tempdir().unwrap();
        let files = cache.path().join("files");
        let sha = "ab".repeat(32);
        for d in 0..=255u8 {
            let dir = files.join(format!("{d:02x}"));
            std::fs::create_dir_all(&dir).unwrap();
        }
        for i in 0..200_000u32 {
            let key = format!("{:064x}", i as u128 * 0x9e37_79b9_7f4a_7c15);
            let name = format!("{key}_0_{sha}");
            std::fs::File::create(files.join(&key[..2]).join(name)).unwrap();
        }
        let f = fake(2 << 20);
        // Writes past 1 MiB fail (EFBIG): a 2 MB download cannot be kept.
        let cmd = roxpi_under_ulimit("-f 1024", &f, cache.path());
        let started = Instant::now();
        let server = ChildServer::start(cmd);
        let addr = server.addr;
        // While the cache dir is scanned: alive, not ready, and a page
        // request waits instead of failing.
        let (health, _) = probe(addr, "/health");
        let starting = get(addr, "/ready");
        assert_eq!(health, 200);
        assert_eq!(
            starting.status,
            503,
            "ready {:?} after start",
            started.elapsed()
        );
        assert_eq!(starting.json()["ready"], false);
        assert!(starting.text().contains("starting"), "{}", starting.text());
        let page = get(addr, "/index/demo/");
        assert_eq!(
            page.status, 200,
            "a request during startup waits, then is served"
        );
        let ready = get(addr, "/ready");
        assert_eq!(ready.status, 200, "{}", ready.text());
        assert_eq!(ready.json()["ready"], true);
        println!(
            "ready {:?} after start (200,000 cached files)",
            started.elapsed()
        );

        // A cache write fails: not ready, with the reason.
        let r = get(addr, &format!("/index/demo/{WHEEL}"));
        assert_eq!(r.status, 200, "the client still gets the file");
        let failed = get(addr, "/ready");
        assert_eq!(failed.status, 503);
        let reason = failed.json()["reason"].as_str().unwrap().to_owned();
        assert!(reason.contains("cache write failed"), "{reason}");
        assert_eq!(
            probe(addr, "/ready").0,
            503,
            "the accept thread says so too"
        );
        assert_eq!(probe(addr, "/health").0, 200, "still alive");

        // A later write succeeds: ready again.
        f.add_project(
            "root",
            "small",
            FakeProject {
                files: vec![FakeFile::new("small-1.0-py3-none-any.whl", blob(10_000, 4))],
                versions: vec![],
                ..Default::default()
            },
        );
        assert_eq!(
            get(addr, "/index/small/small-1.0-py3-none-any.whl").status,
            200
        );
        assert_eq!(get(addr, "/ready").status, 200);
    });
}

/// Every metric name in `/metrics` (without `_bucket`/`_sum`/`_count`
/// for histograms), from its `# TYPE` lines.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn metrics_follow_prometheus_conventions_and_promtool_accepts_them() {
    if !have("promtool", &["--version"]) {
        return;
    }
    within(LIMIT, || {
        let f = fake(300_000);
        let (server, _cache, _home) = start_on(&f);
        let addr = server.addr;
        for _ in 0..2 {
            assert_eq!(get(addr, "/index/demo/").status, 200);
            assert_eq!(get(addr, &format!("/index/demo/{WHEEL}")).status, 200);
        }
        // The histograms saw them (observed once each response is done).
        let count = |route: &str, cache: &str| {
            metric(
                addr,
                &format!(
                    "roxpi_request_duration_seconds_count{{route=\"{route}\",cache=\"{cache}\"}}"
                ),
            )
        };
        crate::util::wait_until(Duration::from_secs(10), "the file hit observed", || {
            count("file", "hit") >= 1
        });
        assert_eq!(count("page", "miss"), 1);
        assert_eq!(count("page", "hit"), 1);
        assert_eq!(count("file", "miss"), 1);
        assert_eq!(count("file", "hit"), 1);
        assert_eq!(
            metric(
                addr,
                "roxpi_upstream_fetch_duration_seconds_count{kind=\"page\"}"
            ),
            1
        );
        let text = get(addr, "/metrics").text();
        for name in exported(&text) {
            assert!(name.starts_with("roxpi_"), "{name}");
            let kind = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                .unwrap();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name}");
            }
            if kind == "histogram" {
                assert!(
                    name.ends_with("_seconds"),
                    "histogram {name} not in seconds"
                );
            }
        }
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = promtool.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn start_on(f: &FakeIndex) -> (ChildServer, tempfile::TempDir, tempfile::TempDir) {
    roxpi_on(f, &[])
}

/// Metric names a PromQL expression uses (`roxpi_…`), without the
/// histogram suffixes.
fn queried(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("roxpi_") {
        let start = i + at;
        let end = start
            + expr[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len() - start);
        let name = &expr[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.push(base.to_owned());
        i = end;
    }
    out
}

#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    within(LIMIT, || {
        let path = repo().join("contrib/grafana/roxpi.json");
        let dash: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("valid JSON");
        let f = fake(1000);
        // Every optional family present: a tiered node would add the
        // bucket's; this checks the ones every node exports.
        let (server, _cache, _home) = start_on(&f);
        let text = get(server.addr, "/metrics").text();
        let have_names = exported(&text);
        let mut exprs = Vec::new();
        collect_exprs(&dash, &mut exprs);
        assert!(exprs.len() >= 8, "only {} queries", exprs.len());
        let mut titles = Vec::new();
        collect_titles(&dash, &mut titles);
        for want in [
            "hit ratio",
            "bytes served",
            "upstream latency",
            "upstream errors",
            "stale",
            "in-flight",
            "cache fill",
            "shed",
        ] {
            assert!(
                titles.iter().any(|t| t.to_lowercase().contains(want)),
                "no panel about {want}: {titles:?}"
            );
        }
        // The bucket's metrics exist only in `s3` and `tiered` mode: those
        // must at least be ones the status module exports.
        let status_source = std::fs::read_to_string(repo().join("src/app/status.rs")).unwrap();
        let bucket_only = |n: &str| {
            (n.starts_with("roxpi_s3_")
                || n.starts_with("roxpi_file_bucket_")
                || n.starts_with("roxpi_file_upload"))
                && status_source.contains(&format!("\"{n}\""))
        };
        for e in &exprs {
            let names = queried(e);
            assert!(!names.is_empty(), "a query without a roxpi metric: {e}");
            for n in names {
                assert!(
                    have_names.contains(&n) || bucket_only(&n),
                    "{n} (in {e}) is not exported"
                );
            }
        }
    });
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

fn collect_titles(v: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(panels) = v.get("panels").and_then(|p| p.as_array()) {
        for p in panels {
            if let Some(t) = p.get("title").and_then(|t| t.as_str()) {
                out.push(t.to_owned());
            }
            collect_titles(p, out);
        }
    }
}

/// One raw request on a fresh connection: the status, and whether the
/// server closed the connection after it.
fn raw(addr: SocketAddr, bytes: &str) -> (u16, bool) {
    let mut c = Client::new(addr);
    c.send(bytes.as_bytes());
    let reply = c.read_reply(false).unwrap();
    let closed = reply
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    (reply.status, closed)
}

#[test]
fn raw_request_edges_are_judged_alike_everywhere() {
    within(LIMIT, || {
        let fake = fake(100);
        let (roxpi, _cache, _home) = roxpi_on(&fake, &[]);
        let addr = roxpi.addr;
        // Absolute-form targets (RFC 9112 §3.2.2).
        let (status, _) = raw(
            addr,
            &format!("GET http://{addr}/index/demo/ HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        );
        assert_eq!(status, 200);
        // CONNECT: not a forward proxy; the connection closes.
        let (status, closed) = raw(
            addr,
            "CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n",
        );
        assert_eq!((status, closed), (501, true));
        // The accept thread's probe path applies the workers' head rules:
        // fresh connections, whole heads at once, every time.
        for _ in 0..50 {
            let (status, _) = raw(addr, "GET /health HTTP/1.1\r\n\r\n");
            assert_eq!(status, 400, "no Host");
            let (status, _) = raw(addr, "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
            assert_eq!(status, 400, "two Hosts");
            let (status, _) = raw(addr, "GET /health HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(status, 200);
        }
    });
}
