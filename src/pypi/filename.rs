//! What a distribution's file name says: its kind and its version, from one
//! table of the file types pip and uv install or list (wheels, every sdist
//! archive, eggs, Windows installers). The policy's version rules read
//! versions here, so that a rule covers every file type alike.

use std::str::FromStr;

use pep440_rs::Version;

use super::ProjectName;

/// The kinds of distribution files, by how the version is spelt in them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `name-version(-build)?-python-abi-platform.whl` (PEP 427).
    Wheel,
    /// `name-version.<archive>` (PEP 625 and the legacy archive types).
    Sdist,
    /// `name-version(-pyX.Y(-platform)?)?.egg`.
    Egg,
    /// `name-version.<platform>.exe|msi` (bdist_wininst, bdist_msi).
    Installer,
}

/// Every file ending roxpi recognises (lower case), longest first where one
/// ends another (`.tar.gz` before `.gz` is never needed: only full endings
/// are listed).
pub const ENDINGS: &[(&str, Kind)] = &[
    (".whl", Kind::Wheel),
    (".tar.gz", Kind::Sdist),
    (".tgz", Kind::Sdist),
    (".tar.bz2", Kind::Sdist),
    (".tbz", Kind::Sdist),
    (".tar.xz", Kind::Sdist),
    (".txz", Kind::Sdist),
    (".tlz", Kind::Sdist),
    (".tar.lz", Kind::Sdist),
    (".tar.lzma", Kind::Sdist),
    (".tar.z", Kind::Sdist),
    (".tar", Kind::Sdist),
    (".zip", Kind::Sdist),
    (".egg", Kind::Egg),
    (".exe", Kind::Installer),
    (".msi", Kind::Installer),
];

/// The kind of `filename` and its name without the ending.
pub fn kind_of(filename: &str) -> Option<(Kind, &str)> {
    let lower = filename.to_ascii_lowercase();
    ENDINGS.iter().find_map(|(ending, kind)| {
        lower
            .ends_with(ending)
            .then(|| (*kind, &filename[..filename.len() - ending.len()]))
    })
}

/// The stem after `project`'s name as spelt in the file (separators vary:
/// `-`, `_`, `.`), if the file is `project`'s.
fn after_name<'a>(project: &ProjectName, stem: &'a str) -> Option<&'a str> {
    let name = project.as_str();
    let head = stem.get(..name.len())?;
    let same = head
        .chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .eq(name.chars());
    if !same {
        return None;
    }
    stem[name.len()..].strip_prefix('-')
}

/// The version in a distribution's file name (pure), or `None` when it
/// cannot be read: an unknown ending, another project's file, no PEP 440
/// version where the kind puts it.
pub fn version_of(project: &ProjectName, filename: &str) -> Option<Version> {
    let (kind, stem) = kind_of(filename)?;
    let text = match kind {
        Kind::Wheel | Kind::Egg => stem.split('-').nth(1)?,
        Kind::Sdist => after_name(project, stem)?,
        Kind::Installer => {
            let rest = after_name(project, stem)?;
            let lower = rest.to_ascii_lowercase();
            &rest[..lower.find(".win").or_else(|| lower.find(".linux"))?]
        }
    };
    Version::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_every_file_type() {
        let name = |s: &str| ProjectName::parse(s).unwrap();
        let cases = [
            ("pol", "pol-9.7-py3-none-any.whl", Some("9.7")),
            ("pol", "pol-9.7-1-py3-none-any.whl", Some("9.7")),
            ("pol", "pol-9.7.tar.gz", Some("9.7")),
            ("pol", "pol-9.7.tgz", Some("9.7")),
            ("pol", "pol-9.7.tar.bz2", Some("9.7")),
            ("pol", "pol-9.7.tbz", Some("9.7")),
            ("pol", "pol-9.7.tar.xz", Some("9.7")),
            ("pol", "pol-9.7.txz", Some("9.7")),
            ("pol", "pol-9.7.tlz", Some("9.7")),
            ("pol", "pol-9.7.tar.lz", Some("9.7")),
            ("pol", "pol-9.11.tar.lzma", Some("9.11")),
            ("pol", "pol-9.7.tar.Z", Some("9.7")),
            ("pol", "pol-9.7.tar", Some("9.7")),
            ("pol", "POL-9.7.ZIP", Some("9.7")),
            ("pol", "pol-9.7-py3.8.egg", Some("9.7")),
            ("pol", "pol-9.7.egg", Some("9.7")),
            ("pol", "pol-9.7.win32.exe", Some("9.7")),
            ("pol", "pol-9.7.win-amd64-py3.8.exe", Some("9.7")),
            ("pol", "pol-9.7.win-amd64-py3.8.msi", Some("9.7")),
            ("pol", "pol-9.7.linux-x86_64.exe", Some("9.7")),
            ("zope-interface", "zope.interface-6.0.zip", Some("6.0")),
            (
                "python-dateutil",
                "python_dateutil-2.9.0.post0.tar.gz",
                Some("2.9.0.post0"),
            ),
            // Unreadable: the caller fails closed.
            ("pol", "pol-9.7.exe", None),
            ("pol", "pol-9.7.rpm", None),
            ("pol", "pol-latest.tar.gz", None),
            ("pol", "other-9.7.tar.gz", None),
            ("pol", "polka-9.7.tar.gz", None),
            ("pol", "pol.tar.gz", None),
        ];
        for (project, file, want) in cases {
            let got = version_of(&name(project), file).map(|v| v.to_string());
            assert_eq!(got.as_deref(), want, "{file}");
        }
        assert_eq!(kind_of("x-1.tar.Z"), Some((Kind::Sdist, "x-1")));
        assert_eq!(kind_of("x-1.TAR.GZ"), Some((Kind::Sdist, "x-1")));
        assert_eq!(kind_of("x-1.dmg"), None);
    }
}
