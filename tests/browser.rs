//! The home page as a person sees it: headless Chromium (Debian's) driven
//! by Playwright (`tests/browser/home.py`, from the venv `.ci/run` makes)
//! renders it with its statistics, clicks both invalidation buttons (their
//! same-origin `fetch` DELETEs reach roxpi, and the next page request goes
//! upstream), and never shows the index credentials.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::fake_index::{FakeFile, FakeIndex, FakeProject};
use crate::util::{blob, get, have, have_file, roxpi_on, within};

const LIMIT: Duration = Duration::from_secs(180);
const SECRET: &str = "s3cret-pass-6d1f";

#[test]
fn the_home_page_renders_and_its_buttons_invalidate() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join("target/ci-tools/playwright/bin/python");
    let how = "`.ci/run` makes it: python3 -m venv target/ci-tools/playwright, then pip install playwright";
    if !have_file(&python, how) || !have("/usr/bin/chromium", &["--version"]) {
        return;
    }
    within(LIMIT, move || {
        let f = FakeIndex::start(Default::default());
        f.add_project(
            "root",
            "demo",
            FakeProject {
                files: vec![FakeFile::new("demo-1.0-py3-none-any.whl", blob(5000, 1))],
                versions: vec![],
                ..Default::default()
            },
        );
        f.require_auth("alice", SECRET);
        let index = f
            .url("root")
            .replace("http://", &format!("http://alice:{SECRET}@"));
        let (server, _cache, _home) = roxpi_on(&f, &[("ROXPI_INDEX_URL", index.as_str())]);
        let addr = server.addr;
        let page_gets = || f.count("/root/demo/");
        assert_eq!(get(addr, "/index/demo/").status, 200);
        assert_eq!(get(addr, "/index/demo/").header("x-cache"), Some("HIT"));
        assert_eq!(page_gets(), 1);
        let file = get(addr, "/index/demo/demo-1.0-py3-none-any.whl");
        assert_eq!((file.status, file.body.len()), (200, 5000));

        let shot = std::env::temp_dir().join("roxpi-home.png");
        let out = Command::new(&python)
            .arg(repo.join("tests/browser/home.py"))
            .arg(format!("http://{addr}"))
            .arg(&shot)
            .output()
            .expect("run home.py");
        assert!(
            out.status.success(),
            "home.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("home.py's JSON");
        assert!(seen["title"].as_str().unwrap().starts_with("roxpi"));
        let h2: Vec<&str> = seen["h2"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for want in [
            "Indexes",
            "Index cache",
            "File cache",
            "Server",
            "Invalidate",
            "Top projects by bytes served",
        ] {
            assert!(h2.contains(&want), "no {want} section: {h2:?}");
        }
        assert!(
            seen["rows"].as_u64().unwrap() > 20,
            "too few statistics rows"
        );
        let text = seen["text"].as_str().unwrap();
        assert!(text.contains("hits"), "{text}");
        assert!(text.contains("127.0.0.1"), "the index is shown: {text}");
        // What an operator asks first: uptime, ratios, sizes for people,
        // the upstream's state, and the address this browser used.
        for want in [
            "up for",
            "page hit ratio\t50.0 % (1 of 2) since start",
            "file hit ratio",
            "upstream\tok",
            "demo\t4.9 KiB",
            &format!("pip install --index-url http://{addr}/index/"),
            &format!("uv pip install --index-url http://{addr}/simple/"),
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
        assert!(
            text.contains(" KiB") || text.contains(" MiB"),
            "sizes for people: {text}"
        );
        // Credentials never appear, in the text or the markup.
        let html = seen["html"].as_str().unwrap();
        for s in [text, html] {
            assert!(
                !s.contains(SECRET) && !s.contains("alice:"),
                "credentials on the home page"
            );
        }
        // Typed as "Demo": roxpi normalises the name.
        assert_eq!(seen["status_one"], "Invalidated cache/Demo");
        assert_eq!(seen["status_list"], "Invalidated cache/list");
        let requests = seen["requests"].as_array().unwrap();
        for path in ["/cache/Demo", "/cache/list"] {
            let want = serde_json::json!(["DELETE", format!("http://{addr}{path}")]);
            assert!(requests.contains(&want), "no DELETE {path}: {requests:?}");
        }
        assert_eq!(seen["errors"], serde_json::json!([]), "script errors");
        // The invalidation was real: the next page request goes upstream.
        assert_eq!(get(addr, "/index/demo/").status, 200);
        assert_eq!(page_gets(), 2, "the page was not fetched again");
        let png = std::fs::read(&shot).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
        println!("screenshot: {} ({} bytes)", shot.display(), png.len());
    });
}
