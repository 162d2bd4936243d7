//! The data commands: set, get, del, exist, ttl, incr, check-and-set, multi-*, scans.

use crate::cli::Command;
use crate::{client_of, print_json, CmdResult, Failure, EXIT_CONFLICT, EXIT_NOT_FOUND};
use serde_json::json;
use tandem_client::{CheckType, ScanOptions};

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn not_found(what: &str) -> Failure {
    Failure::new(EXIT_NOT_FOUND, format!("{what} not found"))
}

pub async fn run(command: Command) -> CmdResult {
    match command {
        Command::Set { client, table, hash_key, sort_key, value, ttl } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map_err(|e| Failure::new(1, format!("read the value from stdin: {e}")))?;
                buf
            } else {
                value.into_bytes()
            };
            client_of(&client)?.table(&table).set(hash_key.as_bytes(), sort_key.as_bytes(), &value, ttl).await?;
            if client.json {
                print_json(&json!({"ok": true}));
            } else {
                outln!("OK");
            }
        }
        Command::Get { client, table, hash_key, sort_key } => {
            match client_of(&client)?.table(&table).get_with_ttl(hash_key.as_bytes(), sort_key.as_bytes()).await? {
                Some((v, ttl)) => {
                    if client.json {
                        print_json(&json!({"value": show(&v), "ttl": ttl}));
                    } else {
                        outln!("{}", show(&v));
                    }
                }
                None => return Err(not_found(&format!("{hash_key}/{sort_key}"))),
            }
        }
        Command::Del { client, table, hash_key, sort_key } => {
            client_of(&client)?.table(&table).del(hash_key.as_bytes(), sort_key.as_bytes()).await?;
            if client.json {
                print_json(&json!({"ok": true}));
            } else {
                outln!("OK");
            }
        }
        Command::Exist { client, table, hash_key, sort_key } => {
            let exists = client_of(&client)?.table(&table).exist(hash_key.as_bytes(), sort_key.as_bytes()).await?;
            if client.json {
                print_json(&json!({"exists": exists}));
            } else {
                outln!("{}", if exists { "true" } else { "false" });
            }
            if !exists {
                return Err(Failure::new(EXIT_NOT_FOUND, ""));
            }
        }
        Command::Ttl { client, table, hash_key, sort_key } => {
            match client_of(&client)?.table(&table).ttl(hash_key.as_bytes(), sort_key.as_bytes()).await? {
                Some(t) => {
                    if client.json {
                        print_json(&json!({"ttl": t}));
                    } else if t < 0 {
                        outln!("-1 (no expiry)");
                    } else {
                        outln!("{t}");
                    }
                }
                None => return Err(not_found(&format!("{hash_key}/{sort_key}"))),
            }
        }
        Command::Incr { client, table, hash_key, sort_key, by, ttl } => {
            let v = client_of(&client)?.table(&table).incr(hash_key.as_bytes(), sort_key.as_bytes(), by, ttl).await?;
            if client.json {
                print_json(&json!({"value": v}));
            } else {
                outln!("{v}");
            }
        }
        Command::CheckAndSet { client, table, hash_key, check_sort_key, check_type, operand, set_sort_key, value, ttl } => {
            let ct = CheckType::from_name(&check_type).ok_or_else(|| {
                let names: Vec<&str> = CheckType::ALL.iter().map(|(n, _)| *n).collect();
                Failure::new(2, format!("unknown check type {check_type:?}; one of: {}", names.join(", ")))
            })?;
            let (applied, current) = client_of(&client)?
                .table(&table)
                .check_and_set(hash_key.as_bytes(), check_sort_key.as_bytes(), ct, operand.as_bytes(), set_sort_key.as_bytes(), value.as_bytes(), ttl)
                .await?;
            if client.json {
                print_json(&json!({"applied": applied, "check_value": current.as_deref().map(show)}));
            } else if applied {
                outln!("applied");
            } else {
                outln!("not applied: check value is {}", current.as_deref().map(show).unwrap_or_else(|| "absent".into()));
            }
            if !applied {
                return Err(Failure::new(EXIT_CONFLICT, ""));
            }
        }
        Command::MultiSet { client, table, hash_key, pairs, ttl } => {
            let mut kvs = Vec::new();
            for p in pairs {
                let (k, v) = p.split_once('=').ok_or_else(|| Failure::new(2, format!("{p:?} is not SORT_KEY=VALUE")))?;
                kvs.push((k.as_bytes().to_vec(), v.as_bytes().to_vec()));
            }
            let n = kvs.len();
            client_of(&client)?.table(&table).multi_set(hash_key.as_bytes(), kvs, ttl).await?;
            if client.json {
                print_json(&json!({"ok": true, "count": n}));
            } else {
                outln!("OK ({n} sort keys)");
            }
        }
        Command::MultiGet { client, table, hash_key, sort_keys } => {
            let t = client_of(&client)?.table(&table);
            let kvs = if sort_keys.is_empty() {
                t.scan(hash_key.as_bytes(), &ScanOptions::default()).await?
            } else {
                t.multi_get(hash_key.as_bytes(), sort_keys.iter().map(|s| s.as_bytes().to_vec()).collect()).await?
            };
            print_kvs(client.json, &kvs);
        }
        Command::MultiDel { client, table, hash_key, sort_keys } => {
            let n = sort_keys.len();
            client_of(&client)?.table(&table).multi_del(hash_key.as_bytes(), sort_keys.iter().map(|s| s.as_bytes().to_vec()).collect()).await?;
            if client.json {
                print_json(&json!({"ok": true, "count": n}));
            } else {
                outln!("OK ({n} sort keys)");
            }
        }
        Command::SortkeyCount { client, table, hash_key } => {
            let n = client_of(&client)?.table(&table).sortkey_count(hash_key.as_bytes()).await?;
            if client.json {
                print_json(&json!({"count": n}));
            } else {
                outln!("{n}");
            }
        }
        Command::Scan { client, table, hash_key, start, stop, stop_inclusive, limit } => {
            let opts = ScanOptions {
                start_sort_key: start.into_bytes(),
                start_exclusive: false,
                stop_sort_key: stop.into_bytes(),
                stop_inclusive,
                count_max: limit.min(10_000) as u32,
            };
            let (kvs, next) = client_of(&client)?.table(&table).scan_page(hash_key.as_bytes(), &opts).await?;
            print_kvs(client.json, &kvs);
            if let Some(n) = next
                && !client.json
            {
                eprintln!("(more after sort key {:?}; use --start with it)", show(&n));
            }
        }
        Command::FullScan { client, table, limit, token } => {
            let t = client_of(&client)?.table(&table);
            let mut records = Vec::new();
            let mut token = token;
            while records.len() < limit {
                let page = t.full_scan(token.as_deref(), (limit - records.len()).min(1000) as u32).await?;
                records.extend(page.records);
                token = page.next;
                if token.is_none() {
                    break;
                }
            }
            if client.json {
                print_json(&json!({
                    "records": records.iter().map(|(h, s, v)| json!({"hash_key": show(h), "sort_key": show(s), "value": show(v)})).collect::<Vec<_>>(),
                    "next": token,
                }));
            } else {
                for (h, s, v) in &records {
                    outln!("{}\t{}\t{}", show(h), show(s), show(v));
                }
                if let Some(t) = token {
                    eprintln!("(more: --token {t})");
                }
            }
        }
        _ => unreachable!("only data commands reach data::run"),
    }
    Ok(())
}

fn print_kvs(json_out: bool, kvs: &[(Vec<u8>, Vec<u8>)]) {
    if json_out {
        print_json(&json!(kvs.iter().map(|(k, v)| json!({"sort_key": show(k), "value": show(v)})).collect::<Vec<_>>()));
    } else {
        for (k, v) in kvs {
            outln!("{}\t{}", show(k), show(v));
        }
    }
}
