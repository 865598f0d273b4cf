//! Tests of the local disk backend.
#[cfg(test)]
mod disk {
    use super::super::*;
    use std::io::Write;

    fn key(i: u8) -> CacheKey {
        CacheKey::parse(&format!("{i:02x}").repeat(32)).unwrap()
    }

    fn file(k: &CacheKey) -> Item {
        Item::File {
            key: k.clone(),
            filename: "f.whl".into(),
        }
    }

    fn put(s: &LocalStorage, k: &CacheKey, len: usize) -> Stored {
        let t = s.create(&file(k), len as u64).unwrap();
        (&*t.file).write_all(&vec![7u8; len]).unwrap();
        s.commit(t, &"ab".repeat(32)).unwrap()
    }

    fn hit(s: &LocalStorage, k: &CacheKey) -> bool {
        matches!(s.lookup(k), Lookup::Hit(_))
    }

    #[test]
    fn names_round_trip() {
        let k = key(1);
        let name = format!("{}_{}_{}", k.as_str(), 42, "cd".repeat(32));
        assert_eq!(parse_name(&name), Some((k.clone(), 42, "cd".repeat(32))));
        for bad in [
            "x",
            "..",
            &format!("{}_x_{}", k.as_str(), "cd".repeat(32)),
            &format!("{}_1", k.as_str()),
            &format!("{name}_extra"),
        ] {
            assert!(parse_name(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn lru_by_bytes_evicts_least_recently_used_not_inserted() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), 300).unwrap();
        put(&s, &key(1), 100);
        put(&s, &key(2), 100);
        put(&s, &key(3), 100);
        assert!(hit(&s, &key(1)), "touch 1: now 2 is least recently used");
        put(&s, &key(4), 100);
        assert!(hit(&s, &key(1)));
        assert!(!hit(&s, &key(2)), "2 went first");
        assert!(hit(&s, &key(3)) && hit(&s, &key(4)));
        let u = s.usage();
        assert_eq!((u.used, u.reserved, u.files, u.evictions), (300, 0, 3, 1));
    }

    #[test]
    fn reservations_count_toward_the_cap_and_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), 300).unwrap();
        put(&s, &key(1), 100);
        let t = s.create(&file(&key(2)), 250).unwrap();
        let u = s.usage();
        assert!(u.used + u.reserved <= 300, "{u:?}");
        assert!(
            !hit(&s, &key(1)),
            "evicted to make room before the download"
        );
        drop(t);
        let u = s.usage();
        assert_eq!((u.used, u.reserved), (0, 0));
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "temp file deleted"
        );
    }

    #[test]
    fn larger_than_the_cap_is_staged_and_never_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), 100).unwrap();
        put(&s, &key(1), 50);
        let t = s.create(&file(&key(2)), 1000).unwrap();
        assert!(!t.is_kept());
        assert!(hit(&s, &key(1)), "staging evicts nothing");
        assert_eq!(
            fs::read_dir(dir.path().join("staging")).unwrap().count(),
            0,
            "anonymous"
        );
        // Committed, it is served from the temp file and never kept.
        let stored = s.commit(t, &"ab".repeat(32)).unwrap();
        assert_eq!(stored.len, 1000);
        assert!(!hit(&s, &key(2)));
        assert_eq!(s.usage().used, 50);
    }

    #[test]
    fn restart_keeps_complete_files_and_deletes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path_of_2 = {
            let s = LocalStorage::open(dir.path(), 1000).unwrap();
            put(&s, &key(1), 10);
            put(&s, &key(2), 20);
            let _t = s.create(&file(&key(3)), 30).unwrap();
            std::mem::forget(_t); // as if killed mid-download
            let k2 = key(2);
            dir.path()
                .join("files")
                .join(&k2.as_str()[..2])
                .join(format!("{}_20_{}", k2.as_str(), "ab".repeat(32)))
        };
        // A truncated file (as after a power cut) and junk in our dirs.
        fs::OpenOptions::new()
            .write(true)
            .open(&path_of_2)
            .unwrap()
            .set_len(5)
            .unwrap();
        fs::write(dir.path().join("files").join("01").join("junk"), b"x").unwrap();
        fs::write(dir.path().join("unrelated.txt"), b"keep me").unwrap();
        let s = LocalStorage::open(dir.path(), 1000).unwrap();
        assert!(hit(&s, &key(1)));
        assert!(!hit(&s, &key(2)), "size mismatch deleted");
        assert!(!path_of_2.exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(!dir.path().join("files/01/junk").exists());
        assert!(
            dir.path().join("unrelated.txt").exists(),
            "outside our layout: untouched"
        );
        assert!(dir.path().join("CACHEDIR.TAG").exists());
        assert_eq!(s.usage().used, 10);
    }

    #[test]
    fn a_second_process_cannot_share_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _s = LocalStorage::open(dir.path(), 1000).unwrap();
        // flock locks belong to the open file description: a second open
        // in the same process conflicts just like another process.
        match LocalStorage::open(dir.path(), 1000) {
            Err(OpenError::Locked(_)) => {}
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("two storages shared one dir"),
        }
    }

    #[test]
    fn evicted_files_stay_readable_for_open_readers() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), 100).unwrap();
        let f = put(&s, &key(1), 100);
        put(&s, &key(2), 100);
        assert!(!hit(&s, &key(1)));
        let mut buf = [0u8; 100];
        let StoredBody::Local(file) = &f.body else {
            panic!("local storage gives local files")
        };
        file.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 7));
    }

    fn hot_bytes(s: &LocalStorage) -> u64 {
        s.shared.lock().hot_bytes
    }

    #[test]
    fn small_hot_files_are_served_from_memory_within_a_budget() {
        let dir = tempfile::tempdir().unwrap();
        // Cap 64 KiB × 16 + room: the hot budget is an eighth of the cap.
        let cap = 16 * HOT_FILE + 200_000;
        let s = LocalStorage::open(dir.path(), cap).unwrap();
        let budget = hot_budget(cap);
        let small = (HOT_FILE / 2) as usize;
        let n = (budget / (small as u64)) as u8 + 3;
        for i in 1..=n {
            put(&s, &key(i), small);
            let Lookup::Hit(f) = s.lookup(&key(i)) else {
                panic!("hit {i}")
            };
            let StoredBody::Memory(b) = &f.body else {
                panic!("a small file is kept in memory")
            };
            assert_eq!((b.len(), f.len), (small, small as u64));
            assert!(b.iter().all(|&x| x == 7));
            assert!(hot_bytes(&s) <= budget, "{} > {budget}", hot_bytes(&s));
        }
        assert_eq!(hot_bytes(&s), budget / small as u64 * small as u64);
        // Past HOT_FILE: a handle (sendfile), no memory.
        let before = hot_bytes(&s);
        put(&s, &key(200), HOT_FILE as usize + 1);
        let Lookup::Hit(f) = s.lookup(&key(200)) else {
            panic!("hit")
        };
        assert!(matches!(f.body, StoredBody::Local(_)));
        assert_eq!(hot_bytes(&s), before);
        // Evicting a hot file gives its memory back.
        let mut lru = s.shared.lock();
        let victims = s.make_room(&mut lru, cap);
        assert_eq!((lru.hot_bytes, lru.hot.len()), (0, 0));
        drop(lru);
        s.unlink(victims);
    }

    #[test]
    fn a_small_file_cut_on_disk_is_a_miss_not_short_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path(), 1 << 20).unwrap();
        put(&s, &key(1), 1000);
        let path = s.shared.lock().map.peek(&key(1)).unwrap().path.clone();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert!(!hit(&s, &key(1)));
        assert_eq!(s.usage().files, 0);
    }
}
