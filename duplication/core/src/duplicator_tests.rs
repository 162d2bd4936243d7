use super::*;
use tandem_core::WriteOp;
use tandem_core::key::encode_key;
use tandem_core::timetag::make_timetag;
use tandem_core::value::encode_value;

const LOCAL: u8 = 1;
const REMOTE: u8 = 2;

fn now(ms: u64) -> Now {
    Now { now_ms: ms, wall_us: 1_000_000_000 + ms * 1000 }
}

fn record(key: &str, ts: u64, cluster: u8) -> DupRecord {
    DupRecord { key: encode_key(key.as_bytes(), b""), value: encode_value(0, make_timetag(ts, cluster, false), key.as_bytes()) }
}

fn mutation(decree: Decree, records: &[DupRecord]) -> Arc<Mutation> {
    let ops = records.iter().map(|r| WriteOp::Put { key: r.key.clone(), value: r.value.clone() }).collect();
    Arc::new(Mutation { ballot: 1, decree, timestamp_us: 1_000_000_000 + decree * 1000, ops })
}

fn options() -> DuplicatorOptions {
    DuplicatorOptions { cluster_id: LOCAL, ..Default::default() }
}

fn step(d: &mut Duplicator, ms: u64, input: Input) -> Vec<Action> {
    d.step(now(ms), input);
    d.take_actions()
}

const READ_AHEAD: usize = 4 << 20;

#[test]
fn ships_this_sites_records_in_order_and_confirms_when_applied() {
    let mut d = Duplicator::new(options(), Start::From(0));
    assert_eq!(step(&mut d, 0, Input::Committed { decree: 3 }), vec![Action::ReadLog { read: 1, from: 1, to: 3, bytes_max: READ_AHEAD }]);
    let (a, b, foreign) = (record("a", 10, LOCAL), record("b", 11, LOCAL), record("c", 12, REMOTE));
    let read = vec![mutation(1, &[a.clone(), foreign]), mutation(2, &[]), mutation(3, &[b.clone()])];
    assert_eq!(step(&mut d, 1, Input::LogRead { read: 1, mutations: read }), vec![Action::Ship { batch: 1, records: vec![a, b] }]);
    assert_eq!(d.confirmed(), 0, "nothing is confirmed before the remote applied it");
    assert_eq!(d.log_hold(now(1)), Some(0));
    assert_eq!(step(&mut d, 2, Input::Shipped { batch: 1 }), vec![]);
    assert_eq!((d.confirmed(), d.lag_decrees(), d.lag_ms(now(2)), d.log_hold(now(2))), (3, 0, 0, Some(3)));
}

#[test]
fn one_batch_in_flight_and_the_next_takes_what_arrived_meanwhile() {
    let mut d = Duplicator::new(options(), Start::From(0));
    step(&mut d, 0, Input::Committed { decree: 1 });
    let a = record("a", 10, LOCAL);
    assert_eq!(step(&mut d, 1, Input::LogRead { read: 1, mutations: vec![mutation(1, &[a.clone()])] }), vec![Action::Ship {
        batch: 1,
        records: vec![a]
    }]);
    assert_eq!(step(&mut d, 2, Input::Committed { decree: 3 }), vec![Action::ReadLog { read: 2, from: 2, to: 3, bytes_max: READ_AHEAD }]);
    let (b, c) = (record("b", 11, LOCAL), record("c", 12, LOCAL));
    assert_eq!(step(&mut d, 3, Input::LogRead { read: 2, mutations: vec![mutation(2, &[b.clone()]), mutation(3, &[c.clone()])] }), vec![]);
    assert_eq!(d.confirmed(), 0);
    assert_eq!(step(&mut d, 4, Input::Shipped { batch: 1 }), vec![Action::Ship { batch: 2, records: vec![b, c] }]);
    assert_eq!(d.confirmed(), 1, "decree 1 applied, 2 and 3 in flight");
    step(&mut d, 5, Input::Shipped { batch: 2 });
    assert_eq!(d.confirmed(), 3);
}

