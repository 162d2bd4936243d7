//! `tandem backup now | list | show | verify | delete` and `tandem restore` (docs/backup.md). The meta runs backups; this asks it to,
//! and follows one to its end with `--wait`: a progress line on a terminal, a JSON line per
//! poll with `--json`.

use crate::admin::fmt_ms;
use crate::cli::{BackupCommand, ClientArgs, RestoreCommand};
use crate::{client_of, print_json, print_table, CmdResult, Failure, EXIT_ERROR};
use bytesize::ByteSize;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tandem_proto::v1;

/// How often `--wait` asks the meta how far a backup got.
const WAIT_POLL: Duration = Duration::from_millis(500);

pub async fn run(args: &ClientArgs, command: BackupCommand) -> CmdResult {
    let client = client_of(args)?;
    match command {
        BackupCommand::Now { table, target, wait, who } => {
            let req = v1::BackupNowRequest { table: table.clone(), target: target.unwrap_or_default(), who: crate::policy::who(who) };
            let backup = crate::retry_unavailable(args.timeout, || client.backup_now(req.clone())).await?.backup.unwrap_or_default();
            if !wait {
                if args.json {
                    print_json(&info_json(&backup));
                } else {
                    outln!("backup {} of {table} started to {}; follow it with: tandem backup show {}", backup.id, backup.target, backup.id);
                }
                return Ok(());
            }
            follow(args, &client, backup.id).await?;
        }
        BackupCommand::List { table } => {
            let backups = client.backup_list(table.as_deref().unwrap_or("")).await?.backups;
            if args.json {
                print_json(&json!({"backups": backups.iter().map(info_json).collect::<Vec<_>>()}));
            } else if backups.is_empty() {
                outln!("no backups{}", table.map(|t| format!(" of {t}")).unwrap_or_default());
            } else {
                let rows: Vec<Vec<String>> = backups
                    .iter()
                    .map(|b| {
                        vec![
                            b.id.to_string(),
                            b.table_name.clone(),
                            b.state.clone(),
                            fmt_ms(b.started_ms),
                            took(b),
                            size(b.bytes),
                            size(b.new_bytes),
                            b.target.clone(),
                            b.reason.clone(),
                        ]
                    })
                    .collect();
                print_table(&["ID", "TABLE", "STATE", "STARTED", "TOOK", "BYTES", "UPLOADED", "TARGET", "REASON"], &rows);
            }
        }
        BackupCommand::Verify { id } => {
            let r = client.backup_verify(id).await?;
            let b = r.backup.clone().unwrap_or_default();
            if args.json {
                print_json(&json!({"backup": id, "table": b.table_name, "objects": r.objects, "stored_bytes": r.stored_bytes, "problems": r.problems, "ok": r.problems.is_empty()}));
            } else if r.problems.is_empty() {
                outln!("backup {id} of {} is whole: {} objects, {} read from {}, every size and SHA-256 as its manifest says", b.table_name, r.objects, size(r.stored_bytes), b.target);
            } else {
                outln!("backup {id} of {} is damaged: {} problems in {} objects read:", b.table_name, r.problems.len(), r.objects);
                for p in &r.problems {
                    outln!("  {p}");
                }
            }
            if !r.problems.is_empty() {
                return Err(Failure::new(EXIT_ERROR, format!("backup {id} cannot be restored whole ({} problems)", r.problems.len())));
            }
        }
        BackupCommand::Delete { id, who } => {
            let b = client.backup_delete(id, &crate::policy::who(who)).await?.backup.unwrap_or_default();
            if args.json {
                print_json(&info_json(&b));
            } else {
                outln!("backup {id} of {} deleted ({}); its objects that no kept backup uses are being removed from {}", b.table_name, b.reason, b.target);
            }
        }
        BackupCommand::Show { id } => {
            let shown = client.backup_show(id).await?;
            if args.json {
                print_json(&show_json(&shown));
            } else {
                print_show(&shown);
            }
        }
    }
    Ok(())
}

/// Polls backup `id` until it is complete (exit 0) or failed (exit 1 with its reason).
async fn follow(args: &ClientArgs, client: &tandem_client::Client, id: u64) -> CmdResult {
    let bar = !args.json && std::io::stderr().is_terminal();
    let started = Instant::now();
    loop {
        let shown = crate::retry_unavailable(args.timeout, || client.backup_show(id)).await?;
        let b = shown.backup.clone().unwrap_or_default();
        let (parts_done, bytes_done, bytes_total) = progress(&shown);
        let line = json!({"backup": b.id, "state": b.state, "partitions_done": parts_done, "partitions": b.partition_count, "bytes_done": bytes_done, "bytes_total": bytes_total});
        show_progress(args, bar, line, b.state == "running", || {
            let rate = bytes_done as f64 / started.elapsed().as_secs_f64().max(0.001);
            format!(
                "backup {} of {}: {parts_done}/{} partitions, {} of {} ({}/s)",
                b.id,
                b.table_name,
                b.partition_count,
                size(bytes_done),
                size(bytes_total),
                size(rate as u64)
            )
        });
        match b.state.as_str() {
            "running" => tokio::time::sleep(WAIT_POLL).await,
            "complete" => {
                if args.json {
                    print_json(&show_json(&shown));
                } else {
                    outln!("backup {} of {} complete: {} of files, {} uploaded, in {}", b.id, b.table_name, size(b.bytes), size(b.new_bytes), took(&b));
                }
                return Ok(());
            }
            state => {
                return Err(Failure::new(EXIT_ERROR, format!("backup {} of {} is {state}: {}", b.id, b.table_name, b.reason)));
            }
        }
    }
}

