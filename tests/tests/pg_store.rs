//! The daemon's storage on a real PostgreSQL server behaves as on sled: the
//! same tree operations give the same results on both backends, the schema
//! migrates once when several daemons start together, and a compare-and-swap
//! raced by two connections lets exactly one win.

use coldchain_daemon::kv::{Batch, Db, IVec, PgDb, Tree};
use coldchain_tests::Postgres;

fn keys(it: impl Iterator<Item = coldchain_daemon::kv::Result<IVec>>) -> Vec<IVec> {
    it.map(|k| k.unwrap()).collect()
}

fn u32s(it: impl Iterator<Item = coldchain_daemon::kv::Result<IVec>>) -> Vec<u32> {
    it.map(|k| u32::from_be_bytes(k.unwrap().as_ref().try_into().unwrap()))
        .collect()
}

/// The behaviour both backends must share.
fn conformance(db: &Db, t: &Tree) {
    t.clear().unwrap();
    assert!(t.is_empty());
    assert_eq!(t.insert(b"b", b"2".to_vec()).unwrap(), None);
    assert_eq!(
        t.insert(b"b", b"3".to_vec()).unwrap().as_deref(),
        Some(&b"2"[..])
    );
    t.insert(b"a", b"1".to_vec()).unwrap();
    t.insert([b'a', 0xff], b"x".to_vec()).unwrap();
    t.insert(b"c", b"4".to_vec()).unwrap();
    let all = keys(t.iter().keys());
    assert_eq!(
        all,
        vec![
            IVec::from(b"a"),
            IVec::from(&[b'a', 0xff]),
            IVec::from(b"b"),
            IVec::from(b"c")
        ],
        "bytewise key order, a prefix before its extensions"
    );
    let rev = keys(t.iter().keys().rev());
    assert_eq!(rev.iter().rev().cloned().collect::<Vec<_>>(), all);
    assert_eq!(keys(t.scan_prefix(b"a").keys()).len(), 2);
    assert_eq!(
        keys(t.range(b"a".to_vec()..b"c".to_vec()).keys()).len(),
        3,
        "half-open range"
    );
    assert_eq!(
        keys(t.range(b"b".to_vec()..=b"c".to_vec()).keys()),
        vec![IVec::from(b"b"), IVec::from(b"c")],
        "closed range"
    );
    // Both ends of one iterator meet without repeating or losing a key.
    let mut it = t.iter();
    let mut seen = vec![];
    while let Some(f) = it.next() {
        seen.push(f.unwrap().0);
        if let Some(b) = it.next_back() {
            seen.push(b.unwrap().0);
        }
    }
    seen.sort();
    assert_eq!(seen, all);
    assert_eq!(t.first().unwrap().unwrap().0, IVec::from(b"a"));
    assert_eq!(t.last().unwrap().unwrap().0, IVec::from(b"c"));
    assert_eq!(t.len().unwrap(), 4);
    assert!(t.contains_key(b"c").unwrap());
    // Compare and swap.
    assert!(
        t.compare_and_swap(b"n", None::<&[u8]>, Some(b"1".to_vec()))
            .unwrap()
            .is_ok()
    );
    let e = t
        .compare_and_swap(b"n", None::<&[u8]>, Some(b"2".to_vec()))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.current.as_deref(), Some(&b"1"[..]));
    assert!(
        t.compare_and_swap(b"n", Some(b"1"), Some(b"2".to_vec()))
            .unwrap()
            .is_ok()
    );
    assert!(
        t.compare_and_swap(b"n", Some(b"1"), Some(b"3".to_vec()))
            .unwrap()
            .is_err()
    );
    assert!(
        t.compare_and_swap(b"n", Some(b"2"), None::<Vec<u8>>)
            .unwrap()
            .is_ok()
    );
    assert_eq!(t.get(b"n").unwrap(), None);
    // Batches: the last operation on a key wins.
    let mut b = Batch::default();
    b.insert(&b"x"[..], &b"1"[..]);
    b.remove(&b"a"[..]);
    b.insert(&b"x"[..], &b"2"[..]);
    t.apply_batch(b).unwrap();
    assert_eq!(t.get(b"x").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(t.get(b"a").unwrap(), None);
    assert_eq!(t.remove(b"x").unwrap().as_deref(), Some(&b"2"[..]));
    // Ids increase.
    let (i, j) = (db.generate_id().unwrap(), db.generate_id().unwrap());
    assert!(j > i);
    // More keys than one page, in order from both ends and in ranges.
    t.clear().unwrap();
    let mut b = Batch::default();
    for i in 0u32..2500 {
        b.insert(&i.to_be_bytes()[..], &i.to_le_bytes()[..]);
    }
    t.apply_batch(b).unwrap();
    assert_eq!(u32s(t.iter().keys()), (0..2500).collect::<Vec<_>>());
    assert_eq!(
        u32s(t.iter().keys().rev()),
        (0..2500).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        u32s(t.range(700u32.to_be_bytes()..1900u32.to_be_bytes()).keys()),
        (700..1900).collect::<Vec<_>>()
    );
    let mut it = t.iter();
    let (mut front, mut back) = (vec![], vec![]);
    loop {
        match it.next() {
            Some(k) => front.push(u32::from_be_bytes(
                k.unwrap().0.as_ref().try_into().unwrap(),
            )),
            None => break,
        }
        for _ in 0..3 {
            if let Some(k) = it.next_back() {
                back.push(u32::from_be_bytes(
                    k.unwrap().0.as_ref().try_into().unwrap(),
                ));
            }
        }
    }
    back.reverse();
    front.extend(back);
    assert_eq!(front, (0..2500).collect::<Vec<_>>(), "pages from both ends");
    // Trees are separate.
    let other = db.open_tree("other").unwrap();
    other.insert(b"a", b"o".to_vec()).unwrap();
    assert_eq!(t.get(b"a").unwrap(), None);
    assert!(
        db.tree_names()
            .unwrap()
            .iter()
            .any(|n| n.as_ref() == b"other")
    );
    assert!(db.drop_tree("other").unwrap());
    t.clear().unwrap();
    assert!(t.is_empty());
}

