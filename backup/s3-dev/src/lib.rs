//! tandem-s3-dev: a real S3-compatible server for tests and benchmarks, in the test's own
//! process: s3s-fs (an S3 implementation over a directory, by the s3s project) behind hyper,
//! on 127.0.0.1 at a port the OS picks, checking request signatures against one key pair.
//! Objects are files under `root/BUCKET/`, so a test can damage one on disk.
//!
//! ```no_run
//! # async fn f() {
//! let s3 = tandem_s3_dev::DevS3::start(std::path::Path::new("/tmp/s3"), &["backups"]).await.unwrap();
//! // endpoint: s3.endpoint(), credentials: s3.access_key, s3.secret_key
//! # }
//! ```

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct DevS3 {
    pub addr: SocketAddr,
    pub access_key: String,
    pub secret_key: String,
    pub root: PathBuf,
    stop: watch::Sender<bool>,
}

impl DevS3 {
    /// Serves `root` (created if missing), with a bucket per name in `buckets`, until dropped.
    pub async fn start(root: &Path, buckets: &[&str]) -> std::io::Result<DevS3> {
        for b in buckets {
            std::fs::create_dir_all(root.join(b))?;
        }
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("s3s-fs over {}: {e:?}", root.display())))?;
        let (access_key, secret_key) = ("tandem-dev-access".to_string(), "tandem-dev-secret-key".to_string());
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(access_key.clone(), secret_key.clone()));
            b.build()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            let graceful = hyper_util::server::graceful::GracefulShutdown::new();
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => continue,
                    },
                    _ = stopped.changed() => break,
                };
                let conn = graceful.watch(http.serve_connection(TokioIo::new(socket), service.clone()).into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            // Connections still open end with the runtime; nothing waits for them.
            drop(graceful);
        });
        Ok(DevS3 { addr, access_key, secret_key, root: root.to_path_buf(), stop })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for DevS3 {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