/// One poll of `--wait`: a JSON line with `--json`, else the progress line redrawn on a
/// terminal (and ended once the job no longer runs), else nothing.
fn show_progress(args: &ClientArgs, bar: bool, line: serde_json::Value, running: bool, text: impl FnOnce() -> String) {
    if args.json {
        outln!("{line}");
    } else if bar {
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{}{}", text(), if running { "" } else { "\n" });
        let _ = err.flush();
    }
}

/// Partitions done, bytes uploaded and to upload, over what the meta reports.
fn progress(shown: &v1::BackupShowResponse) -> (usize, u64, u64) {
    let done = shown.partitions.iter().filter(|p| p.phase == "done").count();
    let bytes_done = shown.partitions.iter().map(|p| p.bytes_done).sum();
    let bytes_total = shown.partitions.iter().map(|p| p.bytes_total).sum();
    (done, bytes_done, bytes_total)
}

fn size(bytes: u64) -> String {
    ByteSize::b(bytes).to_string()
}

fn took(b: &v1::BackupInfo) -> String {
    if b.finished_ms == 0 {
        return "-".into();
    }
    humantime::format_duration(Duration::from_millis(b.finished_ms.saturating_sub(b.started_ms))).to_string()
}

fn info_json(b: &v1::BackupInfo) -> serde_json::Value {
    json!({
        "id": b.id,
        "table": b.table_name,
        "table_id": b.table_id,
        "partitions": b.partition_count,
        "target": b.target,
        "state": b.state,
        "started_ms": b.started_ms,
        "finished_ms": b.finished_ms,
        "manifest_sha256": b.manifest_sha256,
        "bytes": b.bytes,
        "new_bytes": b.new_bytes,
        "reason": b.reason,
        "who": b.who,
    })
}

fn show_json(shown: &v1::BackupShowResponse) -> serde_json::Value {
    let mut v = info_json(&shown.backup.clone().unwrap_or_default());
    v["partition_details"] = shown
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "phase": p.phase,
                "primary": p.primary,
                "attempt": p.attempt,
                "bytes_done": p.bytes_done,
                "bytes_total": p.bytes_total,
                "last_error": p.last_error,
                "decree": p.decree,
                "files": p.files,
                "new_bytes": p.new_bytes,
                "reused_bytes": p.reused_bytes,
                "duration_ms": p.duration_ms,
            })
        })
        .collect();
    if !shown.manifest_error.is_empty() {
        v["manifest_error"] = json!(shown.manifest_error);
    }
    v
}

fn print_show(shown: &v1::BackupShowResponse) {
    let b = shown.backup.clone().unwrap_or_default();
    outln!("backup {} of {} (table id {}, {} partitions) to {}", b.id, b.table_name, b.table_id, b.partition_count, b.target);
    outln!("state {} · started {} by {} · took {}", b.state, fmt_ms(b.started_ms), b.who, took(&b));
    if b.state == "complete" {
        let reused: u64 = shown.partitions.iter().map(|p| p.reused_bytes).sum();
        outln!("{} of files: {} reused from earlier backups, {} uploaded (compressed) · table manifest sha256 {}", size(b.bytes), size(reused), size(b.new_bytes), b.manifest_sha256);
    }
    if !b.reason.is_empty() {
        outln!("reason: {}", b.reason);
    }
    if !shown.manifest_error.is_empty() {
        outln!("the table manifest could not be read: {} (tandem backup verify {} checks every object)", shown.manifest_error, b.id);
    }
    if shown.partitions.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = if b.state == "complete" {
        shown
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.partition.to_string(),
                    p.decree.to_string(),
                    p.files.to_string(),
                    size(p.bytes_total),
                    size(p.reused_bytes),
                    size(p.new_bytes),
                    humantime::format_duration(Duration::from_millis(p.duration_ms)).to_string(),
                ]
            })
            .collect()
    } else {
        shown
            .partitions
            .iter()
            .map(|p| vec![p.partition.to_string(), p.phase.clone(), p.primary.clone(), p.attempt.to_string(), format!("{} of {}", size(p.bytes_done), size(p.bytes_total)), p.last_error.clone()])
            .collect()
    };
    if b.state == "complete" {
        print_table(&["PARTITION", "DECREE", "FILES", "BYTES", "REUSED", "UPLOADED", "DURATION"], &rows);
    } else {
        print_table(&["PARTITION", "PHASE", "PRIMARY", "ATTEMPT", "UPLOADED", "LAST ERROR"], &rows);
    }
}

