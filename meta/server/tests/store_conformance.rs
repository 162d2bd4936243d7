//! One conformance suite for the metadata store, run against SQLite in a temporary directory and
//! against a real PostgreSQL server (a fresh database per run, dropped afterwards).
//!
//! PostgreSQL: `TANDEM_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! names a database the test can connect to with the right to CREATE DATABASE. If it is not
//! reachable the Postgres test fails; it never passes silently.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use tandem_core::{Gpid, PartitionConfig};
use tandem_meta::store::{Claim, Fence, SqlStore, StoreError};
use tandem_meta_core::policy::{BackupPolicy, Policy, PolicyHistoryEntry};
use tandem_meta_core::{MetaSnapshot, TableInfo, TableStatus};

const DEFAULT_POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    // Nested, missing directories: connect must create them.
    let url = format!("sqlite://{}/nested/dir/meta.db", dir.path().display());
    let store = SqlStore::connect(&url).await.expect("connect to SQLite");
    conformance(store, &url).await;
}

/// The claim loop's advisory lock (PostgreSQL): a standby takes the lease early once the
/// holder's session is gone — its process exited, or the database ended the session — and the
/// holder, if alive, finds it lost at its next claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_is_taken_early_once_the_holders_session_is_gone() {
    with_postgres_database(|url| async move {
        let a = SqlStore::connect(&url).await.unwrap();
        let b = SqlStore::connect(&url).await.unwrap();
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        // "a" leads without the lock (as when it took over from a paused leader that still holds
        // it): a standby leaves the lock alone, so "a" gets it at its next round.
        assert_eq!(a.claim_lease("a", "a:1", 60_000).await.unwrap(), Claim::Won { epoch: 1 });
        assert_eq!(b.claim_round("b", "b:1", 60_000).await.unwrap(), Claim::Held { holder: "a".into(), address: "a:1".into(), epoch: 1 });
        assert_eq!(lock_holders(&mut admin).await, 0, "a standby tried the lock of a leader without it");
        assert_eq!(a.claim_round("a", "a:1", 60_000).await.unwrap(), Claim::Won { epoch: 1 });
        assert_eq!(lock_holders(&mut admin).await, 1);
        assert_eq!(b.claim_round("b", "b:1", 60_000).await.unwrap(), Claim::Held { holder: "a".into(), address: "a:1".into(), epoch: 1 });
        // A renewal keeps the lock and the epoch, and is no early takeover.
        assert_eq!(a.claim_round("a", "a:1", 60_000).await.unwrap(), Claim::Won { epoch: 1 });
        // "a" exits: its connections close, and the database frees its lock.
        a.close().await;
        let early = poll_claim(&b, "b").await;
        assert!(matches!(early, Claim::WonEarly { epoch: 2, predecessor_ms } if (50_000..=60_000).contains(&predecessor_ms)), "{early:?}");
        assert_eq!(b.claim_round("b", "b:1", 60_000).await.unwrap(), Claim::Won { epoch: 2 }, "then renewals as usual");

        // The database ends "b"'s lock session while "b" lives: "c" takes over early, and "b"
        // learns it lost at its next claim.
        let c = SqlStore::connect(&url).await.unwrap();
        assert!(matches!(c.claim_round("c", "c:1", 60_000).await.unwrap(), Claim::Held { epoch: 2, .. }));
        let killed: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert_eq!(killed, vec![(true,)], "one session holds the lock");
        let early = poll_claim(&c, "c").await;
        assert!(matches!(early, Claim::WonEarly { epoch: 3, .. }), "{early:?}");
        assert_eq!(b.claim_round("b", "b:1", 60_000).await.unwrap(), Claim::Held { holder: "c".into(), address: "c:1".into(), epoch: 3 });
        // "b" gave the lock back when it lost (or never got it again): "c" keeps it, so a "b"
        // claim cannot take the row early.
        assert!(matches!(b.claim_round("b", "b:1", 60_000).await.unwrap(), Claim::Held { epoch: 3, .. }));
        // A claim without the lock never takes a live row early.
        assert!(matches!(b.claim_lease("b", "b:1", 60_000).await.unwrap(), Claim::Held { epoch: 3, .. }));
        admin.close().await.unwrap();
        for s in [b, c] {
            s.close().await;
        }
    })
    .await;
}

/// How many sessions of this database hold an advisory lock.
async fn lock_holders(admin: &mut sqlx::PgConnection) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(admin)
    .await
    .unwrap();
    n
}

