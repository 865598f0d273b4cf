//! `roxpi prefetch` against roxpi and the fake upstream: every lock format
//! fills the cache with exactly the files it names, a second run fetches
//! nothing, a missing file fails the run by name, the platform targets pick
//! the wheels an installer takes, the progress bar under a pseudo-terminal
//! and plain lines without one, `ROXPI_PREFETCH` at startup with `/ready`;
//! and the real installers (uv, pip, poetry) install offline from what a
//! prefetch of their own locks put in the cache.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::fake_index::{FakeFile, FakeIndex, FakeProject, Mode};
use crate::installers::{build_wheel, venv_python, venv_tool};
use crate::util::{get, have, metric, roxpi_bin, roxpi_on, start_roxpi, wait_until, within};

const LIMIT: Duration = Duration::from_secs(120);

const AARCH64: &str = "gamma-3.0-cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64.whl";
const X86_64: &str = "gamma-3.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";

fn project(files: Vec<FakeFile>, versions: &[&str]) -> FakeProject {
    FakeProject {
        files,
        versions: versions.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    }
}

/// alpha 1.0 (wheel, sdist), beta 1.0 and 2.0 (wheels), gamma 3.0 (two
/// platform wheels and an sdist).
fn fake() -> FakeIndex {
    let fake = FakeIndex::start(BTreeMap::new());
    fake.set_mode(Mode::Json);
    let wheel = |dist: &str, v: &str| {
        FakeFile::new(
            &format!("{dist}-{v}-py3-none-any.whl"),
            build_wheel(dist, v, &[]).0,
        )
    };
    let blob = |name: &str, seed: u64| FakeFile::new(name, crate::util::blob(20_000, seed));
    fake.add_project(
        "root",
        "alpha",
        project(
            vec![wheel("alpha", "1.0"), blob("alpha-1.0.tar.gz", 1)],
            &["1.0"],
        ),
    );
    fake.add_project(
        "root",
        "beta",
        project(
            vec![wheel("beta", "1.0"), wheel("beta", "2.0")],
            &["1.0", "2.0"],
        ),
    );
    fake.add_project(
        "root",
        "gamma",
        project(
            vec![
                blob(AARCH64, 2),
                blob(X86_64, 3),
                blob("gamma-3.0.tar.gz", 4),
            ],
            &["3.0"],
        ),
    );
    fake
}

fn sha(fake: &FakeIndex, project: &str, filename: &str) -> String {
    fake.file("root", project, filename).sha256()
}

fn file_path(project: &str, filename: &str) -> String {
    format!("/files/root/{project}/{filename}")
}

