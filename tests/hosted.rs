//! Hosted packages: uploads with the real twine and uv, installs with pip,
//! uv and poetry, every refusal, the dependency-confusion claim, a crash in
//! the middle of an upload, yanks and read tokens.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::fake_index::{FakeFile, FakeIndex, FakeProject, Mode};
use crate::installers::{build_wheel, venv_python, venv_tool};
use crate::util::{
    get, have, metric, request, roxpi_on, start_roxpi, within, ChildServer, Client, Reply,
};

const LIMIT: Duration = Duration::from_secs(300);
const TOKEN: &str = "up-s3cret-token";

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A legacy upload form (what twine sends) with `content` last.
pub fn upload_form(filename: &str, content: &[u8], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "roxpi-test-boundary-7f3a";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The usual fields for `filename` of `name` `version` with the right digest.
fn fields_for(name: &str, version: &str, content: &[u8]) -> Vec<(String, String)> {
    vec![
        (":action".into(), "file_upload".into()),
        ("protocol_version".into(), "1".into()),
        ("name".into(), name.into()),
        ("version".into(), version.into()),
        ("sha256_digest".into(), hex::encode(Sha256::digest(content))),
    ]
}

fn post_upload(
    addr: SocketAddr,
    index: &str,
    auth: Option<&str>,
    filename: &str,
    content: &[u8],
    fields: &[(String, String)],
) -> Reply {
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (ct, body) = upload_form(filename, content, &fields);
    let mut c = Client::new(addr);
    let mut head = format!(
        "POST /hosted/{index}/ HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    head.push_str("\r\n");
    c.send(head.as_bytes());
    // The server may answer (and close) before the whole body is read.
    let _ = c.reader.get_mut().write_all(&body);
    c.read_reply(false).expect("an answer")
}

fn upload(addr: SocketAddr, filename: &str, content: &[u8], name: &str, version: &str) -> Reply {
    post_upload(
        addr,
        "local",
        Some(&basic("__token__", TOKEN)),
        filename,
        content,
        &fields_for(name, version, content),
    )
}

/// Builds `dist` `version`'s wheel and uploads it (200); its bytes.
fn upload_wheel(addr: SocketAddr, dist: &str, version: &str) -> bytes::Bytes {
    let (wheel, _) = build_wheel(dist, version, &[]);
    let name = format!("{}-{version}-py3-none-any.whl", dist.replace('-', "_"));
    let r = upload(addr, &name, &wheel, dist, version);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    wheel
}

fn json_page(addr: SocketAddr, project: &str) -> serde_json::Value {
    let r = request(
        addr,
        "GET",
        &format!("/index/{project}/"),
        &[("Accept", "application/vnd.pypi.simple.v1+json")],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).expect("JSON page")
}

fn filenames(page: &serde_json::Value) -> Vec<String> {
    page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap().to_owned())
        .collect()
}

fn empty_upstream() -> FakeIndex {
    let fake = FakeIndex::start(BTreeMap::new());
    fake.set_mode(Mode::Json);
    fake
}

fn hosting(
    fake: &FakeIndex,
    extra: &[(&str, &str)],
) -> (ChildServer, tempfile::TempDir, tempfile::TempDir) {
    let mut env = vec![("ROXPI_UPLOAD_TOKEN", TOKEN)];
    env.extend_from_slice(extra);
    roxpi_on(fake, &env)
}

/// Files left in the hosted staging folder.
fn staged(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("hosted/.staging"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn uploads_are_checked_and_every_refusal_says_why() {
    within(LIMIT, || {
        let fake = empty_upstream();
        let (roxpi, cache, _home) = hosting(
            &fake,
            &[("ROXPI_UPLOAD_MAX", "1M"), ("ROXPI_HOSTED_MAX", "200K")],
        );
        let addr = roxpi.addr;
        let (wheel, _) = build_wheel("acme-lib", "1.0", &[]);
        let name = "acme_lib-1.0-py3-none-any.whl";
        let fields = fields_for("acme-lib", "1.0", &wheel);

        // No token: 401 with a challenge; a wrong one: 403.
        let r = post_upload(addr, "local", None, name, &wheel, &fields);
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"roxpi\""));
        let r = post_upload(
            addr,
            "local",
            Some(&basic("__token__", "nope")),
            name,
            &wheel,
            &fields,
        );
        assert_eq!(r.status, 403);
        let r = post_upload(
            addr,
            "local",
            Some("Bearer nope-nope-nope-no"),
            name,
            &wheel,
            &fields,
        );
        assert_eq!(r.status, 403);

        // A digest that is not the file's.
        let mut bad = fields.clone();
        bad[4].1 = "0".repeat(64);
        let r = post_upload(
            addr,
            "local",
            Some(&basic("__token__", TOKEN)),
            name,
            &wheel,
            &bad,
        );
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("does not match"));

        // A wheel whose METADATA names another project.
        let other = lying_wheel("acme_lib-1.0.dist-info", "other-lib", "1.0");
        let r = upload(addr, name, &other, "acme-lib", "1.0");
        assert_eq!(r.status, 400);
        assert!(
            String::from_utf8_lossy(&r.body).contains("METADATA names the project"),
            "{}",
            String::from_utf8_lossy(&r.body)
        );

        // Invalid file names, and a form that disagrees with the file.
        for bad_name in [
            "acme_lib-1.0.whl",
            "../acme_lib-1.0.tar.gz",
            "acme lib-1.0.tar.gz",
        ] {
            let r = upload(addr, bad_name, b"x", "acme-lib", "1.0");
            assert_eq!(r.status, 400, "{bad_name}");
            assert!(String::from_utf8_lossy(&r.body).contains("Invalid distribution file name"));
        }
        let r = upload(addr, name, &wheel, "acme-lib", "2.0");
        assert_eq!(r.status, 400);

        // Over ROXPI_UPLOAD_MAX (1M): refused, nothing left in staging.
        let big = crate::util::blob(3 << 20, 9);
        let r = upload(addr, "acme_lib-1.0.tar.gz", &big, "acme-lib", "1.0");
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("ROXPI_UPLOAD_MAX"));

        // Past the hosted quota (200K in all).
        let sdist = crate::util::blob(300_000, 4);
        let r = upload(addr, "acme_lib-1.0.tar.gz", &sdist, "acme-lib", "1.0");
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("ROXPI_HOSTED_MAX"));

        // Nothing of it is listed.
        let r = request(addr, "GET", "/index/acme-lib/", &[]);
        assert_eq!(r.status, 404, "nothing hosted, nothing upstream");
        fake.clear_log();

        // The good upload; the same bytes again are fine; other bytes 409.
        let r = upload(addr, name, &wheel, "acme-lib", "1.0");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let r = upload(addr, name, &wheel, "acme-lib", "1.0");
        assert_eq!(r.status, 200);
        let (changed, _) = crate::installers::build_wheel_padded("acme-lib", "1.0", &[], 100);
        let r = upload(addr, name, &changed, "acme-lib", "1.0");
        assert_eq!(r.status, 409);
        assert!(String::from_utf8_lossy(&r.body).contains("File already exists"));

        assert!(
            staged(cache.path()).is_empty(),
            "{:?}",
            staged(cache.path())
        );
        assert_eq!(metric(addr, "roxpi_uploads_total{result=\"stored\"}"), 1);
        assert_eq!(
            metric(addr, "roxpi_uploads_total{result=\"already_there\"}"),
            1
        );
        assert_eq!(
            metric(addr, "roxpi_upload_refusals_total{reason=\"auth\"}"),
            3
        );
        assert_eq!(
            metric(addr, "roxpi_upload_refusals_total{reason=\"size\"}"),
            1
        );
        assert_eq!(
            metric(addr, "roxpi_upload_refusals_total{reason=\"quota\"}"),
            1
        );
        assert_eq!(
            metric(addr, "roxpi_upload_refusals_total{reason=\"conflict\"}"),
            1
        );
        assert_eq!(metric(addr, "roxpi_hosted_files"), 1);
        let page = json_page(addr, "acme-lib");
        assert_eq!(filenames(&page), [name]);
        let file = &page["files"][0];
        assert_eq!(file["size"], wheel.len());
        assert_eq!(
            file["hashes"]["sha256"],
            hex::encode(Sha256::digest(&wheel))
        );
        assert!(file["core-metadata"]["sha256"].is_string());
        assert!(file["upload-time"].as_str().unwrap().ends_with('Z'));
        let home = String::from_utf8_lossy(&get(addr, "/").body).into_owned();
        assert!(home.contains("<h2>Hosted</h2>"), "{home}");
        assert!(home.contains("http://t/hosted/local/"), "{home}");
        assert!(home.contains("1 projects, 1 files"), "{home}");
        let served = get(addr, &format!("/index/acme-lib/{name}"));
        assert_eq!(served.body, wheel.to_vec());
        assert_eq!(served.header("x-cache"), Some("HOSTED"));
        assert!(
            fake.requests().is_empty(),
            "the upstream was never asked: {:?}",
            fake.requests().len()
        );
    });
}