/// Claims as `holder` until the claim wins (the database frees a lock a moment after its
/// session ends), within 10 s.
async fn poll_claim(store: &SqlStore, holder: &str) -> Claim {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let claim = store.claim_round(holder, &format!("{holder}:1"), 60_000).await.unwrap();
        if !matches!(claim, Claim::Held { .. }) || std::time::Instant::now() > deadline {
            return claim;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs `suite` on a database of its own, dropped afterwards even when the suite fails.
async fn with_postgres_database<F, Fut>(suite: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let admin_url = std::env::var("TANDEM_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_ADMIN_URL.to_string());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|error| panic!("PostgreSQL is not reachable at {admin_url}: {error}"));
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let database = format!("tandem_test_{}_{}", std::process::id(), nanos);
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut admin).await.unwrap();
    let outcome = tokio::spawn(suite(replace_database(&admin_url, &database))).await;
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)")).execute(&mut admin).await.unwrap();
    admin.close().await.expect("close the admin connection");
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conformance() {
    let admin_url = std::env::var("TANDEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_ADMIN_URL.to_string());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "PostgreSQL is not reachable at {admin_url}: {error}. This test needs a running \
             server (ops/test starts one); set TANDEM_TEST_POSTGRES_URL to use another."
            )
        });
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let database = format!("tandem_test_{}_{}", std::process::id(), nanos);
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("CREATE DATABASE {database} at {admin_url}: {error}"));
    let url = replace_database(&admin_url, &database);

    // Run the suite in its own task so the database is dropped even when an assertion fails.
    let suite_url = url.clone();
    let outcome = tokio::spawn(async move {
        let store = SqlStore::connect(&suite_url)
            .await
            .expect("connect to PostgreSQL");
        conformance(store, &suite_url).await;
    })
    .await;

    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("DROP DATABASE {database}: {error}"));
    admin.close().await.expect("close the admin connection");
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[tokio::test]
async fn unsupported_url_is_refused_with_the_accepted_forms() {
    let error = SqlStore::connect("mysql://root@localhost/meta")
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(error, StoreError::UnsupportedUrl { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("sqlite://PATH") && message.contains("postgres://"),
        "{message}"
    );
}

/// `admin_url` with its database (the last path segment) replaced by `database`.
fn replace_database(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").expect("URL has a scheme") + 3;
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

fn table(
    id: u32,
    name: &str,
    partition_count: u32,
    status: TableStatus,
    created_ms: u64,
) -> TableInfo {
    TableInfo {
        id,
        name: name.to_string(),
        partition_count,
        replica_count: 3,
        status,
        created_ms,
        owner: "alice".to_string(),
        policy: Policy::with_replicas(3),
    }
}

fn empty_partitions(table_id: u32, partition_count: u32) -> Vec<PartitionConfig> {
    (0..partition_count)
        .map(|partition| PartitionConfig {
            gpid: Gpid::new(table_id, partition),
            ..Default::default()
        })
        .collect()
}

fn nodes(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

/// The suite every store must pass. Leaves the store closed.
async fn conformance(store: SqlStore, url: &str) {
    // Fresh store: empty.
    assert_eq!(store.load().await.unwrap(), MetaSnapshot::default());
    let f = lease_and_fencing(&store, url).await;

    // Create / load round trip; ids start at 1 and grow by one.
    let alpha = store
        .create_table(&f, "alpha", 4, &Policy::with_replicas(3), "alice", "alice", 1_000)
        .await
        .unwrap();
    assert_eq!(alpha, table(1, "alpha", 4, TableStatus::Available, 1_000));
    let beta = store
        .create_table(&f, "beta", 2, &Policy::with_replicas(3), "alice", "alice", 2_000)
        .await
        .unwrap();
    assert_eq!(beta.id, 2);
    let mut expected = MetaSnapshot {
        tables: vec![alpha.clone(), beta.clone()],
        partitions: [empty_partitions(1, 4), empty_partitions(2, 2)].concat(),
        nodes: vec![],
        ..Default::default()
    };
    assert_eq!(store.load().await.unwrap(), expected);

    // Duplicate name refused, nothing written.
    let error = store
        .create_table(&f, "alpha", 8, &Policy::with_replicas(3), "bob", "bob", 3_000)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::AlreadyExists { name, id: 1 } if name == "alpha"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("table 'alpha' already exists"),
        "{error}"
    );
    assert_eq!(store.load().await.unwrap(), expected);

    // Invalid specs refused.
    for (name, partition_count, replica_count) in [
        ("", 4, 3),
        ("gamma", 0, 3),
        ("gamma", 3, 3),
        ("gamma", 4, 0),
    ] {
        let error = store
            .create_table(&f, name, partition_count, &Policy::with_replicas(replica_count), "alice", "alice", 0)
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidTable { .. }),
            "{error:?}"
        );
    }
    assert_eq!(store.load().await.unwrap(), expected);

    // Compare-and-set on the ballot.
    let mut config = PartitionConfig {
        gpid: Gpid::new(1, 2),
        ballot: 1,
        primary: Some("n1:34801".to_string()),
        secondaries: nodes(&["n2:34801", "n3:34801"]),
        learners: nodes(&["n4:34801"]),
        last_drops: nodes(&["n5:34801"]),
    };
    assert!(
        store.update_partition(&f, &config, 0).await.unwrap(),
        "CAS from the stored ballot 0"
    );
    expected.partitions[2] = config.clone();
    assert_eq!(store.load().await.unwrap(), expected);

    let stale = PartitionConfig {
        ballot: 2,
        primary: Some("n9:34801".to_string()),
        ..config.clone()
    };
    assert!(
        !store.update_partition(&f, &stale, 0).await.unwrap(),
        "CAS from a stale ballot must fail"
    );
    assert_eq!(
        store.load().await.unwrap(),
        expected,
        "a failed CAS writes nothing"
    );

    // A new table's placement: all of its partitions, or none if one is not at ballot 0.
    let place = |partition: u32, primary: &str| PartitionConfig {
        gpid: Gpid::new(2, partition),
        ballot: 1,
        primary: Some(primary.to_string()),
        secondaries: nodes(&["n2:34801"]),
        learners: vec![],
        last_drops: vec![],
    };
    assert!(store.place_partitions(&f, &[place(0, "n1:34801"), place(1, "n3:34801")]).await.unwrap());
    expected.partitions[4] = place(0, "n1:34801");
    expected.partitions[5] = place(1, "n3:34801");
    assert_eq!(store.load().await.unwrap(), expected);
    let again = [PartitionConfig { ballot: 2, ..place(0, "n9:34801") }];
    assert!(!store.place_partitions(&f, &again).await.unwrap(), "placed already");
    // 1.3 is at ballot 0 and taken first; 2.0 then refuses: 1.3 is rolled back.
    let mixed = [PartitionConfig { gpid: Gpid::new(1, 3), ..place(0, "n9:34801") }, place(0, "n9:34801")];
    assert!(!store.place_partitions(&f, &mixed).await.unwrap(), "one of them is placed");
    assert_eq!(store.load().await.unwrap(), expected, "a refused placement writes none of them");
    let missing = [PartitionConfig { gpid: Gpid::new(1, 3), ..place(0, "n9:34801") }, PartitionConfig { gpid: Gpid::new(9, 0), ..place(0, "n9:34801") }];
    assert!(!store.place_partitions(&f, &missing).await.unwrap(), "9.0 does not exist");
    assert_eq!(store.load().await.unwrap(), expected, "nor one with a partition that does not exist");

    // Learners change without a new ballot.
    config.learners.clear();
    assert!(store.update_partition(&f, &config, 1).await.unwrap());
    config.ballot = 2;
    config.primary = None;
    config.secondaries = vec![];
    config.last_drops = nodes(&["n5:34801", "n3:34801", "n2:34801", "n1:34801"]);
    assert!(store.update_partition(&f, &config, 1).await.unwrap());
    expected.partitions[2] = config.clone();
    assert_eq!(store.load().await.unwrap(), expected);

    let missing = PartitionConfig {
        gpid: Gpid::new(1, 4),
        ..Default::default()
    };
    let error = store.update_partition(&f, &missing, 0).await.unwrap_err();
    assert!(
        matches!(error, StoreError::PartitionNotFound { gpid } if gpid == Gpid::new(1, 4)),
        "{error:?}"
    );

    // Racing compare-and-sets from the same ballot: exactly one wins.
    let racers = (0..6u64).map(|i| {
        let mut config = config.clone();
        config.ballot = 3;
        config.primary = Some(format!("racer{i}:34801"));
        config
    });
    let results = futures::future::join_all(racers.clone().map(|c| {
        let (store, f) = (&store, &f);
        async move { store.update_partition(f, &c, 2).await.unwrap() }
    }))
    .await;
    assert_eq!(results.iter().filter(|won| **won).count(), 1, "{results:?}");
    let winner = racers.zip(&results).find(|(_, won)| **won).unwrap().0;
    expected.partitions[2] = winner;
    assert_eq!(store.load().await.unwrap(), expected);

    // Drop → recall.
    store.drop_table(&f, 2, 5_000).await.unwrap();
    expected.tables[1].status = TableStatus::Dropped {
        drop_time_ms: 5_000,
    };
    assert_eq!(
        store.load().await.unwrap(),
        expected,
        "a dropped table and its partitions stay"
    );
    let error = store.drop_table(&f, 2, 6_000).await.unwrap_err();
    assert!(
        matches!(error, StoreError::AlreadyDropped { id: 2, .. }),
        "{error:?}"
    );
    store.recall_table(&f, 2).await.unwrap();
    expected.tables[1].status = TableStatus::Available;
    assert_eq!(store.load().await.unwrap(), expected);
    let error = store.recall_table(&f, 2).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotDropped { id: 2, .. }),
        "{error:?}"
    );
    assert!(matches!(
        store.drop_table(&f, 77, 0).await.unwrap_err(),
        StoreError::TableNotFound { id: 77 }
    ));
    assert!(matches!(
        store.recall_table(&f, 77).await.unwrap_err(),
        StoreError::TableNotFound { id: 77 }
    ));

    // Drop → create the same name → recall refused.
    store.drop_table(&f, 2, 7_000).await.unwrap();
    expected.tables[1].status = TableStatus::Dropped {
        drop_time_ms: 7_000,
    };
    let new_beta = store
        .create_table(&f, "beta", 8, &Policy::with_replicas(3), "alice", "alice", 8_000)
        .await
        .unwrap();
    assert_eq!(new_beta, table(3, "beta", 8, TableStatus::Available, 8_000));
    expected.tables.push(new_beta);
    expected.partitions.extend(empty_partitions(3, 8));
    let error = store.recall_table(&f, 2).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::NameTaken { id: 2, other_id: 3, name } if name == "beta"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("'beta' is now used by table 3"),
        "{error}"
    );
    assert_eq!(
        store.load().await.unwrap(),
        expected,
        "a refused recall writes nothing"
    );

    // Purge: only dropped tables, partitions go with them.
    let error = store.purge_table(&f, 3).await.unwrap_err();
    assert!(
        matches!(error, StoreError::PurgeAvailable { id: 3, .. }),
        "{error:?}"
    );
    store.purge_table(&f, 2).await.unwrap();
    expected.tables.remove(1);
    expected.partitions.retain(|p| p.gpid.table_id != 2);
    assert_eq!(store.load().await.unwrap(), expected);
    assert!(matches!(
        store.purge_table(&f, 2).await.unwrap_err(),
        StoreError::TableNotFound { id: 2 }
    ));

    // Node registration is idempotent and keeps the first sighting.
    store.register_node(&f, "n2:34801", 200).await.unwrap();
    store.register_node(&f, "n1:34801", 100).await.unwrap();
    store.register_node(&f, "n1:34801", 300).await.unwrap();
    store.register_node(&f, "n2:34801", 400).await.unwrap();
    expected.nodes = vec![("n1:34801".to_string(), 100), ("n2:34801".to_string(), 200)];
    assert_eq!(store.load().await.unwrap(), expected);

    // Concurrent creates: distinct names all succeed with distinct ids; one name wins once.
    let created = futures::future::join_all((0..5).map(|i| {
        let (store, f) = (&store, &f);
        async move {
            store
                .create_table(f, &format!("concurrent{i}"), 1, &Policy::with_replicas(3), "carol", "carol", 9_000)
                .await
                .unwrap()
        }
    }))
    .await;
    let mut ids: Vec<u32> = created.iter().map(|t| t.id).collect();
    ids.sort();
    assert_eq!(ids, vec![4, 5, 6, 7, 8]);
    let same_name = futures::future::join_all((0..5).map(|_| {
        let (store, f) = (&store, &f);
        async move { store.create_table(f, "contended", 2, &Policy::with_replicas(3), "carol", "carol", 9_500).await }
    }))
    .await;
    assert_eq!(
        same_name.iter().filter(|r| r.is_ok()).count(),
        1,
        "{same_name:?}"
    );
    assert!(
        same_name
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(StoreError::AlreadyExists { .. })))
    );
    let mut created: Vec<TableInfo> = created;
    created.push(same_name.into_iter().find_map(|r| r.ok()).unwrap());
    created.sort_by_key(|t| t.id);
    for table in created {
        expected
            .partitions
            .extend(empty_partitions(table.id, table.partition_count));
        expected.tables.push(table);
    }
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded, expected);
    store.close().await;

    // Reopen: everything is there, and re-running the migrations is a no-op.
    let reopened = SqlStore::connect(url)
        .await
        .expect("reconnect to the same URL");
    assert_eq!(reopened.load().await.unwrap(), expected);
    let f = Fence { holder: "a".into(), epoch: lead(&reopened, "a").await };
    let more = reopened
        .create_table(&f, "after_reopen", 2, &Policy::with_replicas(1), "dave", "dave", 10_000)
        .await
        .unwrap();
    assert_eq!(more.id, 10);
    reopened.close().await;
    let again = SqlStore::connect(url)
        .await
        .expect("reconnect a second time");
    let f = Fence { holder: "a".into(), epoch: lead(&again, "a").await };
    assert_eq!(again.load().await.unwrap().tables.last(), Some(&more));

    // Purging the newest table does not give its id to the next one: replica servers may still
    // hold data under the purged table's partition ids.
    again.drop_table(&f, more.id, 11_000).await.unwrap();
    again.purge_table(&f, more.id).await.unwrap();
    let next = again.create_table(&f, "after_purge", 1, &Policy::with_replicas(1), "dave", "dave", 12_000).await.unwrap();
    assert_eq!(next.id, more.id + 1);
    policies(&again, &f).await;
    duplications(&again, &f).await;
    backups(&again, &f).await;
    again.close().await;
}

