//! Which wheels a target machine installs (PEP 425 tags, pure): the
//! `--platform` and `--python` of `roxpi prefetch`. A wheel fits a target
//! when one of its platform tags runs there and one of its python/abi pairs
//! suits the interpreter; among the wheels that fit, the installer takes
//! the most specific one, and so does `best`.

/// One machine to prefetch for: a platform tag and a Python version, each
/// optional (unset: any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub platform: Option<String>,
    /// (major, minor), e.g. (3, 12).
    pub python: Option<(u32, u32)>,
}

/// `3.12` → (3, 12); `312` and `3` are refused.
pub fn parse_python(s: &str) -> Result<(u32, u32), String> {
    let (major, minor) = s
        .trim()
        .split_once('.')
        .ok_or_else(|| format!("--python {s:?}: expected MAJOR.MINOR, e.g. 3.12"))?;
    match (major.parse(), minor.parse()) {
        (Ok(a), Ok(b)) if a == 3 || a == 2 => Ok((a, b)),
        _ => Err(format!("--python {s:?}: expected MAJOR.MINOR, e.g. 3.12")),
    }
}

/// The tags of a wheel's file name: (python tags, abi tags, platform tags),
/// each split at its dots; `None` if `filename` is not a wheel's.
fn wheel_tags(filename: &str) -> Option<(Vec<&str>, Vec<&str>, Vec<&str>)> {
    let stem = filename
        .get(..filename.len().checked_sub(4)?)
        .filter(|_| filename.to_ascii_lowercase().ends_with(".whl"))?;
    let parts: Vec<&str> = stem.split('-').collect();
    if !(5..=6).contains(&parts.len()) {
        return None;
    }
    let n = parts.len();
    Some((
        parts[n - 3].split('.').collect(),
        parts[n - 2].split('.').collect(),
        parts[n - 1].split('.').collect(),
    ))
}

/// A manylinux, musllinux or macOS tag: (family, version, arch).
fn platform_parts(tag: &str) -> Option<(&'static str, (u32, u32), &str)> {
    let legacy = [
        ("manylinux1_", (2, 5)),
        ("manylinux2010_", (2, 12)),
        ("manylinux2014_", (2, 17)),
    ];
    for (prefix, v) in legacy {
        if let Some(arch) = tag.strip_prefix(prefix) {
            return Some(("manylinux", v, arch));
        }
    }
    for family in ["manylinux", "musllinux", "macosx"] {
        if let Some(rest) = tag.strip_prefix(family).and_then(|r| r.strip_prefix('_')) {
            let mut it = rest.splitn(3, '_');
            let major = it.next()?.parse().ok()?;
            let minor = it.next()?.parse().ok()?;
            return Some((family, (major, minor), it.next()?));
        }
    }
    None
}

/// How well a wheel's platform tag suits the target's (0: not at all; 1:
/// `any`; higher: more specific), the way pip orders its tags.
fn platform_rank(wheel: &str, target: &str) -> u32 {
    if wheel == "any" {
        return 1;
    }
    if wheel == target {
        return 1_000_000;
    }
    match (platform_parts(wheel), platform_parts(target)) {
        (Some((wf, wv, wa)), Some((tf, tv, ta))) if wf == tf && wv <= tv => {
            let arch_fits = wa == ta
                || (wf == "macosx" && matches!((wa, ta), ("universal2", "arm64" | "x86_64")));
            if arch_fits && (wf == "macosx" || wv.0 == tv.0) {
                2 + wv.0 * 100 + wv.1 + if wa == ta { 100_000 } else { 0 }
            } else {
                0
            }
        }
        _ => 0,
    }
}

/// How well a wheel's python/abi pair suits Python `py` (0: not at all).
fn python_rank(python: &str, abi: &str, (major, minor): (u32, u32)) -> u32 {
    let cp = format!("cp{major}{minor}");
    if python == cp && abi == cp {
        return 3;
    }
    if abi == "abi3" {
        if let Some(v) = python.strip_prefix(&format!("cp{major}")) {
            if v.parse::<u32>().is_ok_and(|m| m <= minor) {
                return 2;
            }
        }
        return 0;
    }
    if abi != "none" {
        return 0;
    }
    let generic = python == format!("py{major}")
        || python == format!("py{major}{minor}")
        || python == cp
        || python
            .strip_prefix(&format!("py{major}"))
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|m| m <= minor);
    u32::from(generic)
}

/// How well `filename` suits `target`: `None` if it is not a wheel (an
/// sdist suits every target), `Some(0)` if it does not install there,
/// higher for a better fit.
pub fn rank(filename: &str, target: &Target) -> Option<u64> {
    let (pythons, abis, platforms) = wheel_tags(filename)?;
    let plat = match &target.platform {
        None => 1,
        Some(t) => platforms
            .iter()
            .map(|p| platform_rank(p, t))
            .max()
            .unwrap_or(0),
    };
    let py = match target.python {
        None => 1,
        Some(v) => pythons
            .iter()
            .flat_map(|p| abis.iter().map(move |a| python_rank(p, a, v)))
            .max()
            .unwrap_or(0),
    };
    Some(if plat == 0 || py == 0 {
        0
    } else {
        u64::from(py) << 32 | u64::from(plat)
    })
}

