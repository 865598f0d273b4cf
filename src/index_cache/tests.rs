// Size: the index cache's tests, one rig shared by all of them.
//! Unit tests of the index cache against a fake origin and a manual clock.
use super::*;
use crate::clock::ManualClock;
use crate::origin::fake::{Fail, FakeOrigin, PageAnswer};
use crate::origin::IndexConfig;
use crate::pypi::{Coding, FileEntry, Filename, PageFormat, Strategy};

const TTL: Duration = Duration::from_secs(60);

struct Rig {
    cache: Arc<IndexCache>,
    origin: Arc<FakeOrigin>,
    clock: Arc<ManualClock>,
}

fn rig_with(max_bytes: u64, offline: bool, stale_after: Duration, indexes: usize) -> Rig {
    rig_swr(max_bytes, offline, stale_after, indexes, Duration::ZERO)
}

fn rig_swr(
    max_bytes: u64,
    offline: bool,
    stale_after: Duration,
    indexes: usize,
    while_revalidate: Duration,
) -> Rig {
    let origin = Arc::new(FakeOrigin::default());
    let clock = Arc::new(ManualClock::default());
    let indexes = (0..indexes)
        .map(|i| {
            Index::new(
                IndexId(i),
                &IndexConfig::new(
                    url::Url::parse(&format!("http://index{i}.invalid/simple/")).unwrap(),
                    TTL,
                ),
            )
        })
        .collect();
    let cache = IndexCache::new(
        origin.clone(),
        clock.clone(),
        indexes,
        Staleness {
            after: stale_after,
            while_revalidate,
            deadline: Duration::from_secs(120),
        },
        offline,
        max_bytes,
        None,
    )
    .start()
    .unwrap();
    Rig {
        cache,
        origin,
        clock,
    }
}

fn rig() -> Rig {
    rig_with(64 << 20, false, Duration::from_secs(3), 1)
}

fn cache(max_bytes: u64) -> Arc<IndexCache> {
    rig_with(max_bytes, true, Duration::from_secs(1), 1).cache
}

fn page(files: &[&str]) -> PageAnswer {
    PageAnswer::Page(ProjectPage {
        files: files
            .iter()
            .map(|f| {
                FileEntry::new(
                    Filename::parse(f).unwrap(),
                    url::Url::parse(&format!("http://files.invalid/{f}")).unwrap(),
                )
            })
            .collect(),
        ..ProjectPage::default()
    })
}

fn files_of(snap: &Snapshot) -> Vec<String> {
    match &*snap.doc {
        Doc::Page(p) => p.files.iter().map(|f| f.filename.to_string()).collect(),
        other => panic!("not a page: {other:?}"),
    }
}

/// One lookup, waited for.
fn get(r: &Rig, k: &Key) -> Outcome {
    r.cache.wait(r.cache.begin(IndexId::ROOT, k, false))
}

fn key(i: usize) -> Key {
    Key::Project(ProjectName::parse(&format!("p{i}")).unwrap())
}

fn view(len: usize) -> Arc<Rendered> {
    Arc::new(Rendered {
        sig: vec![1],
        body: Bytes::from(vec![0u8; len]),
        etag: "\"e\"".into(),
        valid_until: None,
    })
}

#[test]
fn the_byte_bound_holds_and_least_recently_used_go_first() {
    // 16 shards × 64 KiB minimum = 1 MiB in all.
    let c = cache(0);
    for i in 0..400 {
        c.store_view(&key(i), PageFormat::Json, Coding::Gzip, view(10_000));
        // Keep p0 in use: it must survive.
        assert!(
            c.view(&key(0), PageFormat::Json, Coding::Gzip, &[1])
                .is_some(),
            "p0 evicted at {i}"
        );
        let (_, bytes) = c.usage();
        assert!(
            bytes <= 16 * 64 * 1024,
            "{bytes} bytes held after {i} inserts"
        );
    }
    assert!(c.stats.evictions.load(Ordering::Relaxed) > 0);
    // Recent ones are there, early untouched ones are gone.
    assert!(c
        .view(&key(399), PageFormat::Json, Coding::Gzip, &[1])
        .is_some());
    let gone = (1..50)
        .filter(|i| {
            c.view(&key(*i), PageFormat::Json, Coding::Gzip, &[1])
                .is_none()
        })
        .count();
    assert!(gone > 40, "only {gone} of the oldest 49 were evicted");
}

