//! The audit trail: every policy decision that changes an answer is one
//! structured line on the `roxpi::audit` log target (`audit ` and a JSON
//! object: rule, action, project, file, reason) and one count per rule
//! (`/metrics`, home page). A page's decisions are logged once per page
//! version, not once per rendered variant (`Audit::first_render`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pypi::ProjectName;

/// The rules, in the order `/metrics` shows them.
pub const RULES: [&str; 5] = ["cooldown", "yank", "deny", "quarantine", "confusion"];

#[derive(Debug, Default)]
pub struct Audit {
    counts: [AtomicU64; RULES.len()],
    /// Page versions whose decisions were logged (a hash of route, name
    /// and the page's signature), most recent last; bounded.
    rendered: std::sync::Mutex<std::collections::VecDeque<u64>>,
}

/// Page versions remembered by `first_render`.
const RENDERED: usize = 4096;

impl Audit {
    /// Whether this page version (`id`: route, name and signature hashed)
    /// is rendered for the first time: its decisions are logged then only.
    pub fn first_render(&self, id: u64) -> bool {
        let mut seen = crate::lock(&self.rendered);
        if seen.contains(&id) {
            return false;
        }
        if seen.len() >= RENDERED {
            seen.pop_front();
        }
        seen.push_back(id);
        true
    }

    /// Logs and counts one decision. `action`: what it did to the answer
    /// (`hidden`, `refused`, `yanked`, `removed`, `withheld`).
    pub fn record(
        &self,
        rule: &'static str,
        action: &str,
        project: &ProjectName,
        file: Option<&str>,
        reason: &str,
    ) {
        if let Some(i) = RULES.iter().position(|r| *r == rule) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        log::info!(
            target: "roxpi::audit",
            "audit {}",
            serde_json::json!({
                "rule": rule,
                "action": action,
                "project": project.as_str(),
                "file": file,
                "reason": reason,
            })
        );
    }

    /// Decisions so far, per rule.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        RULES
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .collect()
    }
}
