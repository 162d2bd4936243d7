//! Meta leadership through one lease row in the SQL store (DESIGN.md §7).
//!
//! Every meta server runs a claim loop: a single compare-and-set statement claims or renews the
//! lease row (judged by the database's clock), and its outcome is fed here. Safety comes from
//! fencing — each takeover increases the epoch, and every metadata write checks it in its own
//! transaction — but the lease also bounds what a leader does *outside* the store: it answers
//! beacons (granting replica servers their leases) only while its own lease surely holds, so a
//! deposed leader that cannot reach the store stops granting before anyone can take over.
//!
//! ```text
//!  claim sent at t ─▶ store ─▶ Won{epoch} | Lost{leader} | Failed ─▶ on_claim ─▶ Transition
//!                                            serving(now) ─▶ Ok(epoch) | Err(NotServing)
//! ```
//!
//! A leader serves until `t + ttl - margin`, `t` being when it *sent* its last successful claim,
//! on its own monotonic clock: the database extended the row to at least `t + ttl` on its clock.
//! The margin covers clock-rate drift between the two. A standby takes over after the row
//! expired, or — on PostgreSQL — at once when the leader's database session is gone (its
//! advisory lock is free: the process crashed). Its failure detector then gives every server a
//! full grace period, longer than a replica lease, counted from when the predecessor's lease
//! would have run out (`WonEarly`), so two primaries never serve at once even when the
//! predecessor is alive after all and answers beacons until its own lease ends.

/// What one claim statement returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This process holds the lease at `epoch` (a takeover, or a renewal when the epoch is ours).
    Won { epoch: u64 },
    /// This process took the lease at `epoch` before its predecessor's ran out, by
    /// `predecessor_ms` on the store's clock, because the predecessor's database session was gone.
    /// The predecessor may still be alive (a store restart or a killed session also ends the
    /// session) and answer beacons until then, so nobody is declared dead before that time plus
    /// a grace period.
    WonEarly { epoch: u64, predecessor_ms: u64 },
    /// Another process holds an unexpired lease; `leader` is its advertised address.
    Lost { leader: String },
    /// The store did not answer (unreachable, timeout, error).
    Failed,
}

/// What the runtime must do after a claim outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// Load all metadata from the store and fence writes with `epoch` before serving: this
    /// process was not serving a moment ago, so anything in memory may be stale (another leader
    /// may have written, and no replica server has beaconed here meanwhile).
    BecameLeader { epoch: u64 },
    /// Drop in-memory metadata and refuse requests with a hint to `leader`.
    SteppedDown { leader: String },
}

/// Why requests are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotServing {
    /// Another meta server leads (or None when it is not known yet).
    Follower { leader: Option<String> },
    /// This server led, but has not renewed its lease in time (the store is unreachable).
    Lapsed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Follower { leader: Option<String> },
    /// `hold_until_ms`: a predecessor may serve until then (see `WonEarly`).
    Leader { epoch: u64, serve_until_ms: u64, hold_until_ms: u64 },
}

#[derive(Clone, Debug)]
pub struct Leadership {
    ttl_ms: u64,
    margin_ms: u64,
    role: Role,
}

impl Leadership {
    /// `ttl_ms`: the lease row's time to live. Validated by the runtime's config (see
    /// `validate_ttl`).
    pub fn new(ttl_ms: u64) -> Leadership {
        assert!(validate_ttl(ttl_ms).is_ok(), "lease ttl {ttl_ms} ms not validated");
        Leadership { ttl_ms, margin_ms: margin_ms(ttl_ms), role: Role::Follower { leader: None } }
    }

    /// How often the lease is claimed or renewed: often enough that a store outage just after a
    /// renewal still leaves most of the lease (a sixth of the TTL, at most 5 s).
    pub fn renew_interval_ms(&self) -> u64 {
        (self.ttl_ms / 6).clamp(100, 5_000)
    }

