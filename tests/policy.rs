//! The policy layer through the real binary: the release cooldown (page
//! `max-age` capped at the next maturation, `hide` and `deny`), quarantine
//! (PEP 792) across refreshes, restarts and offline mode, the
//! dependency-confusion guard, the configuration file (unknown keys,
//! SIGHUP with a broken file, variables over the file), the admin token.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::fake_index::{FakeFile, FakeIndex, FakeProject, Fault, Mode};
use crate::util::{
    blob, get, request, roxpi_bin, roxpi_on, start_roxpi, wait_for_line, within, ChildServer,
};

const LIMIT: Duration = Duration::from_secs(120);

/// An RFC 3339 upload time `ago` before now.
fn uploaded_ago(ago: Duration) -> Option<String> {
    Some(humantime::format_rfc3339_micros(SystemTime::now() - ago).to_string())
}

/// Project `young` with 1.0 (old) and 2.0 uploaded `ago` ago (JSON pages).
fn fake_with_young(ago: Duration) -> FakeIndex {
    let fake = FakeIndex::start(BTreeMap::new());
    let old = FakeFile::new("young-1.0-py3-none-any.whl", blob(3000, 1));
    let mut new = FakeFile::new("young-2.0-py3-none-any.whl", blob(3000, 2));
    new.upload_time = uploaded_ago(ago);
    fake.add_project(
        "root",
        "young",
        FakeProject {
            files: vec![old, new],
            versions: vec!["1.0".into(), "2.0".into()],
            ..Default::default()
        },
    );
    fake.set_mode(Mode::Json);
    fake
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("roxpi.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn max_age(r: &crate::util::Reply) -> u64 {
    r.header("cache-control")
        .and_then(|v| v.strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no max-age: {:?}", r.header("cache-control")))
}

#[test]
fn a_page_changes_when_its_held_back_file_matures() {
    within(LIMIT, || {
        // 2.0 matures 4 s from now.
        let fake = fake_with_young(Duration::from_secs(7 * 86_400 - 4));
        let conf = tempfile::tempdir().unwrap();
        let path = write_config(conf.path(), "min-release-age = \"7d\"\n");
        let (server, _cache, _home) = roxpi_on(&fake, &[("ROXPI_CONFIG", path.as_str())]);
        let addr = server.addr;
        let before = get(addr, "/simple/young/");
        assert_eq!(before.status, 200);
        assert!(before.text().contains("young-1.0-py3-none-any.whl"));
        assert!(!before.text().contains("young-2.0"), "held back");
        let age = max_age(&before);
        assert!(age <= 4, "max-age {age} past the maturation");
        // The versions list stays complete (JSON).
        let json = request(
            addr,
            "GET",
            "/simple/young/",
            &[("Accept", "application/vnd.pypi.simple.v1+json")],
        );
        assert_eq!(json.json()["versions"], serde_json::json!(["1.0", "2.0"]));
        // In hide mode the file itself is served.
        let file = get(addr, "/simple/young/young-2.0-py3-none-any.whl");
        assert_eq!(file.status, 200);
        // The cooldown ends 4 s after the upload: the page shows it then.
        let mut after = get(addr, "/simple/young/");
        crate::util::wait_until(Duration::from_secs(10), "young 2.0 to mature", || {
            after = get(addr, "/simple/young/");
            after.text().contains("young-2.0-py3-none-any.whl")
        });
        assert_ne!(after.header("etag"), before.header("etag"));
        let metrics = get(addr, "/metrics").text();
        assert!(metrics.contains("roxpi_policy_decisions_total{rule=\"cooldown\"} "));
        assert!(!metrics.contains("roxpi_policy_decisions_total{rule=\"cooldown\"} 0\n"));
    });
}

#[test]
fn deny_mode_refuses_the_young_file_with_the_reason() {
    within(LIMIT, || {
        let fake = fake_with_young(Duration::from_secs(3600));
        let (server, _cache, _home) = roxpi_on(
            &fake,
            &[
                ("ROXPI_MIN_RELEASE_AGE", "7d"),
                ("ROXPI_COOLDOWN_MODE", "deny"),
            ],
        );
        let r = get(server.addr, "/index/young/young-2.0-py3-none-any.whl");
        assert_eq!(r.status, 403);
        assert!(r.text().contains("release cooldown until"), "{}", r.text());
        assert_eq!(
            fake.count("/files/root/young/young-2.0-py3-none-any.whl"),
            0
        );
        assert_eq!(
            get(server.addr, "/index/young/young-1.0-py3-none-any.whl").status,
            200
        );
    });
}

#[test]
fn upload_times_at_the_end_of_the_calendar_hold_the_file_without_a_500() {
    within(LIMIT, || {
        let fake = fake_with_young(Duration::from_secs(3600));
        let mut project = fake.project("root", "young");
        project.files[1].upload_time = Some("9999-12-31T00:00:00Z".into());
        project.files[0].upload_time = Some("10000-01-01T00:00:00Z".into());
        fake.add_project("root", "young", project);
        let (server, _cache, _home) = roxpi_on(
            &fake,
            &[
                ("ROXPI_MIN_RELEASE_AGE", "7d"),
                ("ROXPI_COOLDOWN_MODE", "deny"),
            ],
        );
        for _ in 0..2 {
            let page = get(server.addr, "/index/young/");
            assert_eq!(page.status, 200, "{}", page.text());
            // 2.0 is held until the calendar's end; 1.0's time is not a
            // date at all, so it counts as untimed (allowed by default).
            assert!(!page.text().contains("young-2.0"), "{}", page.text());
            assert!(page.text().contains("young-1.0"), "{}", page.text());
        }
        let r = get(server.addr, "/index/young/young-2.0-py3-none-any.whl");
        assert_eq!(r.status, 403);
        assert!(r.text().contains("9999-12-31T23:59:59Z"), "{}", r.text());
    });
}

#[test]
fn yanks_and_deny_rules_change_pages_and_refuse_files() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.add_project(
            "root",
            "setuptools",
            FakeProject {
                files: vec![
                    FakeFile::new("setuptools-78.0.1-py3-none-any.whl", blob(100, 1)),
                    FakeFile::new("setuptools-78.0.2-py3-none-any.whl", blob(100, 2)),
                ],
                ..Default::default()
            },
        );
        fake.add_project(
            "root",
            "evil-pkg",
            FakeProject {
                files: vec![FakeFile::new("evil_pkg-1.0.tar.gz", blob(100, 3))],
                ..Default::default()
            },
        );
        fake.set_mode(Mode::Json);
        let conf = tempfile::tempdir().unwrap();
        let path = write_config(
            conf.path(),
            r#"
yank = [{ project = "setuptools", versions = "==78.0.1", reason = "breaks builds" }]
deny = [{ project = "evil-*", reason = "known malware" }, { project = "setuptools", versions = ">78.0.1" }]
"#,
        );
        let (server, _cache, _home) = roxpi_on(&fake, &[("ROXPI_CONFIG", path.as_str())]);
        let addr = server.addr;
        let json = request(
            addr,
            "GET",
            "/simple/setuptools/",
            &[("Accept", "application/vnd.pypi.simple.v1+json")],
        )
        .json();
        let files = json["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "78.0.2 denied: {json}");
        assert_eq!(files[0]["yanked"], "breaks builds");
        let html = get(addr, "/simple/setuptools/").text();
        assert!(html.contains("data-yanked=\"breaks builds\""), "{html}");
        let r = get(
            addr,
            "/simple/setuptools/setuptools-78.0.2-py3-none-any.whl",
        );
        assert_eq!(r.status, 403);
        assert!(
            r.text()
                .contains("denied by the site's policy (setuptools >78.0.1)"),
            "{}",
            r.text()
        );
        let page = get(addr, "/simple/evil-pkg/");
        assert_eq!(page.status, 403);
        assert!(page.text().contains("known malware"));
        assert_eq!(
            get(addr, "/simple/evil-pkg/evil_pkg-1.0.tar.gz").status,
            403
        );
        assert_eq!(
            fake.count("/root/evil-pkg/"),
            0,
            "a denied project is never fetched"
        );
    });
}

