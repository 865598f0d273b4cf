//! Table tests of the policy engine: times, modes, untimed files, yanks,
//! deny specifiers, globs and exemptions.

use super::*;

const DAY: Duration = Duration::from_secs(86_400);

fn t(days: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + DAY * u32::try_from(days).unwrap()
}

fn name(s: &str) -> ProjectName {
    ProjectName::parse(s).unwrap()
}

fn glob(s: &str) -> ProjectGlob {
    ProjectGlob::parse(s).unwrap()
}

fn policy(mode: CooldownMode, untimed: Untimed) -> Policy {
    Policy {
        cooldown: Cooldown {
            min_age: DAY * 7,
            mode,
            untimed,
            exempt: vec![glob("acme-*")],
            overrides: vec![(glob("fast-moving"), DAY)],
        },
        yanks: vec![
            Rule::new("setuptools", Some("==78.0.1"), Some("breaks builds".into())).unwrap(),
        ],
        deny: vec![
            Rule::new("evil-*", None, None).unwrap(),
            Rule::new("requests", Some(">=9"), Some("not yet vetted".into())).unwrap(),
        ],
    }
}

#[test]
fn verdicts() {
    let now = t(100);
    let young = |refuse| Verdict::Young {
        until: Some(t(95) + DAY * 7),
        refuse,
    };
    // (mode, untimed, project, file, uploaded day, first seen day, verdict)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        CooldownMode,
        Untimed,
        &str,
        &str,
        Option<u64>,
        Option<u64>,
        Verdict,
    )> = vec![
        // Cooldown by upload time.
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "numpy",
            "numpy-2.0-cp312-none-any.whl",
            Some(95),
            None,
            young(false),
        ),
        (
            CooldownMode::Deny,
            Untimed::Allow,
            "numpy",
            "numpy-2.0-cp312-none-any.whl",
            Some(95),
            None,
            young(true),
        ),
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "numpy",
            "numpy-1.0.tar.gz",
            Some(80),
            None,
            Verdict::Serve,
        ),
        // Exactly at maturity: served.
        (
            CooldownMode::Deny,
            Untimed::Allow,
            "numpy",
            "numpy-1.0.tar.gz",
            Some(93),
            None,
            Verdict::Serve,
        ),
        // Exempt by glob; a per-project age.
        (
            CooldownMode::Deny,
            Untimed::Allow,
            "acme-tools",
            "acme_tools-1.0-py3-none-any.whl",
            Some(99),
            None,
            Verdict::Serve,
        ),
        (
            CooldownMode::Deny,
            Untimed::Allow,
            "fast-moving",
            "fast_moving-1.0.tar.gz",
            Some(98),
            None,
            Verdict::Serve,
        ),
        (
            CooldownMode::Deny,
            Untimed::Allow,
            "fast-moving",
            "fast_moving-1.1.tar.gz",
            Some(100),
            None,
            Verdict::Young {
                until: Some(t(101)),
                refuse: true,
            },
        ),
        // Untimed files.
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "numpy",
            "numpy-2.0.tar.gz",
            None,
            Some(99),
            Verdict::Serve,
        ),
        (
            CooldownMode::Hide,
            Untimed::FirstSeen,
            "numpy",
            "numpy-2.0.tar.gz",
            None,
            Some(99),
            Verdict::Young {
                until: Some(t(106)),
                refuse: false,
            },
        ),
        (
            CooldownMode::Hide,
            Untimed::FirstSeen,
            "numpy",
            "numpy-2.0.tar.gz",
            None,
            Some(50),
            Verdict::Serve,
        ),
        (
            CooldownMode::Deny,
            Untimed::Deny,
            "numpy",
            "numpy-2.0.tar.gz",
            None,
            None,
            Verdict::Young {
                until: None,
                refuse: true,
            },
        ),
        // Yanks: only the matching version, only once mature.
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "setuptools",
            "setuptools-78.0.1-py3-none-any.whl",
            Some(10),
            None,
            Verdict::Yank("breaks builds".into()),
        ),
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "setuptools",
            "setuptools-78.0.2-py3-none-any.whl",
            Some(10),
            None,
            Verdict::Serve,
        ),
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "setuptools",
            "setuptools-78.0.1.tar.gz",
            Some(99),
            None,
            young(false).with_until(t(106)),
        ),
        // Deny: whole projects by glob, versions by specifier, before all.
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "evil-pkg",
            "evil_pkg-1.0.tar.gz",
            Some(1),
            None,
            Verdict::Deny("denied by the site's policy (evil-*)".into()),
        ),
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "requests",
            "requests-9.0.0-py3-none-any.whl",
            Some(1),
            None,
            Verdict::Deny("not yet vetted".into()),
        ),
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "requests",
            "requests-8.9.9-py3-none-any.whl",
            Some(1),
            None,
            Verdict::Serve,
        ),
        // A file whose version cannot be read escapes version rules only.
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "requests",
            "requests-latest.tar.gz",
            Some(1),
            None,
            // Fail closed: no version, so the version rule denies it.
            Verdict::Deny(
                "denied by the site's policy (requests >=9): the version of \
                 requests-latest.tar.gz cannot be read from its name"
                    .into(),
            ),
        ),
        (
            CooldownMode::Hide,
            Untimed::Allow,
            "requests",
            "requests-9.1.tar.lzma",
            Some(1),
            None,
            Verdict::Deny("not yet vetted".into()),
        ),
    ];
    for (mode, untimed, project, file, up, seen, want) in cases {
        let p = policy(mode, untimed);
        let project = name(project);
        let f = Facts {
            project: &project,
            filename: file,
            uploaded: up.map(t),
            first_seen: seen.map(t),
        };
        assert_eq!(p.verdict(&f, now), want, "{mode:?} {untimed:?} {file}");
    }
}

