//! `tandem site add | list | remove` and `tandem dup add | list | pause | resume | remove`
//! (docs/duplication.md).

use crate::cli::{ClientArgs, DupCommand, SiteCommand};
use crate::{client_of, print_json, print_table, CmdResult, Failure, EXIT_ERROR, EXIT_NOT_FOUND};
use serde_json::json;
use tandem_proto::v1;

pub async fn site(args: &ClientArgs, command: SiteCommand) -> CmdResult {
    let client = client_of(args)?;
    match command {
        SiteCommand::Add { name, meta } => {
            crate::retry_unavailable(args.timeout, || client.site_add(&name, &meta)).await?;
            if args.json {
                print_json(&json!({"site": name, "metas": meta}));
            } else {
                outln!("site {name} added (meta {}); duplicate a table to it with: tandem dup add TABLE --to {name}", meta.join(","));
            }
        }
        SiteCommand::List => {
            let sites = client.site_list().await?.sites;
            if args.json {
                print_json(&json!({"sites": sites.iter().map(|s| json!({"name": s.name, "metas": s.metas})).collect::<Vec<_>>()}));
            } else {
                let rows: Vec<Vec<String>> = sites.iter().map(|s| vec![s.name.clone(), s.metas.join(",")]).collect();
                print_table(&["SITE", "META"], &rows);
            }
        }
        SiteCommand::Remove { name } => {
            crate::retry_unavailable(args.timeout, || client.site_remove(&name)).await?;
            if args.json {
                print_json(&json!({"removed": name}));
            } else {
                outln!("site {name} removed");
            }
        }
    }
    Ok(())
}

pub async fn dup(args: &ClientArgs, command: DupCommand) -> CmdResult {
    let client = client_of(args)?;
    match command {
        DupCommand::Add { table, to, sync_existing, fail_mode } => {
            let req = v1::DupAddRequest { table: table.clone(), remote_site: to.clone(), fail_mode, sync_existing };
            let dup = crate::retry_unavailable(args.timeout, || client.dup_add(req.clone())).await?.dup.unwrap_or_default();
            if args.json {
                print_json(&dup_json(&dup));
            } else {
                outln!("duplication {} of {table} to {to} added ({}); `tandem dup list {table}` shows its progress", dup.id, dup.fail_mode);
            }
        }
        DupCommand::List { table, all } => {
            let dups = client.dup_list(table.as_deref().unwrap_or(""), all).await?.dups;
            if args.json {
                print_json(&json!({"duplications": dups.iter().map(view_json).collect::<Vec<_>>()}));
            } else if dups.is_empty() {
                outln!("no duplications{}", table.map(|t| format!(" of {t}")).unwrap_or_default());
            } else {
                for v in &dups {
                    let d = v.dup.clone().unwrap_or_default();
                    let sync = if d.sync_existing { ", sync existing" } else { "" };
                    outln!("duplication {} of {} to {}: {} (fail mode {}{sync})", d.id, v.table, d.remote_site, d.status, d.fail_mode);
                    let rows: Vec<Vec<String>> = v.partitions.iter().map(partition_row).collect();
                    print_table(&["PARTITION", "CONFIRMED", "LAG (DECREES)", "LAG", "PHASE", "LAST ERROR"], &rows);
                }
            }
        }
        DupCommand::Pause { table, dup } => set_status(args, &client, &table, &dup, "pause", "paused").await?,
        DupCommand::Resume { table, dup } => set_status(args, &client, &table, &dup, "start", "resumed").await?,
        DupCommand::Remove { table, dup } => set_status(args, &client, &table, &dup, "removed", "removed").await?,
    }
    Ok(())
}

/// `dup` names a duplication of `table` by id or by its site.
async fn set_status(args: &ClientArgs, client: &tandem_client::Client, table: &str, dup: &str, status: &str, done: &str) -> CmdResult {
    let dups = client.dup_list(table, true).await?.dups;
    let infos: Vec<v1::DupInfo> = dups.into_iter().filter_map(|v| v.dup).collect();
    let found = match dup.parse::<u32>() {
        Ok(id) => infos.iter().find(|d| d.id == id),
        Err(_) => infos.iter().find(|d| d.remote_site == dup && d.status != "removed"),
    };
    let Some(found) = found else {
        let known: Vec<String> = infos.iter().filter(|d| d.status != "removed").map(|d| format!("{} (to {})", d.id, d.remote_site)).collect();
        let hint = if known.is_empty() { "it has none".to_string() } else { format!("its duplications: {}", known.join(", ")) };
        return Err(Failure::new(EXIT_NOT_FOUND, format!("table {table} has no duplication {dup:?}; {hint}")));
    };
    if found.status == "removed" {
        return Err(Failure::new(EXIT_ERROR, format!("duplication {} of {table} was removed; add a new one with tandem dup add", found.id)));
    }
    let id = found.id;
    let resp = crate::retry_unavailable(args.timeout, || client.dup_set_status(id, status)).await?;
    if args.json {
        print_json(&json!({"duplication": resp.dup.as_ref().map(dup_json), "changed": resp.changed}));
    } else if resp.changed {
        outln!("duplication {id} of {table} {done}");
    } else {
        outln!("duplication {id} of {table} was {done} already");
    }
    Ok(())
}

fn dup_json(d: &v1::DupInfo) -> serde_json::Value {
    json!({"id": d.id, "table_id": d.table_id, "site": d.remote_site, "status": d.status, "fail_mode": d.fail_mode, "sync_existing": d.sync_existing, "created_ms": d.created_ms})
}

fn view_json(v: &v1::DupView) -> serde_json::Value {
    let mut dup = v.dup.as_ref().map(dup_json).unwrap_or_default();
    dup["table"] = json!(v.table);
    dup["partitions"] = v
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "confirmed": p.has_confirmed.then_some(p.confirmed),
                "lag_decrees": p.report.as_ref().map(|r| r.lag_decrees),
                "lag_ms": p.report.as_ref().map(|r| r.lag_ms),
                "phase": p.report.as_ref().map(|r| r.phase.clone()),
                "last_error": p.report.as_ref().and_then(|r| (!r.last_error.is_empty()).then(|| r.last_error.clone())),
            })
        })
        .collect();
    dup
}

fn partition_row(p: &v1::DupPartitionView) -> Vec<String> {
    let confirmed = if p.has_confirmed { p.confirmed.to_string() } else { "-".into() };
    match &p.report {
        Some(r) => vec![
            p.partition.to_string(),
            confirmed,
            r.lag_decrees.to_string(),
            humantime::format_duration(std::time::Duration::from_millis(r.lag_ms)).to_string(),
            r.phase.clone(),
            if r.last_error.is_empty() { "-".into() } else { r.last_error.clone() },
        ],
        None => vec![p.partition.to_string(), confirmed, "-".into(), "-".into(), "not reported".into(), "-".into()],
    }
}
