//! What the trace shows of a replica's steps, and the paths they count.

use super::*;

/// Trace notes and path counts of what an event is about to do.
pub(super) fn note_event(io: &mut Io<'_>, me: &str, gpid: Gpid, event: &SimEvent, status: PartitionStatus) {
    match event {
        ReplicaEvent::LearnReply { reply: Some(LearnReply::Log { start }) } if status == PartitionStatus::Learner => {
            io.stats.path(path::LEARN_BY_LOG);
            io.note(|| format!("{me} {gpid}: learns by log from decree {start}"));
        }
        ReplicaEvent::LearnReply { reply: Some(LearnReply::Checkpoint { decree, .. }) } => {
            io.note(|| format!("{me} {gpid}: learns by checkpoint up to decree {decree}"));
        }
        ReplicaEvent::CheckpointActivated { result: Ok(_) } => {
            io.stats.path(path::LEARN_BY_CHECKPOINT);
            io.note(|| format!("{me} {gpid}: checkpoint installed after its reset record"));
        }
        ReplicaEvent::CheckpointFetched { result: Err(error) } | ReplicaEvent::CheckpointActivated { result: Err(error) } => {
            io.stats.path(path::CHECKPOINT_FAILED);
            io.note(|| format!("{me} {gpid}: checkpoint failed: {error}"));
        }
        _ => {}
    }
}

/// Trace notes and path counts of what an event did to a replica's role.
pub(super) fn note_change(io: &mut Io<'_>, me: &str, gpid: Gpid, before: (PartitionStatus, Ballot, Decree, Decree), r: &Replica) {
    let (status, ballot, committed, prepared) = before;
    let after = (r.status(), r.ballot());
    if after.0 == PartitionStatus::Primary && status != PartitionStatus::Primary && prepared > committed {
        io.stats.path(path::RECONCILE);
        io.note(|| format!("{me} {gpid}: promoted with decrees {}..={prepared} prepared, not committed: reconciles them", committed + 1));
    }
    if status == PartitionStatus::Primary && after == (PartitionStatus::Inactive, ballot) {
        io.stats.path(path::STEP_DOWN);
    }
    if (status, ballot) != after {
        io.note(|| format!("{me} {gpid}: {status:?}@{ballot} -> {:?}@{}", after.0, after.1));
    }
}