#[test]
fn a_version_rule_covers_every_file_type_and_fails_closed() {
    within(LIMIT, || {
        let denied = [
            "pol-9.7.tbz",
            "pol-9.7.txz",
            "pol-9.7.tlz",
            "pol-9.7.tar.lz",
            "pol-9.11.tar.lzma",
            "pol-9.7-py3.8.egg",
            "pol-9.7.win-amd64-py3.8.exe",
            "pol-9.7.tar.Z",
            "pol-9.7.tar.gz",
            "pol-9.7-py3-none-any.whl",
            // No readable version: denied by the version rule (fail closed).
            "pol-nightly.tar.gz",
        ];
        let allowed = ["pol-8.0.tar.gz", "pol-8.0.tbz", "pol-8.0-py3-none-any.whl"];
        let fake = FakeIndex::start(BTreeMap::new());
        let files = denied
            .iter()
            .chain(&allowed)
            .enumerate()
            .map(|(i, f)| FakeFile::new(f, blob(100, i as u64)))
            .collect();
        fake.add_project(
            "root",
            "pol",
            FakeProject {
                files,
                ..Default::default()
            },
        );
        fake.set_mode(Mode::Json);
        let conf = tempfile::tempdir().unwrap();
        let path = write_config(
            conf.path(),
            "deny = [{ project = \"pol\", versions = \">=9\" }]\n",
        );
        let (server, _cache, _home) = roxpi_on(&fake, &[("ROXPI_CONFIG", path.as_str())]);
        let addr = server.addr;
        let page = get(addr, "/simple/pol/").text();
        for f in denied {
            assert!(!page.contains(f), "{f} listed: {page}");
            let r = get(addr, &format!("/simple/pol/{f}"));
            assert_eq!(r.status, 403, "{f}: {}", r.text());
        }
        for f in allowed {
            assert!(page.contains(f), "{f} hidden: {page}");
            assert_eq!(get(addr, &format!("/simple/pol/{f}")).status, 200, "{f}");
        }
        assert!(get(addr, "/simple/pol/pol-nightly.tar.gz")
            .text()
            .contains("cannot be read"),);
    });
}

