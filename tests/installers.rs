//! End to end with the real installers: `pip install --index-url …/index/`
//! and `uv pip install --index-url …/simple/` through roxpi from the fake
//! upstream, serving wheels built here (a project on the root index that
//! depends on one on the extra index), with `#sha256=` hashes and `.metadata`
//! — and without it (metadata synthesis), with pip 22.0, pip 24.0, the
//! newest pip, uv, `poetry lock`/`install` and `pdm lock`/`install` (the
//! venvs `.ci/run` makes under `target/ci-tools/`).
//!
//! Outside CI a missing installer skips the test with a printed reason;
//! with `ROXPI_CI=1` (set by `.ci/run`) it fails instead.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::fake_index::{FakeFile, FakeIndex, FakeProject, Mode};
use crate::util::{have, start_roxpi, within};

const LIMIT: Duration = Duration::from_secs(300);

/// Builds a minimal valid pure-Python wheel; returns (wheel, METADATA).
pub(crate) fn build_wheel(dist: &str, version: &str, requires: &[&str]) -> (Bytes, Bytes) {
    build_wheel_padded(dist, version, requires, 0)
}

/// `build_wheel` with `pad` bytes of incompressible data in a module file
/// before the dist-info (a large wheel, as most are).
pub(crate) fn build_wheel_padded(
    dist: &str,
    version: &str,
    requires: &[&str],
    pad: usize,
) -> (Bytes, Bytes) {
    let module = dist.replace('-', "_");
    let info = format!("{module}-{version}.dist-info");
    let mut metadata = format!(
        "Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nRequires-Python: >=3.7\n"
    );
    for r in requires {
        metadata.push_str(&format!("Requires-Dist: {r}\n"));
    }
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..pad)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let files: Vec<(String, Vec<u8>)> = vec![
        (format!("{module}/__init__.py"), format!("VERSION = {version:?}\n").into_bytes()),
        (format!("{module}/data.bin"), noise),
        (format!("{info}/METADATA"), metadata.clone().into_bytes()),
        (
            format!("{info}/WHEEL"),
            b"Wheel-Version: 1.0\nGenerator: roxpi-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
        ),
    ];
    let mut record = String::new();
    for (name, content) in &files {
        let digest =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(content));
        record.push_str(&format!("{name},sha256={digest},{}\n", content.len()));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in files.iter().chain(std::iter::once(&(
        format!("{info}/RECORD"),
        record.into_bytes(),
    ))) {
        zip.start_file(name.as_str(), opts).unwrap();
        zip.write_all(content).unwrap();
    }
    let wheel = zip.finish().unwrap().into_inner();
    (Bytes::from(wheel), Bytes::from(metadata))
}

fn wheel_project(dist: &str, version: &str, requires: &[&str]) -> FakeProject {
    let (wheel, metadata) = build_wheel(dist, version, requires);
    let module = dist.replace('-', "_");
    let mut f = FakeFile::new(&format!("{module}-{version}-py3-none-any.whl"), wheel);
    f.metadata = Some(metadata);
    f.requires_python = Some(">=3.7".into());
    FakeProject {
        files: vec![f],
        versions: vec![version.to_owned()],
        ..Default::default()
    }
}

fn fake_with_wheels() -> FakeIndex {
    let fake = FakeIndex::start(BTreeMap::new());
    fake.add_project(
        "root",
        "roxpi-demo",
        wheel_project("roxpi-demo", "1.0.0", &["roxpi-dep>=1.0"]),
    );
    fake.add_project(
        "extra",
        "roxpi-dep",
        wheel_project("roxpi-dep", "1.2.0", &[]),
    );
    fake
}

fn assert_installed(target: &Path) {
    for module in ["roxpi_demo", "roxpi_dep"] {
        let init = target.join(module).join("__init__.py");
        assert!(init.is_file(), "{} missing after install", init.display());
    }
}

