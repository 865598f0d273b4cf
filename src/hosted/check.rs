//! What an upload must be before roxpi keeps it (pure, table-tested):
//! its file name is a valid distribution's (PEP 427 wheel, PEP 625 sdist),
//! the form's `name` and `version` are the file's, and a wheel's
//! `METADATA` names the same project and version. Each refusal carries the
//! one-line reason twine prints after "400".

use std::str::FromStr;

use pep440_rs::Version;

use crate::pypi::ProjectName;

/// The kinds of file roxpi hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistKind {
    Wheel,
    Sdist,
}

/// What an upload's file name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dist {
    pub project: ProjectName,
    pub version: Version,
    pub kind: DistKind,
}

/// Why an upload is refused (HTTP 400, the text is the reason).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal(reason.into())
}

/// The longest file name accepted (PyPI's limit is lower than most
/// file systems').
const MAX_FILENAME: usize = 255;

/// Parses an uploaded file's name: `name-version(-build)?-py-abi-plat.whl`
/// (PEP 427, name and version with `-` escaped as `_`) or
/// `name-version.tar.gz` (PEP 625; `.zip` as PyPI still takes it).
pub fn parse_filename(filename: &str) -> Result<Dist, Refusal> {
    let invalid = |why: &str| {
        refuse(format!(
            "Invalid distribution file name {filename:?}: {why}"
        ))
    };
    if filename.is_empty() || filename.len() > MAX_FILENAME {
        return Err(invalid("empty or longer than 255 bytes"));
    }
    if filename.starts_with('.')
        || filename
            .bytes()
            .any(|b| b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f)
    {
        return Err(invalid(
            "a plain file name without paths or control characters",
        ));
    }
    let (kind, stem) = if let Some(stem) = filename.strip_suffix(".whl") {
        (DistKind::Wheel, stem)
    } else if let Some(stem) = filename
        .strip_suffix(".tar.gz")
        .or_else(|| filename.strip_suffix(".zip"))
    {
        (DistKind::Sdist, stem)
    } else {
        return Err(invalid("expected .whl, .tar.gz or .zip"));
    };
    let parts: Vec<&str> = stem.split('-').collect();
    let (name, version) = match kind {
        DistKind::Wheel => {
            if !(5..=6).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
                return Err(invalid(
                    "a wheel is name-version(-build)-python-abi-platform.whl",
                ));
            }
            if parts.len() == 6 && !parts[2].starts_with(|c: char| c.is_ascii_digit()) {
                return Err(invalid("a wheel's build tag starts with a digit"));
            }
            (parts[0], parts[1])
        }
        DistKind::Sdist => {
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                return Err(invalid(
                    "an sdist is name-version.tar.gz, with - in the name written as _",
                ));
            }
            (parts[0], parts[1])
        }
    };
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err(invalid("the name holds only letters, digits, _ and ."));
    }
    let project = ProjectName::parse(name).map_err(|e| invalid(&format!("name: {e}")))?;
    let version = Version::from_str(&version.replace('_', "-"))
        .map_err(|_| invalid(&format!("{version:?} is not a PEP 440 version")))?;
    Ok(Dist {
        project,
        version,
        kind,
    })
}

/// The form's `name` and `version` must be the file's (normalized names,
/// equal versions: `1.0` and `1.0.0` are the same).
pub fn check_form(dist: &Dist, name: &str, version: &str) -> Result<(), Refusal> {
    let form_name = ProjectName::parse(name.trim())
        .map_err(|e| refuse(format!("Invalid value for name: {e}")))?;
    if form_name != dist.project {
        return Err(refuse(format!(
            "The form's name {name:?} does not match the file's project {:?}",
            dist.project.as_str()
        )));
    }
    let form_version = Version::from_str(version.trim())
        .map_err(|_| refuse(format!("Invalid value for version: {version:?}")))?;
    if form_version != dist.version {
        return Err(refuse(format!(
            "The form's version {version} does not match the file's version {}",
            dist.version
        )));
    }
    Ok(())
}