/// A wheel whose `<info>/METADATA` says `Name: name`, `Version: version`.
fn lying_wheel(info: &str, name: &str, version: &str) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file(format!("{info}/METADATA"), opts).unwrap();
    zip.write_all(format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").as_bytes())
        .unwrap();
    zip.start_file(format!("{info}/WHEEL"), opts).unwrap();
    zip.write_all(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        .unwrap();
    zip.finish().unwrap().into_inner()
}

/// Builds `name` `version` (wheel and sdist) with uv's own build backend,
/// offline.
fn uv_build(dir: &Path, name: &str, version: &str, note: &str) -> Vec<PathBuf> {
    let module = name.replace('-', "_");
    std::fs::create_dir_all(dir.join("src").join(&module)).unwrap();
    std::fs::write(
        dir.join("src").join(&module).join("__init__.py"),
        format!("VERSION = {version:?}\nNOTE = {note:?}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("pyproject.toml"),
        format!("[project]\nname = \"{name}\"\nversion = \"{version}\"\nrequires-python = \">=3.8\"\n\n[build-system]\nrequires = [\"uv_build>=0.7,<100\"]\nbuild-backend = \"uv_build\"\n"),
    )
    .unwrap();
    run(Command::new("uv")
        .args(["build", "--no-config", "--out-dir", "dist"])
        .current_dir(dir)
        .env("UV_OFFLINE", "1")
        .env("UV_CACHE_DIR", dir.join(".uv-cache")));
    let mut dists: Vec<PathBuf> = std::fs::read_dir(dir.join("dist"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl" || e == "gz"))
        .collect();
    dists.sort();
    assert_eq!(dists.len(), 2, "a wheel and an sdist: {dists:?}");
    dists
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run the tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The newest pip installs `spec` from `index_url` into `target`: its
/// output (`None`: pip is missing, a skip outside CI).
fn pip_install(index_url: &str, target: &Path, spec: &str) -> Option<String> {
    let pip = venv_python("pip-latest", "pip ")?;
    Some(run(Command::new(&pip)
        .args([
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
        ])
        .args(["--index-url", index_url, "--target"])
        .arg(target)
        .arg(spec)
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_NO_INPUT", "1")))
}

/// uv installs `spec` into a new venv at `venv`, from `simple` as the index
/// named `roxpi`, with `credentials` given as UV_INDEX_ROXPI_USERNAME and
/// _PASSWORD: its output (`None`: uv is missing, a skip outside CI).
fn uv_install(
    simple: &str,
    venv: &Path,
    spec: &str,
    credentials: Option<(&str, &str)>,
) -> Option<String> {
    if !have("uv", &["--version"]) {
        return None;
    }
    let cache = venv.with_extension("uv-cache");
    run(Command::new("uv")
        .args(["venv", "-q", "--no-config"])
        .arg(venv)
        .env("UV_CACHE_DIR", &cache));
    let mut cmd = Command::new("uv");
    cmd.args(["pip", "install", "--no-config", "--default-index"])
        .arg(format!("roxpi={simple}"))
        .arg(spec)
        .env("VIRTUAL_ENV", venv)
        .env("UV_CACHE_DIR", &cache);
    if let Some((user, password)) = credentials {
        cmd.env("UV_INDEX_ROXPI_USERNAME", user)
            .env("UV_INDEX_ROXPI_PASSWORD", password);
    }
    Some(run(&mut cmd))
}

fn installed(root: &Path, module: &str) -> bool {
    crate::util::walk(root).iter().any(|p| {
        p.to_string_lossy()
            .ends_with(&format!("{module}/__init__.py"))
    })
}

#[test]
fn twine_and_uv_publish_then_pip_uv_and_poetry_install() {
    within(Duration::from_secs(600), || {
        let twine = venv_tool("twine", "twine");
        let twine61 = venv_tool("twine61", "twine");
        let poetry = venv_tool("poetry", "poetry");
        let pip = venv_python("pip-latest", "pip ");
        if !have("uv", &["--version"])
            || twine.is_none()
            || twine61.is_none()
            || poetry.is_none()
            || pip.is_none()
        {
            return;
        }
        let (twine, twine61) = (twine.unwrap(), twine61.unwrap());
        let (poetry, pip) = (poetry.unwrap(), pip.unwrap());
        let fake = empty_upstream();
        let (roxpi, _cache, _home) = hosting(&fake, &[]);
        let addr = roxpi.addr;
        let upload_url = format!("http://{addr}/hosted/local/");
        let simple = format!("http://{addr}/simple/");
        let work = tempfile::tempdir().unwrap();

        // twine uploads acme-lib 1.0 (wheel and sdist); the same files
        // again are accepted (the same bytes).
        let lib = uv_build(&work.path().join("lib"), "acme-lib", "1.0", "first");
        let twine_env = [
            ("TWINE_USERNAME", "__token__"),
            ("TWINE_PASSWORD", TOKEN),
            ("TWINE_NON_INTERACTIVE", "1"),
        ];
        for _ in 0..2 {
            run(Command::new(&twine)
                .args([
                    "upload",
                    "--disable-progress-bar",
                    "--repository-url",
                    &upload_url,
                ])
                .args(&lib)
                .envs(twine_env));
        }
        // Other bytes under the same names: refused (409), which
        // `--skip-existing` skips. twine 6.2 and later take that flag for
        // PyPI's URLs only, so this runs twine 6.1.
        let rebuilt = uv_build(&work.path().join("lib2"), "acme-lib", "1.0", "rebuilt");
        let refused = Command::new(&twine)
            .args([
                "upload",
                "--disable-progress-bar",
                "--repository-url",
                &upload_url,
            ])
            .args(&rebuilt)
            .envs(twine_env)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&refused.stdout).into_owned()
            + &String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{text}");
        assert!(
            text.contains("409") && text.contains("File already exists"),
            "{text}"
        );
        let skipped = run(Command::new(&twine61)
            .args([
                "upload",
                "--disable-progress-bar",
                "--skip-existing",
                "--repository-url",
                &upload_url,
            ])
            .args(&rebuilt)
            .envs(twine_env));
        assert!(skipped.contains("Skipping"), "{skipped}");

        // uv publishes acme-tools 2.0.
        let tools = uv_build(&work.path().join("tools"), "acme-tools", "2.0", "");
        run(Command::new("uv")
            .args([
                "publish",
                "--no-config",
                "--publish-url",
                &upload_url,
                "--token",
                TOKEN,
            ])
            .args(&tools)
            .env("UV_CACHE_DIR", work.path().join("uv-pub")));

        for (project, files) in [("acme-lib", &lib), ("acme-tools", &tools)] {
            let page = json_page(addr, project);
            let mut names = filenames(&page);
            names.sort();
            let mut want: Vec<String> = files
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            want.sort();
            assert_eq!(names, want);
            for f in page["files"].as_array().unwrap() {
                assert!(
                    f["upload-time"].is_string() && f["size"].as_u64().unwrap() > 0,
                    "{f}"
                );
                let wheel = f["filename"].as_str().unwrap().ends_with(".whl");
                assert_eq!(f["core-metadata"].is_object(), wheel, "{f}");
                assert_eq!(f["requires-python"], ">=3.8");
            }
        }

        // pip, uv and poetry install through roxpi.
        let target = work.path().join("pip-target");
        run(Command::new(&pip)
            .args([
                "-m",
                "pip",
                "install",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--index-url",
                &simple,
                "--target",
            ])
            .arg(&target)
            .args(["acme-lib", "acme-tools"])
            .env("PIP_CONFIG_FILE", "/dev/null"));
        assert!(installed(&target, "acme_lib") && installed(&target, "acme_tools"));

        let venv = work.path().join("uv-venv");
        run(Command::new("uv")
            .args(["venv", "-q", "--no-config"])
            .arg(&venv)
            .env("UV_CACHE_DIR", work.path().join("uv-c")));
        run(Command::new("uv")
            .args([
                "pip",
                "install",
                "--no-config",
                "--index-url",
                &simple,
                "acme-lib",
                "acme-tools",
            ])
            .env("VIRTUAL_ENV", &venv)
            .env("UV_CACHE_DIR", work.path().join("uv-c")));
        assert!(installed(&venv, "acme_lib"));

        let client = work.path().join("client");
        std::fs::create_dir_all(&client).unwrap();
        std::fs::write(
            client.join("pyproject.toml"),
            format!("[project]\nname = \"client\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\ndependencies = [\"acme-lib\"]\n\n[tool.poetry]\npackage-mode = false\n\n[[tool.poetry.source]]\nname = \"roxpi\"\nurl = \"{simple}\"\npriority = \"primary\"\n"),
        )
        .unwrap();
        let p = work.path().join("poetry");
        run(Command::new(&poetry)
            .args(["install", "--no-interaction"])
            .current_dir(&client)
            .env("POETRY_CACHE_DIR", p.join("cache"))
            .env("POETRY_CONFIG_DIR", p.join("config"))
            .env("POETRY_DATA_DIR", p.join("data"))
            .env("POETRY_VIRTUALENVS_IN_PROJECT", "true"));
        assert!(installed(&client.join(".venv"), "acme_lib"));
        assert_eq!(metric(addr, "roxpi_uploads_total{result=\"stored\"}"), 4);
    });
}

/// An upstream with `acme-lib` 9.0 (the attacker's) and `public` 1.0.
fn confusing_upstream() -> FakeIndex {
    let fake = empty_upstream();
    for (name, version) in [("acme-lib", "9.0"), ("public", "1.0")] {
        let module = name.replace('-', "_");
        fake.add_project(
            "root",
            name,
            FakeProject {
                files: vec![FakeFile::new(
                    &format!("{module}-{version}-py3-none-any.whl"),
                    build_wheel(name, version, &[]).0,
                )],
                versions: vec![version.to_owned()],
                ..Default::default()
            },
        );
    }
    fake
}

#[test]
fn a_hosted_name_is_claimed_against_the_upstream_unless_allowed() {
    within(LIMIT, || {
        let fake = confusing_upstream();
        // A release cooldown holds the upstream's new files back, never
        // one's own uploads.
        let (roxpi, _cache, _home) = hosting(&fake, &[("ROXPI_MIN_RELEASE_AGE", "7d")]);
        let addr = roxpi.addr;
        let wheel = upload_wheel(addr, "acme-lib", "1.0");

        let page = json_page(addr, "acme-lib");
        assert_eq!(filenames(&page), ["acme_lib-1.0-py3-none-any.whl"]);
        let r = get(addr, "/index/acme-lib/acme_lib-9.0-py3-none-any.whl");
        assert_eq!(r.status, 404);
        assert!(
            fake.requests().iter().all(|r| !r.path.contains("acme")),
            "no acme request upstream"
        );
        // Other projects still come from the upstream.
        assert_eq!(
            filenames(&json_page(addr, "public")),
            ["public-1.0-py3-none-any.whl"]
        );

        // The real installers take the hosted 1.0 over the upstream 9.0.
        let simple = format!("http://{addr}/simple/");
        let work = tempfile::tempdir().unwrap();
        if let Some(out) = pip_install(&simple, &work.path().join("pip"), "acme-lib") {
            assert!(
                out.contains("acme-lib-1.0") || out.contains("acme_lib-1.0"),
                "{out}"
            );
        }
        if let Some(out) = uv_install(&simple, &work.path().join("venv"), "acme-lib", None) {
            assert!(out.contains("acme-lib==1.0"), "{out}");
        }
        drop(roxpi);

        // allow-upstream = ["acme-*"]: both are listed, the hosted first.
        let config = work.path().join("roxpi.toml");
        std::fs::write(
            &config,
            "[[hosted]]\nname = \"local\"\nallow-upstream = [\"acme-*\"]\n",
        )
        .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let root = fake.url("root");
        let (roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", root.as_str()),
            ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
            ("ROXPI_UPLOAD_TOKEN", TOKEN),
            ("ROXPI_CONFIG", config.to_str().unwrap()),
            ("ROXPI_MIN_RELEASE_AGE", "7d"),
        ]);
        assert_eq!(
            upload(
                roxpi.addr,
                "acme_lib-1.0-py3-none-any.whl",
                &wheel,
                "acme-lib",
                "1.0"
            )
            .status,
            200
        );
        let names = filenames(&json_page(roxpi.addr, "acme-lib"));
        assert_eq!(
            names,
            [
                "acme_lib-1.0-py3-none-any.whl",
                "acme_lib-9.0-py3-none-any.whl"
            ]
        );
        let r = get(roxpi.addr, "/index/acme-lib/acme_lib-9.0-py3-none-any.whl");
        assert_eq!(r.status, 200);
    });
}

#[test]
fn a_crash_during_a_100_mb_upload_leaves_nothing_visible_and_committed_uploads_survive() {
    within(LIMIT, || {
        let fake = empty_upstream();
        let (mut roxpi, cache, _home) = hosting(&fake, &[]);
        let addr = roxpi.addr;
        let wheel = upload_wheel(addr, "acme-lib", "1.0");

        // 100 MB announced; 60 MB sent, then roxpi is killed.
        let content_len = 100 << 20;
        let (ct, head_part) = {
            let fields = fields_for("acme-lib", "2.0", b"");
            let f: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (ct, mut body) = upload_form("acme_lib-2.0.tar.gz", b"", &f);
            body.truncate(body.len() - "\r\n--roxpi-test-boundary-7f3a--\r\n".len());
            (ct, body)
        };
        let total = head_part.len() + content_len + "\r\n--roxpi-test-boundary-7f3a--\r\n".len();
        let mut c = Client::new(addr);
        c.send(
            format!(
                "POST /hosted/local/ HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nContent-Length: {total}\r\nAuthorization: {}\r\n\r\n",
                basic("__token__", TOKEN)
            )
            .as_bytes(),
        );
        c.send(&head_part);
        let chunk = crate::util::blob(1 << 20, 5);
        for _ in 0..60 {
            c.send(&chunk);
        }
        crate::util::wait_until(
            Duration::from_secs(20),
            "the upload is being staged",
            || {
                staged(cache.path())
                    .iter()
                    .any(|p| p.metadata().is_ok_and(|m| m.len() > 50 << 20))
            },
        );
        let pid = roxpi.pid();
        run(Command::new("kill").args(["-9", &pid.to_string()]));
        let _ = roxpi.child.wait();
        drop(c);

        // Restarted offline on the same cache: the committed upload is
        // served, the interrupted one is nowhere.
        let root = fake.url("root");
        let (again, _home2) = start_roxpi(&[
            ("ROXPI_INDEX_URL", root.as_str()),
            ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
            ("ROXPI_UPLOAD_TOKEN", TOKEN),
            ("ROXPI_OFFLINE", "1"),
        ]);
        crate::util::wait_until(Duration::from_secs(10), "roxpi ready", || {
            get(again.addr, "/ready").status == 200
        });
        assert!(staged(cache.path()).is_empty(), "staging swept at start");
        let page = json_page(again.addr, "acme-lib");
        assert_eq!(filenames(&page), ["acme_lib-1.0-py3-none-any.whl"]);
        let r = get(again.addr, "/index/acme-lib/acme_lib-1.0-py3-none-any.whl");
        assert_eq!(r.body, wheel.to_vec());
        assert_eq!(
            get(again.addr, "/index/acme-lib/acme_lib-2.0.tar.gz").status,
            404
        );
        let leftovers: Vec<PathBuf> = crate::util::walk(&cache.path().join("hosted"))
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("2.0"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    });
}

#[test]
fn a_yanked_hosted_version_is_skipped_unless_pinned() {
    within(LIMIT, || {
        let fake = empty_upstream();
        let (roxpi, _cache, _home) = hosting(&fake, &[("ROXPI_ADMIN_TOKEN", "adm1n-token")]);
        let addr = roxpi.addr;
        for v in ["1.0", "2.0"] {
            upload_wheel(addr, "acme-lib", v);
        }
        let yank =
            "/hosted/local/acme-lib/acme_lib-2.0-py3-none-any.whl?action=yank&reason=broken+build";
        // Without the admin token (the upload token is not enough): 401.
        let r = request(
            addr,
            "POST",
            yank,
            &[("Authorization", &basic("__token__", TOKEN))],
        );
        assert_eq!(r.status, 401);
        let admin = [("Authorization", "Bearer adm1n-token")];
        assert_eq!(request(addr, "POST", yank, &admin).status, 200);
        let page = json_page(addr, "acme-lib");
        let yanked: Vec<(String, serde_json::Value)> = page["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["filename"].as_str().unwrap().to_owned(),
                    f["yanked"].clone(),
                )
            })
            .collect();
        assert_eq!(yanked[0].1, serde_json::Value::Null, "{yanked:?}");
        assert_eq!(yanked[1].1, "broken build", "{yanked:?}");
        let html = String::from_utf8_lossy(&get(addr, "/index/acme-lib/").body).into_owned();
        assert!(html.contains("data-yanked=\"broken build\""), "{html}");
        let missing = "/hosted/local/acme-lib/acme_lib-3.0-py3-none-any.whl?action=yank";
        assert_eq!(request(addr, "POST", missing, &admin).status, 404);

        if venv_python("pip-latest", "pip ").is_none() {
            return;
        }
        let simple = format!("http://{addr}/simple/");
        let work = tempfile::tempdir().unwrap();
        let install = |spec: &str, dir: &str| {
            pip_install(&simple, &work.path().join(dir), spec).unwrap_or_default()
        };
        let out = install("acme-lib", "a");
        assert!(
            out.contains("acme-lib-1.0") || out.contains("acme_lib-1.0"),
            "{out}"
        );
        let out = install("acme-lib==2.0", "b");
        assert!(
            out.contains("acme-lib-2.0") || out.contains("acme_lib-2.0"),
            "{out}"
        );
        // Unyanked, the newest is taken again.
        let unyank = "/hosted/local/acme-lib/acme_lib-2.0-py3-none-any.whl?action=unyank";
        assert_eq!(request(addr, "POST", unyank, &admin).status, 200);
        let out = install("acme-lib", "c");
        assert!(
            out.contains("acme-lib-2.0") || out.contains("acme_lib-2.0"),
            "{out}"
        );
    });
}

#[test]
fn read_tokens_guard_a_route_and_a_hosted_index_and_never_reach_the_log() {
    within(LIMIT, || {
        let fake = confusing_upstream();
        let work = tempfile::tempdir().unwrap();
        let config = work.path().join("roxpi.toml");
        std::fs::write(
            &config,
            "[[hosted]]\nname = \"private\"\nread-token = \"hosted-read-t0ken\"\n",
        )
        .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let root = fake.url("root");
        let (mut roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", root.as_str()),
            ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
            ("ROXPI_UPLOAD_TOKEN", TOKEN),
            ("ROXPI_CONFIG", config.to_str().unwrap()),
            ("ROXPI_READ_TOKEN", "route-read-t0ken"),
        ]);
        let log0 = roxpi.capture_stderr();
        let addr = roxpi.addr;
        let route = [("Authorization", "Bearer route-read-t0ken")];

        // The route: 401 with a Basic challenge without the token; the
        // probes and /metrics stay open.
        for path in [
            "/",
            "/index/",
            "/simple/public/",
            "/index/public/public-1.0-py3-none-any.whl",
        ] {
            let r = get(addr, path);
            assert_eq!(r.status, 401, "{path}");
            assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"roxpi\""));
        }
        for path in ["/health", "/ready", "/metrics"] {
            assert_eq!(get(addr, path).status, 200, "{path}");
        }
        drop(roxpi);
        // ROXPI_METRICS_TOKEN protects /metrics alone.
        let (mut roxpi, _home0) = start_roxpi(&[
            ("ROXPI_INDEX_URL", root.as_str()),
            ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
            ("ROXPI_UPLOAD_TOKEN", TOKEN),
            ("ROXPI_CONFIG", config.to_str().unwrap()),
            ("ROXPI_READ_TOKEN", "route-read-t0ken"),
            ("ROXPI_METRICS_TOKEN", "metrics-t0ken"),
        ]);
        let log = roxpi.capture_stderr();
        let addr = roxpi.addr;
        assert_eq!(get(addr, "/metrics").status, 401);
        let scrape = [("Authorization", "Bearer metrics-t0ken")];
        assert_eq!(request(addr, "GET", "/metrics", &scrape).status, 200);
        assert_eq!(get(addr, "/health").status, 200);
        let wrong = [("Authorization", "Bearer route-read-t0keN")];
        assert_eq!(request(addr, "GET", "/simple/public/", &wrong).status, 401);
        assert_eq!(request(addr, "GET", "/simple/public/", &route).status, 200);
        // A redirect carries no credentials.
        let r = request(addr, "GET", "/simple/Public", &route);
        assert_eq!(r.status, 301);
        let location = r.header("location").unwrap_or_default().to_owned();
        assert!(
            !location.contains('@') && !location.contains("t0ken"),
            "{location}"
        );
        // pip (user:token@ in the index URL) and uv (UV_INDEX_*_USERNAME and
        // _PASSWORD) install through the protected route.
        let url = format!("http://ci:route-read-t0ken@{addr}/simple/");
        let target = work.path().join("pip-route");
        if pip_install(&url, &target, "public").is_some() {
            assert!(installed(&target, "public"));
        }
        let simple = format!("http://{addr}/simple/");
        let venv = work.path().join("venv-route");
        if uv_install(&simple, &venv, "public", Some(("ci", "route-read-t0ken"))).is_some() {
            assert!(installed(&venv, "public"));
        }

        // A hosted index with its own read token: its projects need both.
        let (wheel, _) = build_wheel("acme-lib", "1.0", &[]);
        let fields = fields_for("acme-lib", "1.0", &wheel);
        let auth = basic("__token__", TOKEN);
        let name = "acme_lib-1.0-py3-none-any.whl";
        let r = post_upload(addr, "private", Some(&auth), name, &wheel, &fields);
        assert_eq!(r.status, 200);
        assert_eq!(
            request(addr, "GET", "/simple/acme-lib/", &route).status,
            401
        );
        let hosted_only = basic("hosted-read-t0ken", "");
        let both = [("Authorization", hosted_only.as_str())];
        // One token per request: the hosted token alone is refused by the
        // route.
        assert_eq!(request(addr, "GET", "/simple/acme-lib/", &both).status, 401);
        drop(roxpi);

        // A route without its own token, the hosted index with one: pip
        // with user:token@ in the URL, uv with UV_INDEX_*_USERNAME/PASSWORD.
        let (mut roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", root.as_str()),
            ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
            ("ROXPI_UPLOAD_TOKEN", TOKEN),
            ("ROXPI_CONFIG", config.to_str().unwrap()),
        ]);
        let log2 = roxpi.capture_stderr();
        let addr = roxpi.addr;
        let r = get(addr, "/simple/acme-lib/");
        assert_eq!(r.status, 401);
        let token = [("Authorization", basic("ci", "hosted-read-t0ken"))];
        let token: Vec<(&str, &str)> = token.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            request(addr, "GET", "/simple/acme-lib/", &token).status,
            200
        );
        assert_eq!(
            request(
                addr,
                "GET",
                "/simple/acme-lib/acme_lib-1.0-py3-none-any.whl",
                &token
            )
            .body,
            wheel.to_vec()
        );
        assert_eq!(
            get(addr, "/simple/acme-lib/acme_lib-1.0-py3-none-any.whl").status,
            401
        );

        let url = format!("http://ci:hosted-read-t0ken@{addr}/simple/");
        let target = work.path().join("pip");
        if let Some(out) = pip_install(&url, &target, "acme-lib") {
            assert!(installed(&target, "acme_lib"), "{out}");
        }
        let simple = format!("http://{addr}/simple/");
        let venv = work.path().join("venv");
        if uv_install(
            &simple,
            &venv,
            "acme-lib",
            Some(("ci", "hosted-read-t0ken")),
        )
        .is_some()
        {
            assert!(installed(&venv, "acme_lib"));
        }
        assert!(metric(addr, "roxpi_read_refusals_total") >= 2);
        drop(roxpi);
        // (The first run is killed early: its asynchronous access log may
        // not have been written yet, so only its startup lines are checked.)
        for (run, log) in [("first", log0), ("second", log), ("third", log2)] {
            let text = log
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_default();
            assert!(
                run == "first" || text.contains("\" 401 "),
                "{run} run: the refusals are logged:\n{text}"
            );
            for secret in [
                "route-read-t0ken",
                "hosted-read-t0ken",
                "metrics-t0ken",
                TOKEN,
            ] {
                assert!(
                    !text.contains(secret),
                    "{run} run: {secret} in the log:\n{text}"
                );
            }
        }
    });
}