impl Verdict {
    fn with_until(self, until: SystemTime) -> Verdict {
        match self {
            Verdict::Young { refuse, .. } => Verdict::Young {
                until: Some(until),
                refuse,
            },
            v => v,
        }
    }
}

#[test]
fn listings_refusals_and_rules() {
    let young = Verdict::Young {
        until: Some(t(3)),
        refuse: false,
    };
    assert!(!young.listed());
    assert_eq!(young.refusal(), None, "hide mode serves a direct request");
    let refused = Verdict::Young {
        until: Some(t(3)),
        refuse: true,
    };
    assert!(refused.refusal().unwrap().contains("1970-01-04T00:00:00Z"));
    assert!(Verdict::Yank("x".into()).listed());
    assert_eq!(Verdict::Deny("no".into()).refusal().as_deref(), Some("no"));
    assert_eq!(Verdict::Serve.rule(), None);
    assert_eq!(young.rule(), Some("cooldown"));
    let p = policy(CooldownMode::Hide, Untimed::Allow);
    assert!(p.project_denied(&name("evil-thing")).is_some());
    assert!(
        p.project_denied(&name("requests")).is_none(),
        "only some versions"
    );
    assert!(Policy::default().is_empty());
    assert!(!p.is_empty());
}

#[test]
fn versions_from_file_names() {
    for (project, file, want) in [
        (
            "numpy",
            "numpy-2.1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
            Some("2.1.0"),
        ),
        (
            "python-dateutil",
            "python-dateutil-2.8.2.tar.gz",
            Some("2.8.2"),
        ),
        (
            "python-dateutil",
            "python_dateutil-2.9.0.post0.tar.gz",
            Some("2.9.0.post0"),
        ),
        ("zope-interface", "zope.interface-6.0.zip", Some("6.0")),
        (
            "setuptools",
            "setuptools-78.0.1-py3-none-any.whl",
            Some("78.0.1"),
        ),
        ("numpy", "numpy-latest.tar.gz", None),
        ("numpy", "scipy-1.0.tar.gz", None),
        ("numpy", "numpy-1.0.exe", None),
    ] {
        let got = version_of(&name(project), file).map(|v| v.to_string());
        assert_eq!(got.as_deref(), want, "{file}");
    }
}

#[test]
fn globs_ages_and_times() {
    let g = glob("Acme_*");
    assert!(g.matches(&name("acme-tools")));
    assert!(g.matches(&name("acme.tools")));
    assert!(!g.matches(&name("not-acme")));
    assert!(ProjectGlob::parse("").is_err());
    assert!(ProjectGlob::parse("[").is_err());
    assert_eq!(parse_age("7d").unwrap(), DAY * 7);
    assert_eq!(parse_age("12h").unwrap(), Duration::from_secs(43_200));
    assert_eq!(parse_age("1w").unwrap(), DAY * 7);
    assert_eq!(parse_age("0").unwrap(), Duration::ZERO);
    assert!(parse_age("soon").is_err());
    assert!(Rule::new("x", Some("=>1"), None).is_err());
    assert_eq!(
        parse_upload_time("2024-01-02T03:04:05.123456Z"),
        Some(SystemTime::UNIX_EPOCH + Duration::from_micros(1_704_164_645_123_456))
    );
    assert_eq!(
        parse_upload_time("2024-01-02T03:04:05Z"),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645))
    );
    assert_eq!(parse_upload_time("yesterday"), None);
}

/// Every date edge through parsing, the verdict and its refusal text:
/// no panic, and what is past the clock's end is held, not served.
#[test]
fn date_edges() {
    let p = policy(CooldownMode::Deny, Untimed::Allow);
    let project = name("demo");
    let now = SystemTime::now();
    let cases = [
        ("9999-12-31T23:59:59Z", true),
        ("9999-12-31T00:00:00.999999Z", true),
        ("1970-01-01T00:00:00Z", false),
        ("2024-02-29T12:00:00Z", false),
        ("10000-01-01T00:00:00Z", false),
        ("0000-01-01T00:00:00Z", false),
        ("1969-12-31T23:59:59Z", false),
        ("-0001-01-01T00:00:00Z", false),
        ("2024-13-01T00:00:00Z", false),
        ("", false),
    ];
    for (text, held) in cases {
        let uploaded = parse_upload_time(text);
        let v = p.verdict(
            &Facts {
                project: &project,
                filename: "demo-1.0.tar.gz",
                uploaded,
                first_seen: None,
            },
            now,
        );
        assert_eq!(!v.listed(), held, "{text}: {v:?}");
        if let Some(reason) = v.refusal() {
            assert!(reason.contains("9999-12-31T23:59:59Z"), "{text}: {reason}");
        }
    }
    assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(latest() + Duration::from_secs(86_400 * 400)),
        "9999-12-31T23:59:59Z"
    );
    assert!(parse_age("10000y").unwrap_err().contains("100 years"));
    assert_eq!(parse_age("100y").unwrap(), MAX_AGE);
}
