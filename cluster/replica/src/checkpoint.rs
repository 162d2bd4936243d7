//! Checkpoint transfer for learners: the primary makes a RocksDB checkpoint (hard links, after a
//! flush) and serves its files in checksummed chunks; the learner fetches them into a new
//! database directory, verifying every chunk and every whole file before installing it.

use crate::node::Node;
use crate::replica_task::SharedEngine;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tandem_core::{Decree, Gpid};
use tandem_proto::v1;

#[derive(Clone, Debug)]
pub struct ServedCheckpoint {
    pub dir: PathBuf,
    pub decree: Decree,
    pub files: Vec<v1::CheckpointFile>,
}

/// The checkpoints this server serves, by partition and id. Which ones exist is the hosted
/// replica's decision (`MakeCheckpoint`, `DeleteCheckpoint`); this only holds their files.
#[derive(Clone)]
pub struct Checkpoints {
    root: PathBuf,
    served: Arc<Mutex<HashMap<Gpid, Vec<(String, ServedCheckpoint)>>>>,
}

impl Checkpoints {
    pub fn new(root: PathBuf) -> Self {
        Checkpoints { root, served: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Makes checkpoint `id` of `engine`; returns its decree.
    pub async fn create(&self, gpid: Gpid, id: &str, engine: SharedEngine) -> Result<Decree> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(Error::Checkpoint { gpid, id: id.into(), detail: "the id is not a safe directory name".into() });
        }
        let dir = self.root.join(format!("{}.{}-{id}", gpid.table_id, gpid.partition));
        std::fs::create_dir_all(&self.root).map_err(Error::io("create", &self.root))?;
        let served = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || -> Result<ServedCheckpoint> {
                let decree = engine.with(|e| e.checkpoint(&dir))?;
                let mut files = Vec::new();
                for entry in std::fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
                    let entry = entry.map_err(Error::io("list", &dir))?;
                    if !entry.file_type().map_err(Error::io("stat", &entry.path()))?.is_file() {
                        continue;
                    }
                    let name = entry.file_name().to_string_lossy().to_string();
                    let (size, crc) = file_crc(&entry.path())?;
                    files.push(v1::CheckpointFile { name, size, crc32c: crc });
                }
                files.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(ServedCheckpoint { dir, decree, files })
            })
            .await??
        };
        let decree = served.decree;
        self.served.lock().expect("checkpoints lock").entry(gpid).or_default().push((id.to_string(), served));
        Ok(decree)
    }

    /// Deletes checkpoint `id` of `gpid` (its files go in the background).
    pub fn delete(&self, gpid: Gpid, id: &str) {
        let removed = {
            let mut all = self.served.lock().expect("checkpoints lock");
            let list = all.entry(gpid).or_default();
            let removed = list.iter().position(|(i, _)| i == id).map(|at| list.remove(at).1);
            if list.is_empty() {
                all.remove(&gpid);
            }
            removed
        };
        if let Some(cp) = removed {
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&cp.dir));
        }
    }

    /// Deletes every checkpoint of `gpid` (its replica is being removed). Blocking.
    pub fn delete_partition(&self, gpid: Gpid) {
        let removed = self.served.lock().expect("checkpoints lock").remove(&gpid).unwrap_or_default();
        for (_, cp) in removed {
            let _ = std::fs::remove_dir_all(&cp.dir);
        }
    }

    pub fn get(&self, gpid: Gpid, id: &str) -> Option<ServedCheckpoint> {
        let all = self.served.lock().expect("checkpoints lock");
        all.get(&gpid)?.iter().find(|(i, _)| i == id).map(|(_, c)| c.clone())
    }

    /// Reads a chunk of a checkpoint file; names are checked against the manifest, so a peer
    /// cannot read anything else.
    pub fn read_chunk(&self, gpid: Gpid, id: &str, name: &str, offset: u64, length_max: usize) -> Result<Vec<u8>> {
        let fail = |detail: String| Error::Checkpoint { gpid, id: id.into(), detail };
        let cp = self.get(gpid, id).ok_or_else(|| fail("there is no such checkpoint (expired?)".into()))?;
        let file = cp.files.iter().find(|f| f.name == name).ok_or_else(|| fail(format!("it has no file {name:?}")))?;
        if offset > file.size {
            return Err(fail(format!("offset {offset} beyond the {} bytes of {name}", file.size)));
        }
        let len = length_max.min((file.size - offset) as usize);
        let path = cp.dir.join(name);
        let mut f = std::fs::File::open(&path).map_err(Error::io("open", &path))?;
        f.seek(SeekFrom::Start(offset)).map_err(Error::io("seek", &path))?;
        let mut buf = vec![0; len];
        f.read_exact(&mut buf).map_err(Error::io("read", &path))?;
        Ok(buf)
    }
}