#[test]
fn a_failed_batch_ships_again_after_a_growing_back_off() {
    let mut d = Duplicator::new(options(), Start::From(0));
    step(&mut d, 0, Input::Committed { decree: 1 });
    let a = record("a", 10, LOCAL);
    step(&mut d, 0, Input::LogRead { read: 1, mutations: vec![mutation(1, &[a.clone()])] });
    assert_eq!(step(&mut d, 10, Input::ShipFailed { batch: 1, failure: ShipFailure::Unavailable("refused".into()) }), vec![]);
    assert_eq!(step(&mut d, 109, Input::Tick), vec![], "not before the 100 ms back-off");
    assert_eq!(step(&mut d, 110, Input::Tick), vec![Action::Ship { batch: 2, records: vec![a.clone()] }]);
    // A stale answer for the old batch changes nothing.
    assert_eq!(step(&mut d, 111, Input::Shipped { batch: 1 }), vec![]);
    assert_eq!(d.confirmed(), 0);
    step(&mut d, 120, Input::ShipFailed { batch: 2, failure: ShipFailure::ClockAhead });
    assert_eq!(step(&mut d, 319, Input::Tick), vec![], "the back-off doubled to 200 ms");
    assert_eq!(step(&mut d, 320, Input::Tick), vec![Action::Ship { batch: 3, records: vec![a] }]);
    let state = d.state(now(320));
    assert_eq!((state.failures, state.clock_ahead_refusals), (2, 1));
    assert!(state.last_error.unwrap().contains("max_clock_offset"));
    step(&mut d, 330, Input::Shipped { batch: 3 });
    assert_eq!((d.confirmed(), d.state(now(330)).last_error), (1, None));
}

#[test]
fn a_batch_refused_as_too_large_ships_in_halves_and_a_large_record_alone() {
    let mut d = Duplicator::new(DuplicatorOptions { batch_bytes_max: 1000, ..options() }, Start::From(0));
    step(&mut d, 0, Input::Committed { decree: 4 });
    let recs: Vec<DupRecord> = (0..4).map(|i| record(&format!("k{i}"), 10 + i, LOCAL)).collect();
    let read: Vec<_> = recs.iter().enumerate().map(|(i, r)| mutation(i as u64 + 1, std::slice::from_ref(r))).collect();
    assert_eq!(step(&mut d, 0, Input::LogRead { read: 1, mutations: read }), vec![Action::Ship { batch: 1, records: recs.clone() }]);
    // Refused: at once, the next batch holds at most half the bytes, in order.
    assert_eq!(step(&mut d, 1, Input::ShipFailed { batch: 1, failure: ShipFailure::TooLarge }), vec![Action::Ship {
        batch: 2,
        records: recs[..2].to_vec()
    }]);
    // After a success the batch grows back, but not to the size refused: the rest (two records,
    // as many bytes as the refused four minus what shipped) goes in one batch, refused no more.
    assert_eq!(step(&mut d, 2, Input::Shipped { batch: 2 }), vec![Action::Ship { batch: 3, records: recs[2..].to_vec() }]);
    assert_eq!(d.confirmed(), 2);
    // Four more records of the same sizes: they never travel as the four refused did.
    let refused: usize = recs.iter().map(DupRecord::bytes).sum();
    let mut actions = step(&mut d, 3, Input::Shipped { batch: 3 });
    actions.extend(step(&mut d, 3, Input::Committed { decree: 8 }));
    let Some(Action::ReadLog { read, .. }) = actions.iter().find(|a| matches!(a, Action::ReadLog { .. })).cloned() else { panic!("{actions:?}") };
    let more: Vec<_> = (0..4).map(|j| mutation(5 + j, std::slice::from_ref(&recs[j as usize]))).collect();
    let mut pending = step(&mut d, 4, Input::LogRead { read, mutations: more });
    let mut shipped = 0;
    while let Some(Action::Ship { batch, records }) = pending.iter().find(|a| matches!(a, Action::Ship { .. })).cloned() {
        assert!(records.iter().map(DupRecord::bytes).sum::<usize>() < refused, "a batch as large as the refused one: {records:?}");
        shipped += records.len();
        pending = step(&mut d, 5, Input::Shipped { batch });
    }
    assert_eq!((shipped, d.confirmed()), (4, 8));

    // A record larger than the batch limit still ships, alone.
    let mut d = Duplicator::new(DuplicatorOptions { batch_bytes_max: 10, ..options() }, Start::From(0));
    step(&mut d, 0, Input::Committed { decree: 2 });
    let read = vec![mutation(1, &recs[..1]), mutation(2, &recs[1..2])];
    assert_eq!(step(&mut d, 0, Input::LogRead { read: 1, mutations: read }), vec![Action::Ship { batch: 1, records: recs[..1].to_vec() }]);
    assert_eq!(step(&mut d, 1, Input::Shipped { batch: 1 }), vec![Action::Ship { batch: 2, records: recs[1..2].to_vec() }]);
}