#[test]
fn an_upload_on_one_tiered_node_installs_through_another_with_an_empty_disk() {
    use crate::s3_server::{bucket_env, Fault, S3Proxy, S3Server, BUCKET};
    let Some(s3) = S3Server::start() else { return };
    within(LIMIT, move || {
        let proxy = S3Proxy::start(s3.addr);
        let fake = empty_upstream();
        let node = |sync: &str| {
            let env = bucket_env(&proxy, "tiered");
            let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            all.extend_from_slice(&[("ROXPI_UPLOAD_TOKEN", TOKEN), ("ROXPI_HOSTED_SYNC", sync)]);
            roxpi_on(&fake, &all)
        };
        let (a, a_cache, _ha) = node("1");
        upload_wheel(a.addr, "acme-lib", "1.0");
        let sdist = crate::util::blob(3 << 20, 11);
        assert_eq!(
            upload(a.addr, "acme_lib-1.0.tar.gz", &sdist, "acme-lib", "1.0").status,
            200
        );
        // The 200 came after the bucket held it: file, metadata, record.
        let dir = s3
            .root
            .path()
            .join(BUCKET)
            .join("roxpi/hosted/local/acme-lib");
        for name in [
            "acme_lib-1.0-py3-none-any.whl",
            "acme_lib-1.0-py3-none-any.whl.metadata",
            "acme_lib-1.0-py3-none-any.whl.json",
            "acme_lib-1.0.tar.gz",
            "acme_lib-1.0.tar.gz.json",
        ] {
            assert!(dir.join(name).is_file(), "{name} in the bucket");
        }
        assert_eq!(
            std::fs::read(dir.join("acme_lib-1.0.tar.gz")).unwrap(),
            sdist.to_vec()
        );

        // A bucket that fails: 503, and node A keeps nothing of it.
        proxy.set_fault(Fault::Down);
        let (w2, _) = build_wheel("acme-lib", "2.0", &[]);
        let r = upload(
            a.addr,
            "acme_lib-2.0-py3-none-any.whl",
            &w2,
            "acme-lib",
            "2.0",
        );
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        proxy.set_fault(Fault::Pass);
        assert_eq!(filenames(&json_page(a.addr, "acme-lib")).len(), 2);
        assert!(staged(a_cache.path()).is_empty());

        // Node B, empty disk: it takes both from the bucket before it
        // serves (a claimed name is never asked of the upstream).
        let (b, b_cache, _hb) = node("1");
        crate::util::wait_until(
            Duration::from_secs(30),
            "node B has the hosted files",
            || {
                let r = request(
                    b.addr,
                    "GET",
                    "/index/acme-lib/",
                    &[("Accept", "application/vnd.pypi.simple.v1+json")],
                );
                r.status == 200 && r.json()["files"].as_array().is_some_and(|f| f.len() == 2)
            },
        );
        assert!(b_cache
            .path()
            .join("hosted/local/acme-lib/acme_lib-1.0.tar.gz")
            .is_file());
        let r = get(b.addr, "/index/acme-lib/acme_lib-1.0.tar.gz");
        assert_eq!(r.body, sdist.to_vec());
        let work = tempfile::tempdir().unwrap();
        let target = work.path().join("pip");
        if pip_install(&format!("http://{}/simple/", b.addr), &target, "acme-lib").is_some() {
            assert!(installed(&target, "acme_lib"));
        }
        assert!(fake.requests().iter().all(|r| !r.path.contains("acme")));
    });
}

