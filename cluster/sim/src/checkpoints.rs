//! The checkpoints a simulated replica server serves to learners: the engine's state at the
//! moment each was made, by partition and id. Which exist is the host's decision; this holds
//! them, as the server's registry of checkpoint directories does.

use crate::engine::SimEngine;
use crate::msg::Checkpoint;
use std::collections::BTreeMap;
use tandem_core::storage::KvEngine;
use tandem_core::{Decree, Gpid};

#[derive(Debug, Default)]
pub struct SimCheckpoints {
    made: BTreeMap<(Gpid, String), Checkpoint>,
}

impl SimCheckpoints {
    /// Makes checkpoint `id` of `engine` (its applied state); returns its decree.
    pub fn make(&mut self, gpid: Gpid, id: String, engine: &SimEngine) -> Decree {
        let checkpoint = engine.checkpoint();
        let decree = checkpoint.last_applied_decree();
        self.made.insert((gpid, id), checkpoint);
        decree
    }

    pub fn get(&self, gpid: Gpid, id: &str) -> Option<&Checkpoint> {
        self.made.get(&(gpid, id.to_string()))
    }

    pub fn delete(&mut self, gpid: Gpid, id: &str) {
        self.made.remove(&(gpid, id.to_string()));
    }

    /// Every checkpoint of `gpid` goes (its replica is removed).
    pub fn delete_partition(&mut self, gpid: Gpid) {
        self.made.retain(|(g, _), _| *g != gpid);
    }

    pub fn clear(&mut self) {
        self.made.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::WriteOp;
    use tandem_core::storage::KvEngine;

    /// The simulator's checkpoints, driven by the host's conformance, as the server's are.
    struct Sim {
        checkpoints: SimCheckpoints,
        engine: SimEngine,
        decree: Decree,
    }

    const GPID: Gpid = Gpid { table_id: 1, partition: 0 };

    impl tandem_host::CheckpointFilesUnderTest for Sim {
        fn make(&mut self, id: &str) {
            self.decree += 1;
            self.engine.apply(self.decree, 0, &[WriteOp::Put { key: vec![self.decree as u8], value: vec![1] }]).unwrap();
            assert_eq!(self.checkpoints.make(GPID, id.to_string(), &self.engine), self.decree);
        }
        fn read(&mut self, id: &str) -> bool {
            self.checkpoints.get(GPID, id).is_some()
        }
        fn delete(&mut self, id: &str) {
            self.checkpoints.delete(GPID, id);
        }
    }

    #[test]
    fn a_checkpoint_being_read_is_never_deleted() {
        tandem_host::holds_conformance(&mut Sim { checkpoints: SimCheckpoints::default(), engine: SimEngine::default(), decree: 0 });
    }
}
