//! The projects that cost the most bandwidth: body bytes of file and
//! metadata responses served, per project, since start (the home page's
//! top 10). Bounded: past `CAP` projects, a new one replaces the one with
//! the fewest bytes (heavy projects stay; a long tail of one-off projects
//! cannot grow it).

use std::collections::HashMap;
use std::sync::Mutex;

/// Most projects counted at once.
const CAP: usize = 2048;

#[derive(Default)]
pub struct TopProjects {
    bytes: Mutex<HashMap<Box<str>, u64>>,
}

/// The project of a file or metadata request target (`/index/<p>/<file>`,
/// `/simple/<p>/<file>`), pure.
pub fn project_of(target: &str) -> Option<&str> {
    let path = target.split('?').next().unwrap_or(target);
    let rest = path
        .strip_prefix("/index/")
        .or_else(|| path.strip_prefix("/simple/"))?;
    match rest.split_once('/') {
        Some((project, file)) if !project.is_empty() && !file.is_empty() => Some(project),
        _ => None,
    }
}

impl TopProjects {
    /// Counts `bytes` sent for `project`.
    pub fn add(&self, project: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut map = crate::lock(&self.bytes);
        if let Some(n) = map.get_mut(project) {
            *n += bytes;
            return;
        }
        if map.len() >= CAP {
            let smallest = map
                .iter()
                .min_by_key(|(_, n)| **n)
                .map(|(k, n)| (k.clone(), *n));
            match smallest {
                // The newcomer takes the place (and the count) of the
                // smallest, as space-saving top-k counters do: a heavy
                // project arriving late still climbs.
                Some((k, n)) => {
                    map.remove(&k);
                    map.insert(project.into(), n + bytes);
                }
                None => return,
            }
            return;
        }
        map.insert(project.into(), bytes);
    }

    /// The `n` projects with the most bytes, most first.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let map = crate::lock(&self.bytes);
        let mut all: Vec<(String, u64)> = map.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_of_targets() {
        let cases = [
            ("/index/numpy/numpy-2.0.whl", Some("numpy")),
            ("/simple/numpy/numpy-2.0.whl.metadata", Some("numpy")),
            ("/index/numpy/numpy-2.0.whl?x=1", Some("numpy")),
            ("/index/numpy/", None),
            ("/index/", None),
            ("/metrics", None),
        ];
        for (target, want) in cases {
            assert_eq!(project_of(target), want, "{target}");
        }
    }

    #[test]
    fn the_heaviest_stay_on_top_and_the_count_is_bounded() {
        let top = TopProjects::default();
        top.add("a", 10);
        top.add("b", 30);
        top.add("a", 25);
        top.add("c", 0);
        assert_eq!(top.top(10), [("a".to_owned(), 35), ("b".to_owned(), 30)]);
        for i in 0..CAP + 100 {
            top.add(&format!("tail{i}"), 1);
        }
        assert!(crate::lock(&top.bytes).len() <= CAP);
        assert_eq!(top.top(2), [("a".to_owned(), 35), ("b".to_owned(), 30)]);
    }
}