#[test]
fn a_route_that_lists_a_hosted_index_serves_and_claims_its_projects() {
    within(LIMIT, || {
        let fake = confusing_upstream();
        let work = tempfile::tempdir().unwrap();
        let config = work.path().join("roxpi.toml");
        let root = fake.url("root");
        std::fs::write(
            &config,
            format!(
                "[[hosted]]\nname = \"local\"\n\n[[route]]\nprefix = \"/team/simple/\"\nindexes = [\"{root}\"]\nhosted = [\"local\"]\n\n[[route]]\nprefix = \"/public/simple/\"\nindexes = [\"{root}\"]\n"
            ),
        )
        .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let (roxpi, _home) = start_roxpi(&[
            ("ROXPI_INDEX_URL", root.as_str()),
            ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
            ("ROXPI_UPLOAD_TOKEN", TOKEN),
            ("ROXPI_CONFIG", config.to_str().unwrap()),
        ]);
        let addr = roxpi.addr;
        let wheel = upload_wheel(addr, "acme-lib", "1.0");
        let json = |path: &str| {
            let r = request(
                addr,
                "GET",
                path,
                &[("Accept", "application/vnd.pypi.simple.v1+json")],
            );
            assert_eq!(r.status, 200, "{path}");
            filenames(&r.json())
        };
        assert_eq!(
            json("/team/simple/acme-lib/"),
            ["acme_lib-1.0-py3-none-any.whl"]
        );
        let r = get(addr, "/team/simple/acme-lib/acme_lib-1.0-py3-none-any.whl");
        assert_eq!(r.body, wheel.to_vec());
        assert_eq!(
            get(addr, "/team/simple/acme-lib/acme_lib-9.0-py3-none-any.whl").status,
            404
        );
        // A route that does not list it sees the upstream's project.
        assert_eq!(
            json("/public/simple/acme-lib/"),
            ["acme_lib-9.0-py3-none-any.whl"]
        );
        // The default route lists every hosted index.
        assert_eq!(json("/simple/acme-lib/"), ["acme_lib-1.0-py3-none-any.whl"]);
    });
}

