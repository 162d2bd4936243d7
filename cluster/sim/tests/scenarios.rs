//! Every scenario script under cluster/sim/scenarios/ runs, meets its `expect` lines and
//! produces the trace its output blocks hold. `TANDEM_SIM_REWRITE=1 cargo test -p tandem-sim
//! --test scenarios` rewrites the blocks after an intended protocol change.

use std::path::Path;
use tandem_sim::script::run_script;

fn run(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
    if let Err(f) = tandem_sim::script::run_file(&path, true) {
        panic!("{f}");
    }
}

#[test]
fn a_trace_that_differs_from_the_script_fails_with_a_diff() {
    let script = "start\nrun 1s\n----\nr9 1.0: Primary@1 -> Inactive@1\n";
    let run = run_script(script, false).unwrap();
    assert_eq!(run.mismatches.len(), 2, "{:?}", run.mismatches);
    assert!(run.mismatches[0].starts_with("line 1: start: the output differs"), "{}", run.mismatches[0]);
    assert!(run.mismatches[0].contains("   + meta: 1.0 ballot 1: primary r1, secondaries [r2 r3], learners []"), "{}", run.mismatches[0]);
    assert!(run.mismatches[1].contains("   - r9 1.0: Primary@1 -> Inactive@1"), "{}", run.mismatches[1]);
    // The rewritten script holds what the run produced, and passes as it is.
    let again = run_script(&run.rewritten, false).unwrap();
    assert_eq!(again.mismatches, Vec::<String>::new());
    assert_eq!(again.rewritten, run.rewritten);
    assert!(run.rewritten.starts_with("start\n----\nmeta: leads at epoch 1, 0 partition(s) loaded from the store\nmeta: 1.0 ballot 1"), "{}", run.rewritten);
}

#[test]
fn expect_lines_still_fail_a_script() {
    let err = run_script("start\nexpect r1 secondary\n", false).unwrap_err();
    assert!(err.starts_with("line 2: expect r1 secondary: r1 is primary, expected secondary"), "{err}");
}

#[test]
fn every_scenario_file_has_a_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    names.sort();
    assert_eq!(names, SCENARIOS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
}

const SCENARIOS: [&str; 21] = [
    "a_failed_log_starts_again_once_the_disk_has_room.txt",
    "a_short_secondary_stops_writes_at_its_primary.txt",
    "disk_below_its_reserve_takes_only_deletes.txt",
    "killed_primary_replaced_at_once.txt",
    "killed_primary_restarted_before_the_probe.txt",
    "killed_secondary_leaves_the_quorum_at_once.txt",
    "late_prepare_of_a_restarted_primary.txt",
    "learner_by_checkpoint.txt",
    "learner_by_log.txt",
    "learner_upgrade_in_flight.txt",
    "meta_crash_while_placing_a_table.txt",
    "meta_failover_fences_the_old_leader.txt",
    "meta_leader_crash_taken_over_early.txt",
    "meta_restart_mid_reconfiguration.txt",
    "meta_session_lost_while_the_leader_lives.txt",
    "meta_stale_after_a_late_write.txt",
    "partitioned_primary_waits_out_the_grace_period.txt",
    "prepare_lost_to_one_secondary.txt",
    "primary_crash_with_uncommitted_prepares.txt",
    "proposals_race_on_one_ballot.txt",
    "too_few_servers_left_to_place_a_new_table.txt",
];

#[test]
fn prepare_lost_to_one_secondary() {
    run("prepare_lost_to_one_secondary.txt");
}

#[test]
fn primary_crash_with_uncommitted_prepares() {
    run("primary_crash_with_uncommitted_prepares.txt");
}

#[test]
fn learner_by_log() {
    run("learner_by_log.txt");
}

#[test]
fn learner_by_checkpoint() {
    run("learner_by_checkpoint.txt");
}

#[test]
fn meta_restart_mid_reconfiguration() {
    run("meta_restart_mid_reconfiguration.txt");
}

#[test]
fn proposals_race_on_one_ballot() {
    run("proposals_race_on_one_ballot.txt");
}

#[test]
fn meta_crash_while_placing_a_table() {
    run("meta_crash_while_placing_a_table.txt");
}

#[test]
fn meta_failover_fences_the_old_leader() {
    run("meta_failover_fences_the_old_leader.txt");
}

#[test]
fn meta_leader_crash_taken_over_early() {
    run("meta_leader_crash_taken_over_early.txt");
}

#[test]
fn meta_session_lost_while_the_leader_lives() {
    run("meta_session_lost_while_the_leader_lives.txt");
}

#[test]
fn late_prepare_of_a_restarted_primary() {
    run("late_prepare_of_a_restarted_primary.txt");
}

#[test]
fn meta_stale_after_a_late_write() {
    run("meta_stale_after_a_late_write.txt");
}

#[test]
fn too_few_servers_left_to_place_a_new_table() {
    run("too_few_servers_left_to_place_a_new_table.txt");
}

#[test]
fn learner_upgrade_in_flight() {
    run("learner_upgrade_in_flight.txt");
}

#[test]
fn killed_primary_replaced_at_once() {
    run("killed_primary_replaced_at_once.txt");
}

#[test]
fn killed_primary_restarted_before_the_probe() {
    run("killed_primary_restarted_before_the_probe.txt");
}

#[test]
fn killed_secondary_leaves_the_quorum_at_once() {
    run("killed_secondary_leaves_the_quorum_at_once.txt");
}

#[test]
fn partitioned_primary_waits_out_the_grace_period() {
    run("partitioned_primary_waits_out_the_grace_period.txt");
}

#[test]
fn disk_below_its_reserve_takes_only_deletes() {
    run("disk_below_its_reserve_takes_only_deletes.txt");
}

#[test]
fn a_short_secondary_stops_writes_at_its_primary() {
    run("a_short_secondary_stops_writes_at_its_primary.txt");
}

#[test]
fn a_failed_log_starts_again_once_the_disk_has_room() {
    run("a_failed_log_starts_again_once_the_disk_has_room.txt");
}
