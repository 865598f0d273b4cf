//! The configuration file (`ROXPI_CONFIG`, TOML): the site's policy, the
//! indexes with their dependency-confusion guards, and extra routes. Typed
//! structs; an unknown key is an error that names the key and its line.
//! Flags and environment variables override what the file says.

use serde::Deserialize;

use crate::policy::{self, CooldownMode, Policy, ProjectGlob, Rule, Untimed};

/// The whole file. The policy keys are repeated here rather than
/// flattened from `PolicyFields`: serde cannot flatten a struct into one
/// that denies unknown keys, and an unknown key must be an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub min_release_age: Option<String>,
    pub cooldown_mode: Option<Mode>,
    pub untimed: Option<UntimedFiles>,
    #[serde(default)]
    pub cooldown_exempt: Vec<String>,
    /// Per-project ages: `cooldown = [{ project = "numpy", min-release-age = "1d" }]`.
    #[serde(default)]
    pub cooldown: Vec<CooldownEntry>,
    #[serde(default)]
    pub yank: Vec<RuleEntry>,
    #[serde(default)]
    pub deny: Vec<RuleEntry>,
    /// `None`: no `[[index]]` (the variables name the indexes); an empty
    /// list (`index = []`) is an error, never a silent fallback.
    pub index: Option<Vec<IndexEntry>>,
    #[serde(default)]
    pub route: Vec<RouteEntry>,
    /// Hosted indexes: uploads kept by roxpi itself.
    #[serde(default)]
    pub hosted: Vec<HostedEntry>,
}

/// `[[hosted]]`: an index roxpi hosts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostedEntry {
    pub name: String,
    /// Its own upload token (else ROXPI_UPLOAD_TOKEN).
    pub upload_token: Option<String>,
    /// Projects (globs) that may also come from the upstream indexes.
    #[serde(default)]
    pub allow_upstream: Vec<String>,
    /// Reading its projects needs this token.
    pub read_token: Option<String>,
}

/// The policy keys: at the top of the file (the site's policy), or in a
/// route's `policy` table (see `PolicyFields::under_route`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyFields {
    pub min_release_age: Option<String>,
    pub cooldown_mode: Option<Mode>,
    pub untimed: Option<UntimedFiles>,
    #[serde(default)]
    pub cooldown_exempt: Vec<String>,
    #[serde(default)]
    pub cooldown: Vec<CooldownEntry>,
    #[serde(default)]
    pub yank: Vec<RuleEntry>,
    #[serde(default)]
    pub deny: Vec<RuleEntry>,
}

impl PolicyFields {
    /// A route's policy: the site's (`self`), with the cooldown keys the
    /// route names in its `policy` table replacing the site's, and the
    /// route's `yank` and `deny` rules added to the site's. A route can
    /// never lift a site rule.
    pub fn under_route(&self, route: &PolicyFields) -> PolicyFields {
        fn or_site<T: Clone>(own: &[T], site: &[T]) -> Vec<T> {
            if own.is_empty() { site } else { own }.to_vec()
        }
        PolicyFields {
            min_release_age: route
                .min_release_age
                .clone()
                .or_else(|| self.min_release_age.clone()),
            cooldown_mode: route.cooldown_mode.or(self.cooldown_mode),
            untimed: route.untimed.or(self.untimed),
            cooldown_exempt: or_site(&route.cooldown_exempt, &self.cooldown_exempt),
            cooldown: or_site(&route.cooldown, &self.cooldown),
            yank: self.yank.iter().chain(&route.yank).cloned().collect(),
            deny: self.deny.iter().chain(&route.deny).cloned().collect(),
        }
    }
}