/// `roxpi prefetch` with `args`, stdout and stderr captured (no terminal).
fn prefetch(args: &[&str]) -> Output {
    let out = Command::new(roxpi_bin())
        .arg("prefetch")
        .args(args)
        .env_remove("ROXPI_BIND")
        .output()
        .expect("run roxpi prefetch");
    eprintln!(
        "roxpi prefetch {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One lock of each format, naming: alpha's wheel (requirements with a
/// hash), beta 2.0's wheel (pylock.toml), gamma's aarch64 wheel and sdist
/// (uv.lock), alpha's sdist (poetry.lock).
fn write_locks(fake: &FakeIndex, dir: &Path) -> Vec<String> {
    let alpha_whl = "alpha-1.0-py3-none-any.whl";
    let beta_whl = "beta-2.0-py3-none-any.whl";
    let files = [
        (
            "requirements.txt",
            format!("alpha==1.0 \\\n    --hash=sha256:{}\n", sha(fake, "alpha", alpha_whl)),
        ),
        (
            "pylock.toml",
            format!(
                "lock-version = \"1.0\"\ncreated-by = \"test\"\n\n[[packages]]\nname = \"beta\"\nversion = \"2.0\"\nwheels = [{{ name = \"{beta_whl}\", url = \"https://elsewhere/{beta_whl}\", hashes = {{ sha256 = \"{}\" }} }}]\n",
                sha(fake, "beta", beta_whl)
            ),
        ),
        (
            "uv.lock",
            format!(
                "version = 1\n\n[[package]]\nname = \"app\"\nversion = \"0.1\"\nsource = {{ virtual = \".\" }}\n\n[[package]]\nname = \"gamma\"\nversion = \"3.0\"\nsource = {{ registry = \"http://x/simple\" }}\nsdist = {{ url = \"http://x/gamma-3.0.tar.gz\", hash = \"sha256:{}\" }}\nwheels = [{{ url = \"http://x/{AARCH64}\", hash = \"sha256:{}\" }}]\n",
                sha(fake, "gamma", "gamma-3.0.tar.gz"),
                sha(fake, "gamma", AARCH64)
            ),
        ),
        (
            "poetry.lock",
            format!(
                "[[package]]\nname = \"alpha\"\nversion = \"1.0\"\nfiles = [\n    {{file = \"alpha-1.0.tar.gz\", hash = \"sha256:{}\"}},\n]\n",
                sha(fake, "alpha", "alpha-1.0.tar.gz")
            ),
        ),
    ];
    files
        .iter()
        .map(|(name, text)| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect()
}

const NAMED: [(&str, &str); 5] = [
    ("alpha", "alpha-1.0-py3-none-any.whl"),
    ("beta", "beta-2.0-py3-none-any.whl"),
    ("gamma", AARCH64),
    ("gamma", "gamma-3.0.tar.gz"),
    ("alpha", "alpha-1.0.tar.gz"),
];

#[test]
fn every_lock_format_fills_the_cache_with_exactly_the_named_files_once() {
    within(LIMIT, || {
        let fake = fake();
        let (roxpi, _cache, _home) = roxpi_on(&fake, &[]);
        let dir = tempfile::tempdir().unwrap();
        let locks = write_locks(&fake, dir.path());
        let url = format!("http://{}/index/", roxpi.addr);
        let mut args = vec!["--url", url.as_str()];
        args.extend(locks.iter().map(String::as_str));

        let first = prefetch(&args);
        assert!(first.status.success());
        let text = stdout(&first);
        assert!(text.contains("prefetch: 5 fetched"), "{text}");
        assert!(
            !text.contains("5 fetched (0 B)"),
            "the bytes fetched are counted: {text}"
        );
        assert!(text.contains("0 already cached, 0 failed"), "{text}");
        assert!(text.contains("left out app (not from an index)"), "{text}");
        for (p, f) in NAMED {
            assert!(text.contains(&format!("fetched {f} (")), "{text}");
            assert_eq!(fake.count(&file_path(p, f)), 1, "{f}");
        }
        for (p, f) in [("beta", "beta-1.0-py3-none-any.whl"), ("gamma", X86_64)] {
            assert_eq!(fake.count(&file_path(p, f)), 0, "{f} was not named");
        }
        assert_eq!(metric(roxpi.addr, "roxpi_file_cache_files"), 5);

        fake.clear_log();
        let second = prefetch(&args);
        assert!(second.status.success());
        let text = stdout(&second);
        assert!(
            text.contains("prefetch: 0 fetched (0 B)")
                && text.contains("5 already cached, 0 failed"),
            "{text}"
        );
        let files: Vec<String> = fake
            .requests()
            .into_iter()
            .map(|r| r.path)
            .filter(|p| p.starts_with("/files/"))
            .collect();
        assert!(
            files.is_empty(),
            "a resumed prefetch went upstream for {files:?}"
        );
    });
}

#[test]
fn a_file_the_upstream_lacks_fails_the_run_by_name() {
    within(LIMIT, || {
        let fake = fake();
        let (roxpi, _cache, _home) = roxpi_on(&fake, &[]);
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("poetry.lock");
        std::fs::write(
            &lock,
            "[[package]]\nname = \"beta\"\nversion = \"3.0\"\nfiles = [\n  {file = \"beta-3.0-py3-none-any.whl\"},\n  {file = \"beta-2.0-py3-none-any.whl\"},\n]\n\n[[package]]\nname = \"nosuch\"\nversion = \"1\"\nfiles = [{file = \"nosuch-1-py3-none-any.whl\"}]\n",
        )
        .unwrap();
        let out = prefetch(&[
            "--url",
            &format!("http://{}", roxpi.addr),
            lock.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        let text = stdout(&out);
        assert!(text.contains("1 fetched"), "{text}");
        assert!(
            text.contains("failed beta-3.0-py3-none-any.whl: not on the index's page for beta"),
            "{text}"
        );
        assert!(text.contains("failed nosuch: page "), "{text}");
        assert!(text.contains("HTTP 404"), "{text}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("2 failed"));
    });
}

#[test]
fn pins_without_hashes_resolve_for_the_given_platforms() {
    within(LIMIT, || {
        let fake = fake();
        let (roxpi, _cache, _home) = roxpi_on(&fake, &[]);
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("pins.txt");
        std::fs::write(&lock, "gamma==3.0\nbeta>=1\n").unwrap();
        let url = format!("http://{}/index/", roxpi.addr);
        let base = ["--url", url.as_str(), "--python", "3.12", "--jobs", "2"];
        let mut args = base.to_vec();
        args.extend([
            "--platform",
            "manylinux_2_28_aarch64",
            lock.to_str().unwrap(),
        ]);
        let out = prefetch(&args);
        assert!(out.status.success());
        assert!(stdout(&out).contains("2 fetched"), "{}", stdout(&out));
        assert_eq!(fake.count(&file_path("gamma", AARCH64)), 1);
        assert_eq!(
            fake.count(&file_path("beta", "beta-2.0-py3-none-any.whl")),
            1
        );
        for (p, f) in [
            ("gamma", X86_64),
            ("gamma", "gamma-3.0.tar.gz"),
            ("beta", "beta-1.0-py3-none-any.whl"),
        ] {
            assert_eq!(fake.count(&file_path(p, f)), 0, "{f}");
        }
        // A platform without a wheel gets the sdist.
        let mut args = base.to_vec();
        args.extend([
            "--platform",
            "musllinux_1_2_aarch64",
            lock.to_str().unwrap(),
        ]);
        let out = prefetch(&args);
        assert!(
            stdout(&out).contains("1 fetched") && stdout(&out).contains("1 already cached"),
            "{}",
            stdout(&out)
        );
        assert_eq!(fake.count(&file_path("gamma", "gamma-3.0.tar.gz")), 1);
        // Bad targets are refused before anything is fetched.
        let out = prefetch(&["--url", &url, "--python", "312", lock.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--python \"312\""));
    });
}

/// Runs `roxpi prefetch` with stdout and stderr on a new pseudo-terminal;
/// returns what the terminal showed.
fn prefetch_on_a_terminal(args: &[&str]) -> (bool, String) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut child = Command::new(roxpi_bin())
        .arg("prefetch")
        .args(args)
        .env("COLUMNS", "100")
        .stdin(std::process::Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the child has exited and every slave is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let ok = child.wait().unwrap().success();
    (ok, reader.join().unwrap())
}

#[test]
fn a_terminal_gets_a_progress_bar_and_a_pipe_gets_plain_lines() {
    within(LIMIT, || {
        let fake = fake();
        // Slow files: the bar is drawn while they come.
        fake.set_file_mode(crate::fake_index::FileMode::Throttle {
            chunk: 4000,
            every: Duration::from_millis(50),
        });
        let (roxpi, _cache, _home) = roxpi_on(&fake, &[]);
        let dir = tempfile::tempdir().unwrap();
        let locks = write_locks(&fake, dir.path());
        let url = format!("http://{}/index/", roxpi.addr);
        let (ok, screen) = prefetch_on_a_terminal(&["--url", &url, &locks[2]]);
        assert!(ok, "{screen}");
        // Redrawn in place: carriage returns and line clears, the counts,
        // the rate and the ETA, and the summary last.
        assert!(screen.matches("\r\x1b[2K[").count() >= 2, "{screen:?}");
        assert!(screen.contains("/2 files"), "{screen:?}");
        assert!(screen.contains("ETA"), "{screen:?}");
        assert!(screen.contains("/s"), "{screen:?}");
        assert!(screen.contains("2/2 files"), "{screen:?}");
        assert!(screen.contains("prefetch: 2 fetched"), "{screen:?}");
        assert!(
            !screen.contains("fetched gamma"),
            "no plain lines on a terminal: {screen:?}"
        );

        let out = prefetch(&["--url", &url, &locks[0]]);
        let text = stdout(&out);
        assert!(
            text.starts_with("fetched alpha-1.0-py3-none-any.whl ("),
            "{text}"
        );
        for s in [
            stdout(&out),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ] {
            assert!(!s.contains('\r') && !s.contains('\x1b'), "{s:?}");
        }
    });
}

#[test]
fn roxpi_prefetch_at_startup_reports_on_ready() {
    within(LIMIT, || {
        let fake = fake();
        let dir = tempfile::tempdir().unwrap();
        write_locks(&fake, dir.path());
        let pattern = format!("{}/*.lock", dir.path().display());
        let (roxpi, _cache, _home) = roxpi_on(&fake, &[("ROXPI_PREFETCH", &pattern)]);
        let mut ready = String::new();
        wait_until(
            Duration::from_secs(20),
            "the startup prefetch is done",
            || {
                ready = String::from_utf8_lossy(&get(roxpi.addr, "/ready").body).into_owned();
                ready.contains("\"state\":\"done\"")
            },
        );
        let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
        assert_eq!(v["ready"], true, "{ready}");
        // uv.lock: gamma's wheel and sdist; poetry.lock: alpha's sdist.
        assert_eq!(v["prefetch"]["files"], 3, "{ready}");
        assert_eq!(v["prefetch"]["fetched"], 3, "{ready}");
        assert_eq!(v["prefetch"]["failed"], 0, "{ready}");
        assert_eq!(fake.count(&file_path("gamma", AARCH64)), 1);

        // A pattern that matches nothing stops startup, naming the setting.
        let (mut bad, _h) =
            start_roxpi_expecting_failure(&format!("{}/*.nothing", dir.path().display()));
        let status = bad.wait().unwrap();
        assert!(!status.success());
        let mut err = String::new();
        bad.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(
            err.contains("ROXPI_PREFETCH") && err.contains("matches no file"),
            "{err}"
        );
    });
}

fn start_roxpi_expecting_failure(pattern: &str) -> (std::process::Child, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let child = Command::new(roxpi_bin())
        .env_clear()
        .env("HOME", home.path())
        .env("ROXPI_BIND", "127.0.0.1:0")
        .env("ROXPI_PREFETCH", pattern)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (child, home)
}

// --- the real installers, offline after a prefetch ------------------------

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run the tool");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Two pure-Python projects (demo depends on dep), with metadata.
pub(crate) fn installable() -> FakeIndex {
    let fake = FakeIndex::start(BTreeMap::new());
    fake.set_mode(Mode::Json);
    for (dist, v, requires) in [
        ("roxpi-demo", "1.0.0", &["roxpi-dep>=1.0"][..]),
        ("roxpi-dep", "1.2.0", &[]),
    ] {
        let (wheel, metadata) = build_wheel(dist, v, requires);
        let mut f = FakeFile::new(
            &format!("{}-{v}-py3-none-any.whl", dist.replace('-', "_")),
            wheel,
        );
        f.metadata = Some(metadata);
        f.requires_python = Some(">=3.7".into());
        fake.add_project("root", dist, project(vec![f], &[v]));
    }
    fake
}

/// roxpi on a fixed address and cache dir (a restart keeps both).
fn roxpi_at(
    fake: &FakeIndex,
    bind: &str,
    cache: &Path,
    offline: bool,
) -> (crate::util::ChildServer, tempfile::TempDir) {
    let mut env = vec![
        ("ROXPI_INDEX_URL", fake.url("root")),
        ("ROXPI_CACHE_DIR", cache.to_string_lossy().into_owned()),
        ("ROXPI_BIND", bind.to_owned()),
    ];
    if offline {
        env.push(("ROXPI_OFFLINE", "1".into()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    start_roxpi(&env)
}

fn site_has_both(root: &Path) {
    let found = crate::util::walk(root);
    for module in ["roxpi_demo/__init__.py", "roxpi_dep/__init__.py"] {
        assert!(
            found.iter().any(|p| p.to_string_lossy().ends_with(module)),
            "{module} not installed under {}",
            root.display()
        );
    }
}

#[test]
fn installers_install_offline_from_what_their_locks_prefetched() {
    within(Duration::from_secs(600), || {
        let uv_ok = have("uv", &["--version"]);
        let poetry = venv_tool("poetry", "poetry");
        let pip = venv_python("pip-latest", "pip ");
        if !uv_ok || poetry.is_none() || pip.is_none() {
            return;
        }
        let (poetry, pip) = (poetry.unwrap(), pip.unwrap());
        let mut fake = installable();
        let cache = tempfile::tempdir().unwrap();
        let (roxpi, _home) = roxpi_at(&fake, "127.0.0.1:0", cache.path(), false);
        let addr = roxpi.addr;
        let simple = format!("http://{addr}/simple/");
        let scratch = tempfile::tempdir().unwrap();

        // Locks made by the real tools through roxpi (no file is fetched:
        // they resolve from .metadata).
        let uv_dir = tempfile::tempdir().unwrap();
        std::fs::write(
            uv_dir.path().join("pyproject.toml"),
            format!("[project]\nname = \"client\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"roxpi-demo\"]\n\n[[tool.uv.index]]\nurl = \"{simple}\"\ndefault = true\n"),
        )
        .unwrap();
        run(Command::new("uv")
            .args(["lock", "--no-config", "--default-index", &simple])
            .current_dir(uv_dir.path())
            .env("UV_CACHE_DIR", scratch.path().join("uv1")));
        let poetry_dir = tempfile::tempdir().unwrap();
        std::fs::write(
            poetry_dir.path().join("pyproject.toml"),
            format!("[project]\nname = \"client\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"roxpi-demo\"]\n\n[tool.poetry]\npackage-mode = false\n\n[[tool.poetry.source]]\nname = \"roxpi\"\nurl = \"{simple}\"\npriority = \"primary\"\n"),
        )
        .unwrap();
        let poetry_env = |dir: &Path| {
            vec![
                ("POETRY_CACHE_DIR", dir.join("cache")),
                ("POETRY_CONFIG_DIR", dir.join("config")),
                ("POETRY_DATA_DIR", dir.join("data")),
            ]
        };
        run(Command::new(&poetry)
            .args(["lock"])
            .current_dir(poetry_dir.path())
            .envs(poetry_env(&scratch.path().join("p1")))
            .env("POETRY_VIRTUALENVS_IN_PROJECT", "true")
            .env("POETRY_NO_INTERACTION", "1"));
        let reqs = scratch.path().join("requirements.txt");
        let mut text = String::new();
        for (p, f) in [
            ("roxpi-demo", "roxpi_demo-1.0.0-py3-none-any.whl"),
            ("roxpi-dep", "roxpi_dep-1.2.0-py3-none-any.whl"),
        ] {
            let version = f.split('-').nth(1).unwrap();
            text.push_str(&format!(
                "{p}=={version} --hash=sha256:{}\n",
                fake.file("root", p, f).sha256()
            ));
        }
        std::fs::write(&reqs, text).unwrap();
        let wheels_before: usize = fake
            .requests()
            .iter()
            .filter(|r| r.path.ends_with(".whl"))
            .count();
        assert_eq!(wheels_before, 0, "locking fetched no wheel");

        let locks = [
            uv_dir.path().join("uv.lock"),
            poetry_dir.path().join("poetry.lock"),
            reqs.clone(),
        ];
        let mut args = vec!["--url".to_owned(), simple.clone()];
        args.extend(locks.iter().map(|p| p.to_string_lossy().into_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = prefetch(&args);
        assert!(out.status.success());
        assert!(
            stdout(&out).contains("prefetch: 2 fetched"),
            "{}",
            stdout(&out)
        );
        let again = prefetch(&args);
        assert!(again.status.success());
        assert!(
            stdout(&again).contains("prefetch: 0 fetched (0 B), 2 already cached"),
            "{}",
            stdout(&again)
        );

        // The upstream goes away; roxpi restarts offline on the same
        // address and cache.
        drop(roxpi);
        fake.stop();
        let (offline, _home2) = roxpi_at(&fake, &addr.to_string(), cache.path(), true);
        assert_eq!(offline.addr, addr);

        let venv = scratch.path().join("uv-venv");
        run(Command::new("uv")
            .args([
                "sync",
                "--frozen",
                "--no-config",
                "--default-index",
                &simple,
            ])
            .current_dir(uv_dir.path())
            .env("UV_CACHE_DIR", scratch.path().join("uv2"))
            .env("UV_PROJECT_ENVIRONMENT", &venv));
        site_has_both(&venv);

        let target = scratch.path().join("pip-target");
        run(Command::new(&pip)
            .args([
                "-m",
                "pip",
                "install",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--require-hashes",
            ])
            .args(["--index-url", &simple, "--target"])
            .arg(&target)
            .arg("-r")
            .arg(&reqs)
            .env("PIP_CONFIG_FILE", "/dev/null"));
        site_has_both(&target);

        run(Command::new(&poetry)
            .args(["install", "--no-interaction"])
            .current_dir(poetry_dir.path())
            .envs(poetry_env(&scratch.path().join("p2")))
            .env("POETRY_VIRTUALENVS_IN_PROJECT", "true")
            .env("POETRY_VIRTUALENVS_PREFER_ACTIVE_PYTHON", "false")
            .env("POETRY_NO_INTERACTION", "1"));
        site_has_both(&poetry_dir.path().join(".venv"));
    });
}