/// A wheel's METADATA must name the file's project and version.
pub fn check_metadata(dist: &Dist, metadata: &[u8]) -> Result<(), Refusal> {
    let text = String::from_utf8_lossy(metadata);
    // RFC 822 style headers up to the first blank line (the description
    // may follow).
    let header = |key: &str| {
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
            })
    };
    let name = header("Name").ok_or_else(|| refuse("The wheel's METADATA has no Name"))?;
    let version = header("Version").ok_or_else(|| refuse("The wheel's METADATA has no Version"))?;
    if ProjectName::parse(name).ok().as_ref() != Some(&dist.project) {
        return Err(refuse(format!(
            "The wheel's METADATA names the project {name:?}, not {:?}",
            dist.project.as_str()
        )));
    }
    if Version::from_str(version).ok().as_ref() != Some(&dist.version) {
        return Err(refuse(format!(
            "The wheel's METADATA has version {version:?}, not {}",
            dist.version
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let ok = [
            (
                "acme_lib-1.0-py3-none-any.whl",
                "acme-lib",
                "1.0",
                DistKind::Wheel,
            ),
            (
                "Acme.Lib-2.0rc1-1-cp312-cp312-manylinux_2_28_aarch64.whl",
                "acme-lib",
                "2.0rc1",
                DistKind::Wheel,
            ),
            ("acme_lib-1.0.tar.gz", "acme-lib", "1.0", DistKind::Sdist),
            (
                "acme_lib-1.0.post1.zip",
                "acme-lib",
                "1.0.post1",
                DistKind::Sdist,
            ),
            (
                "acme_lib-1.0+local_1-py3-none-any.whl",
                "acme-lib",
                "1.0+local.1",
                DistKind::Wheel,
            ),
        ];
        for (file, project, version, kind) in ok {
            let d = parse_filename(file).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(d.project.as_str(), project, "{file}");
            assert_eq!(d.version.to_string(), version, "{file}");
            assert_eq!(d.kind, kind, "{file}");
        }
        let bad = [
            "",
            "acme-lib-1.0.tar.gz",
            "acme_lib-1.0.tar.bz2",
            "acme_lib-1.0-py3-any.whl",
            "acme_lib-1.0-x-py3-none-any.whl",
            "acme_lib-notaversion.tar.gz",
            "../acme_lib-1.0.tar.gz",
            "acme_lib-1.0.tar.gz\n",
            ".acme_lib-1.0.tar.gz",
            "acme lib-1.0.tar.gz",
            "acme_lib--py3-none-any.whl",
        ];
        for file in bad {
            let e = parse_filename(file).expect_err(file);
            assert!(
                e.0.starts_with("Invalid distribution file name"),
                "{file}: {e}"
            );
        }
        assert!(parse_filename(&format!("{}-1.0.tar.gz", "a".repeat(300))).is_err());
    }

    #[test]
    fn forms_and_metadata_must_match_the_file() {
        let d = parse_filename("acme_lib-1.0-py3-none-any.whl").unwrap();
        assert_eq!(check_form(&d, "Acme.Lib", "1.0.0"), Ok(()));
        for (name, version, want) in [
            ("other", "1.0", "does not match the file's project"),
            ("acme-lib", "1.1", "does not match the file's version"),
            ("acme-lib", "x", "Invalid value for version"),
            ("", "1.0", "Invalid value for name"),
        ] {
            let e = check_form(&d, name, version).unwrap_err();
            assert!(e.0.contains(want), "{name} {version}: {e}");
        }
        let meta = |name: &str, version: &str| {
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nName: body-text\n")
        };
        assert_eq!(
            check_metadata(&d, meta("acme_lib", "1.0").as_bytes()),
            Ok(())
        );
        for (m, want) in [
            (meta("evil", "1.0"), "names the project \"evil\""),
            (meta("acme-lib", "2.0"), "has version \"2.0\""),
            (
                "Metadata-Version: 2.1\nVersion: 1.0\n".to_owned(),
                "has no Name",
            ),
            (
                "Metadata-Version: 2.1\n\nName: acme-lib\nVersion: 1.0\n".to_owned(),
                "has no Name",
            ),
        ] {
            let e = check_metadata(&d, m.as_bytes()).unwrap_err();
            assert!(e.0.contains(want), "{m:?}: {e}");
        }
    }
}
