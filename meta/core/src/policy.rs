//! A table's redundancy policy: how many replicas, duplication to another site, scheduled
//! backups. Set by table owners (`tandem policy set`), kept in the SQL store with an audit
//! history, and reconciled by the meta (replica count through cure, duplication through a
//! duplication per named site, backups through the schedule and retention of `machine`).
//!
//! ```text
//!  current Policy ──┐
//!  PolicyChange ────┼─▶ Policy::apply ─▶ next Policy ─▶ validate(live nodes, sites) ─▶ store
//!  (level preset, then explicit flags)
//! ```

use serde::{Deserialize, Serialize};
pub use tandem_backup_core::schedule::BackupAt;

pub const REPLICAS_MIN: u32 = 1;
pub const REPLICAS_MAX: u32 = 5;
pub const BACKUP_KEEP_MAX: u32 = 1000;
/// Backups more often than this would spend the cluster on snapshots.
pub const BACKUP_EVERY_MS_MIN: u64 = 60_000;
pub const TOMBSTONE_RETENTION_MS_MIN: u64 = 60_000;
pub const TOMBSTONE_RETENTION_MS_MAX: u64 = 365 * 24 * 3_600_000;
pub const SITE_NAME_BYTES_MAX: usize = 64;
pub const BACKUP_TARGET_BYTES_MAX: usize = 1024;

/// What a level-3 preset schedules when no `--backup` is given.
pub const PRESET_BACKUP_EVERY_MS: u64 = 24 * 3_600_000;
pub const PRESET_BACKUP_KEEP: u32 = 7;
pub const DEFAULT_TOMBSTONE_RETENTION_MS: u64 = tandem_core::value::TOMBSTONE_RETENTION_MS_DEFAULT;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPolicy {
    pub every_ms: u64,
    pub keep: u32,
    /// `s3://BUCKET[/PREFIX]` or `file:///PATH`.
    pub target: String,
    /// The start time (`--backup-at`); None: `every` after the last backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<BackupAt>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub replicas: u32,
    /// The site every committed write is duplicated to, or None.
    pub duplication: Option<String>,
    pub backup: Option<BackupPolicy>,
    /// How long deletes are remembered, so a late duplicated write cannot resurrect a key.
    pub tombstone_retention_ms: u64,
}

impl Policy {
    pub fn with_replicas(replicas: u32) -> Policy {
        Policy { replicas, duplication: None, backup: None, tombstone_retention_ms: DEFAULT_TOMBSTONE_RETENTION_MS }
    }

    /// The protection level this policy amounts to: 1 replicas only, 2 + duplication,
    /// 3 + duplication and backup. A backup without duplication is reported as level 1 plus
    /// backup by `describe_level`.
    pub fn level(&self) -> u8 {
        match (&self.duplication, &self.backup) {
            (None, _) => 1,
            (Some(_), None) => 2,
            (Some(_), Some(_)) => 3,
        }
    }

    pub fn describe_level(&self) -> String {
        match (self.level(), &self.backup) {
            (1, Some(_)) => "1 + backup".to_string(),
            (level, _) => level.to_string(),
        }
    }
}

/// `off` or a value: how a flag that can also switch a feature off arrives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Toggle<T> {
    Off,
    On(T),
}

/// What `tandem policy set` (or `table create`) asks for. A level preset applies first, then
/// every explicit field overrides it. Unset fields keep the current value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    pub level: Option<u8>,
    pub replicas: Option<u32>,
    /// `Off` or a site name.
    pub duplication: Option<Toggle<String>>,
    /// `Off` or an interval.
    pub backup_every_ms: Option<Toggle<u64>>,
    pub backup_keep: Option<u32>,
    pub backup_target: Option<String>,
    /// `Off` or a start time.
    pub backup_at: Option<Toggle<BackupAt>>,
    pub tombstone_retention_ms: Option<u64>,
}

impl PolicyChange {
    pub fn is_empty(&self) -> bool {
        *self == PolicyChange::default()
    }
}

/// What validation needs to know about the cluster.
pub struct PolicyContext<'a> {
    /// Replica servers alive now with room on their disks.
    pub live_nodes: usize,
    /// Alive servers below their disk reserve (not counted in `live_nodes`).
    pub disk_short: Vec<String>,
    /// This site's name (duplication to it is refused).
    pub site: &'a str,
    /// Sites this cluster can duplicate to.
    pub peer_sites: &'a [String],
    /// Where a level-3 preset backs up when no `--backup-target` is given ("" = none).
    pub default_backup_target: &'a str,
}