#[test]
fn a_page_versions_decisions_are_audited_once() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        fake.add_project(
            "root",
            "pol",
            FakeProject {
                files: vec![
                    FakeFile::new("pol-9.0.tar.gz", blob(100, 1)),
                    // Not a zip: synthesis marks it broken, which changes
                    // what the page advertises (not a policy decision).
                    FakeFile::new("pol-1.0-py3-none-any.whl", blob(100, 2)),
                ],
                ..Default::default()
            },
        );
        fake.set_mode(Mode::Json);
        let conf = tempfile::tempdir().unwrap();
        let path = write_config(
            conf.path(),
            "deny = [{ project = \"pol\", versions = \">=9\" }]\n",
        );
        let (mut server, _cache, _home) = roxpi_on(&fake, &[("ROXPI_CONFIG", path.as_str())]);
        let stderr = server.capture_stderr();
        let addr = server.addr;
        let json = ("Accept", "application/vnd.pypi.simple.v1+json");
        let gzip = ("Accept-Encoding", "gzip");
        for round in 0..2 {
            assert_eq!(get(addr, "/simple/pol/").status, 200);
            assert_eq!(request(addr, "GET", "/simple/pol/", &[json]).status, 200);
            assert_eq!(
                request(addr, "GET", "/simple/pol/", &[json, gzip]).status,
                200
            );
            if round == 0 {
                let m = get(addr, "/simple/pol/pol-1.0-py3-none-any.whl.metadata");
                assert_eq!(m.status, 404, "{}", m.text());
            }
        }
        drop(server);
        let log = stderr.recv_timeout(Duration::from_secs(5)).unwrap();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" audit ") && l.contains("pol-9.0.tar.gz"))
            .collect();
        assert_eq!(lines.len(), 1, "{lines:#?}");
    });
}

