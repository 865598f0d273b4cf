//! HTTPS on roxpi's listener (`ROXPI_TLS_CERT` / `ROXPI_TLS_KEY`, and
//! `ROXPI_TLS_BIND` next to plain HTTP), with test CAs made here by the
//! openssl CLI: pip (`PIP_CERT`) and uv (`SSL_CERT_FILE`) install through
//! it, SIGHUP swaps the certificate for new connections while an old one
//! finishes its download, and 500 TLS clients that never read do not stop
//! a warm page.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::fake_index::{FakeFile, FakeIndex, FakeProject, FileMode};
use crate::util::{get, have, start_roxpi, wait_for_line, within};

/// A CA and a server certificate it signed for 127.0.0.1 and localhost.
struct TestCa {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_ca(dir: &Path, name: &str) -> TestCa {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let (ca_key, ca, key, csr, cert, ext) = (
        s(p("ca.key")),
        s(p("ca.pem")),
        s(p("server.key")),
        s(p("server.csr")),
        s(p("server.pem")),
        s(p("ext.cnf")),
    );
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca, "-days", "2"]);
    let subject = format!("/CN=roxpi test CA {name}");
    args.extend(["-subj", &subject]);
    args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &args);
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
    openssl(dir, &args);
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    TestCa {
        ca: ca.into(),
        cert: cert.into(),
        key: key.into(),
    }
}