impl Policy {
    /// The policy after `change`, validated. Errors name the limit or the fix.
    pub fn apply(&self, change: &PolicyChange, cx: &PolicyContext<'_>) -> Result<Policy, String> {
        let mut next = self.clone();
        let mut backup_wanted: Option<bool> = None;
        match change.level {
            None => {}
            Some(1) => {
                next.duplication = None;
                backup_wanted = Some(false);
            }
            Some(level @ (2 | 3)) => {
                if next.duplication.is_none() && !matches!(change.duplication, Some(Toggle::On(_))) {
                    next.duplication = Some(match cx.peer_sites {
                        [only] => only.clone(),
                        [] => return Err(format!("level {level} duplicates to another site, but this cluster knows none (add one with tandem site add NAME --meta HOST:PORT, or choose --level 1)")),
                        _ => return Err(format!("level {level} duplicates to another site: name it with --dup SITE (one of: {})", cx.peer_sites.join(", "))),
                    });
                }
                backup_wanted = Some(level == 3);
            }
            Some(level) => return Err(format!("level {level} does not exist: choose 1 (replicas only), 2 (+ duplication) or 3 (+ backup)")),
        }
        if let Some(replicas) = change.replicas {
            next.replicas = replicas;
        }
        match &change.duplication {
            None => {}
            Some(Toggle::Off) => next.duplication = None,
            Some(Toggle::On(site)) => next.duplication = Some(site.clone()),
        }
        match change.backup_every_ms {
            None => {}
            Some(Toggle::Off) => backup_wanted = Some(false),
            Some(Toggle::On(_)) => backup_wanted = Some(true),
        }
        if change.backup_keep.is_some() || change.backup_target.is_some() || matches!(change.backup_at, Some(Toggle::On(_))) {
            if backup_wanted == Some(false) {
                return Err("--backup-keep, --backup-target and --backup-at describe backups, which this change switches off".to_string());
            }
            backup_wanted.get_or_insert(true);
        }
        match backup_wanted {
            Some(false) => next.backup = None,
            Some(true) => {
                let current = next.backup.take();
                let every_ms = match change.backup_every_ms {
                    Some(Toggle::On(every)) => every,
                    _ => current.as_ref().map_or(PRESET_BACKUP_EVERY_MS, |b| b.every_ms),
                };
                let keep = change.backup_keep.or(current.as_ref().map(|b| b.keep)).unwrap_or(PRESET_BACKUP_KEEP);
                let at = match &change.backup_at {
                    Some(Toggle::On(at)) => Some(at.clone()),
                    Some(Toggle::Off) => None,
                    None => current.as_ref().and_then(|b| b.at.clone()),
                };
                let target = change
                    .backup_target
                    .clone()
                    .or(current.map(|b| b.target))
                    .or_else(|| (!cx.default_backup_target.is_empty()).then(|| cx.default_backup_target.to_string()))
                    .ok_or_else(|| "backups need a target: add --backup-target s3://BUCKET/PREFIX (or set meta.backup_target)".to_string())?;
                next.backup = Some(BackupPolicy { every_ms, keep, target, at });
            }
            None => {
                if let (Some(Toggle::Off), Some(b)) = (&change.backup_at, next.backup.as_mut()) {
                    b.at = None;
                }
            }
        }
        if let Some(retention) = change.tombstone_retention_ms {
            next.tombstone_retention_ms = retention;
        }
        next.validate(cx, self.replicas)?;
        Ok(next)
    }

    /// Checks every field. `current_replicas` is allowed even when fewer nodes live now (a
    /// change of other fields must not fail because a node is down).
    pub fn validate(&self, cx: &PolicyContext<'_>, current_replicas: u32) -> Result<(), String> {
        if !(REPLICAS_MIN..=REPLICAS_MAX).contains(&self.replicas) {
            return Err(format!("replicas {} is outside {REPLICAS_MIN}..={REPLICAS_MAX}", self.replicas));
        }
        if self.replicas != current_replicas && self.replicas as usize > cx.live_nodes {
            if cx.disk_short.is_empty() {
                return Err(format!(
                    "replicas {} exceeds the {} live replica servers; start more servers or ask for fewer replicas",
                    self.replicas, cx.live_nodes
                ));
            }
            return Err(format!(
                "replicas {} exceeds the {} live replica servers with disk room ({} below the disk reserve: tandem nodes shows it); \
                 free space there, start more servers or ask for fewer replicas",
                self.replicas,
                cx.live_nodes,
                cx.disk_short.join(", ")
            ));
        }
        if let Some(site) = &self.duplication {
            if site == cx.site {
                return Err(format!("cannot duplicate to '{site}': that is this cluster's own site"));
            }
            if !cx.peer_sites.contains(site) {
                let known = if cx.peer_sites.is_empty() { "none (add one with tandem site add NAME --meta HOST:PORT)".to_string() } else { cx.peer_sites.join(", ") };
                return Err(format!("unknown site '{site}'; known sites: {known}"));
            }
        }
        if let Some(b) = &self.backup {
            if b.every_ms < BACKUP_EVERY_MS_MIN {
                return Err(format!("backup interval {} ms is shorter than the {} minimum", b.every_ms, "1m"));
            }
            if b.keep == 0 || b.keep > BACKUP_KEEP_MAX {
                return Err(format!("backup keep {} is outside 1..={BACKUP_KEEP_MAX}", b.keep));
            }
            validate_backup_target(&b.target)?;
            if let Some(at) = &b.at {
                at.validate(b.every_ms)?;
            }
        }
        if !(TOMBSTONE_RETENTION_MS_MIN..=TOMBSTONE_RETENTION_MS_MAX).contains(&self.tombstone_retention_ms) {
            return Err(format!("tombstone retention {} ms is outside 1m..=365d", self.tombstone_retention_ms));
        }
        Ok(())
    }
}

