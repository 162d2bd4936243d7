//! `tandem site add | list | remove` and `tandem dup add | list | pause | resume | remove`
//! (docs/duplication.md).

use crate::cli::{ClientArgs, DupCommand, SiteCommand};
use crate::{client_of, print_json, print_table, CmdResult, Failure, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_UNAVAILABLE};
use std::collections::BTreeMap;
use tandem_dup_core::verify::{differing_keys, KeyVersion};
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
        DupCommand::Verify { table, to, ignore_last } => verify(args, &client, &table, to, ignore_last).await?,
        DupCommand::Pause { table, dup } => set_status(args, &client, &table, &dup, "pause", "paused").await?,
        DupCommand::Resume { table, dup } => set_status(args, &client, &table, &dup, "start", "resumed").await?,
        DupCommand::Remove { table, dup } => set_status(args, &client, &table, &dup, "removed", "removed").await?,
    }
    Ok(())
}

/// Key versions fetched per page while comparing a bucket; differing keys printed at most.
const VERIFY_PAGE: u32 = 1000;
const VERIFY_KEYS_SHOWN: usize = 10;

/// `tandem dup verify`: digests per bucket at both sites, then the keys of the buckets that
/// differ (`tandem_dup_core::verify` says what is compared).
async fn verify(args: &ClientArgs, here: &tandem_client::Client, table: &str, to: Option<String>, ignore_last: std::time::Duration) -> CmdResult {
    let site = match to {
        Some(site) => site,
        None => {
            let dups: Vec<String> = here.dup_list(table, false).await?.dups.into_iter().filter_map(|v| v.dup.map(|d| d.remote_site)).collect();
            match &dups[..] {
                [only] => only.clone(),
                [] => return Err(Failure::new(EXIT_NOT_FOUND, format!("table {table} is not duplicated; name the other site with --to SITE"))),
                _ => return Err(Failure::new(EXIT_ERROR, format!("table {table} is duplicated to {}: name one with --to", dups.join(", ")))),
            }
        }
    };
    let sites = here.site_list().await?.sites;
    let Some(metas) = sites.into_iter().find(|s| s.name == site).map(|s| s.metas) else {
        return Err(Failure::new(EXIT_NOT_FOUND, format!("no site {site:?} (tandem site list shows the known ones)")));
    };
    let opts = tandem_client::ClientOptions { rpc_timeout: args.timeout.min(std::time::Duration::from_secs(60)), request_timeout: args.timeout };
    let there = tandem_client::Client::new(&metas, opts)?;
    let (ta, tb) = (here.table(table), there.table(table));
    let pa = ta.partition_count().await?;
    let pb = tb.partition_count().await.map_err(|e| match e {
        tandem_client::ClientError::NotFound(_) => Failure::new(EXIT_NOT_FOUND, format!("site {site} has no table {table}: create it there first")),
        e => e.into(),
    })?;
    let buckets = pa.max(pb);
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let before_us = now_us.saturating_sub(ignore_last.as_micros() as u64);
    let digests = |t: tandem_client::Table, count: u32| async move {
        let mut all: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for p in 0..count {
            for d in t.verify_digest(p, buckets, before_us).await? {
                all.insert(d.bucket, (d.records, d.digest));
            }
        }
        Ok::<_, tandem_client::ClientError>(all)
    };
    let (da, db) = (digests(ta.clone(), pa).await?, digests(tb.clone(), pb).await?);
    let differing: Vec<u32> = (0..buckets).filter(|b| da.get(b) != db.get(b)).collect();
    let records: u64 = da.values().map(|(n, _)| n).sum();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for &bucket in &differing {
        let versions = |t: tandem_client::Table, count: u32| async move {
            let mut out: Vec<KeyVersion> = Vec::new();
            let mut after = Vec::new();
            loop {
                let page = t.verify_keys(bucket % count, buckets, bucket, &after, VERIFY_PAGE).await?;
                out.extend(page.keys.into_iter().map(|k| KeyVersion { key: k.key, timetag: k.timetag, value_hash: k.live.then_some(k.value_hash) }));
                match (page.more, out.last()) {
                    (true, Some(last)) => after = last.key.clone(),
                    _ => return Ok::<_, tandem_client::ClientError>(out),
                }
            }
        };
        let (va, vb) = (versions(ta.clone(), pa).await?, versions(tb.clone(), pb).await?);
        keys.extend(differing_keys(&va, &vb, before_us));
    }
    let shown: Vec<String> = keys
        .iter()
        .take(VERIFY_KEYS_SHOWN)
        .map(|k| match tandem_core::key::decode_key(k) {
            Ok((h, s)) => format!("{}/{}", String::from_utf8_lossy(h), String::from_utf8_lossy(s)),
            Err(_) => format!("{k:?}"),
        })
        .collect();
    let window = humantime::format_duration(ignore_last);
    if args.json {
        print_json(&json!({
            "table": table, "site": site, "buckets": buckets, "matching_buckets": buckets as usize - differing.len(),
            "differing_buckets": differing.len(), "records_compared": records, "ignored_last": window.to_string(),
            "differing_keys": keys.len(), "first_differing_keys": shown, "identical": keys.is_empty(),
        }));
    } else {
        outln!(
            "{table} here and at {site}: {} of {buckets} buckets match, {} differ; {records} records older than {window} compared",
            buckets as usize - differing.len(),
            differing.len()
        );
        if keys.is_empty() {
            outln!("identical (writes of the last {window} left out)");
        } else {
            outln!("{} keys differ; the first: {}", keys.len(), shown.join(", "));
        }
    }
    if keys.is_empty() { Ok(()) } else { Err(Failure::new(EXIT_UNAVAILABLE, "")) }
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
                "resyncs": p.report.as_ref().map(|r| r.resyncs),
                "watermark_us": p.report.as_ref().map(|r| r.watermark_us),
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