#[test]
fn a_log_gap_resyncs_from_a_snapshot_then_follows_the_log() {
    let mut d = Duplicator::new(options(), Start::From(5));
    assert_eq!(step(&mut d, 0, Input::Committed { decree: 9 }), vec![Action::ReadLog { read: 1, from: 6, to: 9, bytes_max: READ_AHEAD }]);
    assert_eq!(step(&mut d, 1, Input::LogGap { read: 1 }), vec![Action::ReadSnapshot {
        read: 2,
        decree: None,
        after: None,
        bytes_max: READ_AHEAD
    }]);
    let (a, foreign, b) = (record("a", 10, LOCAL), record("b", 11, REMOTE), record("c", 12, LOCAL));
    let first = vec![(a.key.clone(), a.value.clone()), (foreign.key.clone(), foreign.value.clone())];
    assert_eq!(
        step(&mut d, 2, Input::SnapshotRead { read: 2, decree: 9, records: first, next: Some(foreign.key.clone()) }),
        vec![
            Action::ReadSnapshot { read: 3, decree: Some(9), after: Some(foreign.key.clone()), bytes_max: READ_AHEAD - a.bytes() },
            // Shipped at once: nothing else is in flight (batches grow with the round trip).
        ]
        .into_iter()
        .chain([Action::Ship { batch: 1, records: vec![a.clone()] }])
        .collect::<Vec<_>>()
    );
    assert_eq!(d.log_hold(now(2)), Some(9), "the log is held from the snapshot's decree on");
    assert_eq!(step(&mut d, 3, Input::SnapshotRead { read: 3, decree: 9, records: vec![(b.key.clone(), b.value.clone())], next: None }), vec![]);
    assert_eq!(step(&mut d, 4, Input::Shipped { batch: 1 }), vec![Action::Ship { batch: 2, records: vec![b] }]);
    assert_eq!(d.confirmed(), 5, "the snapshot confirms only when all of it is applied");
    step(&mut d, 5, Input::Committed { decree: 10 });
    assert_eq!(step(&mut d, 6, Input::Shipped { batch: 2 }), vec![Action::ReleaseSnapshot, Action::ReadLog {
        read: 4,
        from: 10,
        to: 10,
        bytes_max: READ_AHEAD
    }]);
    assert_eq!((d.confirmed(), d.state(now(6)).resyncs, d.phase()), (9, 1, &Phase::Log));
}

#[test]
fn a_new_duplication_starts_now_or_with_a_snapshot() {
    let mut d = Duplicator::new(options(), Start::Now);
    assert_eq!(step(&mut d, 0, Input::Tick), vec![]);
    assert_eq!(step(&mut d, 0, Input::Committed { decree: 10 }), vec![]);
    assert_eq!(d.confirmed(), 10);
    assert_eq!(step(&mut d, 0, Input::Committed { decree: 11 }), vec![Action::ReadLog { read: 1, from: 11, to: 11, bytes_max: READ_AHEAD }]);

    let mut d = Duplicator::new(options(), Start::Snapshot);
    assert_eq!(step(&mut d, 0, Input::Tick), vec![Action::ReadSnapshot { read: 1, decree: None, after: None, bytes_max: READ_AHEAD }]);
    assert_eq!(step(&mut d, 1, Input::SnapshotRead { read: 1, decree: 4, records: vec![], next: None }), vec![
        Action::ReleaseSnapshot
    ]);
    assert_eq!(d.confirmed(), 4);
}

#[test]
fn a_paused_duplication_reads_and_ships_nothing_but_keeps_the_log() {
    let mut d = Duplicator::new(options(), Start::From(2));
    assert_eq!(step(&mut d, 0, Input::Pause), vec![]);
    assert_eq!(step(&mut d, 1, Input::Committed { decree: 50 }), vec![]);
    assert_eq!(step(&mut d, 2, Input::Tick), vec![]);
    assert_eq!((d.log_hold(now(2)), d.lag_decrees()), (Some(2), 48));
    assert_eq!(step(&mut d, 3, Input::Resume), vec![Action::ReadLog { read: 1, from: 3, to: 50, bytes_max: READ_AHEAD }]);
}