#[test]
fn sled_and_postgres_trees_behave_alike() {
    let dir = tempfile::tempdir().unwrap();
    let sled = Db::from(sled::open(dir.path().join("sled")).unwrap());
    conformance(&sled, &sled.open_tree("t").unwrap());

    let pg = Postgres::start(&dir.path().join("pg"));
    let url = pg.create_db("kv");
    let db = Db::Pg(PgDb::connect(&url, 4).unwrap());
    conformance(&db, &db.open_tree("t").unwrap());
    // Nothing was left in the table by the test but what it put there.
    assert_eq!(pg.psql("kv", "SELECT count(*) FROM kv").unwrap(), "0");
}

#[test]
fn daemons_starting_together_migrate_once_and_race_safely() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg"));
    let url = pg.create_db("race");
    let dbs: Vec<Db> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Db::Pg(PgDb::connect(&url, 2).unwrap())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        pg.psql(
            "race",
            "SELECT string_agg(version::text, ',') FROM coldchain_schema"
        )
        .unwrap(),
        "1",
        "each migration recorded once"
    );
    // "Insert if new" from four daemons at once: exactly one wins each key.
    let wins: usize = std::thread::scope(|s| {
        let hs: Vec<_> = dbs
            .iter()
            .enumerate()
            .map(|(i, db)| {
                s.spawn(move || {
                    let t = db.open_tree("shipments").unwrap();
                    (0..50u32)
                        .filter(|k| {
                            t.compare_and_swap(k.to_be_bytes(), None::<&[u8]>, Some(vec![i as u8]))
                                .unwrap()
                                .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 50);
    // Ids are unique across daemons.
    let mut ids: Vec<u64> = dbs
        .iter()
        .flat_map(|db| {
            (0..20)
                .map(|_| db.generate_id().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 80);
}

#[test]
fn a_bad_url_is_a_clear_error() {
    let e = PgDb::connect("postgres://coldchain@127.0.0.1:1/nowhere", 2).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("PostgreSQL"), "{m}");
}

/// Two daemons append to the audit trail of one database at once: no entry
/// is overwritten and the hash chain stays one unbroken chain.
#[test]
fn concurrent_audit_appends_keep_one_chain() {
    use coldchain_daemon::audit::Audit;
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg"));
    let url = pg.create_db("audit");
    let trails: Vec<Audit> = (0..2)
        .map(|_| Audit::open(&Db::Pg(PgDb::connect(&url, 2).unwrap())).unwrap())
        .collect();
    std::thread::scope(|s| {
        for (i, t) in trails.iter().enumerate() {
            s.spawn(move || {
                for n in 0..40 {
                    t.append(
                        1_767_225_600_000 + n,
                        &format!("instance-{i}"),
                        "test.append",
                        "trail",
                        serde_json::json!({ "n": n }),
                    )
                    .unwrap();
                }
            });
        }
    });
    let v = trails[0].verify().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, 80, "every append kept");
}