#[test]
fn views_are_tied_to_their_snapshots() {
    let c = cache(64 << 20);
    c.store_view(&key(1), PageFormat::Html, Coding::Identity, view(10));
    assert!(c
        .view(&key(1), PageFormat::Html, Coding::Identity, &[1])
        .is_some());
    assert!(
        c.view(&key(1), PageFormat::Html, Coding::Identity, &[2])
            .is_none(),
        "another generation"
    );
    assert!(
        c.view(&key(1), PageFormat::Json, Coding::Identity, &[1])
            .is_none(),
        "another variant"
    );
    c.invalidate(&key(1));
    assert!(c
        .view(&key(1), PageFormat::Html, Coding::Identity, &[1])
        .is_none());
}

#[test]
fn offline_without_a_copy_is_an_error_not_a_fetch() {
    let c = cache(64 << 20);
    let p = c.begin(IndexId::ROOT, &key(1), false);
    assert!(p.current().is_none());
    assert!(matches!(c.wait(p), Err(e) if matches!(*e, OriginError::Offline { .. })));
}

#[test]
fn concurrent_misses_make_one_upstream_request() {
    let r = rig();
    r.origin.set_page("p1", page(&["a-1.0.tar.gz"]));
    r.origin.hold();
    let pendings: Vec<Pending> = (0..10)
        .map(|_| r.cache.begin(IndexId::ROOT, &key(1), false))
        .collect();
    r.origin.release();
    for p in pendings {
        let (snap, fresh) = r.cache.wait(p).unwrap();
        assert_eq!(fresh, Freshness::Miss);
        assert_eq!(files_of(&snap), ["a-1.0.tar.gz"]);
    }
    assert_eq!(r.origin.count("page p1"), 1);
    assert_eq!(r.cache.stats.coalesced.load(Ordering::Relaxed), 9);
}

#[test]
fn ttl_expiry_refetches_without_sleeping() {
    let r = rig();
    r.origin.set_page("p1", page(&["a-1.0.tar.gz"]));
    assert_eq!(get(&r, &key(1)).unwrap().1, Freshness::Miss);
    r.clock.advance(TTL - Duration::from_secs(1));
    assert_eq!(get(&r, &key(1)).unwrap().1, Freshness::Hit);
    assert_eq!(r.origin.count("page p1"), 1, "fresh: no upstream request");
    r.origin.set_page("p1", page(&["a-2.0.tar.gz"]));
    r.clock.advance(Duration::from_secs(2));
    let (snap, fresh) = get(&r, &key(1)).unwrap();
    assert_eq!(fresh, Freshness::Miss);
    assert_eq!(files_of(&snap), ["a-2.0.tar.gz"]);
    assert_eq!(r.origin.count("page p1"), 2);
}

#[test]
fn a_failed_refresh_serves_the_stale_copy_then_rests() {
    let r = rig();
    r.origin.set_page("p1", page(&["a-1.0.tar.gz"]));
    get(&r, &key(1)).unwrap();
    r.clock.advance(TTL + Duration::from_secs(1));
    for fail in [
        Fail::Timeout,
        Fail::Refused,
        Fail::Status(503),
        Fail::Garbage,
    ] {
        r.origin.set_page("p1", PageAnswer::Fail(fail));
        let before = r.origin.count("page p1");
        let (snap, fresh) = get(&r, &key(1)).unwrap();
        assert_eq!(fresh, Freshness::Stale, "{fail:?}");
        assert_eq!(files_of(&snap), ["a-1.0.tar.gz"]);
        assert_eq!(r.origin.count("page p1"), before + 1, "{fail:?}");
        // Resting: the next request is stale at once, no upstream request.
        assert_eq!(get(&r, &key(1)).unwrap().1, Freshness::Stale);
        assert_eq!(r.origin.count("page p1"), before + 1, "{fail:?} rests");
        r.clock.advance(FAILURE_REST + Duration::from_secs(1));
    }
    r.origin.set_page("p1", page(&["a-3.0.tar.gz"]));
    let (snap, fresh) = get(&r, &key(1)).unwrap();
    assert_eq!(fresh, Freshness::Miss);
    assert_eq!(files_of(&snap), ["a-3.0.tar.gz"]);
}

