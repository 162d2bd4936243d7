//! Two sites duplicating to each other (`tandem sim --sites 2`): 200 seeds in four ranges, with
//! every fault kind at each site and cuts and loss on the link between them. Each seed must pass
//! every per-site checker and, after healing and draining, the LWW oracle and equal digests.

use std::time::Duration;
use tandem_sim::{FaultSet, run_seed_sites};

const SIM_TIME: Duration = Duration::from_secs(40);

fn seeds(range: std::ops::Range<u64>) {
    let all = FaultSet::all();
    let failures: Vec<String> = range.filter_map(|seed| run_seed_sites(seed, 2, SIM_TIME, &all, false).err().map(|f| f.to_string())).collect();
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn two_site_seeds_0_to_50() {
    seeds(0..50);
}

#[test]
fn two_site_seeds_50_to_100() {
    seeds(50..100);
}

#[test]
fn two_site_seeds_100_to_150() {
    seeds(100..150);
}

#[test]
fn two_site_seeds_150_to_200() {
    seeds(150..200);
}

fn regression(seed: u64) {
    if let Err(f) = run_seed_sites(seed, 2, SIM_TIME, &FaultSet::all(), false) {
        panic!("{f}");
    }
}

/// The meta leader lapsed behind a hung store with a cure in flight, won its lease back at the
/// same epoch and loaded the store before the cure landed: it answered the old primary's beacon
/// from the stale state (a new lease), then reloaded and handed the cure's new primary its
/// configuration — two primaries served. Fixed in the meta machine: a load waits for the
/// writes the machine stopped waiting for.
#[test]
fn regression_seed_1820_a_load_raced_a_write_from_before_the_lapse() {
    regression(1820);
}

/// Loads the meta sent before a store hang were answered after a write that came back first
/// (the resume of site-a's duplication); the machine took one of those snapshots and kept the
/// duplication paused while the store said it ran: site-a's writes never shipped. Fixed in the
/// meta machine: only the answer to its latest load is taken.
#[test]
fn regression_seed_5227_a_stale_load_kept_a_duplication_paused() {
    regression(5227);
}

/// A primary whose proposal to upgrade learner r3 lost its answer (the meta had applied it)
/// dropped r3 as a silent learner and proposed r2 instead, and from then on committed with r2's
/// acks only; the meta promoted r3, which lacked decree 429, and the two applied different
/// decrees 429. Fixed in the core: every learner proposed for upgrade under the ballot counts
/// for commits, not only the latest.
#[test]
fn regression_seed_944_a_second_upgrade_proposal_dropped_the_first_learner_from_commits() {
    regression(944);
}

/// Site-b's small `max_value_bytes` refused site-a's batches as too large; after each success the
/// duplicator grew its batches back to the refused size, so every other round trip was refused
/// and a backlog drained at half speed — past the drain deadline. Fixed in the duplicator: a
/// batch never grows back to a size the remote refused.
#[test]
fn regression_seed_2389_batches_grew_back_to_a_refused_size() {
    regression(2389);
}

/// A heartbeat was in flight when partition 0's log lost what it had not shipped; the snapshot it
/// shipped instead read to its end while the heartbeat was out, and when the heartbeat failed
/// nothing finished the snapshot — no further heartbeat could go, since the snapshot held the
/// table's watermark at 0. Fixed in the duplicator: a failed heartbeat finishes a snapshot that
/// is done.
#[test]
fn regression_seed_483_a_snapshot_waited_for_a_failed_heartbeat() {
    regression(483);
}

/// A partition of site-a that had never had a batch from site-b (its replicas had no watermark
/// entry for b) compacted a tombstone once a's own duplication had passed it; site-b, cut off
/// for 20 s, then shipped an older put of the key, which came back. Fixed in the apply: a site's
/// first batch creates its watermark entry (at 0), so compaction holds what it may still send;
/// and a record below its origin's watermark is superseded.
#[test]
fn regression_seed_779_a_tombstone_went_before_the_lagging_site_was_known() {
    regression(779);
}
