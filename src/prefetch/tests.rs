//! The prefetch's pure parts: URLs, targets, and which of a page's files a
//! lock picks.

use std::str::FromStr;

use super::pick::{pick_files, runs_on, PageFile};
use super::*;
use crate::pypi::ProjectName;
use locks::Named;

fn page(files: &[(&str, &str, Option<bool>)]) -> Vec<PageFile> {
    files
        .iter()
        .map(|(name, sha, yanked)| PageFile {
            filename: (*name).into(),
            url: format!("../../files/{name}"),
            hashes: [("sha256".to_owned(), (*sha).to_owned())]
                .into_iter()
                .collect(),
            size: Some(10),
            yanked: yanked.map_or(serde_json::Value::Null, serde_json::Value::Bool),
            requires_python: None,
        })
        .collect()
}

fn picked(files: &[PageFile], picks: &[Pick], targets: &[Target]) -> (Vec<String>, Vec<String>) {
    picked_in("np", files, picks, targets)
}

fn picked_in(
    project: &str,
    files: &[PageFile],
    picks: &[Pick],
    targets: &[Target],
) -> (Vec<String>, Vec<String>) {
    let name = ProjectName::parse(project).unwrap();
    let (chosen, missing) = pick_files(&name, files, picks, targets);
    (
        chosen.iter().map(|f| f.filename.clone()).collect(),
        missing
            .into_iter()
            .map(|(w, r)| format!("{w}: {r}"))
            .collect(),
    )
}

#[test]
fn picks_what_the_lock_names() {
    let files = page(&[
        ("np-1.0.tar.gz", "a1", None),
        ("np-2.0-cp312-cp312-manylinux_2_17_aarch64.whl", "b1", None),
        ("np-2.0-cp312-cp312-manylinux_2_17_x86_64.whl", "b2", None),
        ("np-2.0.tar.gz", "b3", None),
        ("np-3.0.tar.gz", "c1", Some(true)),
    ]);
    let named = |n: &str, sha: Option<&str>| Named {
        filename: n.into(),
        sha256: sha.map(str::to_owned),
    };
    let spec = |s: &str| Pick::Versions(pep440_rs::VersionSpecifiers::from_str(s).unwrap());
    let arm = targets(&["manylinux_2_28_aarch64".into()], &["3.12".into()]).unwrap();
    type Case<'a> = (Vec<Pick>, &'a [Target], Vec<&'a str>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec![Pick::Files(vec![
                named("np-1.0.tar.gz", Some("A1")),
                named("np-9.whl", None),
            ])],
            &[],
            vec!["np-1.0.tar.gz"],
            vec!["np-9.whl: not on the index's page for np"],
        ),
        (
            vec![Pick::Files(vec![named("np-1.0.tar.gz", Some("ff"))])],
            &[],
            vec![],
            vec!["np-1.0.tar.gz: the lock's sha256 ff differs from the index's a1"],
        ),
        (
            vec![Pick::Hashes(vec!["b1".into(), "B3".into()])],
            &[],
            vec![files[1].filename.as_str(), "np-2.0.tar.gz"],
            vec![],
        ),
        (
            vec![Pick::Hashes(vec!["zz".into()])],
            &[],
            vec![],
            vec!["np: no file on the index has one of the locked hashes"],
        ),
        // The newest version that is not yanked, every file of it ...
        (
            vec![spec(">=1")],
            &[],
            vec![
                files[1].filename.as_str(),
                files[2].filename.as_str(),
                "np-2.0.tar.gz",
            ],
            vec![],
        ),
        // ... or the yanked one when pinned to it.
        (vec![spec("==3.0")], &[], vec!["np-3.0.tar.gz"], vec![]),
        (
            vec![spec("==2.0")],
            &arm,
            vec![files[1].filename.as_str()],
            vec![],
        ),
        (vec![spec("==1.0")], &arm, vec!["np-1.0.tar.gz"], vec![]),
        (
            vec![spec(">=4")],
            &[],
            vec![],
            vec!["np: no version on the index matches >=4"],
        ),
    ];
    for (picks, targets, want, want_missing) in cases {
        let (got, missing) = picked(&files, &picks, targets);
        assert_eq!(got, want, "{picks:?}");
        assert_eq!(missing, want_missing, "{picks:?}");
    }
}

