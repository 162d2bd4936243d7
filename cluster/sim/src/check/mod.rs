//! The checkers, one property per file (STYLE rule 15). Cheap ones run after every event; the
//! history-wide ones at the end of a run, after the healing phase.

pub mod availability;
pub mod bank;
pub mod convergence;
pub mod decree_agreement;
pub mod linearizable;
pub mod no_lost_writes;
pub mod single_primary;