/// A rustls client trusting only `ca`.
fn client(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` whose handshake is done.
fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// GET `path` over a new TLS connection: (status, body).
fn tls_get(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, path: &str) -> (u16, Vec<u8>) {
    let mut tls = connect(addr, config).expect("TLS handshake");
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    // rustls reports a close without close_notify as an error; roxpi sends one.
    tls.read_to_end(&mut all).expect("read the answer");
    split(&all)
}

fn split(all: &[u8]) -> (u16, Vec<u8>) {
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&all[..at]);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, all[at + 4..].to_vec())
}

fn roxpi_tls(
    fake: &FakeIndex,
    ca: &TestCa,
    second: bool,
) -> (crate::util::ChildServer, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let root = fake.url("root");
    let mut env = vec![
        ("ROXPI_INDEX_URL", root),
        (
            "ROXPI_CACHE_DIR",
            cache.path().to_string_lossy().into_owned(),
        ),
        ("ROXPI_TLS_CERT", ca.cert.to_string_lossy().into_owned()),
        ("ROXPI_TLS_KEY", ca.key.to_string_lossy().into_owned()),
    ];
    if second {
        env.push(("ROXPI_TLS_BIND", "127.0.0.1:0".into()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (server, _home) = start_roxpi(&env);
    (server, cache)
}

fn tls_tools() -> bool {
    have("openssl", &["version"])
}

#[test]
fn pip_and_uv_install_over_https_with_a_test_ca() {
    within(Duration::from_secs(300), || {
        if !tls_tools() || !have("uv", &["--version"]) {
            return;
        }
        let Some(pip) = crate::installers::venv_python("pip24", "pip 24.0 ") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let ca = make_ca(dir.path(), "a");
        let fake = crate::prefetch::installable();
        let (roxpi, _cache) = roxpi_tls(&fake, &ca, false);
        let addr = roxpi.tls_addr.expect("an https:// address");
        assert_eq!(addr, roxpi.addr, "the listen address speaks TLS");

        let target = dir.path().join("pip");
        let out = Command::new(&pip)
            .args([
                "-m",
                "pip",
                "install",
                "--no-cache-dir",
                "--disable-pip-version-check",
            ])
            .args([
                "--index-url",
                &format!("https://127.0.0.1:{}/index/", addr.port()),
            ])
            .arg("--target")
            .arg(&target)
            .arg("roxpi-demo")
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("PIP_CERT", &ca.ca)
            // requests lets these override pip's --cert (psf/requests#3829).
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(target.join("roxpi_dep/__init__.py").is_file());

        let target = dir.path().join("uv");
        let out = Command::new("uv")
            .args(["pip", "install", "--python", "python3", "--no-config"])
            .args([
                "--index-url",
                &format!("https://localhost:{}/simple/", addr.port()),
            ])
            .arg("--cache-dir")
            .arg(dir.path().join("uv-cache"))
            .arg("--target")
            .arg(&target)
            .arg("roxpi-demo")
            .env("SSL_CERT_FILE", &ca.ca)
            .env_remove("UV_NATIVE_TLS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "uv: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(target.join("roxpi_demo/__init__.py").is_file());

        // Without the CA, the installer refuses: the certificate is checked.
        let out = Command::new(&pip)
            .args([
                "-m",
                "pip",
                "download",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--retries",
                "0",
            ])
            .args([
                "--index-url",
                &format!("https://127.0.0.1:{}/index/", addr.port()),
            ])
            .arg("-d")
            .arg(dir.path().join("nothing"))
            .arg("roxpi-demo")
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env_remove("PIP_CERT")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("CERTIFICATE_VERIFY_FAILED"), "{said}");
    });
}

#[test]
fn sighup_swaps_the_certificate_while_an_old_connection_finishes_its_download() {
    within(Duration::from_secs(120), || {
        if !tls_tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (make_ca(dir.path(), "a"), make_ca(dir.path(), "b"));
        let live = TestCa {
            ca: a.ca.clone(),
            cert: dir.path().join("live.pem"),
            key: dir.path().join("live.key"),
        };
        std::fs::copy(&a.cert, &live.cert).unwrap();
        std::fs::copy(&a.key, &live.key).unwrap();
        let fake = FakeIndex::start(Default::default());
        let body = crate::util::blob(600_000, 9);
        fake.add_project(
            "root",
            "big",
            FakeProject {
                files: vec![FakeFile::new("big-1.0-py3-none-any.whl", body.clone())],
                versions: vec!["1.0".into()],
                ..Default::default()
            },
        );
        fake.set_file_mode(FileMode::Throttle {
            chunk: 30_000,
            every: Duration::from_millis(50),
        });
        let (mut roxpi, _cache) = roxpi_tls(&fake, &live, true);
        let lines = roxpi.stderr_lines();
        let tls_addr = roxpi.tls_addr.expect("the TLS address");
        assert_ne!(tls_addr, roxpi.addr);
        // Plain HTTP stays on the listen address.
        assert_eq!(get(roxpi.addr, "/health").status, 200);
        let (ca_a, ca_b) = (client(&a.ca), client(&b.ca));

        // An old connection starts a download that takes about a second.
        let mut old = connect(tls_addr, &ca_a).unwrap();
        write!(old, "GET /index/big/big-1.0-py3-none-any.whl HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut first = vec![0u8; 4096];
        let got = old.read(&mut first).unwrap();
        assert!(got > 0);

        std::fs::copy(&b.cert, &live.cert).unwrap();
        std::fs::copy(&b.key, &live.key).unwrap();
        let pid = roxpi.pid().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
        wait_for_line(
            &lines,
            "TLS certificate and key reloaded",
            Duration::from_secs(10),
        );

        // New connections get the new certificate; the old one is refused.
        assert_eq!(tls_get(tls_addr, &ca_b, "/health").0, 200);
        // The home page read over TLS shows https:// lines, without
        // --trusted-host.
        let (status, home) = tls_get(tls_addr, &ca_b, "/");
        let home = String::from_utf8_lossy(&home);
        assert_eq!(status, 200);
        assert!(
            home.contains("pip install --index-url https://localhost/index/ PACKAGE"),
            "{home}"
        );
        assert!(
            connect(tls_addr, &ca_a).is_err(),
            "the old certificate is still served"
        );

        // The old connection finishes its download, every byte right.
        let mut rest = Vec::new();
        old.read_to_end(&mut rest).unwrap();
        let mut all = first[..got].to_vec();
        all.extend_from_slice(&rest);
        let (status, file) = split(&all);
        assert_eq!(status, 200);
        assert_eq!(
            Sha256::digest(&file),
            Sha256::digest(&body),
            "{} bytes",
            file.len()
        );
    });
}

#[test]
fn slow_tls_readers_do_not_stop_a_warm_page() {
    within(Duration::from_secs(120), || {
        if !tls_tools() {
            return;
        }
        roxpi::http::raise_nofile_limit();
        let dir = tempfile::tempdir().unwrap();
        let ca = make_ca(dir.path(), "a");
        let fake = FakeIndex::start(Default::default());
        fake.add_project(
            "root",
            "big",
            FakeProject {
                files: vec![FakeFile::new(
                    "big-1.0-py3-none-any.whl",
                    crate::util::blob(4 << 20, 3),
                )],
                versions: vec!["1.0".into()],
                ..Default::default()
            },
        );
        let (roxpi, _cache) = roxpi_tls(&fake, &ca, false);
        let addr = roxpi.addr;
        let config = client(&ca.ca);
        // Warm: the page and the file are cached.
        assert_eq!(tls_get(addr, &config, "/index/big/").0, 200);
        let (status, file) = tls_get(addr, &config, "/index/big/big-1.0-py3-none-any.whl");
        assert_eq!((status, file.len()), (200, 4 << 20));

        // 500 clients ask for the 4 MiB file and never read.
        let readers: Vec<Tls> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let config = Arc::clone(&config);
                    s.spawn(move || {
                        (0..125)
                            .map(|_| {
                                let mut t = connect(addr, &config).expect("handshake");
                                write!(t, "GET /index/big/big-1.0-py3-none-any.whl HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
                                t.flush().unwrap();
                                t
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(readers.len(), 500);
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..5 {
            let t = Instant::now();
            let (status, body) = tls_get(addr, &config, "/index/big/");
            let took = t.elapsed();
            assert_eq!(status, 200);
            assert!(String::from_utf8_lossy(&body).contains("big-1.0-py3-none-any.whl"));
            assert!(
                took < Duration::from_secs(1),
                "a warm page took {took:?} behind 500 slow TLS readers"
            );
        }
        drop(readers);
    });
}

#[test]
fn prefetch_over_https_trusts_ssl_cert_file() {
    within(Duration::from_secs(120), || {
        if !tls_tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (make_ca(dir.path(), "a"), make_ca(dir.path(), "b"));
        let fake = crate::prefetch::installable();
        let (roxpi, _cache) = roxpi_tls(&fake, &a, false);
        let wheel = "roxpi_dep-1.2.0-py3-none-any.whl";
        let lock = dir.path().join("poetry.lock");
        std::fs::write(
            &lock,
            format!("[[package]]\nname = \"roxpi-dep\"\nversion = \"1.2.0\"\nfiles = [{{file = \"{wheel}\"}}]\n"),
        )
        .unwrap();
        let url = format!("https://localhost:{}/simple/", roxpi.addr.port());
        let prefetch = |ca: &Path| {
            Command::new(crate::util::roxpi_bin())
                .args(["prefetch", "--url", &url])
                .arg(&lock)
                .env("SSL_CERT_FILE", ca)
                .output()
                .unwrap()
        };
        // Another CA: refused, with the reason.
        let out = prefetch(&b.ca);
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("invalid peer certificate"), "{said}");
        assert_eq!(fake.count(&format!("/files/root/roxpi-dep/{wheel}")), 0);
        // The right one: fetched through TLS.
        let out = prefetch(&a.ca);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}");
        assert!(said.contains("prefetch: 1 fetched"), "{said}");
        assert_eq!(fake.count(&format!("/files/root/roxpi-dep/{wheel}")), 1);

        // Plain HTTP on the TLS port is told so, not cut without a word:
        // in one piece, and typed a piece at a time (the first bytes too
        // few to tell from a TLS record).
        for pieces in [
            &["GET /health HTTP/1.1\r\nHost: x\r\n\r\n"][..],
            &["G", "ET", " /health HTTP/1.1\r\nHost: x\r\n\r\n"][..],
        ] {
            let mut plain = TcpStream::connect(roxpi.addr).unwrap();
            plain
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            for piece in pieces {
                plain.write_all(piece.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut answer = String::new();
            let _ = plain.read_to_string(&mut answer);
            assert!(
                answer.starts_with("HTTP/1.1 400 "),
                "{pieces:?}: {answer:?}"
            );
            assert!(answer.contains("This port speaks HTTPS"), "{answer:?}");
        }
    });
}