/// Sites, duplications and confirmed decrees: kept, refused as the in-memory twin refuses, and
/// loaded back.
async fn duplications(store: &SqlStore, f: &Fence) {
    use tandem_dup_core::FailMode;
    use tandem_meta_core::duplication::{DupStatus, Site};
    let b = Site { name: "b".into(), metas: vec!["meta-b:34601".into(), "meta-b2:34601".into()] };
    store.add_site(f, &b).await.unwrap();
    assert!(matches!(store.add_site(f, &b).await.unwrap_err(), StoreError::SiteExists { .. }));
    let table = store.create_table(f, "duplicated", 2, &Policy::with_replicas(1), "o", "o", 20_000).await.unwrap();
    let missing = store.add_duplication(f, table.id, "nowhere", FailMode::Slow, false, 1, &[]).await.unwrap_err();
    assert!(matches!(missing, StoreError::SiteNotFound { .. }), "{missing:?}");
    let dup = store.add_duplication(f, table.id, "b", FailMode::Skip, true, 21_000, &[(0, 3)]).await.unwrap();
    assert_eq!((dup.status, dup.fail_mode, dup.sync_existing), (DupStatus::Start, FailMode::Skip, true));
    assert!(matches!(store.add_duplication(f, table.id, "b", FailMode::Slow, false, 1, &[]).await.unwrap_err(), StoreError::DupExists { .. }));
    assert!(matches!(store.remove_site(f, "b").await.unwrap_err(), StoreError::SiteInUse { .. }));
    assert_eq!(store.load().await.unwrap().dup_confirmed.last(), Some(&(dup.id, 0, 3)), "the start point is written with the duplication");
    store.save_dup_progress(f, &[(dup.id, 0, 10), (dup.id, 1, 4)]).await.unwrap();
    // Never lowered.
    store.save_dup_progress(f, &[(dup.id, 0, 7), (dup.id, 1, 5)]).await.unwrap();
    store.set_dup_status(f, dup.id, DupStatus::Pause).await.unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.sites, vec![b.clone()]);
    assert_eq!(loaded.dups.last().map(|d| (d.id, d.status)), Some((dup.id, DupStatus::Pause)));
    let progress: Vec<_> = loaded.dup_confirmed.iter().filter(|(d, _, _)| *d == dup.id).copied().collect();
    assert_eq!(progress, vec![(dup.id, 0, 10), (dup.id, 1, 5)]);
    store.set_dup_status(f, dup.id, DupStatus::Removed).await.unwrap();
    assert!(matches!(store.set_dup_status(f, dup.id, DupStatus::Start).await.unwrap_err(), StoreError::DupRemoved { .. }));
    assert!(matches!(store.set_dup_status(f, 999, DupStatus::Pause).await.unwrap_err(), StoreError::DupNotFound { .. }));
    store.remove_site(f, "b").await.unwrap();
    assert!(matches!(store.remove_site(f, "b").await.unwrap_err(), StoreError::SiteNotFound { .. }));
    // Ids are not reused after a removal.
    store.add_site(f, &b).await.unwrap();
    let again = store.add_duplication(f, table.id, "b", FailMode::Slow, false, 22_000, &[]).await.unwrap();
    assert_eq!(again.id, dup.id + 1);
    // A policy that stops naming a site removes the duplication there in its own write; one that
    // names no site before or after touches none.
    let to_b = Policy { duplication: Some("b".into()), ..Policy::with_replicas(1) };
    store.set_policy(f, table.id, &Policy::with_replicas(1), &Policy::with_replicas(1), "o", 22_100).await.unwrap();
    assert_eq!(store.load().await.unwrap().dups.last().map(|d| (d.id, d.status)), Some((again.id, DupStatus::Start)));
    store.set_policy(f, table.id, &to_b, &Policy::with_replicas(1), "o", 22_200).await.unwrap();
    assert_eq!(store.load().await.unwrap().dups.last().map(|d| (d.id, d.status)), Some((again.id, DupStatus::Removed)));
    let mut twin = tandem_meta_core::store::MemStore::default();
    twin.claim("m", "m", 60_000, 0);
    twin.write("m", 1, &tandem_meta_core::store::StoreWrite::CreateTable { name: "d".into(), partition_count: 1, policy: to_b.clone(), owner: "o".into(), who: "o".into(), at_ms: 0 }).unwrap();
    twin.write("m", 1, &tandem_meta_core::store::StoreWrite::AddSite { site: b.clone() }).unwrap();
    twin.write("m", 1, &tandem_meta_core::store::StoreWrite::AddDuplication { table_id: 1, remote_site: "b".into(), fail_mode: FailMode::Slow, sync_existing: false, at_ms: 0, start: vec![] }).unwrap();
    twin.write("m", 1, &tandem_meta_core::store::StoreWrite::SetPolicy { table_id: 1, old: to_b.clone(), new: Policy::with_replicas(1), who: "o".into(), at_ms: 1 }).unwrap();
    assert_eq!(twin.load().dups.iter().map(|d| d.status).collect::<Vec<_>>(), [DupStatus::Removed], "the in-memory twin agrees");
    // A purged table's duplications are removed.
    store.drop_table(f, table.id, 23_000).await.unwrap();
    store.purge_table(f, table.id).await.unwrap();
    assert_eq!(store.load().await.unwrap().dups.last().map(|d| d.status), Some(DupStatus::Removed));
}