#[test]
fn skip_mode_releases_the_log_beyond_its_bounds() {
    let skip = DuplicatorOptions { fail_mode: FailMode::Skip, skip_lag_decrees_max: 10, skip_lag_ms_max: 60_000, ..options() };
    let mut d = Duplicator::new(skip.clone(), Start::From(0));
    step(&mut d, 0, Input::Pause);
    step(&mut d, 0, Input::Committed { decree: 10 });
    assert_eq!(d.log_hold(now(0)), Some(0));
    step(&mut d, 0, Input::Committed { decree: 11 });
    assert_eq!(d.log_hold(now(0)), None, "11 decrees behind, over the bound of 10");
    let mut d = Duplicator::new(skip, Start::From(0));
    step(&mut d, 0, Input::Pause);
    step(&mut d, 0, Input::Committed { decree: 1 });
    assert_eq!(d.log_hold(now(60_000)), Some(0));
    assert_eq!(d.log_hold(now(60_011)), None, "a minute behind the oldest unshipped write");
    // Slow mode holds however far behind.
    let mut d = Duplicator::new(options(), Start::From(0));
    step(&mut d, 0, Input::Pause);
    step(&mut d, 0, Input::Committed { decree: 1_000_000_000 });
    assert_eq!(d.log_hold(now(100_000_000)), Some(0));
}

#[test]
fn lag_is_measured_from_the_oldest_unshipped_write() {
    let mut d = Duplicator::new(options(), Start::From(0));
    step(&mut d, 0, Input::Pause);
    step(&mut d, 100, Input::Committed { decree: 1 });
    step(&mut d, 105, Input::Committed { decree: 2 });
    step(&mut d, 300, Input::Committed { decree: 3 });
    assert_eq!(d.lag_ms(now(1100)), 1000, "decree 1 was heard of at 100 ms");
    step(&mut d, 1100, Input::Resume);
    // Read: the origin timestamp of decree 1 (mutation() stamps decree × 1 ms) is what counts.
    let a = record("a", 1, LOCAL);
    step(&mut d, 1100, Input::LogRead { read: 1, mutations: vec![mutation(1, &[a.clone()]), mutation(2, &[a.clone()]), mutation(3, &[a])] });
    assert_eq!(d.lag_ms(now(1100)), 1099);
    step(&mut d, 1200, Input::Shipped { batch: 1 });
    assert_eq!(d.lag_ms(now(1200)), 0);
    // Heard-of commits coarsen rather than grow without bound.
    let mut d = Duplicator::new(options(), Start::From(0));
    step(&mut d, 0, Input::Pause);
    for i in 1..=5000u64 {
        step(&mut d, i * 20, Input::Committed { decree: i });
    }
    assert!(d.heard.len() <= HEARD_ENTRIES_MAX);
    assert_eq!(d.lag_ms(now(100_020)), 100_000, "still measured from the first commit heard of");
}

#[test]
fn stale_read_answers_are_ignored() {
    let mut d = Duplicator::new(options(), Start::From(0));
    step(&mut d, 0, Input::Committed { decree: 2 });
    assert_eq!(step(&mut d, 0, Input::LogRead { read: 7, mutations: vec![mutation(1, &[])] }), vec![]);
    assert_eq!(d.confirmed(), 0);
    // A read answering with the wrong decrees is a failed read, retried after the back-off.
    assert_eq!(step(&mut d, 1, Input::LogRead { read: 1, mutations: vec![mutation(2, &[])] }), vec![]);
    assert_eq!(step(&mut d, 101, Input::Tick), vec![Action::ReadLog { read: 2, from: 1, to: 2, bytes_max: READ_AHEAD }]);
    step(&mut d, 102, Input::LogRead { read: 2, mutations: vec![mutation(1, &[]), mutation(2, &[])] });
    assert_eq!(d.confirmed(), 2, "decrees with nothing to ship confirm at once");
}

