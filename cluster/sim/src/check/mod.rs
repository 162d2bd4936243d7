//! The checkers, one property per file (STYLE rule 15), except linearizability, which has two
//! searches: `linearizable_online` after every event (a key is judged as its operations return),
//! `linearizable` over the whole history at the end. The other history-wide ones (no lost
//! writes, convergence) run at the end of a run, after the healing phase; `lww`, the two-site
//! oracle, after both sites healed and their duplications drained.

pub mod availability;
pub mod bank;
pub mod convergence;
pub mod decree_agreement;
pub mod linearizable;
pub mod linearizable_online;
pub mod lww;
pub mod no_lost_writes;
pub mod single_primary;