/// `python -m pip install --target target package` from roxpi's `/index/`,
/// with no cache and no user configuration.
fn pip_install(
    python: impl AsRef<std::ffi::OsStr>,
    addr: std::net::SocketAddr,
    target: &Path,
    package: &str,
) {
    run(Command::new(python)
        .args(["-m", "pip", "install", "--no-cache-dir"])
        .args(["--disable-pip-version-check", "--no-input"])
        .args(["--index-url", &format!("http://{addr}/index/")])
        .arg("--target")
        .arg(target)
        .arg(package)
        .env("PIP_CONFIG_FILE", "/dev/null"));
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run the installer");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pip_installs_through_roxpi() {
    within(LIMIT, || {
        if !have("python3", &["-m", "pip", "--version"]) {
            return;
        }
        for mode in [Mode::Json, Mode::Html] {
            let fake = fake_with_wheels();
            fake.set_mode(mode);
            let (root, extra) = (fake.url("root"), fake.url("extra"));
            let (roxpi, _home) = start_roxpi(&[
                ("ROXPI_INDEX_URL", &root),
                ("ROXPI_EXTRA_INDEX_URLS", &extra),
            ]);
            // Cold, then warm: the warm run makes no upstream request.
            for run_no in 0..2 {
                let target = tempfile::tempdir().unwrap();
                pip_install("python3", roxpi.addr, target.path(), "roxpi-demo");
                assert_installed(target.path());
                if run_no == 0 {
                    assert!(!fake.requests().is_empty());
                    fake.clear_log();
                } else {
                    assert!(
                        fake.requests().is_empty(),
                        "warm pip run went upstream: {:?}",
                        fake.requests()
                    );
                }
            }
        }
    });
}

#[test]
fn uv_installs_through_roxpi() {
    within(LIMIT, || {
        if !have("uv", &["--version"]) {
            return;
        }
        for mode in [Mode::Json, Mode::HtmlWithoutType] {
            let fake = fake_with_wheels();
            fake.set_mode(mode);
            let (root, extra) = (fake.url("root"), fake.url("extra"));
            let (roxpi, _home) = start_roxpi(&[
                ("ROXPI_INDEX_URL", &root),
                ("ROXPI_EXTRA_INDEX_URLS", &extra),
            ]);
            for run_no in 0..2 {
                let target = tempfile::tempdir().unwrap();
                let cache = tempfile::tempdir().unwrap();
                run(Command::new("uv")
                    .args(["pip", "install", "--python", "python3", "--no-config"])
                    .args(["--index-url", &format!("http://{}/simple/", roxpi.addr)])
                    .arg("--cache-dir")
                    .arg(cache.path())
                    .arg("--target")
                    .arg(target.path())
                    .arg("roxpi-demo"));
                assert_installed(target.path());
                if run_no == 0 {
                    // uv resolved from the advertised .metadata, then downloaded.
                    assert!(
                        fake.count(
                            "/files/root/roxpi-demo/roxpi_demo-1.0.0-py3-none-any.whl.metadata"
                        ) >= 1
                    );
                    assert!(
                        fake.count("/files/root/roxpi-demo/roxpi_demo-1.0.0-py3-none-any.whl") >= 1
                    );
                    fake.clear_log();
                } else {
                    assert!(
                        fake.requests().is_empty(),
                        "warm uv run went upstream: {:?}",
                        fake.requests()
                    );
                }
            }
        }
    });
}

/// A Python with a given pip, in a venv `.ci/run` makes under
/// `target/ci-tools/<venv>` (`ROXPI_<VENV>_PYTHON` overrides the path):
/// `pip22` (Ubuntu 22.04's, HTML only), `pip24` (what `python:3.12` images
/// carry), `pip-latest`. `version`: the start of `pip --version`'s answer
/// (`pip 24.0 `), or `pip ` for any.
pub(crate) fn venv_python(venv: &str, version: &str) -> Option<std::path::PathBuf> {
    let var = format!(
        "ROXPI_{}_PYTHON",
        venv.replace('-', "_").to_ascii_uppercase()
    );
    let path = std::env::var_os(&var)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/ci-tools")
                .join(venv)
                .join("bin/python")
        });
    let ok = Command::new(&path)
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with(version)
        });
    if ok {
        return Some(path);
    }
    if std::env::var_os("ROXPI_CI").is_some() {
        panic!("{version}is required in CI: {} has none", path.display());
    }
    eprintln!(
        "SKIPPED: no {version}at {} (`.ci/run` makes it: python3 -m venv target/ci-tools/{venv}, then pip install of that pip)",
        path.display()
    );
    None
}