#[test]
fn a_quarantined_project_serves_no_file_after_refresh_restart_and_offline() {
    within(LIMIT, || {
        let fake = FakeIndex::start(BTreeMap::new());
        let wheel = "qpkg-1.0-py3-none-any.whl";
        fake.add_project(
            "root",
            "qpkg",
            FakeProject {
                files: vec![FakeFile::new(wheel, blob(5000, 1))],
                ..Default::default()
            },
        );
        fake.set_mode(Mode::Json);
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = cache.path().display().to_string();
        let root = fake.url("root");
        let env = |extra: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, String)> = vec![
                ("ROXPI_INDEX_URL", root.clone()),
                ("ROXPI_CACHE_DIR", cache_dir.clone()),
                ("ROXPI_INDEX_TTL", "0".into()),
            ];
            v.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
            v
        };
        let start = |extra: &[(&'static str, &'static str)]| {
            let e = env(extra);
            let refs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
            start_roxpi(&refs)
        };
        let path = format!("/index/qpkg/{wheel}");
        {
            let (server, _home) = start(&[]);
            assert_eq!(get(server.addr, &path).status, 200, "cached");
            // The upstream quarantines it (and, as PyPI does, lists no file).
            let mut p = fake.project("root", "qpkg");
            p.status = Some("quarantined".into());
            fake.add_project("root", "qpkg", p);
            let page = request(
                server.addr,
                "GET",
                "/index/qpkg/",
                &[("Accept", "application/vnd.pypi.simple.v1+json")],
            );
            assert_eq!(
                page.json()["project-status"]["status"],
                "quarantined",
                "passed through"
            );
            assert_eq!(page.json()["files"], serde_json::json!([]));
            assert!(
                get(server.addr, &path).status >= 400,
                "no file after the refresh"
            );
        }
        // Restarted with the upstream down, then offline: still nothing.
        fake.set_fault(Fault::Status(503));
        for extra in [&[][..], &[("ROXPI_OFFLINE", "1")][..]] {
            let (server, _home) = start(extra);
            let page = get(server.addr, "/index/qpkg/");
            assert_eq!(page.status, 200, "{extra:?}");
            assert!(!page.text().contains(wheel), "{extra:?}: listed");
            assert!(get(server.addr, &path).status >= 400, "{extra:?}: served");
        }
    });
}

#[test]
fn a_private_name_is_never_taken_from_the_public_index() {
    within(LIMIT, || {
        let private = FakeIndex::start(BTreeMap::new());
        let public = FakeIndex::start(BTreeMap::new());
        public.add_project(
            "root",
            "acme-secret",
            FakeProject {
                files: vec![FakeFile::new(
                    "acme_secret-99.0-py3-none-any.whl",
                    blob(100, 9),
                )],
                ..Default::default()
            },
        );
        public.add_project(
            "root",
            "numpy",
            FakeProject {
                files: vec![FakeFile::new("numpy-2.0-py3-none-any.whl", blob(100, 1))],
                ..Default::default()
            },
        );
        let conf = tempfile::tempdir().unwrap();
        let path = write_config(
            conf.path(),
            &format!(
                "[[index]]\nurl = \"{}\"\nonly = [\"acme-*\"]\n\n[[index]]\nurl = \"{}\"\n",
                private.url("root"),
                public.url("root")
            ),
        );
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = cache.path().display().to_string();
        for strategy in ["merge", "first-index"] {
            let (server, _home) = start_roxpi(&[
                ("ROXPI_CONFIG", path.as_str()),
                ("ROXPI_INDEX_STRATEGY", strategy),
                ("ROXPI_CACHE_DIR", cache_dir.as_str()),
            ]);
            let addr = server.addr;
            // The private index does not have it: 404, not the public one.
            let r = get(addr, "/index/acme-secret/");
            assert_eq!(r.status, 404, "{strategy}: {}", r.text());
            // The private index fails: 502, still not the public one.
            private.set_fault(Fault::Status(500));
            let _ = request(addr, "DELETE", "/cache/acme-secret", &[]);
            let r = get(addr, "/index/acme-secret/");
            assert_eq!(r.status, 502, "{strategy}: {}", r.text());
            assert!(!r.text().contains("acme_secret-99.0"));
            private.set_fault(Fault::None);
            assert_eq!(
                public.count("/root/acme-secret/"),
                0,
                "the public index was asked"
            );
            // Other names still come from the public index.
            assert!(get(addr, "/index/numpy/").text().contains("numpy-2.0"));
            drop(server);
        }
    });
}