/// `tandem restore ID --table NEW | --as-original [--wait]` and `tandem restore list`.
pub async fn restore(args: &ClientArgs, command: Option<RestoreCommand>, id: Option<u64>, table: Option<String>, as_original: bool, wait: bool, who: Option<String>) -> CmdResult {
    let client = client_of(args)?;
    if let Some(RestoreCommand::List) = command {
        let restores = client.restore_list().await?.restores;
        if args.json {
            print_json(&json!({"restores": restores.iter().map(restore_json).collect::<Vec<_>>()}));
        } else if restores.is_empty() {
            outln!("no restores");
        } else {
            let rows: Vec<Vec<String>> = restores
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.table_name.clone(),
                        format!("backup {} of {}", r.backup_id, r.source_table_name),
                        r.state.clone(),
                        format!("{}/{}", r.partitions_ready, r.partition_count),
                        fmt_ms(r.started_ms),
                        if r.finished_ms == 0 { "-".into() } else { humantime::format_duration(Duration::from_millis(r.finished_ms.saturating_sub(r.started_ms))).to_string() },
                        if r.reason.is_empty() { r.last_error.clone() } else { r.reason.clone() },
                    ]
                })
                .collect();
            print_table(&["ID", "TABLE", "FROM", "STATE", "PARTITIONS", "STARTED", "TOOK", "REASON / LAST ERROR"], &rows);
        }
        return Ok(());
    }
    let Some(backup_id) = id else {
        return Err(Failure::new(EXIT_ERROR, "give the backup to restore: tandem restore ID --table NEW_NAME (tandem backup list shows them), or tandem restore list"));
    };
    if table.is_none() && !as_original {
        return Err(Failure::new(EXIT_ERROR, "give --table NEW_NAME, or --as-original to recreate the backed-up table under its own name"));
    }
    let req = v1::RestoreRequest { backup_id, table: table.unwrap_or_default(), as_original, who: crate::policy::who(who) };
    let created = crate::retry_unavailable(args.timeout, || client.restore(req.clone())).await?.table.unwrap_or_default();
    if !wait {
        if args.json {
            print_json(&json!({"table": created.name, "table_id": created.id, "backup": backup_id}));
        } else {
            outln!("table {} (id {}) is being restored from backup {backup_id}; follow it with: tandem restore list", created.name, created.id);
        }
        return Ok(());
    }
    let bar = !args.json && std::io::stderr().is_terminal();
    loop {
        let restores = crate::retry_unavailable(args.timeout, || client.restore_list()).await?.restores;
        let Some(r) = restores.into_iter().filter(|r| r.table_id == created.id).max_by_key(|r| r.id) else {
            return Err(Failure::new(EXIT_ERROR, format!("the meta lists no restore into table {}", created.name)));
        };
        let line = json!({"restore": r.id, "table": r.table_name, "state": r.state, "partitions_ready": r.partitions_ready, "partitions": r.partition_count});
        show_progress(args, bar, line, r.state == "running", || {
            format!("restore {} into {}: {}/{} partitions open", r.id, r.table_name, r.partitions_ready, r.partition_count)
        });
        match r.state.as_str() {
            "running" => tokio::time::sleep(WAIT_POLL).await,
            "complete" => {
                if args.json {
                    print_json(&restore_json(&r));
                } else {
                    let took = humantime::format_duration(Duration::from_millis(r.finished_ms.saturating_sub(r.started_ms)));
                    outln!("table {} restored from backup {} of {} in {took}: {} partitions", r.table_name, r.backup_id, r.source_table_name, r.partition_count);
                }
                return Ok(());
            }
            state => {
                return Err(Failure::new(
                    EXIT_ERROR,
                    format!("restore {} into {} is {state}: {} (the partitions it could not restore serve nothing; drop the table: tandem table drop {})", r.id, r.table_name, r.reason, r.table_name),
                ));
            }
        }
    }
}

fn restore_json(r: &v1::RestoreInfo) -> serde_json::Value {
    json!({
        "id": r.id,
        "table": r.table_name,
        "table_id": r.table_id,
        "backup": r.backup_id,
        "source_table": r.source_table_name,
        "source_table_id": r.source_table_id,
        "partitions": r.partition_count,
        "partitions_ready": r.partitions_ready,
        "target": r.target,
        "state": r.state,
        "started_ms": r.started_ms,
        "finished_ms": r.finished_ms,
        "reason": r.reason,
        "last_error": r.last_error,
        "who": r.who,
    })
}