#[test]
fn a_version_for_newer_pythons_is_not_fetched_for_older_ones() {
    // A lock with numpy 3.0 for Python >= 3.12 and 2.0 below (uv's fork).
    let mut files = page(&[
        ("np-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", "a", None),
        ("np-3.0-cp312-cp312-manylinux_2_17_x86_64.whl", "b", None),
        ("np-3.0.tar.gz", "c", None),
    ]);
    files[1].requires_python = Some(">=3.12".into());
    files[2].requires_python = Some(">=3.12".into());
    let all = Pick::Hashes(vec!["a".into(), "b".into(), "c".into()]);
    let t = |py: &str| targets(&["manylinux_2_36_x86_64".into()], &[py.into()]).unwrap();
    let cases: [(&str, Vec<&str>); 3] = [
        ("3.11", vec!["np-2.0-cp311-cp311-manylinux_2_17_x86_64.whl"]),
        ("3.12", vec!["np-3.0-cp312-cp312-manylinux_2_17_x86_64.whl"]),
        ("3.10", vec![]),
    ];
    for (py, want) in cases {
        assert_eq!(
            picked(&files, std::slice::from_ref(&all), &t(py)).0,
            want,
            "{py}"
        );
    }
    assert!(runs_on(Some("<3.12"), &t("3.11")[0]));
    assert!(!runs_on(Some("!=3.11.*"), &t("3.11")[0]));
    assert!(runs_on(Some("nonsense"), &t("3.11")[0]));
}

#[test]
fn urls_and_targets() {
    let cases = [
        ("http://127.0.0.1:5000", Ok("http://127.0.0.1:5000/index/")),
        ("http://h:1/simple", Ok("http://h:1/simple/")),
        ("https://h/r/index/", Ok("https://h/r/index/")),
        ("ftp://h/", Err(())),
        ("nonsense", Err(())),
    ];
    for (raw, want) in cases {
        assert_eq!(
            index_url(raw).map(|u| u.to_string()).map_err(|_| ()),
            want.map(str::to_owned),
            "{raw}"
        );
    }
    assert!(targets(&[], &[]).unwrap().is_empty());
    let t = targets(&["a".into(), "b".into()], &["3.11".into(), "3.12".into()]).unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(targets(&[], &["3.12".into()]).unwrap()[0].platform, None);
    assert!(targets(&[], &["312".into()]).is_err());
}

#[test]
fn requirements_includes_are_followed_once() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    };
    let top = write("requirements.txt", "-r base/base.txt\nalpha==1\n");
    write(
        "base/base.txt",
        "beta==2\n-r ../requirements.txt\n--requirement extra.txt\n",
    );
    write("base/extra.txt", "gamma==3\n");
    let read = read_locks(&[top], None).unwrap();
    let names: Vec<&str> = read
        .iter()
        .flat_map(|(_, l)| l.wanted.iter().map(|w| w.project.as_str()))
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert_eq!(
        read.len(),
        3,
        "the loop back to requirements.txt is read once"
    );
    let missing = write("broken.txt", "-r nowhere.txt\n");
    let err = read_locks(&[missing], None).unwrap_err();
    assert!(err.contains("nowhere.txt"), "{err}");
}

/// PyPI's real numpy page (4,415 files): a pin picks the one wheel pip
/// takes on a Raspberry Pi 5 with Python 3.12, and every aarch64 glibc
/// wheel of the version without `--python`.
#[test]
fn numpy_on_the_real_page() {
    use std::io::Read;
    #[derive(serde::Deserialize)]
    struct Page {
        files: Vec<PageFile>,
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pypi-pages/numpy.json.gz"
    );
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut json)
        .unwrap();
    let page: Page = serde_json::from_slice(&json).unwrap();
    assert!(page.files.len() > 4000);
    let pin = Pick::Versions(pep440_rs::VersionSpecifiers::from_str("==2.0.0").unwrap());
    let pi = targets(&["manylinux_2_36_aarch64".into()], &["3.12".into()]).unwrap();
    let (got, missing) = picked_in("numpy", &page.files, std::slice::from_ref(&pin), &pi);
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(
        got,
        ["numpy-2.0.0-cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"]
    );
    let any_python = targets(&["manylinux_2_36_aarch64".into()], &[]).unwrap();
    let (got, _) = picked_in(
        "numpy",
        &page.files,
        std::slice::from_ref(&pin),
        &any_python,
    );
    assert_eq!(got.len(), 4, "cp39 to cp312: {got:?}");
    assert!(
        got.iter().all(|f| f.contains("manylinux_2_17_aarch64")),
        "{got:?}"
    );
    // Without targets: all 45 files of 2.0.0.
    let (got, _) = picked_in("numpy", &page.files, std::slice::from_ref(&pin), &[]);
    assert_eq!(got.len(), 45);
    assert!(got.contains(&"numpy-2.0.0.tar.gz".to_owned()));
}