impl FileConfig {
    /// The site's policy keys.
    pub fn policy(&self) -> PolicyFields {
        PolicyFields {
            min_release_age: self.min_release_age.clone(),
            cooldown_mode: self.cooldown_mode,
            untimed: self.untimed,
            cooldown_exempt: self.cooldown_exempt.clone(),
            cooldown: self.cooldown.clone(),
            yank: self.yank.clone(),
            deny: self.deny.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Hide,
    Deny,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UntimedFiles {
    Allow,
    FirstSeen,
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CooldownEntry {
    pub project: String,
    pub min_release_age: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleEntry {
    pub project: String,
    pub versions: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IndexEntry {
    pub url: String,
    /// Seconds.
    pub ttl: Option<f64>,
    /// This index serves only these projects (globs), and they are taken
    /// from no other index.
    #[serde(default)]
    pub only: Vec<String>,
    /// This index never serves these projects (globs).
    #[serde(default)]
    pub never: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouteEntry {
    /// `/pytorch-cu121/simple/`.
    pub prefix: String,
    /// Index URLs, root first.
    pub indexes: Vec<String>,
    pub strategy: Option<String>,
    /// Seconds, for every index of the route.
    pub ttl: Option<f64>,
    /// What the route changes in the site's policy: cooldown keys replace
    /// the site's, rules add to them (`PolicyFields::under_route`).
    pub policy: Option<PolicyFields>,
    /// Reading the route needs this token.
    pub read_token: Option<String>,
    /// Hosted indexes (`[[hosted]]` names) listed on the route too.
    #[serde(default)]
    pub hosted: Vec<String>,
}

/// Why the file cannot be used (the message names the key and its line,
/// or the rule).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FileError {
    pub path: String,
    pub message: String,
}

impl FileConfig {
    /// Parses the file's text (`path` only for messages).
    pub fn parse(path: &str, text: &str) -> Result<FileConfig, FileError> {
        toml::from_str(text).map_err(|e| FileError {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Reads and parses `path`.
    pub fn read(path: &std::path::Path) -> Result<FileConfig, FileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            path: shown.clone(),
            message: format!("cannot read it (ROXPI_CONFIG): {e}"),
        })?;
        FileConfig::parse(&shown, &text)
    }
}

/// Policy settings from flags or the environment, which win over the file.
#[derive(Debug, Default, Clone)]
pub struct PolicyOverrides {
    pub min_release_age: Option<String>,
    pub cooldown_mode: Option<String>,
    pub untimed: Option<String>,
}

/// The policy from the file and the overrides.
pub fn build_policy(
    file: &PolicyFields,
    over: &PolicyOverrides,
    path: &str,
) -> Result<Policy, FileError> {
    let err = |message: String| FileError {
        path: path.to_owned(),
        message,
    };
    let age_text = over
        .min_release_age
        .as_deref()
        .or(file.min_release_age.as_deref())
        .unwrap_or("0");
    let min_age = policy::parse_age(age_text).map_err(|e| err(format!("min-release-age: {e}")))?;
    let mode = match over.cooldown_mode.as_deref().map(str::trim) {
        Some("hide") => CooldownMode::Hide,
        Some("deny") => CooldownMode::Deny,
        Some(other) => {
            return Err(err(format!(
                "cooldown-mode (ROXPI_COOLDOWN_MODE): {other:?} is not hide or deny"
            )))
        }
        None => match file.cooldown_mode {
            Some(Mode::Deny) => CooldownMode::Deny,
            Some(Mode::Hide) | None => CooldownMode::Hide,
        },
    };
    let untimed = match over.untimed.as_deref().map(str::trim) {
        Some("allow") => Untimed::Allow,
        Some("first-seen") => Untimed::FirstSeen,
        Some("deny") => Untimed::Deny,
        Some(other) => {
            return Err(err(format!(
                "untimed (ROXPI_UNTIMED): {other:?} is not allow, first-seen or deny"
            )))
        }
        None => match file.untimed {
            Some(UntimedFiles::FirstSeen) => Untimed::FirstSeen,
            Some(UntimedFiles::Deny) => Untimed::Deny,
            Some(UntimedFiles::Allow) | None => Untimed::Allow,
        },
    };
    let glob = |g: &str, what: &str| ProjectGlob::parse(g).map_err(|e| err(format!("{what}: {e}")));
    let exempt = file
        .cooldown_exempt
        .iter()
        .map(|g| glob(g, "cooldown-exempt"))
        .collect::<Result<Vec<_>, _>>()?;
    let overrides = file
        .cooldown
        .iter()
        .map(|c| {
            let age = policy::parse_age(&c.min_release_age)
                .map_err(|e| err(format!("cooldown for {}: {e}", c.project)))?;
            Ok((glob(&c.project, "cooldown")?, age))
        })
        .collect::<Result<Vec<_>, FileError>>()?;
    let rules = |entries: &[RuleEntry], what: &str| {
        entries
            .iter()
            .map(|r| {
                Rule::new(&r.project, r.versions.as_deref(), r.reason.clone())
                    .map_err(|e| err(format!("{what} rule for {}: {e}", r.project)))
            })
            .collect::<Result<Vec<_>, FileError>>()
    };
    Ok(Policy {
        cooldown: policy::Cooldown {
            min_age,
            mode,
            untimed,
            exempt,
            overrides,
        },
        yanks: rules(&file.yank, "yank")?,
        deny: rules(&file.deny, "deny")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
min-release-age = "7d"
cooldown-mode = "hide"
untimed = "first-seen"
cooldown-exempt = ["acme-*"]
cooldown = [{ project = "numpy", min-release-age = "1d" }]
yank = [{ project = "setuptools", versions = "==78.0.1", reason = "breaks builds" }]
deny = [{ project = "evil-*" }, { project = "requests", versions = ">=9", reason = "not vetted" }]

[[index]]
url = "https://private.example/simple/"
only = ["acme-*"]

[[index]]
url = "https://pypi.org/simple/"
never = ["acme-*"]

[[route]]
prefix = "/pytorch-cu121/simple/"
indexes = ["https://download.pytorch.org/whl/cu121/"]
"#;

    #[test]
    fn the_documented_example_parses() {
        let f = FileConfig::parse("roxpi.toml", EXAMPLE).unwrap();
        assert_eq!(f.index.as_ref().unwrap().len(), 2);
        assert_eq!(f.index.as_ref().unwrap()[0].only, ["acme-*"]);
        assert_eq!(f.route[0].prefix, "/pytorch-cu121/simple/");
        let p = build_policy(&f.policy(), &PolicyOverrides::default(), "roxpi.toml").unwrap();
        assert_eq!(
            p.cooldown.min_age,
            std::time::Duration::from_secs(7 * 86_400)
        );
        assert_eq!(p.cooldown.untimed, Untimed::FirstSeen);
        assert_eq!((p.yanks.len(), p.deny.len()), (1, 2));
    }

    /// The example in docs/policy.md is a valid file.
    #[test]
    fn the_documented_example_file_is_valid() {
        let policy = include_str!("../../docs/policy.md");
        let start = policy.find("```toml\n").unwrap() + "```toml\n".len();
        let block = &policy[start..start + policy[start..].find("```").unwrap()];
        let f = FileConfig::parse("docs/policy.md", block).unwrap();
        assert_eq!(
            (f.index.as_ref().map_or(0, Vec::len), f.route.len()),
            (2, 1)
        );
        let p = build_policy(&f.policy(), &PolicyOverrides::default(), "docs/policy.md").unwrap();
        assert_eq!((p.yanks.len(), p.deny.len()), (1, 2));
        assert!(f.route[0].policy.is_some());
    }

    #[test]
    fn unknown_keys_name_the_key_and_its_line() {
        let text = "min-release-age = \"7d\"\ncooldown-mdoe = \"deny\"\n";
        let e = FileConfig::parse("roxpi.toml", text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cooldown-mdoe"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = FileConfig::parse(
            "r.toml",
            "[[index]]\nurl = \"https://x/\"\nonly = [\"a\"]\nownly = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ownly") && e.contains("line 4"), "{e}");
        let e = FileConfig::parse("r.toml", "cooldown-mode = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("hide"), "{e}");
    }

    #[test]
    fn overrides_win_and_bad_rules_are_named() {
        let f = FileConfig::parse("r.toml", EXAMPLE).unwrap();
        let over = PolicyOverrides {
            min_release_age: Some("0".into()),
            cooldown_mode: Some("deny".into()),
            untimed: None,
        };
        let p = build_policy(&f.policy(), &over, "r.toml").unwrap();
        assert!(p.cooldown.min_age.is_zero());
        assert_eq!(p.cooldown.mode, CooldownMode::Deny);
        let bad = FileConfig::parse(
            "r.toml",
            "deny = [{ project = \"x\", versions = \"=>1\" }]\n",
        )
        .unwrap();
        let e = build_policy(&bad.policy(), &PolicyOverrides::default(), "r.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("deny rule for x"), "{e}");
        let bad_age = PolicyOverrides {
            min_release_age: Some("soon".into()),
            ..Default::default()
        };
        assert!(build_policy(&PolicyFields::default(), &bad_age, "-").is_err());
        let routed = FileConfig::parse(
            "r.toml",
            "[[route]]\nprefix = \"/x/\"\nindexes = [\"https://x.example/\"]\npolicy = { min-release-age = \"1d\", deny = [{ project = \"y\" }] }\n",
        )
        .unwrap();
        let own = routed.route[0].policy.as_ref().unwrap();
        let p = build_policy(own, &PolicyOverrides::default(), "r.toml").unwrap();
        assert_eq!(p.cooldown.min_age, std::time::Duration::from_secs(86_400));
        assert_eq!(p.deny.len(), 1);
        let e = FileConfig::parse(
            "r.toml",
            "[[route]]\nprefix = \"/x/\"\nindexes = []\npolicy = { min-age = \"1d\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("min-age") && e.contains("line 4"), "{e}");
    }
}
