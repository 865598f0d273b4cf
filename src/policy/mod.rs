//! The policy layer: what a site says once for every installer — release
//! cooldown, local yanks, deny lists — decided per file, purely, from the
//! file's facts and the time (`Policy::verdict`). The pages apply it to
//! listings, the file route to downloads; `audit` logs and counts every
//! decision that changes an answer.
//!
//! - **Cooldown** (`min-release-age`): a file younger than the age, by its
//!   PEP 700 `upload-time`, is held back. `hide` drops it from listings but
//!   serves it when asked directly (a lock file made before keeps
//!   installing); `deny` also refuses it (403). Files without an upload
//!   time follow `untimed`: `allow`, `first-seen` (the time roxpi first saw
//!   the file on a page, kept on disk), or `deny` (held back for good).
//!   Exempt projects (globs) and per-project ages override the global age.
//! - **Yank** (PEP 592): matching files are listed as yanked with the
//!   reason; installers skip them unless pinned with `==`.
//! - **Deny**: a project glob, optionally with PEP 440 version specifiers:
//!   matching files leave the listings and are refused (403 with the
//!   reason).
//!
//! Precedence: deny, then cooldown, then yank.

pub mod audit;
pub mod first_seen;

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use pep440_rs::{Version, VersionSpecifiers};

use crate::pypi::ProjectName;

/// `hide` or `deny` for files still in their cooldown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CooldownMode {
    #[default]
    Hide,
    Deny,
}

/// What to do with files that carry no upload time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Untimed {
    #[default]
    Allow,
    FirstSeen,
    Deny,
}

/// A project name pattern (`acme-*`), matched against normalised names.
#[derive(Clone, Debug)]
pub struct ProjectGlob {
    text: String,
    pattern: glob::Pattern,
}

impl ProjectGlob {
    pub fn parse(text: &str) -> Result<ProjectGlob, String> {
        // Names are normalised (PEP 503); so is the pattern.
        let norm: String = text
            .trim()
            .chars()
            .map(|c| match c {
                '_' | '.' => '-',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        if norm.is_empty() {
            return Err("an empty project pattern".into());
        }
        let pattern =
            glob::Pattern::new(&norm).map_err(|e| format!("project pattern {text:?}: {e}"))?;
        Ok(ProjectGlob {
            text: text.trim().to_owned(),
            pattern,
        })
    }

    pub fn matches(&self, name: &ProjectName) -> bool {
        self.pattern.matches(name.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A rule over projects and, optionally, versions.
#[derive(Clone, Debug)]
pub struct Rule {
    pub project: ProjectGlob,
    pub versions: Option<VersionSpecifiers>,
    pub reason: Option<String>,
}

impl Rule {
    pub fn new(
        project: &str,
        versions: Option<&str>,
        reason: Option<String>,
    ) -> Result<Rule, String> {
        let versions = versions
            .map(|v| {
                VersionSpecifiers::from_str(v).map_err(|e| format!("version specifiers {v:?}: {e}"))
            })
            .transpose()?;
        Ok(Rule {
            project: ProjectGlob::parse(project)?,
            versions,
            reason: reason.filter(|r| !r.trim().is_empty()),
        })
    }

    /// Whether the rule covers this project and version (a rule with
    /// specifiers never covers a file whose version cannot be read).
    fn covers(&self, project: &ProjectName, version: Option<&Version>) -> bool {
        if !self.project.matches(project) {
            return false;
        }
        match (&self.versions, version) {
            (None, _) => true,
            (Some(s), Some(v)) => s.contains(v),
            (Some(_), None) => false,
        }
    }

    /// The rule as written, for messages and the audit log.
    pub fn describe(&self) -> String {
        match &self.versions {
            Some(v) => format!("{} {v}", self.project.as_str()),
            None => self.project.as_str().to_owned(),
        }
    }
}

/// The cooldown settings.
#[derive(Clone, Debug, Default)]
pub struct Cooldown {
    /// Zero: off.
    pub min_age: Duration,
    pub mode: CooldownMode,
    pub untimed: Untimed,
    pub exempt: Vec<ProjectGlob>,
    /// Per-project ages (first match wins), over `min_age`.
    pub overrides: Vec<(ProjectGlob, Duration)>,
}

impl Cooldown {
    /// The age that applies to `project` (zero: none).
    pub fn age_for(&self, project: &ProjectName) -> Duration {
        if self.exempt.iter().any(|g| g.matches(project)) {
            return Duration::ZERO;
        }
        self.overrides
            .iter()
            .find(|(g, _)| g.matches(project))
            .map_or(self.min_age, |(_, d)| *d)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub cooldown: Cooldown,
    pub yanks: Vec<Rule>,
    pub deny: Vec<Rule>,
}

/// What the policy sees of a file.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub project: &'a ProjectName,
    pub filename: &'a str,
    /// PEP 700 `upload-time`.
    pub uploaded: Option<SystemTime>,
    /// When roxpi first saw the file on a page (`untimed = "first-seen"`).
    pub first_seen: Option<SystemTime>,
}

/// The decision for one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// Listed as yanked with this reason.
    Yank(String),
    /// Still in its cooldown: not listed until `until` (`None`: an untimed
    /// file under `untimed = "deny"`, never); refused too when `refuse`.
    Young {
        until: Option<SystemTime>,
        refuse: bool,
    },
    /// Not listed, refused, with this reason.
    Deny(String),
}

impl Verdict {
    /// Whether a listing keeps the file.
    pub fn listed(&self) -> bool {
        matches!(self, Verdict::Serve | Verdict::Yank(_))
    }

    /// The 403 reason when the file itself is asked for, if refused.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Verdict::Deny(r) => Some(r.clone()),
            Verdict::Young {
                until: Some(t),
                refuse: true,
            } => Some(format!(
                "held back by the release cooldown until {}",
                rfc3339(*t)
            )),
            Verdict::Young {
                until: None,
                refuse: true,
            } => Some("held back: no upload time, and untimed files are denied".into()),
            _ => None,
        }
    }

    /// The rule that decided, for the audit log and `/metrics`.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            Verdict::Serve => None,
            Verdict::Yank(_) => Some("yank"),
            Verdict::Young { .. } => Some("cooldown"),
            Verdict::Deny(_) => Some("deny"),
        }
    }
}

