//! Sites and duplications as the meta keeps them (DESIGN.md §5, docs/duplication.md): the other
//! sites this one ships to, by name; each duplication of a table to a site, with its state
//! `start ⇄ pause → removed`; and per partition the confirmed decree its primaries reported,
//! persisted so that a new primary resumes from it.

use crate::policy::validate_site_name;
use serde::{Deserialize, Serialize};
use tandem_core::Decree;
use tandem_dup_core::FailMode;

/// Meta addresses one site may list.
pub const SITE_METAS_MAX: usize = 16;

/// Another site, reached through its meta servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub name: String,
    /// `host:port` of each of its meta servers.
    pub metas: Vec<String>,
}

impl Site {
    /// Checks a site to be added by this site (`own`); each message names the fix.
    pub fn validate(&self, own: &str) -> Result<(), String> {
        validate_site_name(&self.name)?;
        if self.name == own {
            return Err(format!("{:?} is this site's own name; add the other site under its name", self.name));
        }
        if self.metas.is_empty() || self.metas.len() > SITE_METAS_MAX {
            return Err(format!("give 1 to {SITE_METAS_MAX} meta addresses of site {:?} (--meta HOST:PORT[,…])", self.name));
        }
        for m in &self.metas {
            let port = m.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if port.and_then(|p| p.parse::<u16>().ok()).is_none_or(|p| p == 0) {
                return Err(format!("meta address {m:?} of site {:?} is not HOST:PORT", self.name));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DupStatus {
    /// Shipping.
    Start,
    /// Shipping nothing; the log is still held for it.
    Pause,
    /// Gone: nothing ships or is held; kept so that `dup list --all` shows it.
    Removed,
}

impl DupStatus {
    pub fn name(&self) -> &'static str {
        match self {
            DupStatus::Start => "start",
            DupStatus::Pause => "pause",
            DupStatus::Removed => "removed",
        }
    }

    pub fn from_name(name: &str) -> Option<DupStatus> {
        [DupStatus::Start, DupStatus::Pause, DupStatus::Removed].into_iter().find(|s| s.name() == name)
    }
}

/// A duplication of a table to another site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DupInfo {
    pub id: u32,
    pub table_id: u32,
    pub remote_site: String,
    pub status: DupStatus,
    pub fail_mode: FailMode,
    /// Each partition ships a snapshot before its log.
    pub sync_existing: bool,
    pub created_ms: u64,
}

/// What a primary's duplicator last reported (kept in memory, shown by `dup list`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DupReport {
    pub confirmed: Decree,
    pub lag_decrees: u64,
    pub lag_ms: u64,
    /// "log" or "snapshot".
    pub phase: String,
    pub last_error: Option<String>,
    /// Snapshots the primary shipped because its log had lost what was not shipped.
    pub resyncs: u64,
    /// `DuplicatorState::watermark_us`.
    pub watermark_us: u64,
}

impl From<tandem_dup_core::DuplicatorState> for DupReport {
    /// What a primary reports of its duplicator in a beacon.
    fn from(s: tandem_dup_core::DuplicatorState) -> DupReport {
        DupReport {
            confirmed: s.confirmed,
            lag_decrees: s.lag_decrees,
            lag_ms: s.lag_ms,
            phase: s.phase.to_string(),
            last_error: s.last_error,
            resyncs: s.resyncs,
            watermark_us: s.watermark_us,
        }
    }
}

/// One partition of a duplication in `dup list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DupPartitionView {
    pub partition: u32,
    /// As persisted; None: its primary has not reported yet.
    pub confirmed: Option<Decree>,
    /// The primary's last report, if one arrived since this meta leads.
    pub report: Option<DupReport>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DupView {
    pub info: DupInfo,
    pub table: String,
    pub partitions: Vec<DupPartitionView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_are_checked_with_the_fix_named() {
        let site = |name: &str, metas: &[&str]| Site { name: name.into(), metas: metas.iter().map(|m| m.to_string()).collect() };
        assert_eq!(site("b", &["10.0.0.1:34601", "meta-b:34601"]).validate("a"), Ok(()));
        assert!(site("a", &["x:1"]).validate("a").unwrap_err().contains("own name"));
        assert!(site("b", &[]).validate("a").unwrap_err().contains("--meta"));
        assert!(site("b", &["x"]).validate("a").unwrap_err().contains("HOST:PORT"));
        assert!(site("b", &[":80"]).validate("a").unwrap_err().contains("HOST:PORT"));
        assert!(site("b", &["x:0"]).validate("a").unwrap_err().contains("HOST:PORT"));
        assert!(site("b c", &["x:1"]).validate("a").is_err());
        assert_eq!(DupStatus::from_name("pause"), Some(DupStatus::Pause));
    }
}