/// Of `files` (names), those to fetch for `target`: with a Python version,
/// the best wheel (what the installer takes); without one, every wheel that
/// installs on the platform (one per interpreter). The sdists when no
/// wheel fits. With neither set, every file.
pub fn choose<'a>(files: &[&'a str], target: &Target) -> Vec<&'a str> {
    if target.platform.is_none() && target.python.is_none() {
        return files.to_vec();
    }
    let fitting: Vec<(&str, u64)> = files
        .iter()
        .filter_map(|f| rank(f, target).map(|r| (*f, r)))
        .filter(|(_, r)| *r > 0)
        .collect();
    if fitting.is_empty() {
        return files
            .iter()
            .copied()
            .filter(|f| rank(f, target).is_none())
            .collect();
    }
    if target.python.is_some() {
        let best = fitting.iter().map(|(_, r)| *r).max().unwrap_or(0);
        // Ties (one wheel per build tag) all stay: the installer may take any.
        return fitting
            .into_iter()
            .filter(|(_, r)| *r == best)
            .map(|(f, _)| f)
            .collect();
    }
    fitting.into_iter().map(|(f, _)| f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(platform: Option<&str>, python: Option<(u32, u32)>) -> Target {
        Target {
            platform: platform.map(str::to_owned),
            python,
        }
    }

    #[test]
    fn ranks_by_platform_and_python() {
        let arm = t(Some("manylinux_2_28_aarch64"), Some((3, 12)));
        let cases = [
            ("a-1-py3-none-any.whl", true),
            (
                "a-1-cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
                true,
            ),
            ("a-1-cp312-cp312-manylinux_2_28_aarch64.whl", true),
            ("a-1-cp312-cp312-manylinux_2_34_aarch64.whl", false),
            ("a-1-cp312-cp312-manylinux_2_17_x86_64.whl", false),
            ("a-1-cp311-cp311-manylinux_2_17_aarch64.whl", false),
            ("a-1-cp38-abi3-manylinux_2_17_aarch64.whl", true),
            ("a-1-cp313-abi3-manylinux_2_17_aarch64.whl", false),
            ("a-1-cp313-cp313t-manylinux_2_17_aarch64.whl", false),
            ("a-1-pp310-pypy310_pp73-manylinux_2_17_aarch64.whl", false),
            ("a-1-py2.py3-none-any.whl", true),
            ("a-1-cp312-cp312-musllinux_1_2_aarch64.whl", false),
            ("a-1-cp312-cp312-win_amd64.whl", false),
            ("a-1-cp312-cp312-manylinux1_aarch64.whl", true),
            ("a-1-1build-cp312-cp312-manylinux_2_17_aarch64.whl", true),
        ];
        for (file, fits) in cases {
            assert_eq!(rank(file, &arm).map(|r| r > 0), Some(fits), "{file}");
        }
        assert_eq!(rank("a-1.tar.gz", &arm), None);
        let mac = t(Some("macosx_14_0_arm64"), None);
        assert!(rank("a-1-cp312-cp312-macosx_11_0_universal2.whl", &mac).unwrap() > 0);
        assert_eq!(rank("a-1-cp312-cp312-macosx_15_0_arm64.whl", &mac), Some(0));
        assert_eq!(
            rank("a-1-cp312-cp312-macosx_10_9_x86_64.whl", &mac),
            Some(0)
        );
    }

    #[test]
    fn chooses_what_the_installer_takes() {
        let files = [
            "np-2.0-cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
            "np-2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "np-2.0-cp313-cp313-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
            "np-2.0-cp312-cp312-win_amd64.whl",
            "np-2.0.tar.gz",
        ];
        let arm = "manylinux_2_28_aarch64";
        let cases: [(Target, &[&str]); 5] = [
            (t(None, None), &files),
            (t(Some(arm), Some((3, 12))), &[files[0]]),
            (t(Some(arm), None), &[files[0], files[2]]),
            (t(Some("win_amd64"), Some((3, 12))), &[files[3]]),
            (t(Some("musllinux_1_2_aarch64"), Some((3, 12))), &[files[4]]),
        ];
        for (target, want) in cases {
            assert_eq!(choose(&files, &target), want, "{target:?}");
        }
        // A pure wheel beats the sdist; a specific one beats the pure one.
        let mixed = [
            "x-1-py3-none-any.whl",
            "x-1-cp312-cp312-manylinux_2_17_aarch64.whl",
            "x-1.tar.gz",
        ];
        assert_eq!(choose(&mixed, &t(Some(arm), Some((3, 12)))), [mixed[1]]);
        assert_eq!(
            choose(&mixed, &t(Some("win_amd64"), Some((3, 12)))),
            [mixed[0]]
        );
    }

    #[test]
    fn python_versions() {
        assert_eq!(parse_python("3.12"), Ok((3, 12)));
        for bad in ["312", "3", "x.y", "4.0", ""] {
            assert!(parse_python(bad).is_err(), "{bad}");
        }
    }
}
