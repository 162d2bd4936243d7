//! Which checkpoints of one partition are kept: at most `checkpoints_per_partition_max`, the
//! newest, except that a checkpoint in use is never deleted. "In use" is a hold that every read
//! renews (a learner fetching its files, an upload reading them) and that a new checkpoint starts
//! with, since the learner it was made for fetches it next. A hold that lapses (the reader went
//! away) frees the checkpoint at the next decision.
//!
//! ```text
//!  made(id) ─▶ kept, held until now + hold ─▶ evict oldest unheld beyond the max ─▶ Delete(id)
//!  read(id) ─▶ held until now + hold                 tick ─▶ evict lapsed extras ─▶ Delete(id)
//! ```

use tandem_core::Decree;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptCheckpoint {
    pub id: String,
    pub decree: Decree,
    pub held_until_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointRetention {
    /// Oldest first.
    kept: Vec<KeptCheckpoint>,
}

impl CheckpointRetention {
    pub fn kept(&self) -> &[KeptCheckpoint] {
        &self.kept
    }

    /// A new checkpoint; returns the ids to delete now.
    pub fn on_made(&mut self, id: String, decree: Decree, now_ms: u64, hold_ms: u64, max: usize) -> Vec<String> {
        self.kept.push(KeptCheckpoint { id, decree, held_until_ms: now_ms + hold_ms });
        self.evict(now_ms, max)
    }

    /// Checkpoint `id` was read: it stays at least `hold_ms` more. False if it is not kept (it
    /// was deleted: the reader must fail).
    pub fn on_read(&mut self, id: &str, now_ms: u64, hold_ms: u64) -> bool {
        match self.kept.iter_mut().find(|k| k.id == id) {
            Some(k) => {
                k.held_until_ms = k.held_until_ms.max(now_ms + hold_ms);
                true
            }
            None => false,
        }
    }

    /// Deletes the oldest checkpoints beyond `max` whose hold has lapsed; returns their ids.
    pub fn evict(&mut self, now_ms: u64, max: usize) -> Vec<String> {
        let mut deleted = Vec::new();
        while self.kept.len() > max {
            let Some(i) = self.kept.iter().position(|k| k.held_until_ms <= now_ms) else { break };
            deleted.push(self.kept.remove(i).id);
        }
        deleted
    }
}

/// The files of a replica's checkpoints, as a runtime keeps them (the server's registry of
/// checkpoint directories, the simulator's map): what `holds_conformance` drives.
pub trait CheckpointFilesUnderTest {
    /// Makes checkpoint `id` of the replica's engine as it is now.
    fn make(&mut self, id: &str);
    /// Reads the whole checkpoint as a learner fetching it would; false if it is gone.
    fn read(&mut self, id: &str) -> bool;
    fn delete(&mut self, id: &str);
}

/// A checkpoint being read is never deleted, whatever is made meanwhile; one nobody reads goes
/// once newer ones replace it. The retention decides, `files` carries it out.
pub fn holds_conformance(files: &mut dyn CheckpointFilesUnderTest) {
    let (hold, max) = (100, 1);
    let mut retention = CheckpointRetention::default();
    let make = |files: &mut dyn CheckpointFilesUnderTest, retention: &mut CheckpointRetention, id: &str, now| {
        files.make(id);
        for gone in retention.on_made(id.to_string(), 1, now, hold, max) {
            files.delete(&gone);
        }
    };
    make(files, &mut retention, "c1", 0);
    // A slow learner keeps reading c1 while two newer checkpoints are made.
    for (now, newer) in [(60, "c2"), (130, "c3")] {
        assert!(retention.on_read("c1", now - 10, hold));
        assert!(files.read("c1"), "c1 is being read at {now}");
        make(files, &mut retention, newer, now);
        assert!(files.read("c1"), "c1 survives {newer}");
    }
    // Nobody reads c1 any more: past its hold, the next decision deletes it.
    for gone in retention.evict(300, max) {
        files.delete(&gone);
    }
    assert!(!files.read("c1"), "c1 is deleted once unread past its hold");
    assert!(files.read("c3"), "the newest stays");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The retention against a map of names: the reference the runtimes match.
    #[derive(Default)]
    struct Names(std::collections::BTreeSet<String>);

    impl CheckpointFilesUnderTest for Names {
        fn make(&mut self, id: &str) {
            self.0.insert(id.to_string());
        }
        fn read(&mut self, id: &str) -> bool {
            self.0.contains(id)
        }
        fn delete(&mut self, id: &str) {
            self.0.remove(id);
        }
    }

    #[test]
    fn holds_conform_on_the_reference() {
        holds_conformance(&mut Names::default());
    }

    #[test]
    fn a_third_checkpoint_evicts_the_oldest_unheld_one() {
        let mut r = CheckpointRetention::default();
        assert_eq!(r.on_made("a".into(), 1, 0, 100, 2), Vec::<String>::new());
        assert_eq!(r.on_made("b".into(), 2, 10, 100, 2), Vec::<String>::new());
        // Both still held: nothing is deleted, three are kept for now.
        assert_eq!(r.on_made("c".into(), 3, 50, 100, 2), Vec::<String>::new());
        assert_eq!(r.kept().len(), 3);
        // "a" is read at 60 (a learner still fetches it): "b" lapses first.
        assert!(r.on_read("a", 60, 100));
        assert_eq!(r.evict(120, 2), vec!["b".to_string()]);
        assert_eq!(r.evict(159, 2), Vec::<String>::new(), "a held until 160, c until 150, and only 2 are kept");
        assert_eq!(r.on_made("d".into(), 4, 161, 100, 2), vec!["a".to_string()]);
        assert!(!r.on_read("b", 200, 100), "deleted: its reader must fail, not see another");
        assert_eq!(r.kept().iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), vec!["c", "d"]);
    }

    #[test]
    fn a_checkpoint_in_use_survives_any_number_of_newer_ones() {
        let mut r = CheckpointRetention::default();
        r.on_made("slow".into(), 1, 0, 1_000, 1);
        for i in 0..10u64 {
            // The slow reader keeps reading while newer checkpoints come and go.
            assert!(r.on_read("slow", i * 500 + 400, 1_000));
            let deleted = r.on_made(format!("n{i}"), 2 + i, i * 500 + 401, 1, 1);
            assert!(!deleted.contains(&"slow".to_string()));
        }
        assert!(r.kept().iter().any(|k| k.id == "slow"));
    }
}