#[test]
fn a_route_keeps_the_site_rules_and_the_index_guards() {
    within(LIMIT, || {
        let private = FakeIndex::start(BTreeMap::new());
        let public = FakeIndex::start(BTreeMap::new());
        for (name, file) in [
            ("acme-foo", "acme_foo-9.0-py3-none-any.whl"),
            ("evil-pkg", "evil_pkg-1.0.tar.gz"),
            ("pol", "pol-9.0.tar.gz"),
            ("young", "young-2.0-py3-none-any.whl"),
        ] {
            let mut f = FakeFile::new(file, blob(100, file.len() as u64));
            if name == "young" {
                f.upload_time = uploaded_ago(Duration::from_secs(3600));
            }
            public.add_project(
                "root",
                name,
                FakeProject {
                    files: vec![f],
                    ..Default::default()
                },
            );
        }
        public.set_mode(Mode::Json);
        let conf = tempfile::tempdir().unwrap();
        // The README's own route example: its cooldown is off.
        let text = format!(
            r#"min-release-age = "7d"
cooldown-mode = "deny"
deny = [{{ project = "evil-*", reason = "known malware" }}, {{ project = "pol", versions = ">=9" }}]

[[index]]
url = "{private}"
only = ["acme-*"]

[[index]]
url = "{public}"

[[route]]
prefix = "/pub/simple/"
indexes = ["{public}"]
policy = {{ min-release-age = "0" }}

[[route]]
prefix = "/both/simple/"
indexes = ["{private}", "{public}"]
"#,
            private = private.url("root"),
            public = public.url("root")
        );
        let path = write_config(conf.path(), &text);
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = cache.path().display().to_string();
        let (server, _home) = start_roxpi(&[
            ("ROXPI_CONFIG", path.as_str()),
            ("ROXPI_CACHE_DIR", cache_dir.as_str()),
        ]);
        let addr = server.addr;
        for prefix in ["/pub/simple/", "/both/simple/", "/simple/"] {
            let page = get(addr, &format!("{prefix}evil-pkg/"));
            assert_eq!(page.status, 403, "{prefix}: {}", page.text());
            assert!(page.text().contains("known malware"), "{}", page.text());
            let r = get(addr, &format!("{prefix}evil-pkg/evil_pkg-1.0.tar.gz"));
            assert_eq!(r.status, 403, "{prefix}");
            let r = get(addr, &format!("{prefix}pol/pol-9.0.tar.gz"));
            assert_eq!(r.status, 403, "{prefix}: {}", r.text());
            // The private index claims acme-*: never from the public one.
            let r = get(addr, &format!("{prefix}acme-foo/"));
            assert_eq!(r.status, 404, "{prefix}: {}", r.text());
        }
        assert_eq!(
            public.count("/root/acme-foo/"),
            0,
            "{:?}",
            public.requests()
        );
        assert_eq!(public.count("/root/evil-pkg/"), 0);
        // What a route may change: its cooldown.
        // The guard's decisions are audited and counted.
        private.add_project(
            "root",
            "acme-bar",
            FakeProject {
                files: vec![FakeFile::new("acme_bar-1.0.tar.gz", blob(100, 5))],
                ..Default::default()
            },
        );
        assert_eq!(get(addr, "/both/simple/acme-bar/").status, 200);
        assert!(
            crate::util::metric(addr, "roxpi_policy_decisions_total{rule=\"confusion\"}") >= 1,
            "{}",
            get(addr, "/metrics").text()
        );
        let young = "young/young-2.0-py3-none-any.whl";
        assert_eq!(get(addr, &format!("/pub/simple/{young}")).status, 200);
        assert_eq!(get(addr, &format!("/simple/{young}")).status, 403);
        assert_eq!(get(addr, &format!("/both/simple/{young}")).status, 403);
    });
}

