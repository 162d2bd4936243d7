//! Every scenario script under cluster/sim/scenarios/ runs and meets its expectations.

use std::path::Path;

fn run(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
    if let Err(f) = tandem_sim::script::run_file(&path, true) {
        panic!("{f}");
    }
}

#[test]
fn every_scenario_file_has_a_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    names.sort();
    assert_eq!(names, SCENARIOS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
}

const SCENARIOS: [&str; 6] = [
    "learner_by_checkpoint.txt",
    "learner_by_log.txt",
    "meta_restart_mid_reconfiguration.txt",
    "prepare_lost_to_one_secondary.txt",
    "primary_crash_with_uncommitted_prepares.txt",
    "proposals_race_on_one_ballot.txt",
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