fn pip24_python() -> Option<std::path::PathBuf> {
    venv_python("pip24", "pip 24.0 ")
}

/// Wheels listed without metadata (as pypiserver, devpi and many mirrors
/// do): pip 22.0 (HTML only, no PEP 658), pip 24.0, the newest pip and uv
/// all install through roxpi, which makes the metadata the PEP 658 clients
/// fetch.
#[test]
fn installers_work_with_synthesized_metadata() {
    within(LIMIT, || {
        let pips: Vec<(&str, std::path::PathBuf)> = [
            ("pip 22.0", venv_python("pip22", "pip 22.0 ")),
            ("pip 24.0", pip24_python()),
            ("newest pip", venv_python("pip-latest", "pip ")),
        ]
        .into_iter()
        .filter_map(|(label, p)| p.map(|p| (label, p)))
        .collect();
        let with_uv = have("uv", &["--version"]);
        for mode in [Mode::Json, Mode::Html] {
            let fake = fake_with_wheels();
            for project in ["roxpi-demo", "roxpi-dep"] {
                let index = if project == "roxpi-demo" {
                    "root"
                } else {
                    "extra"
                };
                let mut p = fake.project(index, project);
                for f in &mut p.files {
                    f.metadata = None;
                }
                fake.add_project(index, project, p);
            }
            fake.set_mode(mode);
            let (root, extra) = (fake.url("root"), fake.url("extra"));
            let (roxpi, _home) = start_roxpi(&[
                ("ROXPI_INDEX_URL", &root),
                ("ROXPI_EXTRA_INDEX_URLS", &extra),
            ]);
            for (label, python) in &pips {
                if *label == "pip 22.0" && mode == Mode::Json {
                    continue;
                }
                let target = tempfile::tempdir().unwrap();
                pip_install(python, roxpi.addr, target.path(), "roxpi-demo");
                assert_installed(target.path());
            }
            if with_uv {
                let target = tempfile::tempdir().unwrap();
                let cache = tempfile::tempdir().unwrap();
                run(Command::new("uv")
                    .args(["pip", "install", "--python", "python3", "--no-config"])
                    .args(["--index-url", &format!("http://{}/simple/", roxpi.addr)])
                    .arg("--cache-dir")
                    .arg(cache.path())
                    .arg("--target")
                    .arg(target.path())
                    .arg("roxpi-demo"));
                assert_installed(target.path());
            }
            // The PEP 658 clients asked for the metadata roxpi made.
            let made = crate::util::metric(roxpi.addr, "roxpi_metadata_made_total");
            assert!(made >= 1, "{mode:?}: no metadata made");
        }
    });
}

/// pip 24.0 sends `Cache-Control: max-age=0` with every page request; a
/// second install 12 s later (past the 10 s forced-refresh interval) must
/// still make no upstream page request.
#[test]
fn pip_24_max_age_zero_does_not_reach_the_upstream() {
    within(LIMIT, || {
        let Some(python) = pip24_python() else {
            return;
        };
        let fake = fake_with_wheels();
        fake.set_mode(Mode::Json);
        let (root, extra) = (fake.url("root"), fake.url("extra"));
        let (roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", &root),
            ("ROXPI_EXTRA_INDEX_URLS", &extra),
        ]);
        let pages = |fake: &FakeIndex| {
            fake.requests()
                .iter()
                .filter(|r| !r.path.starts_with("/files/"))
                .count()
        };
        for run_no in 0..2 {
            if run_no == 1 {
                std::thread::sleep(Duration::from_secs(12));
            }
            let target = tempfile::tempdir().unwrap();
            pip_install(&python, roxpi.addr, target.path(), "roxpi-demo");
            assert_installed(target.path());
            if run_no == 0 {
                assert!(pages(&fake) > 0);
                fake.clear_log();
            }
        }
        assert_eq!(
            pages(&fake),
            0,
            "the second pip 24.0 run went upstream for pages: {:?}",
            fake.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
        );
    });
}