/// Backup records: the same writes give the same answers and the same records as the
/// in-memory twin (ids, the state rule, refusals), and they outlive their table.
async fn backups(store: &SqlStore, f: &Fence) {
    use tandem_backup_core::BackupState;
    use tandem_meta_core::store::{MemStore, StoreFailureKind, StoreWrite};
    let table = store.create_table(f, "backed", 2, &Policy::with_replicas(1), "o", "o", 30_000).await.unwrap();
    let mut twin = MemStore::default();
    twin.claim("m", "m", 60_000, 0);
    // The twin's table gets the same id as the store's.
    for id in 1..=table.id {
        let name = if id == table.id { "backed".to_string() } else { format!("filler{id}") };
        twin.write("m", 1, &StoreWrite::CreateTable { name, partition_count: 2, policy: Policy::with_replicas(1), owner: "o".into(), who: "o".into(), at_ms: 30_000 }).unwrap();
    }
    let add = |at_ms| StoreWrite::AddBackup { table_id: table.id, table_name: "backed".into(), partition_count: 2, target: "file:///bk".into(), who: "ann".into(), at_ms };
    let writes = vec![
        add(31_000),
        add(32_000),
        StoreWrite::CompleteBackup { id: 1, at_ms: 33_000, manifest_sha256: "ab".repeat(32), bytes: 1_000, new_bytes: 400 },
        // Complete twice, fail a complete one, delete a running one: refused.
        StoreWrite::CompleteBackup { id: 1, at_ms: 33_500, manifest_sha256: "cd".repeat(32), bytes: 1, new_bytes: 1 },
        StoreWrite::FailBackups { ids: vec![2, 1], at_ms: 34_000, reason: "target down".into() },
        StoreWrite::DeleteBackup { id: 2, reason: "retention".into() },
        StoreWrite::FailBackups { ids: vec![2], at_ms: 34_000, reason: "target down".into() },
        StoreWrite::DeleteBackup { id: 1, reason: "retention: 1 kept".into() },
        StoreWrite::DeleteBackup { id: 9, reason: "x".into() },
        StoreWrite::AddBackup { table_id: 999, table_name: "none".into(), partition_count: 1, target: "file:///bk".into(), who: "ann".into(), at_ms: 1 },
    ];
    for write in &writes {
        let sql = store.apply(f, write).await.map_err(|e| e.failure().kind);
        let mem = twin.write("m", 1, write).map_err(|e| e.kind);
        assert_eq!(sql, mem, "{write:?}");
    }
    let loaded = store.load().await.unwrap().backups;
    assert_eq!(loaded, twin.load().backups);
    let states: Vec<_> = loaded.iter().map(|b| (b.id, b.state, b.reason.as_str())).collect();
    assert_eq!(states, [(1, BackupState::Deleted, "retention: 1 kept"), (2, BackupState::Failed, "target down")]);
    assert_eq!((loaded[0].bytes, loaded[0].new_bytes, loaded[0].finished_ms), (1_000, 400, 33_000));
    assert!(matches!(twin.write("m", 1, &writes[3]), Err(e) if e.kind == StoreFailureKind::Invalid));
    // Restores: the table and its running restore in one write; only from a complete backup;
    // running → complete once.
    use tandem_meta_core::backup::RestoreState;
    let writes = vec![
        add(37_000),
        StoreWrite::CompleteBackup { id: 3, at_ms: 37_500, manifest_sha256: "ef".repeat(32), bytes: 10, new_bytes: 10 },
    ];
    for write in &writes {
        assert_eq!(store.apply(f, write).await.map_err(|e| e.failure().kind), twin.write("m", 1, write).map_err(|e| e.kind), "{write:?}");
    }
    let complete = store.load().await.unwrap().backups.into_iter().find(|b| b.id == 3).unwrap();
    let restore = |name: &str, backup: &tandem_meta_core::backup::BackupInfo| StoreWrite::RestoreTable {
        name: name.into(),
        policy: Policy::with_replicas(1),
        owner: "o".into(),
        who: "ann".into(),
        at_ms: 38_000,
        backup: backup.clone(),
    };
    let deleted = loaded[0].clone();
    let writes = vec![
        restore("restored", &complete),
        restore("restored", &complete),
        restore("from-deleted", &deleted),
        StoreWrite::FinishRestore { id: 1, state: RestoreState::Complete, at_ms: 39_000, reason: String::new() },
        StoreWrite::FinishRestore { id: 1, state: RestoreState::Failed, at_ms: 39_500, reason: "x".into() },
        StoreWrite::FinishRestore { id: 7, state: RestoreState::Failed, at_ms: 39_500, reason: "x".into() },
    ];
    let mut answers = Vec::new();
    for write in &writes {
        let sql = store.apply(f, write).await.map_err(|e| e.failure().kind);
        let mem = twin.write("m", 1, write).map_err(|e| e.kind);
        assert_eq!(sql, mem, "{write:?}");
        answers.push(sql.map(|_| ()));
    }
    assert_eq!(answers, [Ok(()), Err(StoreFailureKind::AlreadyExists), Err(StoreFailureKind::Invalid), Ok(()), Err(StoreFailureKind::Invalid), Err(StoreFailureKind::NotFound)]);
    let loaded_restores = store.load().await.unwrap().restores;
    assert_eq!(loaded_restores, twin.load().restores);
    let r = &loaded_restores[0];
    assert_eq!((r.table_name.as_str(), r.backup_id, r.source_table_id, r.state, r.partition_count), ("restored", 3, table.id, RestoreState::Complete, 2));
    let restored_table = store.load().await.unwrap().tables.into_iter().find(|t| t.name == "restored").unwrap();
    assert_eq!((restored_table.id, restored_table.partition_count), (r.table_id, 2));
    // Records outlive their table; a dropped table gets no new one.
    store.drop_table(f, table.id, 35_000).await.unwrap();
    assert!(matches!(store.apply(f, &add(36_000)).await.unwrap_err(), StoreError::TableNotFound { .. }));
    store.purge_table(f, table.id).await.unwrap();
    assert_eq!(store.load().await.unwrap().backups.len(), 3);
}