    /// How often the runtime claims the row: the renewal interval while leading; a standby polls
    /// four times a second, so it takes over a crashed leader within about a quarter second.
    pub fn claim_interval_ms(&self) -> u64 {
        let renew = self.renew_interval_ms();
        if self.is_leader() { renew } else { renew.min(STANDBY_POLL_MS) }
    }

    /// Feeds the outcome of a claim sent at `sent_at_ms`, now `now_ms` (same monotonic clock).
    pub fn on_claim(&mut self, sent_at_ms: u64, outcome: ClaimOutcome, now_ms: u64) -> Transition {
        match outcome {
            ClaimOutcome::Won { epoch } | ClaimOutcome::WonEarly { epoch, .. } => {
                let serve_until_ms = sent_at_ms + self.ttl_ms - self.margin_ms;
                let (continuing, held) = match self.role {
                    Role::Leader { epoch: e, serve_until_ms: until, hold_until_ms } if e == epoch => (now_ms < until, hold_until_ms),
                    _ => (false, 0),
                };
                // Counted from when the answer arrived, later than the store's now: the wait is
                // never shorter than the predecessor's lease on the store's clock (up to the
                // drift the predecessor's own margin covers).
                let predecessor_ms = if let ClaimOutcome::WonEarly { predecessor_ms, .. } = outcome { predecessor_ms } else { 0 };
                let hold_until_ms = if predecessor_ms > 0 { held.max(now_ms + predecessor_ms) } else { held };
                self.role = Role::Leader { epoch, serve_until_ms, hold_until_ms };
                if continuing { Transition::Unchanged } else { Transition::BecameLeader { epoch } }
            }
            ClaimOutcome::Lost { leader } => {
                let was_leader = matches!(self.role, Role::Leader { .. });
                self.role = Role::Follower { leader: Some(leader.clone()) };
                if was_leader { Transition::SteppedDown { leader } } else { Transition::Unchanged }
            }
            ClaimOutcome::Failed => Transition::Unchanged,
        }
    }