#[test]
fn a_slow_origin_gets_the_stale_copy_served_while_it_refreshes() {
    let r = rig_with(64 << 20, false, Duration::ZERO, 1);
    r.origin.set_page("p1", page(&["a-1.0.tar.gz"]));
    get(&r, &key(1)).unwrap();
    r.clock.advance(TTL * 2);
    r.origin.set_page("p1", page(&["a-2.0.tar.gz"]));
    r.origin.hold();
    let p = r.cache.begin(IndexId::ROOT, &key(1), false);
    let flight = p.flight.clone().expect("a refresh started");
    let (snap, fresh) = r.cache.wait(p).unwrap();
    assert_eq!(fresh, Freshness::Stale, "served without waiting");
    assert_eq!(files_of(&snap), ["a-1.0.tar.gz"]);
    r.origin.release();
    // The refresh finishes on its own; the next request sees it.
    assert!(flight.wait(Duration::from_secs(10)).is_some());
    let (snap, fresh) = get(&r, &key(1)).unwrap();
    assert_eq!(fresh, Freshness::Hit);
    assert_eq!(files_of(&snap), ["a-2.0.tar.gz"]);
    assert_eq!(r.origin.count("page p1"), 2);
}

#[test]
fn a_first_fetch_that_fails_is_the_typed_error() {
    let r = rig();
    for (fail, timeout) in [(Fail::Timeout, true), (Fail::Refused, false)] {
        r.origin.set_page("p9", PageAnswer::Fail(fail));
        let e = get(&r, &key(9)).unwrap_err();
        assert_eq!(matches!(*e, OriginError::Timeout { .. }), timeout, "{e}");
        r.clock.advance(FAILURE_REST + Duration::from_secs(1));
    }
}

#[test]
fn not_found_is_kept_briefly() {
    let r = rig();
    r.origin.set_page("p2", PageAnswer::NotFound);
    assert!(matches!(*get(&r, &key(2)).unwrap().0.doc, Doc::Missing));
    assert!(matches!(*get(&r, &key(2)).unwrap().0.doc, Doc::Missing));
    assert_eq!(r.origin.count("page p2"), 1);
    r.origin.set_page("p2", page(&["p2-1.0.tar.gz"]));
    r.clock
        .advance(NEGATIVE_TTL.min(TTL) + Duration::from_secs(1));
    assert_eq!(files_of(&get(&r, &key(2)).unwrap().0), ["p2-1.0.tar.gz"]);
}

#[test]
fn forced_refresh_at_most_once_per_interval() {
    let r = rig();
    r.origin.set_page("p1", page(&["a-1.0.tar.gz"]));
    get(&r, &key(1)).unwrap();
    let forced = |r: &Rig| r.cache.wait(r.cache.begin(IndexId::ROOT, &key(1), true));
    assert_eq!(forced(&r).unwrap().1, Freshness::Miss);
    assert_eq!(forced(&r).unwrap().1, Freshness::Hit, "within the interval");
    assert_eq!(r.origin.count("page p1"), 2);
    r.clock.advance(FORCE_INTERVAL);
    assert_eq!(forced(&r).unwrap().1, Freshness::Miss);
    assert_eq!(r.origin.count("page p1"), 3);
}

#[test]
fn resolve_merges_or_takes_the_first_index() {
    let r = rig_with(64 << 20, false, Duration::from_secs(3), 2);
    // The fake answers every index alike; the strategies differ in how
    // many they ask and keep.
    r.origin.set_page("p1", page(&["a-1.0.tar.gz"]));
    let k = key(1);
    match r.cache.resolve(&k, Strategy::Merge, false, false) {
        Resolved::Found(f) => assert_eq!(f.len(), 2),
        _ => panic!("merge finds both"),
    }
    r.clock.advance(TTL * 2);
    match r.cache.resolve(&k, Strategy::FirstIndex, false, false) {
        Resolved::Found(f) => assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), [IndexId(0)]),
        _ => panic!("first-index finds the root"),
    }
    r.origin.set_page("p3", PageAnswer::Fail(Fail::Status(500)));
    assert!(matches!(
        r.cache.resolve(&key(3), Strategy::FirstIndex, false, false),
        Resolved::Failed(_)
    ));
    r.origin.set_page("p4", PageAnswer::NotFound);
    assert!(matches!(
        r.cache.resolve(&key(4), Strategy::Merge, false, false),
        Resolved::NotFound
    ));
}

