//! `tandem table …`, `tandem nodes`, `tandem status`.

use crate::cli::{ClientArgs, TableCommand};
use crate::{client_of, print_json, print_table, CmdResult, Failure, EXIT_UNAVAILABLE};
use serde_json::json;
use tandem_core::limits::human_bytes;
use tandem_proto::v1;

pub(crate) fn fmt_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn table_json(t: &v1::TableInfo) -> serde_json::Value {
    json!({
        "id": t.id, "name": t.name, "partitions": t.partition_count, "replicas": t.replica_count,
        "status": t.status, "owner": t.owner, "created": fmt_ms(t.created_ms),
        "dropped": if t.drop_time_ms > 0 { Some(fmt_ms(t.drop_time_ms)) } else { None },
        "policy": t.policy.as_ref().map(crate::policy::policy_json),
    })
}

pub async fn table(args: &ClientArgs, command: TableCommand) -> CmdResult {
    let client = client_of(args)?;
    match command {
        TableCommand::Create { name, partitions, replicas, owner, policy, who } => {
            let who = crate::policy::who(who);
            let owner = owner.filter(|o| !o.trim().is_empty()).unwrap_or_else(|| who.clone());
            let req = v1::CreateTableRequest {
                name,
                partition_count: partitions,
                replica_count: replicas,
                owner,
                policy: Some(crate::policy::change_of(&policy, Some(replicas))),
                who,
            };
            let t = crate::retry_unavailable(args.timeout, || client.create_table_with(req.clone())).await?;
            if args.json {
                print_json(&table_json(&t));
            } else {
                outln!("created table {} (id {}, {} partitions, owner {})", t.name, t.id, t.partition_count, t.owner);
                if let Some(p) = &t.policy {
                    outln!("policy {}", crate::policy::policy_line(p));
                }
            }
        }
        TableCommand::List { all } => {
            let tables = client.list_tables(all).await?;
            if args.json {
                print_json(&json!(tables.iter().map(table_json).collect::<Vec<_>>()));
            } else {
                let rows: Vec<Vec<String>> = tables
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name.clone(),
                            t.partition_count.to_string(),
                            t.replica_count.to_string(),
                            t.status.clone(),
                            t.owner.clone(),
                            fmt_ms(t.created_ms),
                        ]
                    })
                    .collect();
                print_table(&["ID", "NAME", "PARTITIONS", "REPLICAS", "STATUS", "OWNER", "CREATED"], &rows);
            }
        }
        TableCommand::Show { name } => {
            let resp = client.show_table(&name).await?;
            let t = resp.table.clone().unwrap_or_default();
            let parts: Vec<serde_json::Value> = resp
                .partitions
                .iter()
                .map(|p| {
                    let c = p.config.clone().unwrap_or_default();
                    let decrees: Vec<serde_json::Value> = p
                        .report_nodes
                        .iter()
                        .zip(&p.reports)
                        .map(|(n, r)| json!({"node": n, "status": r.status, "ballot": r.ballot, "committed": r.last_committed, "prepared": r.last_prepared}))
                        .collect();
                    json!({
                        "partition": c.gpid.map(|g| g.partition).unwrap_or(0), "ballot": c.ballot,
                        "primary": c.primary, "secondaries": c.secondaries, "learners": c.learners,
                        "health": p.health, "replicas": decrees,
                    })
                })
                .collect();
            if args.json {
                let mut v = table_json(&t);
                v["partitions_detail"] = json!(parts);
                print_json(&v);
            } else {
                outln!("table {} (id {}): {} partitions × {} replicas, owner {}, created {}", t.name, t.id, t.partition_count, t.replica_count, t.owner, fmt_ms(t.created_ms));
                if let Some(p) = &t.policy {
                    outln!("policy {}", crate::policy::policy_line(p));
                }
                let rows: Vec<Vec<String>> = resp
                    .partitions
                    .iter()
                    .map(|p| {
                        let c = p.config.clone().unwrap_or_default();
                        let primary_decree = p
                            .report_nodes
                            .iter()
                            .zip(&p.reports)
                            .find(|(n, _)| **n == c.primary)
                            .map(|(_, r)| format!("{}/{}", r.last_committed, r.last_prepared))
                            .unwrap_or_else(|| "-".into());
                        let mut others = c.secondaries.join(",");
                        if !c.learners.is_empty() {
                            others.push_str(&format!(" (learning: {})", c.learners.join(",")));
                        }
                        vec![
                            c.gpid.map(|g| g.partition).unwrap_or(0).to_string(),
                            c.ballot.to_string(),
                            if c.primary.is_empty() { "-".into() } else { c.primary.clone() },
                            others,
                            primary_decree,
                            p.health.clone(),
                        ]
                    })
                    .collect();
                print_table(&["PARTITION", "BALLOT", "PRIMARY", "SECONDARIES", "COMMITTED/PREPARED", "HEALTH"], &rows);
            }
        }
        TableCommand::Drop { name } => {
            let r = client.drop_table(&name).await?;
            if args.json {
                print_json(&json!({"dropped": name, "recall_until": fmt_ms(r.recall_until_ms)}));
            } else {
                outln!("dropped table {name}; `tandem table recall {name}` brings it back until {}", fmt_ms(r.recall_until_ms));
            }
        }
        TableCommand::Recall { name } => {
            let t = client.recall_table(&name).await?;
            if args.json {
                print_json(&table_json(&t));
            } else {
                outln!("recalled table {} (id {})", t.name, t.id);
            }
        }
    }
    Ok(())
}

