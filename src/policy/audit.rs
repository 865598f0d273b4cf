//! The audit trail: every policy decision that changes an answer is one
//! structured line on the `roxpi::audit` log target (JSON: rule, action,
//! project, file, reason) and one count per rule (`/metrics`, home page).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pypi::ProjectName;

/// The rules, in the order `/metrics` shows them.
pub const RULES: [&str; 5] = ["cooldown", "yank", "deny", "quarantine", "confusion"];

#[derive(Debug, Default)]
pub struct Audit {
    counts: [AtomicU64; RULES.len()],
}

impl Audit {
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
            "{}",
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
