//! Request latency by route kind (page, file, metadata) and cache result
//! (hit, miss, stale…): a fixed matrix of histograms fed by the server's
//! observer (one atomic add per response) and rendered on `/metrics`.

use crate::histogram::Histogram;
use crate::http::Finished;

pub const KINDS: [&str; 3] = ["page", "file", "metadata"];
pub const RESULTS: [&str; 9] = [
    "hit",
    "miss",
    "stale",
    "coalesced",
    "bucket",
    "redirect",
    "error",
    "synth",
    "other",
];

/// The route kind of a request target (pure): index pages (the list and
/// project pages), files, and `.metadata` files; `None` for the rest
/// (home page, `/metrics`, probes, invalidation).
pub fn kind_of(target: &str) -> Option<usize> {
    let path = target.split('?').next().unwrap_or(target);
    let rest = path
        .strip_prefix("/index/")
        .or_else(|| path.strip_prefix("/simple/"))?;
    match rest.split_once('/') {
        None | Some((_, "")) => Some(0),
        Some((_, file)) if file.ends_with(".metadata") => Some(2),
        Some(_) => Some(1),
    }
}

/// The cache result of a finished response (pure): from its tag, else
/// its status.
pub fn result_of(tag: Option<&str>, status: u16, cut: bool) -> usize {
    if cut {
        return 6;
    }
    match tag {
        Some("HIT") => 0,
        Some("MISS") => 1,
        Some("STALE") => 2,
        Some("COALESCED") => 3,
        Some("BUCKET") => 4,
        Some("REDIRECT") => 5,
        Some("ERROR") => 6,
        Some("SYNTH") => 7,
        _ if status >= 500 => 6,
        _ => 8,
    }
}

#[derive(Debug, Default)]
pub struct Latencies {
    requests: [[Histogram; RESULTS.len()]; KINDS.len()],
}

impl Latencies {
    /// The server's observer calls this for every finished response.
    pub fn observe(&self, f: &Finished<'_>) {
        if let Some(k) = kind_of(f.target) {
            self.requests[k][result_of(f.tag, f.status, f.cut)].observe(f.elapsed);
        }
    }

    /// Requests of this kind and result so far.
    pub fn count(&self, kind: &str, result: &str) -> u64 {
        match (
            KINDS.iter().position(|k| *k == kind),
            RESULTS.iter().position(|r| *r == result),
        ) {
            (Some(k), Some(r)) => self.requests[k][r].count(),
            _ => 0,
        }
    }

    /// `roxpi_request_duration_seconds`, every series.
    pub fn render(&self, out: &mut String) {
        const NAME: &str = "roxpi_request_duration_seconds";
        out.push_str(&format!(
            "# HELP {NAME} Time from a request's head to its last byte sent, by route kind (page, file, metadata) and cache result.\n# TYPE {NAME} histogram\n"
        ));
        for (k, kind) in KINDS.iter().enumerate() {
            for (r, result) in RESULTS.iter().enumerate() {
                let labels = format!("route=\"{kind}\",cache=\"{result}\"");
                self.requests[k][r].render(NAME, &labels, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for (target, want) in [
            ("/index/", Some(0)),
            ("/simple/numpy/", Some(0)),
            ("/index/numpy", Some(0)),
            ("/index/numpy/numpy-2.0-cp312-none-any.whl", Some(1)),
            ("/simple/numpy/numpy-2.0.tar.gz?x=1", Some(1)),
            (
                "/index/numpy/numpy-2.0-cp312-none-any.whl.metadata",
                Some(2),
            ),
            ("/", None),
            ("/metrics", None),
            ("/health", None),
            ("/cache/numpy", None),
        ] {
            assert_eq!(kind_of(target), want, "{target}");
        }
    }

    #[test]
    fn results() {
        assert_eq!(RESULTS[result_of(Some("HIT"), 200, false)], "hit");
        assert_eq!(RESULTS[result_of(Some("BUCKET"), 200, false)], "bucket");
        assert_eq!(RESULTS[result_of(Some("HIT"), 200, true)], "error");
        assert_eq!(RESULTS[result_of(None, 502, false)], "error");
        assert_eq!(RESULTS[result_of(None, 404, false)], "other");
        assert_eq!(RESULTS[result_of(Some("SYNTH"), 200, false)], "synth");
        assert_eq!(RESULTS[result_of(Some("REDIRECT"), 302, false)], "redirect");
    }
}