#[test]
fn a_full_fetch_queue_refuses_at_once_instead_of_queueing() {
    let r = rig();
    r.origin.hold();
    let pendings: Vec<Pending> = (0..FETCH_THREADS + FETCH_QUEUE + 40)
        .map(|i| r.cache.begin(IndexId::ROOT, &key(1000 + i), false))
        .collect();
    let refused = pendings
        .iter()
        .filter(
            |p| matches!(r.cache.poll(p), Some(Err(e)) if matches!(*e, OriginError::Busy { .. })),
        )
        .count();
    // Every thread holds one (held) fetch and the queue is full: at least
    // the 40 beyond both are refused, each without waiting.
    assert!(refused >= 40, "{refused} refused");
    assert!(refused <= FETCH_THREADS + 40, "{refused} refused");
    assert_eq!(r.cache.stats.busy.load(Ordering::Relaxed) as usize, refused);
    r.origin.release();
    // The accepted ones are answered by the upstream once it goes on.
    let answered = pendings
        .into_iter()
        .filter(|p| !matches!(r.cache.poll(p), Some(Err(_))))
        .map(|p| r.cache.wait(p))
        .filter(|o| o.is_ok())
        .count();
    assert!(answered >= FETCH_QUEUE, "{answered} answered");
}

/// A cache over a saved-page store in `dir` holding one saved page of `p1`.
fn rig_with_saved_page(dir: &std::path::Path, offline: bool) -> Rig {
    let r = rig_with(64 << 20, offline, Duration::from_secs(3), 1);
    let storage = local(dir);
    let store = SavedPages::new(storage.clone());
    let body = r#"{"meta":{"api-version":"1.1"},"name":"p1","files":[{"filename":"p1-1.0.tar.gz","url":"http://files.invalid/p1-1.0.tar.gz","hashes":{}}]}"#;
    let raw = crate::origin::RawPage {
        format: crate::pypi::Format::Json,
        url: url::Url::parse("http://index0.invalid/simple/p1/").unwrap(),
        body: Bytes::from_static(body.as_bytes()),
        validators: Default::default(),
    };
    store
        .save(
            &r.cache.indexes()[0],
            &ProjectName::parse("p1").unwrap(),
            &raw,
        )
        .unwrap();
    let cache = with_store(&r, storage, offline, 64 << 20);
    Rig { cache, ..r }
}

/// A local storage in `dir`.
fn local(dir: &std::path::Path) -> Arc<dyn crate::storage::Storage> {
    Arc::new(crate::storage::local::LocalStorage::open(dir, 64 << 20).unwrap())
}

/// A cache over `r`'s origin and indexes that saves pages in `dir`.
fn with_store(
    r: &Rig,
    storage: Arc<dyn crate::storage::Storage>,
    offline: bool,
    max_bytes: u64,
) -> Arc<IndexCache> {
    IndexCache::new(
        r.origin.clone(),
        r.clock.clone(),
        r.cache.indexes().to_vec(),
        Staleness {
            after: Duration::from_secs(3),
            while_revalidate: Duration::ZERO,
            deadline: Duration::from_secs(120),
        },
        offline,
        max_bytes,
        Some(SavedPages::new(storage)),
    )
    .start()
    .unwrap()
}

#[test]
fn a_saved_page_is_loaded_by_a_fetch_thread_not_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig_with_saved_page(dir.path(), true);
    // The lookup returns at once, waiting for the load; a second one
    // joins the same load — unless a fetch thread finished it in between
    // (the load is a small file read), when it finds the loaded copy.
    let first = r.cache.begin(IndexId::ROOT, &key(1), false);
    let second = r.cache.begin(IndexId::ROOT, &key(1), false);
    assert!(first.load.is_some(), "the first lookup waits for the load");
    if second.load.is_some() {
        assert!(Arc::ptr_eq(
            first.flight.as_ref().unwrap(),
            second.flight.as_ref().unwrap()
        ));
    }
    for p in [first, second] {
        let (snap, fresh) = r.cache.wait(p).unwrap();
        assert_eq!(files_of(&snap), ["p1-1.0.tar.gz"]);
        assert_eq!(
            fresh,
            Freshness::Stale,
            "offline: the saved copy, as it was"
        );
    }
    // Loaded once: later lookups find it in memory.
    assert!(r.cache.begin(IndexId::ROOT, &key(1), false).load.is_none());
    assert_eq!(r.origin.count("page"), 0, "offline: no upstream request");
    // Nothing saved for p2: the load finds nothing and offline says so.
    assert!(get(&r, &key(2)).is_err());
}