pub use crate::pypi::filename::version_of;

/// The latest time roxpi keeps or writes: 9999-12-31T23:59:59Z, the end
/// of RFC 3339. Later times (an upload time near it plus a cooldown) are
/// clamped to it.
pub fn latest() -> SystemTime {
    let end = Duration::from_secs(253_402_300_799);
    SystemTime::UNIX_EPOCH
        .checked_add(end)
        // A 32-bit clock: its own end (2038).
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(i32::MAX as u64))
}

/// `t` as RFC 3339 in whole seconds, clamped to 1970..=9999 (humantime
/// panics past 9999).
pub fn rfc3339(t: SystemTime) -> String {
    let t = t.clamp(SystemTime::UNIX_EPOCH, latest());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The longest cooldown accepted (`ROXPI_MIN_RELEASE_AGE`,
/// `min-release-age`): 100 years of 365.25 days, as humantime counts `100y`.
pub const MAX_AGE: Duration = Duration::from_secs(3_155_760_000);

/// A PEP 700 `upload-time` (RFC 3339, UTC; 1970 to 9999, else untimed).
pub fn parse_upload_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(s.trim()).ok())
}

impl Policy {
    /// Whether any rule can change an answer (a fast path for the pages).
    pub fn is_empty(&self) -> bool {
        self.cooldown.min_age.is_zero()
            && self.cooldown.overrides.iter().all(|(_, d)| d.is_zero())
            && self.yanks.is_empty()
            && self.deny.is_empty()
    }

    /// The decision for a file at `now`.
    pub fn verdict(&self, f: &Facts<'_>, now: SystemTime) -> Verdict {
        let needs_version = self
            .deny
            .iter()
            .chain(&self.yanks)
            .any(|r| r.versions.is_some() && r.project.matches(f.project));
        let version = needs_version
            .then(|| version_of(f.project, f.filename))
            .flatten();
        for rule in &self.deny {
            // Fail closed: a file whose version cannot be read is denied
            // by every version rule of its project.
            if needs_version
                && version.is_none()
                && rule.versions.is_some()
                && rule.project.matches(f.project)
            {
                return Verdict::Deny(format!(
                    "denied by the site's policy ({}): the version of {} cannot be read from its name",
                    rule.describe(),
                    f.filename
                ));
            }
            if rule.covers(f.project, version.as_ref()) {
                return Verdict::Deny(rule.reason.clone().unwrap_or_else(|| {
                    format!("denied by the site's policy ({})", rule.describe())
                }));
            }
        }
        let age = self.cooldown.age_for(f.project);
        if !age.is_zero() {
            let refuse = self.cooldown.mode == CooldownMode::Deny;
            let born = match (f.uploaded, self.cooldown.untimed) {
                (Some(t), _) => Some(t),
                (None, Untimed::Allow) => None,
                (None, Untimed::FirstSeen) => f.first_seen,
                (None, Untimed::Deny) => {
                    return Verdict::Young {
                        until: None,
                        refuse,
                    }
                }
            };
            if let Some(born) = born {
                // A claim far in the future must not overflow the clock.
                let until = born
                    .checked_add(age)
                    .map_or_else(latest, |t| t.min(latest()));
                if now < until {
                    return Verdict::Young {
                        until: Some(until),
                        refuse,
                    };
                }
            }
        }
        for rule in &self.yanks {
            if rule.covers(f.project, version.as_ref()) {
                return Verdict::Yank(rule.reason.clone().unwrap_or_else(|| {
                    format!("yanked by the site's policy ({})", rule.describe())
                }));
            }
        }
        Verdict::Serve
    }

    /// A deny rule that removes the whole project (no versions), if any.
    pub fn project_denied(&self, project: &ProjectName) -> Option<String> {
        self.deny
            .iter()
            .find(|r| r.versions.is_none() && r.project.matches(project))
            .map(|r| {
                r.reason
                    .clone()
                    .unwrap_or_else(|| format!("denied by the site's policy ({})", r.describe()))
            })
    }
}

/// A duration as operators write it: `7d`, `12h`, `90m`, `1w`, `0`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} needs a unit: 14d, 12h or 90m"));
    }
    let age = humantime::parse_duration(t)
        .map_err(|e| format!("{s:?} is not a duration like 7d, 12h or 0 ({e})"))?;
    if age > MAX_AGE {
        return Err(format!("{s:?} is longer than the maximum, 100 years"));
    }
    Ok(age)
}

#[cfg(test)]
mod tests;