#[test]
fn a_hosted_file_on_a_real_4415_file_page_merges_first_or_claims_it_whole() {
    within(LIMIT, || {
        let pages: Vec<_> = crate::real_shapes::real_pages()
            .into_iter()
            .filter(|p| p.name == "numpy")
            .collect();
        assert_eq!(pages.len(), 1, "the numpy fixture page");
        let upstream_files = pages[0].files;
        let upstream = crate::real_shapes::RealUpstream::start(&pages);
        let root = format!("http://{}/simple/", upstream.server.local_addr());
        let work = tempfile::tempdir().unwrap();
        let config = work.path().join("roxpi.toml");
        for allow in [true, false] {
            let rule = if allow {
                "allow-upstream = [\"numpy\"]\n"
            } else {
                ""
            };
            std::fs::write(&config, format!("[[hosted]]\nname = \"local\"\n{rule}")).unwrap();
            let cache = tempfile::tempdir().unwrap();
            let (roxpi, _home) = start_roxpi(&[
                ("ROXPI_INDEX_URL", root.as_str()),
                ("ROXPI_CACHE_DIR", cache.path().to_str().unwrap()),
                ("ROXPI_UPLOAD_TOKEN", TOKEN),
                ("ROXPI_CONFIG", config.to_str().unwrap()),
            ]);
            upstream.hits.lock().unwrap().clear();
            upload_wheel(roxpi.addr, "numpy", "99.0");
            let names = filenames(&json_page(roxpi.addr, "numpy"));
            let asked = upstream
                .hits
                .lock()
                .unwrap()
                .get("/simple/numpy/")
                .copied()
                .unwrap_or(0);
            assert_eq!(names[0], "numpy-99.0-py3-none-any.whl");
            if allow {
                assert_eq!(names.len(), upstream_files + 1, "merged, hosted first");
                assert_eq!(asked, 1);
            } else {
                assert_eq!(names.len(), 1, "claimed: the hosted file alone");
                assert_eq!(asked, 0, "a claimed name is not asked of the upstream");
            }
        }
    });
}