    /// The epoch to serve under, or why not.
    pub fn serving(&self, now_ms: u64) -> Result<u64, NotServing> {
        match &self.role {
            Role::Leader { epoch, serve_until_ms, .. } if now_ms < *serve_until_ms => Ok(*epoch),
            Role::Leader { .. } => Err(NotServing::Lapsed),
            Role::Follower { leader } => Err(NotServing::Follower { leader: leader.clone() }),
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    /// While leading: until when (monotonic ms) a predecessor that took its lease early may still
    /// have answered beacons; nobody is declared dead before this plus a grace period.
    pub fn hold_until_ms(&self) -> u64 {
        match self.role {
            Role::Leader { hold_until_ms, .. } => hold_until_ms,
            Role::Follower { .. } => 0,
        }
    }

    /// The epoch of the lease this server last won, while it counts itself the leader.
    pub fn epoch(&self) -> Option<u64> {
        match self.role {
            Role::Leader { epoch, .. } => Some(epoch),
            Role::Follower { .. } => None,
        }
    }
}

pub const TTL_MS_MIN: u64 = 1_000;

/// A standby's claim poll.
pub const STANDBY_POLL_MS: u64 = 250;
pub const TTL_MS_MAX: u64 = 600_000;

pub fn validate_ttl(ttl_ms: u64) -> Result<(), String> {
    if !(TTL_MS_MIN..=TTL_MS_MAX).contains(&ttl_ms) {
        return Err(format!("meta lease_ttl of {ttl_ms} ms is outside 1s..=10m"));
    }
    Ok(())
}

/// A twentieth of the TTL, at least 100 ms: covers a 5% clock-rate difference between this
/// process and the database.
fn margin_ms(ttl_ms: u64) -> u64 {
    (ttl_ms / 20).max(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_extends_and_a_lapse_reloads() {
        let mut l = Leadership::new(30_000);
        assert_eq!(l.serving(0), Err(NotServing::Follower { leader: None }));
        assert_eq!(l.on_claim(0, ClaimOutcome::Won { epoch: 4 }, 10), Transition::BecameLeader { epoch: 4 });
        assert_eq!(l.serving(28_499), Ok(4));
        assert_eq!(l.serving(28_500), Err(NotServing::Lapsed));
        // Renewed in time: keeps serving, nothing to reload.
        assert_eq!(l.on_claim(5_000, ClaimOutcome::Won { epoch: 4 }, 5_020), Transition::Unchanged);
        assert_eq!(l.serving(33_499), Ok(4));
        // The store is unreachable for long: serving stops at the deadline.
        assert_eq!(l.on_claim(10_000, ClaimOutcome::Failed, 12_000), Transition::Unchanged);
        assert_eq!(l.serving(33_500), Err(NotServing::Lapsed));
        // Renewed after the lapse with the same epoch: reload (no beacons were answered).
        assert_eq!(l.on_claim(40_000, ClaimOutcome::Won { epoch: 4 }, 40_010), Transition::BecameLeader { epoch: 4 });
        assert_eq!(l.serving(40_010), Ok(4));
    }

    #[test]
    fn losing_the_row_steps_down_with_a_hint() {
        let mut l = Leadership::new(6_000);
        assert_eq!(l.renew_interval_ms(), 1_000);
        l.on_claim(0, ClaimOutcome::Won { epoch: 1 }, 1);
        assert_eq!(l.on_claim(1_000, ClaimOutcome::Lost { leader: "m2:1".into() }, 1_001), Transition::SteppedDown { leader: "m2:1".into() });
        assert_eq!(l.serving(1_002), Err(NotServing::Follower { leader: Some("m2:1".into()) }));
        assert_eq!(l.on_claim(2_000, ClaimOutcome::Lost { leader: "m3:1".into() }, 2_001), Transition::Unchanged);
        assert_eq!(l.serving(2_002), Err(NotServing::Follower { leader: Some("m3:1".into()) }));
        // A new epoch (someone led in between) always reloads.
        assert_eq!(l.on_claim(3_000, ClaimOutcome::Won { epoch: 3 }, 3_001), Transition::BecameLeader { epoch: 3 });
    }

    #[test]
    fn an_early_takeover_holds_failure_detection_until_the_predecessors_lease_ends() {
        let mut l = Leadership::new(30_000);
        assert_eq!(l.claim_interval_ms(), 250, "a standby polls fast");
        assert_eq!(l.on_claim(1_000, ClaimOutcome::WonEarly { epoch: 5, predecessor_ms: 20_000 }, 1_010), Transition::BecameLeader { epoch: 5 });
        assert_eq!(l.hold_until_ms(), 21_010);
        assert_eq!(l.claim_interval_ms(), 5_000);
        // Renewals keep the hold; so does a lapse and a reload at the same epoch.
        assert_eq!(l.on_claim(6_000, ClaimOutcome::Won { epoch: 5 }, 6_010), Transition::Unchanged);
        assert_eq!(l.hold_until_ms(), 21_010);
        assert_eq!(l.on_claim(40_000, ClaimOutcome::Won { epoch: 5 }, 40_010), Transition::BecameLeader { epoch: 5 });
        assert_eq!(l.hold_until_ms(), 21_010);
        // A takeover after expiry holds nothing beyond now.
        l.on_claim(41_000, ClaimOutcome::Lost { leader: "m2:1".into() }, 41_001);
        assert_eq!(l.hold_until_ms(), 0);
        l.on_claim(80_000, ClaimOutcome::Won { epoch: 7 }, 80_001);
        assert_eq!(l.hold_until_ms(), 0);
    }

    #[test]
    fn ttl_is_validated() {
        assert!(validate_ttl(999).unwrap_err().contains("outside 1s..=10m"));
        assert!(validate_ttl(600_001).is_err());
        assert!(validate_ttl(30_000).is_ok());
    }
}