/// Claims (or renews) the lease as `holder`; returns its epoch.
async fn lead(store: &SqlStore, holder: &str) -> u64 {
    match store.claim_lease(holder, &format!("{holder}:1"), 60_000).await.unwrap() {
        Claim::Won { epoch } => {
            epoch
        }
        held => panic!("{holder} could not take the lease: {held:?}"),
    }
}

/// Claims the lease as `holder` until it wins (the current lease must be about to expire).
async fn take_over(store: &SqlStore, holder: &str) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match store.claim_lease(holder, &format!("{holder}:1"), 60_000).await.unwrap() {
            Claim::Won { epoch } => {
                return epoch;
            }
            Claim::Held { .. } if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            held => panic!("{holder} never took over: {held:?}"),
        }
    }
}

/// The lease row: one holder at a time, the epoch grows on takeover only, and a deposed
/// holder's writes fail inside their transaction. Leaves `store` leading as "a".
async fn lease_and_fencing(store: &SqlStore, url: &str) -> Fence {
    let policy = Policy::with_replicas(1);
    // Nobody holds the lease yet: a write under any fence is refused.
    let nobody = Fence { holder: "a".into(), epoch: 1 };
    let error = store.create_table(&nobody, "unfenced", 1, &policy, "x", "x", 0).await.unwrap_err();
    assert!(matches!(&error, StoreError::Fenced { mine: 1, current: 0, holder } if holder == "nobody"), "{error:?}");

    assert_eq!(lead(store, "a").await, 1);
    let other = SqlStore::connect(url).await.unwrap();
    assert_eq!(
        other.claim_lease("b", "b:1", 60_000).await.unwrap(),
        Claim::Held { holder: "a".into(), address: "a:1".into(), epoch: 1 }
    );
    // Renewing keeps the epoch.
    assert_eq!(lead(store, "a").await, 1);
    // A write while another holds the lease is refused even if that one set a fence.
    let error = other.create_table(&Fence { holder: "b".into(), epoch: 1 }, "by_b", 1, &policy, "x", "x", 0).await.unwrap_err();
    assert!(matches!(&error, StoreError::Fenced { mine: 1, current: 1, holder } if holder == "a"), "{error:?}");

    // "a" lets its lease run out; "b" takes over at a new epoch and "a" is fenced.
    assert!(matches!(store.claim_lease("a", "a:1", 1).await.unwrap(), Claim::Won { epoch: 1 }));
    assert_eq!(take_over(&other, "b").await, 2);
    let error = store.create_table(&Fence { holder: "a".into(), epoch: 1 }, "by_a", 1, &policy, "x", "x", 0).await.unwrap_err();
    assert!(matches!(&error, StoreError::Fenced { mine: 1, current: 2, holder } if holder == "b"), "{error:?}");
    assert!(error.to_string().contains("writes nothing more"), "{error}");
    assert_eq!(store.load().await.unwrap(), MetaSnapshot::default(), "a fenced write writes nothing");
    assert_eq!(
        store.claim_lease("a", "a:1", 60_000).await.unwrap(),
        Claim::Held { holder: "b".into(), address: "b:1".into(), epoch: 2 }
    );

    // Racing claims on a released lease: exactly one wins.
    other.release_lease("b").await.unwrap();
    let racers: Vec<SqlStore> = futures::future::join_all((0..4).map(|_| SqlStore::connect(url))).await.into_iter().map(Result::unwrap).collect();
    let claims = futures::future::join_all(racers.iter().enumerate().map(|(i, s)| async move { s.claim_lease(&format!("r{i}"), &format!("r{i}:1"), 60_000).await.unwrap() })).await;
    let winners: Vec<&Claim> = claims.iter().filter(|c| matches!(c, Claim::Won { .. })).collect();
    assert_eq!(winners, vec![&Claim::Won { epoch: 3 }], "{claims:?}");
    for racer in racers {
        racer.close().await;
    }
    other.close().await;
    // A process restarted at the same address takes over at once, at a new epoch.
    assert_eq!(
        store.claim_lease("a-restarted", "a:1", 60_000).await.unwrap(),
        Claim::Held { holder: claims.iter().position(|c| matches!(c, Claim::Won { .. })).map(|i| format!("r{i}")).unwrap(), address: format!("r{}:1", claims.iter().position(|c| matches!(c, Claim::Won { .. })).unwrap()), epoch: 3 }
    );
    // Back to "a" for the rest of the suite.
    let winner = claims.iter().position(|c| matches!(c, Claim::Won { .. })).unwrap();
    let helper = SqlStore::connect(url).await.unwrap();
    // The winner's lease is long; expire it as its holder would on a clean stop.
    helper.release_lease(&format!("r{winner}")).await.unwrap();
    helper.close().await;
    assert_eq!(take_over(store, "a").await, 4);
    let restarted = SqlStore::connect(url).await.unwrap();
    assert_eq!(restarted.claim_lease("a-restarted", "a:1", 60_000).await.unwrap(), Claim::Won { epoch: 5 });
    restarted.close().await;
    assert_eq!(take_over(store, "a").await, 6);
    Fence { holder: "a".into(), epoch: 6 }
}