#[test]
fn index_variables_and_an_index_list_in_the_file_refuse_to_start() {
    within(LIMIT, || {
        let conf = tempfile::tempdir().unwrap();
        let path = write_config(
            conf.path(),
            "[[index]]\nurl = \"https://private.example/simple/\"\nonly = [\"six\"]\n",
        );
        for var in ["ROXPI_INDEX_URL", "PROXPI_INDEX_URL"] {
            let out = Command::new(roxpi_bin())
                .env_clear()
                .env("ROXPI_BIND", "127.0.0.1:0")
                .env("ROXPI_CONFIG", &path)
                .env(var, "https://pypi.org/simple/")
                .output()
                .unwrap();
            assert!(!out.status.success(), "{var}");
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err
                .lines()
                .find(|l| l.contains("ROXPI_INDEX_URL"))
                .unwrap_or_else(|| panic!("{var}: {err}"));
            assert!(line.contains("[[index]]"), "{var}: {line}");
        }
        let empty = write_config(conf.path(), "index = []\n");
        let out = Command::new(roxpi_bin())
            .env_clear()
            .env("ROXPI_BIND", "127.0.0.1:0")
            .env("ROXPI_CONFIG", &empty)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("at least one [[index]]"));
    });
}

#[test]
fn a_quarantine_on_any_merged_index_withholds_every_file_of_the_project() {
    within(LIMIT, || {
        for quarantined_on in ["root", "extra"] {
            let fake = FakeIndex::start(BTreeMap::new());
            fake.set_mode(Mode::Json);
            for index in ["root", "extra"] {
                let file = format!("q-1.0.{index}-py3-none-any.whl");
                let quarantined = index == quarantined_on;
                fake.add_project(
                    index,
                    "q",
                    FakeProject {
                        // A quarantining index lists no file (as PyPI).
                        files: if quarantined {
                            vec![]
                        } else {
                            vec![FakeFile::new(&file, blob(100, 7))]
                        },
                        status: quarantined.then(|| "quarantined".to_owned()),
                        ..Default::default()
                    },
                );
            }
            let extra = fake.url("extra");
            let (server, _cache, _home) =
                roxpi_on(&fake, &[("ROXPI_EXTRA_INDEX_URLS", extra.as_str())]);
            let addr = server.addr;
            let json = request(
                addr,
                "GET",
                "/index/q/",
                &[("Accept", "application/vnd.pypi.simple.v1+json")],
            )
            .json();
            assert_eq!(json["files"].as_array().unwrap().len(), 0, "{json}");
            assert_eq!(json["project-status"]["status"], "quarantined", "{json}");
            for index in ["root", "extra"] {
                let r = get(addr, &format!("/index/q/q-1.0.{index}-py3-none-any.whl"));
                assert_ne!(r.status, 200, "{quarantined_on}/{index}: {}", r.text());
            }
        }
    });
}