#[test]
fn the_watermark_is_the_first_unconfirmed_timestamp_and_never_above_what_is_still_to_come() {
    let mut d = Duplicator::new(options(), Start::From(0));
    let ms = 5_000;
    // The clock offset is 0.5 s: what is not made yet may be stamped 1 s before our wall clock.
    let future = now(ms).wall_us - 1_000_000;
    assert_eq!(d.watermark_us(now(ms)), future, "caught up: only the future bounds it");
    step(&mut d, ms, Input::Committed { decree: 3 });
    assert_eq!(d.watermark_us(now(ms)), 0, "decrees not read yet: unknown");
    let (a, b) = (record("a", 10, LOCAL), record("b", 11, LOCAL));
    let read = vec![mutation(1, &[a]), mutation(2, &[]), mutation(3, &[b])];
    assert_eq!(step(&mut d, ms, Input::LogRead { read: 1, mutations: read }).len(), 1);
    assert_eq!(d.state(now(ms)).watermark_us, mutation(1, &[]).timestamp_us, "decree 1 is in flight");
    step(&mut d, ms, Input::Shipped { batch: 1 });
    assert_eq!(d.watermark_us(now(ms)), future);
    // A prepared mutation stamped earlier than that commits later.
    step(&mut d, ms, Input::Uncommitted { timestamp_us: Some(future - 7) });
    assert_eq!(d.watermark_us(now(ms)), future - 7);
    step(&mut d, ms, Input::Uncommitted { timestamp_us: None });
    // Committed but not read: just above the last decree read.
    step(&mut d, ms, Input::Committed { decree: 4 });
    assert_eq!(d.watermark_us(now(ms)), mutation(3, &[]).timestamp_us + 1);
    // A snapshot ships everything, in key order: nothing is known.
    let s = Duplicator::new(options(), Start::Snapshot);
    assert_eq!(s.watermark_us(now(ms)), 0);
}

#[test]
fn the_heartbeat_duplicator_sends_the_tables_watermark_when_idle_and_it_moved() {
    let mut d = Duplicator::new(DuplicatorOptions { heartbeat_ms: Some(1_000), ..options() }, Start::From(0));
    step(&mut d, 0, Input::Committed { decree: 0 });
    assert_eq!(step(&mut d, 0, Input::TableWatermark { watermark_us: 5 }), vec![Action::Heartbeat { batch: 1, watermark_us: 5 }]);
    assert_eq!(step(&mut d, 1, Input::TableWatermark { watermark_us: 6 }), vec![], "one in flight");
    assert_eq!(step(&mut d, 10, Input::Shipped { batch: 1 }), vec![], "not due before 1 s");
    assert_eq!(step(&mut d, 1_000, Input::Tick), vec![Action::Heartbeat { batch: 2, watermark_us: 6 }]);
    // A failed one goes again once due and past the back-off; an unmoved watermark never.
    assert_eq!(step(&mut d, 1_001, Input::ShipFailed { batch: 2, failure: ShipFailure::Unavailable("cut".into()) }), vec![]);
    assert_eq!(step(&mut d, 2_000, Input::Tick), vec![Action::Heartbeat { batch: 3, watermark_us: 6 }]);
    step(&mut d, 2_001, Input::Shipped { batch: 3 });
    assert_eq!(step(&mut d, 9_000, Input::Tick), vec![]);
    // Records to ship go first; only the heartbeat duplicator sends heartbeats.
    let mut other = Duplicator::new(DuplicatorOptions { heartbeat_ms: None, ..options() }, Start::From(0));
    step(&mut other, 0, Input::Committed { decree: 0 });
    assert_eq!(step(&mut other, 0, Input::TableWatermark { watermark_us: 5 }), vec![]);
}

#[test]
fn a_snapshot_read_to_its_end_while_a_heartbeat_was_in_flight_finishes_when_the_heartbeat_fails() {
    let mut d = Duplicator::new(DuplicatorOptions { heartbeat_ms: Some(1_000), ..options() }, Start::From(0));
    step(&mut d, 0, Input::Committed { decree: 0 });
    assert_eq!(step(&mut d, 0, Input::TableWatermark { watermark_us: 5 }), vec![Action::Heartbeat { batch: 1, watermark_us: 5 }]);
    assert_eq!(step(&mut d, 1, Input::Committed { decree: 3 }), vec![Action::ReadLog { read: 1, from: 1, to: 3, bytes_max: READ_AHEAD }]);
    let read = step(&mut d, 2, Input::LogGap { read: 1 });
    assert_eq!(read, vec![Action::ReadSnapshot { read: 2, decree: None, after: None, bytes_max: READ_AHEAD }]);
    // Nothing of this site's own in the snapshot: done reading, waiting for the heartbeat.
    assert_eq!(step(&mut d, 3, Input::SnapshotRead { read: 2, decree: 3, records: vec![], next: None }), vec![]);
    assert_eq!(step(&mut d, 4, Input::ShipFailed { batch: 1, failure: ShipFailure::Unavailable("cut".into()) }), vec![Action::ReleaseSnapshot]);
    assert_eq!((d.phase(), d.confirmed()), (&Phase::Log, 3));
}