/// A tool installed in a venv `.ci/run` makes under `target/ci-tools/<venv>`.
pub(crate) fn venv_tool(venv: &str, tool: &str) -> Option<std::path::PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/ci-tools")
        .join(venv)
        .join("bin")
        .join(tool);
    if have(path.to_str().unwrap_or(tool), &["--version"]) {
        Some(path)
    } else {
        None
    }
}

/// A project depending on `roxpi-demo`, with `tool_config` (its index).
fn client_project(dir: &Path, tool_config: &str) {
    std::fs::write(
        dir.join("pyproject.toml"),
        format!(
            "[project]\nname = \"client\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"roxpi-demo\"]\n\n{tool_config}"
        ),
    )
    .unwrap();
}

/// The fake upstream's wheels without metadata, and roxpi in front.
fn roxpi_without_upstream_metadata() -> (FakeIndex, crate::util::ChildServer, tempfile::TempDir) {
    let fake = fake_with_wheels();
    for (index, project) in [("root", "roxpi-demo"), ("extra", "roxpi-dep")] {
        let mut p = fake.project(index, project);
        for f in &mut p.files {
            f.metadata = None;
        }
        fake.add_project(index, project, p);
    }
    fake.set_mode(Mode::Json);
    let (root, extra) = (fake.url("root"), fake.url("extra"));
    let (roxpi, home) = start_roxpi(&[
        ("ROXPI_INDEX_URL", &root),
        ("ROXPI_EXTRA_INDEX_URLS", &extra),
    ]);
    (fake, roxpi, home)
}