#[test]
fn the_config_file_unknown_keys_sighup_and_variables() {
    within(LIMIT, || {
        let fake = fake_with_young(Duration::from_secs(3600));
        let conf = tempfile::tempdir().unwrap();
        // An unknown key stops startup, naming the key and its line.
        let bad = write_config(
            conf.path(),
            "min-release-age = \"7d\"\ncooldown-mdoe = \"deny\"\n",
        );
        let cache = tempfile::tempdir().unwrap();
        let out = Command::new(roxpi_bin())
            .env_clear()
            .env("ROXPI_CONFIG", &bad)
            .env("ROXPI_CACHE_DIR", cache.path())
            .env("ROXPI_BIND", "127.0.0.1:0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("cooldown-mdoe") && err.contains("line 2") && err.contains("ROXPI_CONFIG"),
            "{err}"
        );

        // A variable overrides the file.
        let path = write_config(
            conf.path(),
            "min-release-age = \"7d\"\ncooldown-mode = \"hide\"\n",
        );
        let (mut server, _cache, _home) = roxpi_on(
            &fake,
            &[
                ("ROXPI_CONFIG", path.as_str()),
                ("ROXPI_COOLDOWN_MODE", "deny"),
            ],
        );
        let log = server.stderr_lines();
        let addr = server.addr;
        let young = "/index/young/young-2.0-py3-none-any.whl";
        assert_eq!(get(addr, young).status, 403, "deny from the variable");
        // SIGHUP with a good file: the policy changes (cooldown off), and
        // a route appears.
        assert_eq!(get(addr, "/mirror/simple/young/").status, 404);
        let with_route = format!(
            "min-release-age = \"0\"\n\n[[route]]\nprefix = \"/mirror/simple/\"\nindexes = [\"{}\"]\n",
            fake.url("root")
        );
        write_config(conf.path(), &with_route);
        hup(&server);
        wait_for(|| get(addr, young).status == 200, "the reloaded policy");
        assert!(get(addr, "/index/young/").text().contains("young-2.0"));
        assert_eq!(
            get(addr, "/mirror/simple/young/").status,
            200,
            "the new route"
        );
        // SIGHUP with a broken file: the policy in force stays.
        write_config(conf.path(), "min-release-age = \"7d\"\nbogus = 1\n");
        hup(&server);
        wait_for_line(
            &log,
            "SIGHUP: keeping the policies",
            Duration::from_secs(10),
        );
        assert_eq!(
            get(addr, young).status,
            200,
            "a broken file changed the policy"
        );
        assert_eq!(
            get(addr, "/mirror/simple/young/").status,
            200,
            "the route stays"
        );
        // …and a good one again takes effect (the variable still wins);
        // the route is gone.
        write_config(conf.path(), "min-release-age = \"7d\"\n");
        hup(&server);
        wait_for(
            || get(addr, young).status == 403,
            "the policy after the broken file",
        );
        // An empty file (truncated, half-written) changes nothing either.
        write_config(conf.path(), "\n");
        hup(&server);
        wait_for_line(&log, "is empty; keeping", Duration::from_secs(10));
        assert_eq!(
            get(addr, young).status,
            403,
            "an empty file cleared the rules"
        );
    });
}