#[test]
fn a_saved_page_is_served_when_the_first_fetch_after_a_restart_fails() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig_with_saved_page(dir.path(), false);
    r.origin.set_page("p1", PageAnswer::Fail(Fail::Status(503)));
    let mut res = r
        .cache
        .start_resolution(&key(1), Strategy::Merge, false, false);
    let found = loop {
        if let Some(done) = r.cache.poll_resolution(&mut res) {
            break done;
        }
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        res.on_ready(move || {
            let _ = tx.try_send(());
        });
        let _ = rx.recv_timeout(Duration::from_secs(5));
    };
    let Resolved::Found(found) = found else {
        panic!("the saved copy is served")
    };
    assert_eq!(files_of(&found[0].1), ["p1-1.0.tar.gz"]);
    assert_eq!(found[0].2, Freshness::Stale);
    assert_eq!(r.origin.count("page p1"), 1, "the upstream was asked first");
}

fn validators(etag: &str, serial: u64) -> Validators {
    Validators {
        etag: Some(format!("\"{etag}\"")),
        last_modified: None,
        serial: Some(serial),
    }
}

#[test]
fn a_304_renews_the_ttl_with_the_same_doc_and_generation() {
    let r = rig();
    r.origin.set_page("p1", page(&["a-1.0.tar.gz"]));
    r.origin.set_validators("p1", validators("v1", 7));
    let (first, _) = get(&r, &key(1)).unwrap();
    assert_eq!(first.validators, validators("v1", 7));
    r.clock.advance(TTL + Duration::from_secs(1));
    let (second, fresh) = get(&r, &key(1)).unwrap();
    assert_eq!(
        fresh,
        Freshness::Miss,
        "confirmed upstream for this request"
    );
    assert_eq!(
        r.origin.calls(),
        ["page p1", "page p1 conditional"],
        "the refresh carried the validators"
    );
    assert_eq!(
        second.generation, first.generation,
        "same views, same ETags"
    );
    assert!(Arc::ptr_eq(&first.doc, &second.doc), "not parsed again");
    assert_eq!(r.cache.stats.revalidated.load(Ordering::Relaxed), 1);
    // Renewed: fresh for another TTL.
    r.clock.advance(TTL - Duration::from_secs(1));
    assert_eq!(get(&r, &key(1)).unwrap().1, Freshness::Hit);
    assert_eq!(r.origin.count("page p1"), 2);
    // A changed page (new ETag) is taken, with a new generation.
    r.origin.set_page("p1", page(&["a-2.0.tar.gz"]));
    r.origin.set_validators("p1", validators("v2", 8));
    r.clock.advance(Duration::from_secs(2));
    let (third, _) = get(&r, &key(1)).unwrap();
    assert_eq!(files_of(&third), ["a-2.0.tar.gz"]);
    assert_ne!(third.generation, first.generation);
}

#[test]
fn a_page_with_a_lower_serial_is_not_taken() {
    let r = rig();
    r.origin.set_page("p1", page(&["a-2.0.tar.gz"]));
    r.origin.set_validators("p1", validators("new", 20));
    let (first, _) = get(&r, &key(1)).unwrap();
    // A CDN node with an older copy answers the refresh.
    r.origin.set_page("p1", page(&["a-1.0.tar.gz"]));
    r.origin.set_validators("p1", validators("old", 19));
    r.clock.advance(TTL + Duration::from_secs(1));
    let (snap, _) = get(&r, &key(1)).unwrap();
    assert_eq!(files_of(&snap), ["a-2.0.tar.gz"], "ours is newer: kept");
    assert_eq!(snap.generation, first.generation);
    assert_eq!(r.cache.stats.older_serial.load(Ordering::Relaxed), 1);
    // Equal or higher serials are taken.
    r.origin.set_validators("p1", validators("newer", 21));
    r.clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(files_of(&get(&r, &key(1)).unwrap().0), ["a-1.0.tar.gz"]);
}