/// Policies: written with the table, replaced with a history entry, loaded back.
async fn policies(store: &SqlStore, f: &Fence) {
    let initial = Policy { duplication: Some("east".into()), ..Policy::with_replicas(2) };
    let table = store.create_table(&f, "with_policy", 2, &initial, "erin", "frank", 20_000).await.unwrap();
    assert_eq!((table.replica_count, &table.policy), (2, &initial));
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.tables.iter().find(|t| t.id == table.id), Some(&table));

    let next = Policy {
        replicas: 5,
        duplication: None,
        backup: Some(BackupPolicy { every_ms: 3_600_000, keep: 4, target: "s3://bucket/prefix".into(), at: Some(tandem_meta_core::policy::BackupAt::parse("02:30 Europe/Paris").unwrap()) }),
        tombstone_retention_ms: 7_200_000,
    };
    store.set_policy(&f, table.id, &initial, &next, "grace", 21_000).await.unwrap();
    let loaded = store.load().await.unwrap();
    let reloaded = loaded.tables.iter().find(|t| t.id == table.id).unwrap();
    assert_eq!((reloaded.replica_count, &reloaded.policy), (5, &next));
    assert_eq!(
        store.policy_history(table.id).await.unwrap(),
        vec![
            PolicyHistoryEntry { at_ms: 20_000, who: "frank".into(), old: None, new: initial.clone() },
            PolicyHistoryEntry { at_ms: 21_000, who: "grace".into(), old: Some(initial), new: next.clone() },
        ]
    );
    let error = store.set_policy(&f, 4_000_000, &next, &next, "x", 0).await.unwrap_err();
    assert!(matches!(error, StoreError::TableNotFound { id: 4_000_000 }), "{error:?}");
    // The history outlives the table.
    store.drop_table(&f, table.id, 22_000).await.unwrap();
    store.purge_table(&f, table.id).await.unwrap();
    assert_eq!(store.policy_history(table.id).await.unwrap().len(), 2);
}