/// The `site-packages` of a venv.
fn site_packages(venv: &Path) -> std::path::PathBuf {
    std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .flatten()
        .map(|d| d.path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("site-packages in the venv")
}

fn installed_in_venv(venv: &Path) {
    assert_installed(&site_packages(venv));
}

/// poetry's environment: its dirs under `dir`, the venv in the project,
/// no questions.
fn poetry_env(dir: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    vec![
        ("POETRY_CACHE_DIR", dir.join("cache").into()),
        ("POETRY_CONFIG_DIR", dir.join("config").into()),
        ("POETRY_DATA_DIR", dir.join("data").into()),
        ("POETRY_VIRTUALENVS_IN_PROJECT", "true".into()),
        ("POETRY_VIRTUALENVS_PREFER_ACTIVE_PYTHON", "false".into()),
        ("POETRY_NO_INTERACTION", "1".into()),
    ]
}

/// `lock` then `install` with `tool` in a project that uses roxpi through
/// `tool_config` (given roxpi's address), each step with `env` (given a
/// scratch dir); then the lock file lists the dependency and the project's
/// venv holds both packages.
fn lock_and_install(
    tool: &Path,
    tool_config: impl Fn(std::net::SocketAddr) -> String,
    steps: [&[&str]; 2],
    env: impl Fn(&Path) -> Vec<(&'static str, std::ffi::OsString)>,
    lock_file: &str,
) {
    let (_fake, roxpi, _home) = roxpi_without_upstream_metadata();
    let work = tempfile::tempdir().unwrap();
    client_project(work.path(), &tool_config(roxpi.addr));
    let scratch = tempfile::tempdir().unwrap();
    for args in steps {
        run(Command::new(tool)
            .args(args)
            .current_dir(work.path())
            .envs(env(scratch.path())));
    }
    let lock = std::fs::read_to_string(work.path().join(lock_file)).unwrap();
    assert!(lock.contains("name = \"roxpi-dep\""), "{lock}");
    installed_in_venv(&work.path().join(".venv"));
}

#[test]
fn poetry_locks_and_installs_through_roxpi() {
    within(LIMIT, || {
        let Some(poetry) = venv_tool("poetry", "poetry") else {
            return;
        };
        lock_and_install(
            &poetry,
            |addr| {
                format!("[tool.poetry]\npackage-mode = false\n\n[[tool.poetry.source]]\nname = \"roxpi\"\nurl = \"http://{addr}/simple/\"\npriority = \"primary\"\n")
            },
            [&["lock"], &["install", "--no-interaction"]],
            poetry_env,
            "poetry.lock",
        );
    });
}

#[test]
fn pdm_locks_and_installs_through_roxpi() {
    within(LIMIT, || {
        let Some(pdm) = venv_tool("pdm", "pdm") else {
            return;
        };
        lock_and_install(
            &pdm,
            |addr| {
                format!("[tool.pdm]\ndistribution = false\n\n[[tool.pdm.source]]\nname = \"pypi\"\nurl = \"http://{addr}/simple/\"\n")
            },
            [&["lock"], &["install", "--no-self"]],
            |dir| {
                vec![
                    ("PDM_HOME", dir.join("home").into()),
                    ("PDM_CACHE_DIR", dir.join("cache").into()),
                    ("PDM_CONFIG_FILE", dir.join("config.toml").into()),
                    ("PDM_IGNORE_SAVED_PYTHON", "1".into()),
                    ("PDM_PYTHON", "python3".into()),
                    ("PDM_NON_INTERACTIVE", "1".into()),
                    ("PDM_CHECK_UPDATE", "false".into()),
                ]
            },
            "pdm.lock",
        );
    });
}

/// `cool-demo` 1.0 (old) and 2.0 (uploaded an hour ago), on JSON pages.
fn fake_with_a_fresh_release() -> FakeIndex {
    let fake = FakeIndex::start(BTreeMap::new());
    let mut files = Vec::new();
    for (version, ago) in [("1.0", 400 * 86_400u64), ("2.0", 3600)] {
        let (wheel, metadata) = build_wheel("cool-demo", version, &[]);
        let mut f = FakeFile::new(&format!("cool_demo-{version}-py3-none-any.whl"), wheel);
        f.metadata = Some(metadata);
        f.upload_time = Some(
            humantime::format_rfc3339_micros(
                std::time::SystemTime::now() - Duration::from_secs(ago),
            )
            .to_string(),
        );
        files.push(f);
    }
    fake.add_project(
        "root",
        "cool-demo",
        FakeProject {
            files,
            versions: vec!["1.0".into(), "2.0".into()],
            ..Default::default()
        },
    );
    fake.set_mode(Mode::Json);
    fake
}

/// The version of `cool_demo` installed under `site`.
fn cool_version(site: &Path) -> String {
    let init = std::fs::read_to_string(site.join("cool_demo/__init__.py")).unwrap();
    init.trim()
        .trim_start_matches("VERSION = ")
        .trim_matches('"')
        .to_owned()
}

/// With `min-release-age = "7d"`, the newest pip, uv and poetry resolve the
/// previous version; a uv lock file made before the policy still installs
/// the new one (hide mode serves it when asked for it directly), and in
/// deny mode its URL is refused with the reason.
#[test]
fn installers_resolve_the_previous_version_under_a_cooldown() {
    within(LIMIT, || {
        let Some(pip) = venv_python("pip-latest", "pip ") else {
            return;
        };
        if !have("uv", &["--version"]) {
            return;
        }
        let Some(poetry) = venv_tool("poetry", "poetry") else {
            return;
        };
        let fake = fake_with_a_fresh_release();
        let root = fake.url("root");
        // A lock file made before the policy (no cooldown yet).
        let project = tempfile::tempdir().unwrap();
        let uv_cache = tempfile::tempdir().unwrap();
        let write_project = |addr: std::net::SocketAddr| {
            std::fs::write(
                project.path().join("pyproject.toml"),
                format!("[project]\nname = \"client\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"cool-demo\"]\n\n[[tool.uv.index]]\nurl = \"http://{addr}/simple/\"\ndefault = true\n"),
            )
            .unwrap();
        };
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = cache.path().display().to_string();
        let uv = |args: &[&str]| {
            let mut c = Command::new("uv");
            c.args(args)
                .arg("--cache-dir")
                .arg(uv_cache.path())
                .current_dir(project.path());
            c
        };
        {
            let (roxpi, _home) =
                start_roxpi(&[("ROXPI_INDEX_URL", &root), ("ROXPI_CACHE_DIR", &cache_dir)]);
            write_project(roxpi.addr);
            let page = crate::util::get(roxpi.addr, "/simple/cool-demo/");
            assert_eq!(page.status, 200, "{}", page.text());
            run(&mut uv(&["lock", "--python", "python3"]));
            let lock = std::fs::read_to_string(project.path().join("uv.lock")).unwrap();
            assert!(lock.contains("cool_demo-2.0-py3-none-any.whl"), "{lock}");
        }
        // The same roxpi (same port for the lock's URLs is not needed: the
        // lock file names roxpi's address, so run on a fresh port and
        // rewrite it), now with the cooldown.
        let (roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", &root),
            ("ROXPI_CACHE_DIR", &cache_dir),
            ("ROXPI_MIN_RELEASE_AGE", "7d"),
        ]);
        let addr = roxpi.addr;
        let lock_path = project.path().join("uv.lock");
        let lock = std::fs::read_to_string(&lock_path).unwrap();
        let old_addr = lock
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .unwrap()
            .to_owned();
        std::fs::write(&lock_path, lock.replace(&old_addr, &addr.to_string())).unwrap();
        write_project(addr);

        // pip, newest: the previous version.
        let target = tempfile::tempdir().unwrap();
        pip_install(&pip, addr, target.path(), "cool-demo");
        assert_eq!(cool_version(target.path()), "1.0", "pip");

        // uv: the previous version.
        let target = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        run(Command::new("uv")
            .args(["pip", "install", "--python", "python3", "--no-config"])
            .args(["--index-url", &format!("http://{addr}/simple/")])
            .arg("--cache-dir")
            .arg(scratch.path())
            .arg("--target")
            .arg(target.path())
            .arg("cool-demo"));
        assert_eq!(cool_version(target.path()), "1.0", "uv");

        // poetry: locks the previous version.
        let work = tempfile::tempdir().unwrap();
        std::fs::write(
            work.path().join("pyproject.toml"),
            format!("[project]\nname = \"client\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"cool-demo\"]\n\n[tool.poetry]\npackage-mode = false\n\n[[tool.poetry.source]]\nname = \"roxpi\"\nurl = \"http://{addr}/simple/\"\npriority = \"primary\"\n"),
        )
        .unwrap();
        let pscratch = tempfile::tempdir().unwrap();
        run(Command::new(&poetry)
            .arg("lock")
            .current_dir(work.path())
            .envs(poetry_env(pscratch.path())));
        let plock = std::fs::read_to_string(work.path().join("poetry.lock")).unwrap();
        assert!(
            plock.contains("version = \"1.0\""),
            "poetry locked: {plock}"
        );
        assert!(!plock.contains("cool_demo-2.0"), "{plock}");

        // The lock file made before: installs 2.0 (served though hidden).
        run(&mut uv(&["sync", "--frozen", "--python", "python3"]));
        let site = site_packages(&project.path().join(".venv"));
        assert_eq!(cool_version(&site), "2.0", "the lock file's version");
        drop(roxpi);

        // Deny mode: the young file's URL is refused with the reason.
        let (roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", &root),
            ("ROXPI_CACHE_DIR", &cache_dir),
            ("ROXPI_MIN_RELEASE_AGE", "7d"),
            ("ROXPI_COOLDOWN_MODE", "deny"),
        ]);
        let r = crate::util::get(
            roxpi.addr,
            "/simple/cool-demo/cool_demo-2.0-py3-none-any.whl",
        );
        assert_eq!(r.status, 403);
        assert!(r.text().contains("release cooldown until"), "{}", r.text());
    });
}