fn hup(server: &ChildServer) {
    let ok = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// `util::wait_until` with this file's limit.
fn wait_for(cond: impl FnMut() -> bool, what: &str) {
    crate::util::wait_until(Duration::from_secs(10), what, cond);
}

#[test]
fn invalidation_needs_the_admin_token_when_one_is_set() {
    within(LIMIT, || {
        let fake = fake_with_young(Duration::from_secs(30 * 86_400));
        let (server, _cache, _home) = roxpi_on(&fake, &[("ROXPI_ADMIN_TOKEN", "t0k3n-abc")]);
        let addr = server.addr;
        assert_eq!(get(addr, "/index/young/").status, 200);
        assert_eq!(fake.count("/root/young/"), 1);
        for headers in [
            vec![],
            vec![("Authorization", "Bearer wrong")],
            vec![("Authorization", "Basic dDBrM24tYWJj")],
            vec![("Authorization", "Bearer t0k3n-abcd")],
        ] {
            for path in ["/cache/young", "/cache/list"] {
                let r = request(addr, "DELETE", path, &headers);
                assert_eq!(r.status, 401, "{path} {headers:?}");
                assert!(r.header("www-authenticate").is_some());
                assert!(!r.text().contains("t0k3n"), "the token in the answer");
            }
        }
        // Nothing was invalidated.
        assert_eq!(get(addr, "/index/young/").header("x-cache"), Some("HIT"));
        assert_eq!(fake.count("/root/young/"), 1);
        let ok = request(
            addr,
            "DELETE",
            "/cache/young",
            &[("Authorization", "Bearer t0k3n-abc")],
        );
        assert_eq!(ok.status, 200);
        assert_eq!(get(addr, "/index/young/").status, 200);
        assert_eq!(fake.count("/root/young/"), 2, "invalidated with the token");
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let lower = request(
            addr,
            "DELETE",
            "/cache/young",
            &[("Authorization", "bearer t0k3n-abc")],
        );
        assert_eq!(lower.status, 200, "{}", lower.text());
    });
}

#[test]
fn two_routes_store_a_shared_wheel_once_and_keep_their_pages_apart() {
    within(LIMIT, || {
        let shared = blob(20_000, 42);
        let a = FakeIndex::start(BTreeMap::new());
        let b = FakeIndex::start(BTreeMap::new());
        for (fake, own) in [
            (&a, "demo-1.0-cp311-none-any.whl"),
            (&b, "demo-1.0+cu121-cp311-none-any.whl"),
        ] {
            // Each upstream also has a release from an hour ago.
            let mut fresh = FakeFile::new("demo-1.1-py3-none-any.whl", blob(500, 8));
            fresh.upload_time = uploaded_ago(Duration::from_secs(3600));
            fake.add_project(
                "root",
                "demo",
                FakeProject {
                    files: vec![
                        FakeFile::new("demo-1.0-py3-none-any.whl", shared.clone()),
                        FakeFile::new(own, blob(1000, 7)),
                        fresh,
                    ],
                    ..Default::default()
                },
            );
            fake.set_mode(Mode::Json);
        }
        let conf = tempfile::tempdir().unwrap();
        // The route has its own policy: a cooldown the site does not have.
        let path = write_config(
            conf.path(),
            &format!(
                "[[route]]\nprefix = \"/cu121/simple/\"\nindexes = [\"{}\"]\npolicy = {{ min-release-age = \"7d\" }}\n",
                b.url("root")
            ),
        );
        let (server, cache, _home) = roxpi_on(&a, &[("ROXPI_CONFIG", path.as_str())]);
        let addr = server.addr;
        let default_page = get(addr, "/simple/demo/").text();
        let route_page = get(addr, "/cu121/simple/demo/").text();
        assert!(default_page.contains("demo-1.0-cp311-none-any.whl"));
        assert!(
            !default_page.contains("cu121"),
            "the route's file on the default page"
        );
        assert!(
            route_page.contains("demo-1.0+cu121-cp311-none-any.whl")
                || route_page.contains("demo-1.0%2Bcu121")
        );
        assert!(
            !route_page.contains("demo-1.0-cp311-none-any.whl"),
            "the default's file on the route's page"
        );
        assert!(
            default_page.contains("demo-1.1-py3-none-any.whl"),
            "no cooldown on the default route"
        );
        assert!(
            !route_page.contains("demo-1.1-py3-none-any.whl"),
            "the route's own cooldown"
        );
        // The shared wheel: downloaded once, stored once.
        let first = get(addr, "/simple/demo/demo-1.0-py3-none-any.whl");
        assert_eq!(first.status, 200);
        let second = get(addr, "/cu121/simple/demo/demo-1.0-py3-none-any.whl");
        assert_eq!(second.status, 200);
        assert!(first.body == shared && second.body == shared);
        assert_eq!(second.header("x-cache"), Some("HIT"), "stored once");
        assert_eq!(b.count("/files/root/demo/demo-1.0-py3-none-any.whl"), 0);
        assert_eq!(crate::util::count_files(&cache.path().join("files")), 1);
        // A file of one route is not served under the other.
        assert_eq!(
            get(addr, "/cu121/simple/demo/demo-1.0-cp311-none-any.whl").status,
            404
        );
        assert_eq!(get(addr, "/cu121/simple").status, 301);
        // Shown on the home page and in /metrics.
        assert!(get(addr, "/").text().contains("/cu121/simple/"));
        assert!(get(addr, "/metrics")
            .text()
            .contains("roxpi_route_indexes{route=\"/cu121/simple/\"} 1"));
        // Every route's index cache is counted, and shown per route.
        let metric = |name: &str| crate::util::metric(addr, name);
        let route = metric("roxpi_route_index_cache_bytes{route=\"/cu121/simple/\"}");
        let default = metric("roxpi_route_index_cache_bytes{route=\"/index/, /simple/\"}");
        assert!(route > 0 && default > 0, "{route} {default}");
        assert_eq!(metric("roxpi_index_cache_bytes"), route + default);
        let misses = metric("roxpi_route_index_misses_total{route=\"/cu121/simple/\"}");
        assert!(misses >= 1);
        assert!(metric("roxpi_index_misses_total") > misses);
        let home = get(addr, "/").text();
        assert!(home.contains(&format!("{route} bytes")), "{home}");
    });
}