pub fn validate_backup_target(target: &str) -> Result<(), String> {
    if target.len() > BACKUP_TARGET_BYTES_MAX {
        return Err(format!("backup target is longer than {BACKUP_TARGET_BYTES_MAX} bytes"));
    }
    let ok = if let Some(rest) = target.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or("");
        (3..=63).contains(&bucket.len()) && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    } else if let Some(path) = target.strip_prefix("file://") {
        path.starts_with('/') && path.len() > 1
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(format!("backup target '{target}' must be s3://BUCKET[/PREFIX] (bucket: 3-63 of a-z 0-9 . -) or file:///ABSOLUTE/PATH"))
    }
}

/// A site name: 1 to 64 of letters, digits, `_`, `-`, `.`.
pub fn validate_site_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > SITE_NAME_BYTES_MAX || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(format!("site name {name:?} must be 1 to {SITE_NAME_BYTES_MAX} letters, digits, '_', '-' or '.'"));
    }
    Ok(())
}

/// One entry of a table's policy history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyHistoryEntry {
    pub at_ms: u64,
    pub who: String,
    /// None for the policy a table was created with.
    pub old: Option<Policy>,
    pub new: Policy,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx<'a>(peers: &'a [String]) -> PolicyContext<'a> {
        PolicyContext { live_nodes: 5, disk_short: vec![], site: "a", peer_sites: peers, default_backup_target: "" }
    }

    #[test]
    fn level_presets_then_flags_override() {
        let peers = vec!["b".to_string()];
        let base = Policy::with_replicas(3);
        let l3 = PolicyChange { level: Some(3), backup_target: Some("s3://bkt/t".into()), ..Default::default() };
        let p = base.apply(&l3, &cx(&peers)).unwrap();
        assert_eq!(p.level(), 3);
        assert_eq!(p.duplication.as_deref(), Some("b"));
        assert_eq!(p.backup, Some(BackupPolicy { every_ms: PRESET_BACKUP_EVERY_MS, keep: PRESET_BACKUP_KEEP, target: "s3://bkt/t".into(), at: None }));
        // An explicit flag beats the preset.
        let l3_hourly = PolicyChange { backup_every_ms: Some(Toggle::On(3_600_000)), ..l3.clone() };
        assert_eq!(base.apply(&l3_hourly, &cx(&peers)).unwrap().backup.unwrap().every_ms, 3_600_000);
        // Back to level 1 drops duplication and backup but keeps replicas.
        let p1 = p.apply(&PolicyChange { level: Some(1), ..Default::default() }, &cx(&peers)).unwrap();
        assert_eq!(p1, base);
        // Level 3 with backups explicitly off is level 2.
        let l3_off = PolicyChange { level: Some(3), backup_every_ms: Some(Toggle::Off), ..Default::default() };
        assert_eq!(base.apply(&l3_off, &cx(&peers)).unwrap().level(), 2);
    }

    #[test]
    fn validation_names_the_limit() {
        let peers = vec!["b".to_string(), "c".to_string()];
        let base = Policy::with_replicas(3);
        let err = |change: PolicyChange| base.apply(&change, &cx(&peers)).unwrap_err();
        assert!(err(PolicyChange { replicas: Some(6), ..Default::default() }).contains("outside 1..=5"));
        assert!(err(PolicyChange { replicas: Some(0), ..Default::default() }).contains("outside 1..=5"));
        let few = PolicyContext { live_nodes: 3, disk_short: vec![], ..cx(&peers) };
        assert!(base.apply(&PolicyChange { replicas: Some(4), ..Default::default() }, &few).unwrap_err().contains("exceeds the 3 live"));
        let short = PolicyContext { live_nodes: 3, disk_short: vec!["r4:1".into()], ..cx(&peers) };
        let e = base.apply(&PolicyChange { replicas: Some(4), ..Default::default() }, &short).unwrap_err();
        assert!(e.contains("exceeds the 3 live replica servers with disk room (r4:1 below the disk reserve"), "{e}");
        assert!(err(PolicyChange { duplication: Some(Toggle::On("x".into())), ..Default::default() }).contains("unknown site 'x'; known sites: b, c"));
        assert!(err(PolicyChange { duplication: Some(Toggle::On("a".into())), ..Default::default() }).contains("own site"));
        assert!(err(PolicyChange { level: Some(2), ..Default::default() }).contains("name it with --dup SITE (one of: b, c)"));
        assert!(err(PolicyChange { level: Some(4), ..Default::default() }).contains("level 4 does not exist"));
        assert!(err(PolicyChange { backup_every_ms: Some(Toggle::On(3_600_000)), ..Default::default() }).contains("--backup-target"));
        let small = PolicyChange { backup_every_ms: Some(Toggle::On(1000)), backup_target: Some("s3://bkt".into()), ..Default::default() };
        assert!(err(small).contains("minimum"));
        assert!(err(PolicyChange { backup_target: Some("http://x".into()), ..Default::default() }).contains("s3://BUCKET"));
        assert!(err(PolicyChange { tombstone_retention_ms: Some(1), ..Default::default() }).contains("outside 1m..=365d"));
        let contradiction = PolicyChange { backup_every_ms: Some(Toggle::Off), backup_keep: Some(3), ..Default::default() };
        assert!(err(contradiction).contains("switches off"));
        // No peer sites at all.
        assert!(base.apply(&PolicyChange { level: Some(2), ..Default::default() }, &cx(&[])).unwrap_err().contains("knows none"));
    }

    #[test]
    fn a_start_time_is_kept_until_changed_or_switched_off() {
        let cx = PolicyContext { live_nodes: 3, disk_short: vec![], site: "a", peer_sites: &[], default_backup_target: "file:///bk" };
        let at = BackupAt::parse("02:30 Europe/Paris").unwrap();
        let p = Policy::with_replicas(3).apply(&PolicyChange { backup_at: Some(Toggle::On(at.clone())), ..Default::default() }, &cx).unwrap();
        assert_eq!(p.backup.as_ref().unwrap().at, Some(at.clone()), "a start time alone switches daily backups on");
        let p = p.apply(&PolicyChange { backup_keep: Some(3), backup_every_ms: Some(Toggle::On(6 * 3_600_000)), ..Default::default() }, &cx).unwrap();
        assert_eq!(p.backup.as_ref().unwrap().at, Some(at), "other backup flags keep it");
        let p = p.apply(&PolicyChange { backup_at: Some(Toggle::Off), ..Default::default() }, &cx).unwrap();
        assert_eq!((p.backup.as_ref().unwrap().at.clone(), p.backup.as_ref().unwrap().keep), (None, 3), "off clears the start time only");
        let odd = PolicyChange { backup_every_ms: Some(Toggle::On(36 * 3_600_000)), backup_at: Some(Toggle::On(BackupAt::parse("01:00").unwrap())), ..Default::default() };
        assert!(p.apply(&odd, &cx).unwrap_err().contains("whole days"));
        let off = PolicyChange { backup_every_ms: Some(Toggle::Off), backup_at: Some(Toggle::On(BackupAt::parse("01:00").unwrap())), ..Default::default() };
        assert!(p.apply(&off, &cx).unwrap_err().contains("switches off"));
        // Policies recorded before start times existed read back without one.
        let old: BackupPolicy = serde_json::from_str(r#"{"every_ms":60000,"keep":1,"target":"file:///bk"}"#).unwrap();
        assert_eq!(old.at, None);
    }

    #[test]
    fn a_down_node_does_not_block_other_changes() {
        let few = PolicyContext { live_nodes: 2, disk_short: vec![], site: "a", peer_sites: &[], default_backup_target: "file:///bk" };
        let p = Policy::with_replicas(3).apply(&PolicyChange { backup_keep: Some(2), ..Default::default() }, &few).unwrap();
        assert_eq!(p.backup, Some(BackupPolicy { every_ms: PRESET_BACKUP_EVERY_MS, keep: 2, target: "file:///bk".into(), at: None }));
        assert_eq!(p.describe_level(), "1 + backup");
    }
}