/// SQLite on a disk another process fills to its last byte: the store gives up its reserve file
/// for the write that meets the full disk (and does it), so configuration changes and lease
/// renewals go on until space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_gives_up_its_reserve_for_the_writes_that_meet_a_full_disk() {
    use std::io::Write;
    use std::process::Command;
    use tandem_meta_core::store::StoreWrite;
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("fs");
    std::fs::create_dir_all(&fs).unwrap();
    match Command::new("mount").args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"]).arg(&fs).output() {
        Ok(out) if out.status.success() => {}
        other => {
            println!("SKIPPED: cannot mount a tmpfs here ({other:?}); this test needs root");
            return;
        }
    }
    let _unmount = Unmount(fs.clone());
    let store = SqlStore::connect(&format!("sqlite://{}/meta.db", fs.display())).await.unwrap();
    let reserve = fs.join("meta.db.reserve");
    assert_eq!(std::fs::metadata(&reserve).map(|m| m.len()).ok(), Some(8 << 20), "the store keeps 8 MiB for itself");
    let f = Fence { holder: "a".into(), epoch: lead(&store, "a").await };

    // Another process takes every byte left.
    let mut filler = std::fs::File::create(fs.join("filler")).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for size in [1 << 20, 4096, 1] {
        while matches!(filler.write(&chunk[..size]), Ok(n) if n > 0) {}
    }
    let _ = filler.sync_all();

    // Configuration writes go on: the one that meets the full disk gives up the reserve.
    let mut written = 0;
    while reserve.exists() {
        assert!(written < 20_000, "{written} writes and the disk never refused one");
        let write = StoreWrite::CreateTable {
            name: format!("table_{written:05}_{}", "x".repeat(200)),
            partition_count: 8,
            policy: Policy::with_replicas(3),
            owner: "o".into(),
            who: "w".into(),
            at_ms: 0,
        };
        store.apply(&f, &write).await.unwrap_or_else(|e| panic!("write {written} on a full disk: {e}"));
        written += 1;
    }
    for i in 0..100 {
        store.apply(&f, &StoreWrite::RegisterNode { address: format!("r{i}:1"), at_ms: 0 }).await.expect("writes after the reserve was given up");
    }
    assert_eq!(store.claim_round("a", "a:1", 60_000).await.unwrap(), Claim::Won { epoch: f.epoch }, "a lease renewal");
    println!("the disk refused write {written}; the reserve was given up for it and 100 more writes and a renewal went through");
    drop(filler);
    store.close().await;
}
