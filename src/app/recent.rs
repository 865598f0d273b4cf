//! Hit ratios over the last minutes: samples of the hit and miss counters,
//! taken when the home page or `/metrics` is read (at most one per 10 s,
//! kept 10 minutes), so no thread runs for it. A ratio over "the last 5
//! minutes" compares now with the newest sample at least that old, else
//! with the oldest one kept (and says how long that covers).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The counters a sample holds: page hits, page misses, file hits, file
/// misses.
pub type Counts = [u64; 4];

const EVERY: Duration = Duration::from_secs(10);
const KEEP: Duration = Duration::from_secs(600);
/// The window the home page shows.
pub const WINDOW: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct Recent {
    samples: Mutex<VecDeque<(Instant, Counts)>>,
}

impl Recent {
    /// Records `now`'s counters (if the last sample is old enough) and
    /// returns the change over about `WINDOW`, and how long it covers.
    pub fn window(&self, now: Instant, counts: Counts) -> (Counts, Duration) {
        let mut samples = crate::lock(&self.samples);
        while samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > KEEP)
        {
            samples.pop_front();
        }
        let base = samples
            .iter()
            .rev()
            .find(|(t, _)| now.saturating_duration_since(*t) >= WINDOW)
            .or(samples.front())
            .copied();
        if samples
            .back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= EVERY)
        {
            samples.push_back((now, counts));
        }
        match base {
            Some((t, old)) => (
                std::array::from_fn(|i| counts[i].saturating_sub(old[i])),
                now.saturating_duration_since(t),
            ),
            None => ([0; 4], Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_compares_with_the_sample_about_five_minutes_old() {
        let r = Recent::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Nothing to compare with yet.
        assert_eq!(r.window(at(0), [1, 1, 0, 0]), ([0; 4], Duration::ZERO));
        // Samples every 60 s: a page hit each minute, a miss at 120 s.
        for m in 1..=7u64 {
            let misses = if m >= 2 { 2 } else { 1 };
            let (delta, covers) = r.window(at(m * 60), [1 + m, misses, 0, 0]);
            if m < 5 {
                // Younger than the window: since the first sample.
                assert_eq!(covers, Duration::from_secs(m * 60));
                assert_eq!(delta[0], m);
            } else {
                // The newest sample at least 5 minutes old.
                assert_eq!(covers, Duration::from_secs(300), "at {m} min");
                assert_eq!(delta[0], 5);
            }
        }
        // Reads within 10 s add no sample; after 10 min old ones go.
        let (_, covers) = r.window(at(7 * 60 + 5), [9, 2, 0, 0]);
        assert_eq!(covers, Duration::from_secs(305));
        let (delta, covers) = r.window(at(30 * 60), [20, 2, 0, 0]);
        assert_eq!(
            (delta, covers),
            ([0; 4], Duration::ZERO),
            "all samples expired"
        );
    }
}
