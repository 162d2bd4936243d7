//! The wire protocol from a second language: `ops/tests/python/test_client.py` drives a client
//! written from `docs/protocol.md` alone (Python, grpcio; `tandem_client.py` beside it) against
//! a real site — routing by CRC-64/NVME, route refresh, every error kind a client can provoke
//! and what it means for a retry, the batch stream. Two meta servers, so `not-leader` is seen.
//!
//! The Python comes from the virtualenv `ops/lib/install.sh` makes (`install_python_test_deps`,
//! run by `ops/test`): `$TANDEM_PY_VENV`, by default `~/.cache/tandem/pyvenv`.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Cluster, PgDatabase, Store};
use tandem_core::partition::partition_index;

const PARTITIONS: u32 = 8;

/// The virtualenv's Python, checked to import grpcio and grpcio-tools.
fn python() -> PathBuf {
    let venv = match std::env::var_os("TANDEM_PY_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/tandem/pyvenv"),
    };
    let python = venv.join("bin/python");
    let usable = std::process::Command::new(&python).args(["-c", "import grpc, grpc_tools"]).output().is_ok_and(|o| o.status.success());
    assert!(
        usable,
        "no Python with grpcio and grpcio-tools at {}: run ops/test, which installs it \
         (install_python_test_deps in ops/lib/install.sh), or point TANDEM_PY_VENV at such a virtualenv",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_written_from_the_docs_routes_and_tells_every_error_apart() {
    let python = python();
    let cluster = Cluster::start_ha(2, 3, Store::Postgres(PgDatabase::create().await), &[]).await;
    cluster.create_table("py", PARTITIONS, 3).await;
    // The meta may call a partition healthy before its primary serves: a write to each through
    // the Rust client (which retries) makes sure every primary serves before the raw calls.
    let table = cluster.client().table("py");
    for p in 0..PARTITIONS {
        let key = (0..).map(|i| format!("warm-{i}")).find(|k| partition_index(k.as_bytes(), PARTITIONS) == p).expect("a key of every partition");
        table.set(key.as_bytes(), b"s", b"up", 0).await.unwrap();
    }

    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let metas = cluster.meta_addrs().join(",");
    let run = tokio::process::Command::new(&python)
        .arg(here.join("tests/python/test_client.py"))
        .args(["--meta", metas.as_str(), "--table", "py", "--proto"])
        .arg(here.join("../cluster/proto/proto/tandem.proto"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(300), run).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("run {}: {e}", python.display())),
        Err(_) => panic!("the Python client test did not finish in 300 s\n{}", cluster.logs_tail()),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client test failed ({}):\n{text}\n{}", out.status, cluster.logs_tail());
    println!("{text}");
}