pub async fn nodes(args: &ClientArgs) -> CmdResult {
    let client = client_of(args)?;
    let nodes = client.list_nodes().await?;
    if args.json {
        print_json(&json!(nodes
            .iter()
            .map(|n| json!({"address": n.address, "alive": n.alive, "last_beacon_ms_ago": n.last_beacon_ms_ago,
                "primaries": n.primaries, "secondaries": n.secondaries, "learners": n.learners,
                "disk_short": n.disk_short.as_ref().map(|d| json!({"dir": d.dir, "free_bytes": d.free_bytes, "reserve_bytes": d.reserve_bytes})),
                "replicas_max": (n.replicas_max > 0).then_some(n.replicas_max), "refused": n.refused}))
            .collect::<Vec<_>>()));
    } else {
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                vec![
                    n.address.clone(),
                    if n.alive { "alive".into() } else { "dead".into() },
                    format!("{} ms ago", n.last_beacon_ms_ago),
                    n.primaries.to_string(),
                    n.secondaries.to_string(),
                    n.learners.to_string(),
                    match (n.replicas_max, n.refused) {
                        (0, _) => "-".into(),
                        (max, 0) => max.to_string(),
                        (max, refused) => format!("{max} (FULL: refused {refused})"),
                    },
                    n.disk_short.as_ref().map_or_else(
                        || "ok".into(),
                        |d| format!("FULL: {} free, reserve {} ({})", human_bytes(d.free_bytes as usize), human_bytes(d.reserve_bytes as usize), d.dir),
                    ),
                ]
            })
            .collect();
        print_table(&["ADDRESS", "STATUS", "LAST BEACON", "PRIMARIES", "SECONDARIES", "LEARNERS", "MAX REPLICAS", "DISK"], &rows);
    }
    Ok(())
}

pub async fn status(args: &ClientArgs) -> CmdResult {
    let client = client_of(args)?;
    let mut s = client.cluster_status().await?;
    // A meta with no replica server alive serves nothing, even before any table exists.
    if s.nodes_alive == 0 {
        s.problems.push("no replica server is alive: start one with `tandem replica start --meta ADDR`".into());
    }
    let healthy = s.degraded == 0 && s.unavailable == 0 && s.nodes_alive > 0 && s.nodes_disk_short == 0;
    if args.json {
        print_json(&json!({
            "healthy": healthy, "tables": s.tables, "partitions": s.partitions, "healthy_partitions": s.healthy,
            "degraded_partitions": s.degraded, "unavailable_partitions": s.unavailable,
            "nodes_alive": s.nodes_alive, "nodes_dead": s.nodes_dead, "nodes_disk_short": s.nodes_disk_short, "problems": s.problems,
        }));
    } else {
        outln!(
            "{}: {} tables, {} partitions ({} healthy, {} degraded, {} unavailable), {} replica servers alive, {} dead",
            if healthy { "healthy" } else { "UNHEALTHY" },
            s.tables,
            s.partitions,
            s.healthy,
            s.degraded,
            s.unavailable,
            s.nodes_alive,
            s.nodes_dead
        );
        for p in &s.problems {
            outln!("  - {p}");
        }
    }
    if healthy { Ok(()) } else { Err(Failure::new(EXIT_UNAVAILABLE, "")) }
}
