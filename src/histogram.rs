//! Latency histograms for `/metrics`: fixed buckets in seconds, lock-free.
//! An observation adds to its one bucket; the cumulative counts Prometheus
//! wants are summed when rendered.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus `le`).
pub const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

/// The bucket an observation of `secs` falls in.
fn bucket(secs: f64) -> usize {
    BOUNDS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(BOUNDS.len())
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        self.counts[bucket(d.as_secs_f64())].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the observations.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros.load(Ordering::Relaxed))
    }

    /// The `_bucket`, `_sum` and `_count` lines of this series of `name`
    /// with `labels` (`key="value",…`, or empty).
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = BOUNDS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum().as_secs_f64());
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_render_cumulatively() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300)); // ≤ 0.0005
        h.observe(Duration::from_millis(1)); // ≤ 0.001 (bounds are inclusive)
        h.observe(Duration::from_millis(30)); // ≤ 0.05
        h.observe(Duration::from_secs(60)); // +Inf
        assert_eq!(h.count(), 4);
        let mut out = String::new();
        h.render("x_seconds", "kind=\"page\"", &mut out);
        let line = |le: &str| {
            out.lines()
                .find(|l| l.contains(&format!("le=\"{le}\"")))
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| v.parse::<u64>().unwrap())
                .unwrap()
        };
        assert_eq!(line("0.0005"), 1);
        assert_eq!(line("0.001"), 2);
        assert_eq!(line("0.025"), 2);
        assert_eq!(line("0.05"), 3);
        assert_eq!(line("10"), 3);
        assert_eq!(line("+Inf"), 4);
        assert!(out.contains("x_seconds_count{kind=\"page\"} 4\n"));
        assert!(out.contains("x_seconds_sum{kind=\"page\"} 60.0313\n"));
        let mut bare = String::new();
        Histogram::default().render("y_seconds", "", &mut bare);
        assert!(bare.contains("y_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(bare.contains("y_seconds_count 0\n"));
    }
}
