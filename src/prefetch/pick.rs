//! Which of a page's files a lock wants (pure): the files it names (their
//! hashes checked against the index's), the files with its `--hash`es,
//! or the newest allowed version's; then, per target, the ones that
//! install there (`tags`) and whose `requires-python` admits it.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use super::locks::{Named, Pick};
use super::tags::{self, Target};
use crate::pypi::ProjectName;

/// Wanted files a page lacks: (what, why).
pub(super) type Missing = Vec<(String, String)>;

/// A page's file, as PEP 691 JSON lists it.
#[derive(serde::Deserialize)]
pub(super) struct PageFile {
    pub filename: String,
    pub url: String,
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
    pub size: Option<u64>,
    #[serde(default)]
    pub yanked: serde_json::Value,
    #[serde(rename = "requires-python")]
    pub requires_python: Option<String>,
}

/// Whether a file's `requires-python` admits the target's Python (its
/// newest patch release); unset or unreadable: yes.
pub(super) fn runs_on(requires_python: Option<&str>, target: &Target) -> bool {
    let (Some(spec), Some((major, minor))) = (requires_python, target.python) else {
        return true;
    };
    match pep440_rs::VersionSpecifiers::from_str(spec) {
        Ok(spec) => spec.contains(&pep440_rs::Version::new([
            u64::from(major),
            u64::from(minor),
            99,
        ])),
        Err(_) => true,
    }
}

/// The files of a page that `picks` want for `targets`, and the wanted
/// ones the page lacks, each with its reason.
pub(super) fn pick_files<'p>(
    project: &ProjectName,
    files: &'p [PageFile],
    picks: &[Pick],
    targets: &[Target],
) -> (Vec<&'p PageFile>, Missing) {
    let mut missing = Vec::new();
    let mut chosen: Vec<&PageFile> = Vec::new();
    for pick in picks {
        let candidates = match pick {
            Pick::Files(named) => named_files(project, files, named, &mut missing),
            Pick::Hashes(hashes) => hashed_files(project, files, hashes, &mut missing),
            Pick::Versions(spec) => version_files(project, files, spec, &mut missing),
        };
        let keep: BTreeSet<&str> = if targets.is_empty() {
            candidates.iter().map(|f| f.filename.as_str()).collect()
        } else {
            targets
                .iter()
                .flat_map(|t| {
                    // A file whose Requires-Python excludes the target's
                    // (a lock's version split by Python) is not for it.
                    let names: Vec<&str> = candidates
                        .iter()
                        .filter(|f| runs_on(f.requires_python.as_deref(), t))
                        .map(|f| f.filename.as_str())
                        .collect();
                    tags::choose(&names, t)
                })
                .collect()
        };
        chosen.extend(
            candidates
                .into_iter()
                .filter(|f| keep.contains(f.filename.as_str())),
        );
    }
    (chosen, missing)
}

/// The files a lock names, each with the sha256 it gives checked.
fn named_files<'p>(
    project: &ProjectName,
    files: &'p [PageFile],
    named: &[Named],
    missing: &mut Missing,
) -> Vec<&'p PageFile> {
    named
        .iter()
        .filter_map(|n| {
            let found = files.iter().find(|f| f.filename == n.filename);
            let sha = found.and_then(|f| f.hashes.get("sha256"));
            match (found, &n.sha256, sha) {
                (None, _, _) => missing.push((
                    n.filename.clone(),
                    format!("not on the index's page for {}", project.as_str()),
                )),
                (Some(_), Some(want), Some(have)) if !want.eq_ignore_ascii_case(have) => missing
                    .push((
                        n.filename.clone(),
                        format!("the lock's sha256 {want} differs from the index's {have}"),
                    )),
                (Some(f), _, _) => return Some(f),
            }
            None
        })
        .collect()
}

/// The files whose sha256 is one of `hashes`.
fn hashed_files<'p>(
    project: &ProjectName,
    files: &'p [PageFile],
    hashes: &[String],
    missing: &mut Missing,
) -> Vec<&'p PageFile> {
    let found: Vec<&PageFile> = files
        .iter()
        .filter(|f| {
            f.hashes
                .get("sha256")
                .is_some_and(|h| hashes.iter().any(|w| w.eq_ignore_ascii_case(h)))
        })
        .collect();
    if found.is_empty() {
        missing.push((
            project.as_str().to_owned(),
            "no file on the index has one of the locked hashes".into(),
        ));
    }
    found
}

/// The files of the newest version `spec` allows: not yanked, unless only
/// a yanked one matches (PEP 592: a pin may name a yanked release).
fn version_files<'p>(
    project: &ProjectName,
    files: &'p [PageFile],
    spec: &pep440_rs::VersionSpecifiers,
    missing: &mut Missing,
) -> Vec<&'p PageFile> {
    let of = |f: &PageFile| crate::pypi::filename::version_of(project, &f.filename);
    let yanked = |f: &PageFile| {
        !matches!(
            f.yanked,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        )
    };
    let newest = |with_yanked: bool| {
        files
            .iter()
            .filter(|f| with_yanked || !yanked(f))
            .filter_map(of)
            .filter(|v| spec.contains(v))
            .max()
    };
    match newest(false).or_else(|| newest(true)) {
        Some(v) => files
            .iter()
            .filter(|f| of(f).as_ref() == Some(&v))
            .collect(),
        None => {
            missing.push((
                project.as_str().to_owned(),
                format!("no version on the index matches {spec}"),
            ));
            Vec::new()
        }
    }
}
