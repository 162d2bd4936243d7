//! `tandem policy set | show | history | status`, and the policy flags of `table create`.

use crate::cli::{BackupEvery, ClientArgs, PolicyCommand, PolicyFlags};
use crate::admin::fmt_ms;
use crate::{client_of, print_json, print_table, CmdResult, Failure, EXIT_UNAVAILABLE};
use serde_json::json;
use std::time::Duration;
use tandem_proto::v1;

/// Who acts: `--as`/`TANDEM_USER` (clap fills both into `who`), else the OS user, else
/// "unknown". Recorded as given: authentication comes later.
pub fn who(given: Option<String>) -> String {
    given
        .filter(|w| !w.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The wire change for the flags (and an explicit replica count).
pub fn change_of(flags: &PolicyFlags, replicas: Option<u32>) -> v1::PolicyChange {
    v1::PolicyChange {
        level: flags.level,
        replicas,
        duplication: flags.dup.clone(),
        backup_every_ms: flags.backup.map(|b| match b {
            BackupEvery::Off => 0,
            BackupEvery::Every(d) => d.as_millis() as u64,
        }),
        backup_keep: flags.backup_keep,
        backup_target: flags.backup_target.clone(),
        backup_at: flags.backup_at.clone(),
        tombstone_retention_ms: flags.tombstone_retention.map(|d| d.as_millis() as u64),
    }
}

fn duration(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

fn backup_text(p: &v1::Policy) -> String {
    if p.backup_every_ms == 0 {
        "off".into()
    } else {
        let from = if p.backup_at.is_empty() { String::new() } else { format!(" from {}", p.backup_at) };
        format!("every {}{from}, keep {}, to {}", duration(p.backup_every_ms), p.backup_keep, p.backup_target)
    }
}

fn dup_text(p: &v1::Policy) -> String {
    if p.duplication.is_empty() { "off".into() } else { format!("to {}", p.duplication) }
}

pub fn policy_json(p: &v1::Policy) -> serde_json::Value {
    json!({
        "level": p.level,
        "replicas": p.replicas,
        "duplication": if p.duplication.is_empty() { None } else { Some(&p.duplication) },
        "backup": if p.backup_every_ms == 0 { None } else {
            Some(json!({"every": duration(p.backup_every_ms), "every_ms": p.backup_every_ms, "keep": p.backup_keep, "target": p.backup_target,
                "at": if p.backup_at.is_empty() { None } else { Some(&p.backup_at) }}))
        },
        "tombstone_retention": duration(p.tombstone_retention_ms),
        "tombstone_retention_ms": p.tombstone_retention_ms,
    })
}

/// One line: "level 3: 3 replicas, duplication to b, backup every 1day, keep 7, to s3://…".
pub fn policy_line(p: &v1::Policy) -> String {
    format!(
        "level {}: {} replicas, duplication {}, backup {}, tombstones kept {}",
        p.level,
        p.replicas,
        dup_text(p),
        backup_text(p),
        duration(p.tombstone_retention_ms)
    )
}

/// The fields that differ between two policies, as "field: old → new".
fn diff(old: Option<&v1::Policy>, new: &v1::Policy) -> Vec<String> {
    let Some(old) = old else { return vec![format!("created with {}", policy_line(new))] };
    let mut out = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: {a} → {b}"));
        }
    };
    field("replicas", old.replicas.to_string(), new.replicas.to_string());
    field("duplication", dup_text(old), dup_text(new));
    field("backup", backup_text(old), backup_text(new));
    field("tombstone retention", duration(old.tombstone_retention_ms), duration(new.tombstone_retention_ms));
    field("level", old.level.clone(), new.level.clone());
    out
}

pub async fn run(args: &ClientArgs, command: PolicyCommand) -> CmdResult {
    let client = client_of(args)?;
    match command {
        PolicyCommand::Set { table, replicas, flags, who: given } => {
            let who = who(given);
            let change = change_of(&flags, replicas);
            let resp = crate::retry_unavailable(args.timeout, || client.set_policy(&table, change.clone(), &who)).await?;
            let t = resp.table.unwrap_or_default();
            let new = t.policy.clone().unwrap_or_default();
            let old = resp.old.unwrap_or_default();
            if args.json {
                print_json(&json!({"table": t.name, "changed": resp.changed, "by": who, "old": policy_json(&old), "new": policy_json(&new)}));
            } else if resp.changed {
                outln!("policy of {} changed by {who}:", t.name);
                for line in diff(Some(&old), &new) {
                    outln!("  {line}");
                }
                outln!("`tandem policy status {}` shows the cluster reconciling toward it", t.name);
            } else {
                outln!("policy of {} unchanged ({})", t.name, policy_line(&new));
            }
        }
        PolicyCommand::Show { table } => {
            let t = client.show_table(&table).await?.table.unwrap_or_default();
            let p = t.policy.clone().unwrap_or_default();
            if args.json {
                print_json(&json!({"table": t.name, "owner": t.owner, "policy": policy_json(&p)}));
            } else {
                outln!("table {} (owner {})", t.name, t.owner);
                print_table(
                    &["FIELD", "VALUE"],
                    &[
                        vec!["level".into(), p.level.clone()],
                        vec!["replicas".into(), p.replicas.to_string()],
                        vec!["duplication".into(), dup_text(&p)],
                        vec!["backup".into(), backup_text(&p)],
                        vec!["tombstone retention".into(), duration(p.tombstone_retention_ms)],
                    ],
                );
            }
        }
        PolicyCommand::History { table } => {
            let resp = client.policy_history(&table).await?;
            if args.json {
                let entries: Vec<serde_json::Value> = resp
                    .entries
                    .iter()
                    .map(|e| json!({"at": fmt_ms(e.at_ms), "at_ms": e.at_ms, "who": e.who, "old": e.old.as_ref().map(policy_json), "new": e.new.as_ref().map(policy_json)}))
                    .collect();
                print_json(&json!({"table": table, "history": entries}));
            } else {
                let rows: Vec<Vec<String>> = resp
                    .entries
                    .iter()
                    .map(|e| vec![fmt_ms(e.at_ms), e.who.clone(), diff(e.old.as_ref(), &e.new.clone().unwrap_or_default()).join("; ")])
                    .collect();
                print_table(&["WHEN", "WHO", "CHANGE (OLD → NEW)"], &rows);
            }
        }
        PolicyCommand::Status { table } => {
            let resp = client.policy_status(&table).await?;
            let satisfied = resp.levels.iter().find(|l| l.level == "replicas").is_some_and(|l| l.satisfied);
            if args.json {
                print_json(&json!({
                    "table": table,
                    "levels": resp.levels.iter().map(|l| json!({"level": l.level, "desired": l.desired, "actual": l.actual, "satisfied": l.satisfied})).collect::<Vec<_>>(),
                    "partitions": resp.partitions.iter().map(|p| json!({"partition": p.partition, "healthy": p.healthy, "members": p.members, "learners": p.learners})).collect::<Vec<_>>(),
                }));
            } else {
                let rows: Vec<Vec<String>> = resp
                    .levels
                    .iter()
                    .map(|l| vec![l.level.clone(), l.desired.clone(), l.actual.clone(), if l.satisfied { "yes".into() } else { "no".into() }])
                    .collect();
                print_table(&["LEVEL", "DESIRED", "ACTUAL", "MET"], &rows);
            }
            if !satisfied {
                return Err(Failure::new(EXIT_UNAVAILABLE, ""));
            }
        }
    }
    Ok(())
}