#[test]
fn within_the_window_the_expired_copy_is_answered_at_once_and_refreshed_once() {
    let window = Duration::from_secs(300);
    let r = rig_swr(64 << 20, false, Duration::from_secs(3), 1, window);
    r.origin.set_page("p1", page(&["a-1.0.tar.gz"]));
    get(&r, &key(1)).unwrap();
    r.origin.set_page("p1", page(&["a-2.0.tar.gz"]));
    r.clock.advance(TTL + Duration::from_secs(10));
    // The upstream hangs: every lookup is answered without waiting.
    r.origin.hold();
    let pendings: Vec<Pending> = (0..32)
        .map(|_| r.cache.begin(IndexId::ROOT, &key(1), false))
        .collect();
    for p in &pendings {
        assert!(p.flight.is_none(), "nothing to wait for");
        let (snap, fresh) = r.cache.poll(p).expect("answered at once").unwrap();
        assert_eq!(
            (files_of(&snap), fresh),
            (vec!["a-1.0.tar.gz".to_owned()], Freshness::Stale)
        );
    }
    r.origin.release();
    // One background refresh for all 32; it lands for the next lookup.
    let deadline = Instant::now() + Duration::from_secs(5);
    while files_of(&get(&r, &key(1)).unwrap().0) != ["a-2.0.tar.gz"] {
        assert!(Instant::now() < deadline, "the refresh never landed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(r.origin.count("page p1"), 2);
    assert_eq!(r.cache.stats.revalidating.load(Ordering::Relaxed), 1);
    // Past the window: the lookup waits for the refresh, as before.
    r.clock.advance(TTL + window + Duration::from_secs(1));
    let p = r.cache.begin(IndexId::ROOT, &key(1), false);
    assert!(p.flight.is_some(), "past the window a lookup waits");
    assert_eq!(r.cache.wait(p).unwrap().1, Freshness::Miss);
}

#[test]
fn files_are_found_by_name_through_the_index() {
    let r = rig();
    let names: Vec<String> = (0..500).map(|i| format!("p1-1.{i}.tar.gz")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    r.origin.set_page("p1", page(&refs));
    r.origin.set_validators("p1", validators("v", 1));
    let (snap, _) = get(&r, &key(1)).unwrap();
    for name in &names {
        assert_eq!(
            snap.file(name).map(|f| f.filename.as_str()),
            Some(name.as_str())
        );
    }
    for absent in ["p1-2.0.tar.gz", "", "p1-1.0.tar.gz.metadata"] {
        assert!(snap.file(absent).is_none(), "{absent}");
    }
    // A copy a 304 renewed keeps the index already built.
    r.clock.advance(TTL + Duration::from_secs(1));
    let (fresh, _) = get(&r, &key(1)).unwrap();
    assert_eq!(r.cache.stats.revalidated.load(Ordering::Relaxed), 1);
    assert!(Arc::ptr_eq(&snap.index, &fresh.index));
    assert!(fresh.file("p1-1.7.tar.gz").is_some());
}

#[test]
fn an_evicted_page_reloads_without_waiting_for_large_copies() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig_with(0, false, Duration::from_secs(3), 1);
    let cache = with_store(&r, local(dir.path()), false, 0);
    // Pages of ~100 KiB each: the smallest cache (1 MiB) evicts early ones.
    let names: Vec<String> = (0..400).map(|i| format!("f{i:04}-1.0.tar.gz")).collect();
    let files: Vec<&str> = names.iter().map(String::as_str).collect();
    for i in 0..40 {
        r.origin.set_page(&format!("p{i}"), page(&files));
        assert!(cache
            .wait(cache.begin(IndexId::ROOT, &key(i), false))
            .is_ok());
    }
    assert!(
        cache.stats.evictions.load(Ordering::Relaxed) > 0,
        "p0 evicted"
    );
    // Two copies of too-large pages held elsewhere: loads of such pages
    // wait their turn, but p0 fits and must not.
    let (_a, _b) = (cache.large.hold(), cache.large.hold());
    let t = std::time::Instant::now();
    let got = cache.wait(cache.begin(IndexId::ROOT, &key(0), false));
    assert!(got.is_ok());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "an evicted page waited {:?}",
        t.elapsed()
    );
}