fn file_crc(path: &Path) -> Result<(u64, u32)> {
    let mut f = std::fs::File::open(path).map_err(Error::io("open", path))?;
    let mut buf = vec![0; 1 << 20];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = f.read(&mut buf).map_err(Error::io("read", path))?;
        if n == 0 {
            return Ok((size, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
}

/// Fetches checkpoint `id` of `gpid` from `from` into a new directory under `replica_dir`;
/// returns the directory's name and the checkpoint's decree.
pub async fn fetch(node: &Node, gpid: Gpid, from: &str, id: &str, replica_dir: &Path) -> Result<(String, Decree)> {
    let db_name = format!("db-{}", id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"));
    let mut remaining = Remaining { gauge: &node.metrics.checkpoint_fetch_remaining_bytes, bytes: 0 };
    let result = fetch_into(node, gpid, from, id, &replica_dir.join(&db_name), &mut remaining).await;
    node.metrics.checkpoint_fetches.with_label_values(&[if result.is_ok() { "ok" } else { "failed" }]).inc();
    if result.is_err() {
        // A partial fetch is garbage: every retry fetches a new checkpoint into a new directory.
        let _ = std::fs::remove_dir_all(replica_dir.join(&db_name));
    }
    result.map(|decree| (db_name, decree))
}

/// What a running fetch still has to fetch, counted in the server's gauge until it ends (or is
/// dropped with its replica's task).
struct Remaining<'a> {
    gauge: &'a prometheus::IntGauge,
    bytes: u64,
}

impl Remaining<'_> {
    fn set(&mut self, bytes: u64) {
        self.gauge.add(bytes as i64 - self.bytes as i64);
        self.bytes = bytes;
    }
}

impl Drop for Remaining<'_> {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Fetches checkpoint `id` into `dir`, verifying every chunk and file; returns its decree.
async fn fetch_into(node: &Node, gpid: Gpid, from: &str, id: &str, dir: &Path, remaining: &mut Remaining<'_>) -> Result<Decree> {
    let fail = |detail: String| Error::Checkpoint { gpid, id: id.into(), detail };
    let mut client = node.peer(from)?;
    let manifest = client
        .checkpoint_manifest(v1::CheckpointManifestRequest { gpid: Some(gpid.into()), checkpoint_id: id.to_string() })
        .await
        .map_err(|s| fail(format!("manifest from {from}: {}", s.message())))?
        .into_inner();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let chunk = node.opts.checkpoint_chunk_bytes as u32;
    remaining.set(manifest.files.iter().map(|f| f.size).sum());
    for file in &manifest.files {
        if file.name.is_empty() || file.name.contains('/') || file.name.contains("..") {
            return Err(fail(format!("the manifest lists an unsafe file name {:?}", file.name)));
        }
        let path = dir.join(&file.name);
        let mut out = std::fs::File::create(&path).map_err(Error::io("create", &path))?;
        let mut offset = 0u64;
        let mut crc = 0u32;
        while offset < file.size {
            let resp = client
                .fetch_chunk(v1::FetchChunkRequest {
                    gpid: Some(gpid.into()),
                    checkpoint_id: id.to_string(),
                    name: file.name.clone(),
                    offset,
                    length_max: chunk,
                })
                .await
                .map_err(|s| fail(format!("chunk of {} at {offset} from {from}: {}", file.name, s.message())))?
                .into_inner();
            if resp.data.is_empty() {
                return Err(fail(format!("{} ended at {offset} of {} bytes", file.name, file.size)));
            }
            if crc32c::crc32c(&resp.data) != resp.crc32c {
                return Err(fail(format!("chunk of {} at {offset} failed its checksum", file.name)));
            }
            crc = crc32c::crc32c_append(crc, &resp.data);
            out.write_all(&resp.data).map_err(Error::io("write", &path))?;
            offset += resp.data.len() as u64;
            node.metrics.checkpoint_fetched_bytes.inc_by(resp.data.len() as u64);
            remaining.set(remaining.bytes.saturating_sub(resp.data.len() as u64));
        }
        if offset != file.size || crc != file.crc32c {
            return Err(fail(format!("{} does not match its manifest (size {offset}/{}, crc {crc:#x}/{:#x})", file.name, file.size, file.crc32c)));
        }
        out.sync_all().map_err(Error::io("fsync", &path))?;
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("fsync", dir))?;
    Ok(manifest.decree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::storage::KvEngine;
    use tandem_core::WriteOp;

    /// The server's registry over a real RocksDB engine, driven by the host's conformance.
    struct Real {
        runtime: tokio::runtime::Runtime,
        checkpoints: Checkpoints,
        engine: SharedEngine,
        decree: Decree,
    }

    const GPID: Gpid = Gpid { table_id: 1, partition: 0 };

    impl tandem_host::CheckpointFilesUnderTest for Real {
        fn make(&mut self, id: &str) {
            self.decree += 1;
            let op = WriteOp::Put { key: format!("k{}", self.decree).into_bytes(), value: vec![1; 4_000] };
            self.engine.apply(self.decree, 0, &[op]).unwrap();
            let made = self.runtime.block_on(self.checkpoints.create(GPID, id, self.engine.clone())).unwrap();
            assert_eq!(made, self.decree);
        }

        fn read(&mut self, id: &str) -> bool {
            let Some(cp) = self.checkpoints.get(GPID, id) else { return false };
            cp.files.iter().all(|f| {
                let data = self.checkpoints.read_chunk(GPID, id, &f.name, 0, f.size as usize).unwrap();
                data.len() as u64 == f.size && crc32c::crc32c(&data) == f.crc32c
            })
        }

        fn delete(&mut self, id: &str) {
            let dir = self.checkpoints.get(GPID, id).unwrap().dir;
            self.runtime.block_on(async { self.checkpoints.delete(GPID, id) });
            // The files go in the background: wait until they are gone.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while dir.exists() {
                assert!(std::time::Instant::now() < deadline, "{} was not deleted", dir.display());
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }

    #[test]
    fn a_checkpoint_being_read_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let memory = tandem_storage::EngineMemory::new(8 << 20, 64 << 20);
        let engine = SharedEngine::new(tandem_storage::RocksEngine::open(&dir.path().join("db"), &memory).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let checkpoints = Checkpoints::new(dir.path().join("checkpoints"));
        let mut real = Real { runtime, checkpoints, engine, decree: 0 };
        tandem_host::holds_conformance(&mut real);
    }
}
