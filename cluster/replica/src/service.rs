//! The gRPC face of a replica server: the data API for clients, prepare/learn/checkpoint for
//! peers, status for operators; plus gRPC health and reflection.

use crate::node::Node;
use crate::metrics::Metrics;
use crate::replica_task::{ReadFn, ReplicaHandle, Reply as ReplyTo};
use std::sync::Arc;
use std::time::Instant;
use tandem_core::partition::partition_index;
use tandem_core::key::decode_key;
use tandem_core::timetag::timetag_timestamp_us;
use tandem_core::value::decode_value;
use tandem_dup_core::verify;
use tandem_core::replica::{read, LearnReply, LearnRequest, PrepareMsg, PrepareOutcome, PrepareReply, WriteRequest, WriteResponse};
use tandem_core::storage::KvEngine;
use tandem_core::{Error, Gpid, Mutation};
use tandem_host::ReplicaEvent;
use tandem_proto::convert::{config_from_wire, gpid_from, write_request_from_wire};
use tandem_proto::errors::{batch_error, core_status, wrong_route, ErrorKind};
use tandem_proto::v1;
use tandem_proto::v1::replica_service_server::{ReplicaService, ReplicaServiceServer};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// Records returned by one multi_get/scan page unless the client asks for fewer.
const PAGE_COUNT_DEFAULT: usize = 1000;
const PAGE_BYTES_DEFAULT: usize = 4 << 20;

#[derive(Clone)]
pub struct Service {
    node: Arc<Node>,
    /// Turns true when the server begins to stop: batch streams take no more calls and end once
    /// the calls they hold are answered (a graceful stop waits for every open stream).
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// Calls in one batch message at most: a client sends fewer (see tandem_client's batch module).
const BATCH_CALLS_MAX: usize = 4096;
/// Replies in one batch answer at most.
const BATCH_REPLIES_MAX: usize = 1024;

pub async fn serve(node: Arc<Node>, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> crate::error::Result<tokio::task::JoinHandle<()>> {
    let addr = node.opts.listen;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| crate::error::Error::Bind { addr, source })?;
    let (health, reflection_v1, reflection_v1alpha) = tandem_runtime::grpc_tools::health_and_reflection::<ReplicaServiceServer<Service>>().await?;
    let (stop_streams, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_streams.send(true);
    };
    let service = ReplicaServiceServer::new(Service { node, stopping }).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
    // The listener is bound here (to report bind errors), so tonic's own nodelay setting does not
    // reach the accepted sockets: set it on them, or Nagle delays small responses by ~40 ms.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(tokio::spawn(async move {
        let result = tandem_runtime::grpc_tools::server()
            .tcp_nodelay(true)
            .initial_stream_window_size(tandem_client::meta_conn::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(tandem_client::meta_conn::CONNECTION_WINDOW_BYTES)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        if let Err(e) = result {
            tracing::error!("gRPC server failed: {e}");
        }
    }))
}

fn invalid(msg: impl Into<String>) -> Status {
    ErrorKind::InvalidArgument.status(msg)
}

/// More buckets than any table has partitions.
const VERIFY_BUCKETS_MAX: u32 = 1 << 16;

/// The bucket count of a verify request: a power of two, at most `VERIFY_BUCKETS_MAX`.
fn verify_buckets(buckets: u32) -> Result<u32, Status> {
    if !buckets.is_power_of_two() || buckets > VERIFY_BUCKETS_MAX {
        return Err(invalid(format!("verify buckets {buckets} must be a power of two from 1 to {VERIFY_BUCKETS_MAX}")));
    }
    Ok(buckets)
}

impl Service {
    /// The table label of a request's metrics: its table id if this server hosts the table,
    /// else `other` (a client cannot grow the labels without bound).
    fn table_label(&self, route: Option<&v1::Route>) -> String {
        match route.and_then(|r| r.gpid.as_ref()).map(|g| g.table_id) {
            Some(t) if self.node.partition_count(t).is_some() => t.to_string(),
            _ => "other".to_string(),
        }
    }

    /// The replica a data request is routed to, after checking that the hash key belongs to it.
    fn route(&self, route: Option<&v1::Route>, hash_key: Option<&[u8]>) -> Result<ReplicaHandle, Status> {
        let route = route.ok_or_else(|| invalid("request without a route"))?;
        let gpid = gpid_from(route.gpid.as_ref()).map_err(|e| core_status(&e))?;
        if !route.partition_count.is_power_of_two() {
            return Err(invalid(format!("partition count {} is not a power of two", route.partition_count)));
        }
        if let Some(known) = self.node.partition_count(gpid.table_id)
            && known != route.partition_count
        {
            return Err(wrong_route(Some(known), format!("wrong route: table {} has {known} partitions, not {}; refresh the route", gpid.table_id, route.partition_count)));
        }
        if gpid.partition >= route.partition_count {
            return Err(invalid(format!("partition {} out of range 0..{}", gpid.partition, route.partition_count)));
        }
        if let Some(hk) = hash_key {
            // Reads too: a hash key over the limit cannot be stored, and the stored key's length
            // prefix could not even hold one of 64 KiB or more.
            self.node.opts.host.replica.limits.check_hash_key(hk).map_err(|e| core_status(&e))?;
            if partition_index(hk, route.partition_count) != gpid.partition {
                return Err(wrong_route(
                    self.node.partition_count(gpid.table_id),
                    format!("wrong route: the hash key belongs to partition {} of {}, not {gpid}", partition_index(hk, route.partition_count), route.partition_count),
                ));
            }
        }
        self.node.replica(gpid).ok_or_else(|| ErrorKind::NotPrimary.status(format!("{} does not serve partition {gpid}", self.node.me)))
    }

    /// Runs `f` on the replica's engine if it may serve reads: directly while the replica's read
    /// gate is open and the server holds its lease (the common case), else inside the replica's
    /// task, which answers with the exact reason it may not.
    async fn read<T: Send + 'static>(
        &self,
        handle: &ReplicaHandle,
        f: impl FnOnce(&dyn KvEngine, u32) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        if let Some(engine) = handle.read_engine() {
            let ctx = self.node.ctx();
            if ctx.lease_valid() {
                return f(&engine, ctx.now_s()).map_err(|e| core_status(&e));
            }
        }
        let (tx, rx) = oneshot::channel();
        let reply: ReadFn = Box::new(move |engine: Result<&dyn KvEngine, Error>, now_s| {
            let _ = tx.send(engine.and_then(|e| f(e, now_s)));
        });
        let sent = handle.send(ReplicaEvent::Read { reply });
        if !sent {
            return Err(ErrorKind::NotPrimary.status(format!("replica {} stopped", handle.gpid())));
        }
        rx.await.map_err(|_| ErrorKind::Busy.status("replica dropped the read"))?.map_err(|e| core_status(&e))
    }

    async fn do_write(&self, req: v1::WriteRequest) -> Result<v1::WriteResponse, Status> {
        answer_of("write", |done| self.start_write(req, done)).await
    }

    /// Checks a write, hands it to its replica and calls `done` with the answer, the way the
    /// unary RPC answers: at once when refused, else from the replica's task once it committed.
    /// No task of its own waits for it.
    fn start_write(&self, req: v1::WriteRequest, done: impl FnOnce(Result<v1::WriteResponse, Status>) + Send + 'static) {
        let start = Instant::now();
        let op = match &req.op {
            Some(v1::write_request::Op::Set(_)) => "set",
            Some(v1::write_request::Op::MultiSet(_)) => "multi_set",
            Some(v1::write_request::Op::Delete(_)) => "del",
            Some(v1::write_request::Op::MultiDelete(_)) => "multi_del",
            Some(v1::write_request::Op::Incr(_)) => "incr",
            Some(v1::write_request::Op::CheckAndMutate(_)) => "check_and_mutate",
            Some(v1::write_request::Op::Duplicate(_)) => "duplicate",
            None => "write",
        };
        let metrics = self.node.metrics.clone();
        let table = self.table_label(req.route.as_ref());
        // Records of the other site: how long from their origin to applied here.
        let oldest_origin_us = match &req.op {
            Some(v1::write_request::Op::Duplicate(d)) => d.records.iter().filter_map(|r| decode_value(&r.value).ok()).map(|(h, _)| timetag_timestamp_us(h.timetag)).min(),
            _ => None,
        };
        let finish = move |result: Result<v1::WriteResponse, Status>| {
            observe(&metrics, &table, op, start, &result);
            if let (Some(origin_us), Ok(_)) = (oldest_origin_us, &result) {
                let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
                metrics.dup_apply_delay.observe(now_us.saturating_sub(origin_us) as f64 / 1e6);
            }
            done(result);
        };
        let checked = (|| {
            let duplicate = matches!(req.op, Some(v1::write_request::Op::Duplicate(_)));
            let handle = self.route(req.route.as_ref(), (!duplicate).then_some(req.hash_key.as_slice()))?;
            let partition_count = req.route.as_ref().map_or(0, |r| r.partition_count);
            let request = write_request_from_wire(req).map_err(|e| core_status(&e))?;
            request.validate(&self.node.opts.host.replica.limits).map_err(|e| core_status(&e))?;
            if let WriteRequest::Duplicate { records, .. } = &request {
                // Routed per record by the sender: each must belong here.
                for r in records {
                    let (hash_key, _) = decode_key(&r.key).map_err(|e| core_status(&e))?;
                    if partition_index(hash_key, partition_count) != handle.gpid().partition {
                        return Err(wrong_route(
                            self.node.partition_count(handle.gpid().table_id),
                            format!("wrong route: a duplicated record does not belong to partition {}", handle.gpid()),
                        ));
                    }
                }
            }
            Ok((handle, request))
        })();
        let (handle, request) = match checked {
            Ok(x) => x,
            Err(status) => return finish(Err(status)),
        };
        if handle.is_stopped() {
            return finish(Err(ErrorKind::NotPrimary.status("replica stopped")));
        }
        let reply = ReplyTo::new(move |answer: Option<Result<WriteResponse, Error>>| {
            finish(match answer {
                // It stopped after the check above, maybe with the write in its log: whether it
                // commits is not known here.
                None => Err(ErrorKind::OutcomeUnknown.status("the replica stopped with the write pending; it may or may not be applied")),
                Some(Err(e)) => Err(core_status(&e)),
                Some(Ok(WriteResponse::Done)) => Ok(v1::WriteResponse::default()),
                Some(Ok(WriteResponse::Incr { new_value })) => Ok(v1::WriteResponse { incr_value: new_value, ..Default::default() }),
                Some(Ok(WriteResponse::Checked { applied, check_value })) => Ok(v1::WriteResponse {
                    check_applied: applied,
                    check_value_exists: check_value.is_some(),
                    check_value: check_value.unwrap_or_default(),
                    ..Default::default()
                }),
                Some(Ok(WriteResponse::Duplicated { applied, superseded })) => {
                    Ok(v1::WriteResponse { dup_applied: applied, dup_superseded: superseded, ..Default::default() })
                }
            })
        });
        // Refused only when the task stopped meanwhile: then the reply, dropped, answers.
        handle.send(ReplicaEvent::Write { request, reply });
    }

    async fn do_get(&self, req: v1::GetRequest) -> Result<v1::GetResponse, Status> {
        let start = Instant::now();
        let table = self.table_label(req.route.as_ref());
        let result = async {
            let handle = self.route(req.route.as_ref(), Some(&req.hash_key))?;
            let limits = self.node.opts.host.replica.limits;
            limits.check_sort_key(&req.sort_key).map_err(|e| core_status(&e))?;
            let (hk, sk) = (req.hash_key, req.sort_key);
            self.read(&handle, move |engine, now_s| read::get_with_expiry(engine, &hk, &sk, now_s)).await
        }
        .await;
        observe(&self.node.metrics, &table, "get", start, &result);
        let found = result?;
        Ok(match found {
            Some((expire_ts, value)) => {
                let now_s = self.node.ctx().now_s();
                let ttl = if expire_ts == 0 { -1 } else { expire_ts.saturating_sub(now_s) as i64 };
                v1::GetResponse { found: true, value, ttl_seconds: ttl }
            }
            None => v1::GetResponse { found: false, value: vec![], ttl_seconds: 0 },
        })
    }

    async fn do_prepare(&self, req: v1::PrepareRequest) -> Result<v1::PrepareResponse, Status> {
        answer_of("prepare", |done| self.start_prepare(req, done)).await
    }

    /// A prepare from the partition's primary (from the peer's batch stream or a unary call):
    /// checked, handed to the replica, and answered through `done` once the replica answers it.
    fn start_prepare(&self, req: v1::PrepareRequest, done: impl FnOnce(Result<v1::PrepareResponse, Status>) + Send + 'static) {
        let checked = (|| {
            let wire_config = req.config.as_ref().ok_or_else(|| invalid("prepare without a configuration"))?;
            let config = config_from_wire(wire_config).map_err(|e| core_status(&e))?;
            let mut mutations = Vec::with_capacity(req.mutations.len());
            let mut expect = None;
            for bytes in &req.mutations {
                let m = Mutation::decode(bytes).map_err(|e| invalid(format!("prepare carries a mutation that does not decode: {e}")))?;
                if expect.is_some_and(|d| d != m.decree) {
                    return Err(invalid(format!("prepare mutations are not contiguous at decree {}", m.decree)));
                }
                expect = Some(m.decree + 1);
                mutations.push(Arc::new(m));
            }
            let handle = match self.node.replica_for_prepare(&config).map_err(|e| ErrorKind::Busy.status(e))? {
                Some(h) => h,
                None => return Ok(None),
            };
            Ok(Some((handle, PrepareMsg { config, mutations, last_committed: req.last_committed })))
        })();
        let (handle, msg) = match checked {
            Ok(Some(x)) => x,
            Ok(None) => return done(Ok(v1::PrepareResponse { ballot: 0, outcome: v1::prepare_response::Outcome::NotMember as i32, prepared: 0, ..Default::default() })),
            Err(status) => return done(Err(status)),
        };
        let reply = ReplyTo::new(move |answer: Option<PrepareReply>| {
            done(match answer {
                None => Err(ErrorKind::Busy.status("replica dropped the prepare")),
                Some(reply) => {
                    let (outcome, prepared, low) = match reply.outcome {
                        PrepareOutcome::Ok { prepared, disk_low } => (v1::prepare_response::Outcome::Ok, prepared, disk_low),
                        PrepareOutcome::StaleBallot { .. } => (v1::prepare_response::Outcome::StaleBallot, 0, None),
                        PrepareOutcome::NotMember => (v1::prepare_response::Outcome::NotMember, 0, None),
                    };
                    let (disk_free_bytes, disk_reserve_bytes) = low.map_or((0, 0), |l| (l.free_bytes, l.reserve_bytes));
                    Ok(v1::PrepareResponse { ballot: reply.ballot, outcome: outcome as i32, prepared, disk_free_bytes, disk_reserve_bytes })
                }
            })
        });
        handle.send(ReplicaEvent::Prepare { from: req.from, msg, reply });
    }

    /// A learner reads checkpoint `id`: its replica keeps it while it is in use.
    fn checkpoint_read(&self, gpid: Gpid, id: &str) {
        if let Some(h) = self.node.replica(gpid) {
            h.send(ReplicaEvent::CheckpointRead { id: id.to_string() });
        }
    }

}

/// Waits for the answer a `start_*` call gives its `done`, for the unary RPCs.
async fn answer_of<T: Send + 'static>(what: &str, start: impl FnOnce(Box<dyn FnOnce(Result<T, Status>) + Send>)) -> Result<T, Status> {
    let (tx, rx) = oneshot::channel();
    start(Box::new(move |result| {
        let _ = tx.send(result);
    }));
    rx.await.map_err(|_| ErrorKind::Busy.status(format!("replica dropped the {what}")))?
}

/// What answers batch call `id`: puts its reply into the stream's outgoing queue, from wherever
/// the answer is made.
fn answer_into<T: 'static>(
    tx: &tokio::sync::mpsc::UnboundedSender<v1::BatchReply>,
    id: u64,
    kind: fn(T) -> v1::batch_reply::Reply,
) -> impl FnOnce(Result<T, Status>) + Send + 'static {
    let tx = tx.clone();
    move |result| {
        let reply = result.map(kind).unwrap_or_else(|status| v1::batch_reply::Reply::Error(batch_error(&status)));
        let _ = tx.send(v1::BatchReply { id, reply: Some(reply) });
    }
}

fn observe<T>(metrics: &Metrics, table: &str, op: &str, start: Instant, r: &Result<T, Status>) {
    let result = match r {
        Ok(_) => "ok",
        Err(s) => ErrorKind::of(s).map_or("error", |k| k.as_str()),
    };
    metrics.observe(table, op, result, start.elapsed().as_secs_f64());
}

#[tonic::async_trait]
impl ReplicaService for Service {
    async fn write(&self, request: Request<v1::WriteRequest>) -> Result<Response<v1::WriteResponse>, Status> {
        self.do_write(request.into_inner()).await.map(Response::new)
    }

    async fn get(&self, request: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        self.do_get(request.into_inner()).await.map(Response::new)
    }

    type BatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::BatchResponse, Status>> + Send>>;

    /// Serves every call of every message as it arrives, each on its own: a get the read gate
    /// lets through is answered at once, anything else (a write waits for its commit) in a task.
    /// Replies ready together leave in one message.
    async fn batch(&self, request: Request<tonic::Streaming<v1::BatchRequest>>) -> Result<Response<Self::BatchStream>, Status> {
        use futures::FutureExt;
        let mut incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<v1::BatchReply>();
        let service = self.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    m = incoming.message() => m,
                    _ = stopping.wait_for(|s| *s) => return,
                };
                let batch = match message {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!("batch stream ended: {e}");
                        return;
                    }
                };
                if batch.calls.len() > BATCH_CALLS_MAX {
                    let status = invalid(format!("a batch of {} calls exceeds the limit of {BATCH_CALLS_MAX}", batch.calls.len()));
                    for call in batch.calls {
                        let _ = tx.send(v1::BatchReply { id: call.id, reply: Some(v1::batch_reply::Reply::Error(batch_error(&status))) });
                    }
                    continue;
                }
                for call in batch.calls {
                    use v1::batch_call::Call;
                    use v1::batch_reply::Reply;
                    let id = call.id;
                    match call.call {
                        Some(Call::Write(req)) => service.start_write(req, answer_into(&tx, id, Reply::Write)),
                        Some(Call::Prepare(req)) => service.start_prepare(req, answer_into(&tx, id, Reply::Prepare)),
                        None => answer_into(&tx, id, Reply::Get)(Err(invalid("batch call without a request"))),
                        Some(Call::Get(req)) => {
                            // A get the read gate lets through is answered inline, without a task.
                            let done = answer_into(&tx, id, Reply::Get);
                            let service = service.clone();
                            let mut reply = Box::pin(async move { done(service.do_get(req).await) });
                            if (&mut reply).now_or_never().is_none() {
                                tokio::spawn(reply);
                            }
                        }
                    }
                }
            }
        });
        let replies = futures::stream::unfold(rx, |mut rx| async move {
            let first = rx.recv().await?;
            // Replies that are ready to be produced join this message (see tandem_client::batch).
            tokio::task::yield_now().await;
            let mut replies = vec![first];
            while replies.len() < BATCH_REPLIES_MAX {
                match rx.try_recv() {
                    Ok(r) => replies.push(r),
                    Err(_) => break,
                }
            }
            Some((Ok(v1::BatchResponse { replies }), rx))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn multi_get(&self, request: Request<v1::MultiGetRequest>) -> Result<Response<v1::MultiGetResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let table = self.table_label(req.route.as_ref());
        let result = async {
            let handle = self.route(req.route.as_ref(), Some(&req.hash_key))?;
            let count_max = if req.count_max == 0 { PAGE_COUNT_DEFAULT } else { req.count_max as usize };
            let bytes_max = if req.bytes_max == 0 { PAGE_BYTES_DEFAULT } else { req.bytes_max as usize };
            let hk = req.hash_key;
            if !req.sort_keys.is_empty() {
                if req.sort_keys.len() > count_max.max(PAGE_COUNT_DEFAULT) {
                    return Err(invalid(format!("multi_get of {} sort keys exceeds the {PAGE_COUNT_DEFAULT}-key limit", req.sort_keys.len())));
                }
                let keys = req.sort_keys;
                let kvs = self.read(&handle, move |e, now_s| read::multi_get_keys(e, &hk, &keys, now_s)).await?;
                return Ok(v1::MultiGetResponse {
                    kvs: kvs.into_iter().map(|(sort_key, value)| v1::KeyValue { sort_key, value }).collect(),
                    more: false,
                    next_sort_key: vec![],
                });
            }
            let range = read::SortKeyRange {
                start: req.start_sort_key,
                start_inclusive: req.start_inclusive,
                stop: if req.stop_sort_key.is_empty() { None } else { Some(req.stop_sort_key) },
                stop_inclusive: req.stop_inclusive,
            };
            let page = self.read(&handle, move |e, now_s| read::scan(e, &hk, &range, count_max, bytes_max, now_s)).await?;
            Ok(v1::MultiGetResponse {
                kvs: page.records.into_iter().map(|(sort_key, value)| v1::KeyValue { sort_key, value }).collect(),
                more: page.next_sort_key.is_some(),
                next_sort_key: page.next_sort_key.unwrap_or_default(),
            })
        }
        .await;
        observe(&self.node.metrics, &table, "multi_get", start, &result);
        result.map(Response::new)
    }

    async fn sortkey_count(&self, request: Request<v1::SortkeyCountRequest>) -> Result<Response<v1::SortkeyCountResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let table = self.table_label(req.route.as_ref());
        let result = async {
            let handle = self.route(req.route.as_ref(), Some(&req.hash_key))?;
            let hk = req.hash_key;
            let count = self.read(&handle, move |e, now_s| read::sortkey_count(e, &hk, now_s)).await?;
            Ok(v1::SortkeyCountResponse { count })
        }
        .await;
        observe(&self.node.metrics, &table, "sortkey_count", start, &result);
        result.map(Response::new)
    }

    async fn full_scan(&self, request: Request<v1::FullScanRequest>) -> Result<Response<v1::FullScanResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let table = self.table_label(req.route.as_ref());
        let result = async {
            let handle = self.route(req.route.as_ref(), None)?;
            let count_max = if req.count_max == 0 { PAGE_COUNT_DEFAULT } else { (req.count_max as usize).min(10 * PAGE_COUNT_DEFAULT) };
            let after = if req.has_after_key { Some(req.after_key) } else { None };
            let page = self.read(&handle, move |e, now_s| read::full_scan(e, after.as_deref(), count_max, now_s)).await?;
            Ok(v1::FullScanResponse {
                records: page.records.into_iter().map(|(hash_key, sort_key, value)| v1::Record { hash_key, sort_key, value }).collect(),
                more: page.next_key.is_some(),
                next_key: page.next_key.unwrap_or_default(),
            })
        }
        .await;
        observe(&self.node.metrics, &table, "full_scan", start, &result);
        result.map(Response::new)
    }

    async fn verify_digest(&self, request: Request<v1::VerifyDigestRequest>) -> Result<Response<v1::VerifyDigestResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let table = self.table_label(req.route.as_ref());
        let result = async {
            let handle = self.route(req.route.as_ref(), None)?;
            let buckets = verify_buckets(req.buckets)?;
            let before_us = req.before_us;
            let digests = self.read(&handle, move |e, now_s| verify::digest_engine(e, buckets, before_us, now_s)).await?;
            let buckets = digests.buckets.into_iter().map(|(bucket, (records, digest))| v1::BucketDigest { bucket, records, digest }).collect();
            Ok(v1::VerifyDigestResponse { buckets })
        }
        .await;
        observe(&self.node.metrics, &table, "verify_digest", start, &result);
        result.map(Response::new)
    }

    async fn verify_keys(&self, request: Request<v1::VerifyKeysRequest>) -> Result<Response<v1::VerifyKeysResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        let table = self.table_label(req.route.as_ref());
        let result = async {
            let handle = self.route(req.route.as_ref(), None)?;
            let buckets = verify_buckets(req.buckets)?;
            let (bucket, after) = (req.bucket, req.after_key);
            let limit = if req.limit == 0 { PAGE_COUNT_DEFAULT } else { (req.limit as usize).min(10 * PAGE_COUNT_DEFAULT) };
            let (keys, more) = self.read(&handle, move |e, now_s| verify::bucket_keys(e, buckets, bucket, &after, limit, now_s)).await?;
            let keys = keys
                .into_iter()
                .map(|k| v1::KeyVersion { key: k.key, timetag: k.timetag, live: k.value_hash.is_some(), value_hash: k.value_hash.unwrap_or(0) })
                .collect();
            Ok(v1::VerifyKeysResponse { keys, more })
        }
        .await;
        observe(&self.node.metrics, &table, "verify_keys", start, &result);
        result.map(Response::new)
    }

    async fn prepare(&self, request: Request<v1::PrepareRequest>) -> Result<Response<v1::PrepareResponse>, Status> {
        self.do_prepare(request.into_inner()).await.map(Response::new)
    }

    async fn learn(&self, request: Request<v1::LearnRequest>) -> Result<Response<v1::LearnResponse>, Status> {
        let req = request.into_inner();
        let gpid = gpid_from(req.gpid.as_ref()).map_err(|e| core_status(&e))?;
        let handle = self.node.replica(gpid).ok_or_else(|| ErrorKind::NotPrimary.status(format!("no replica {gpid} here")))?;
        let (tx, rx) = oneshot::channel();
        let request = LearnRequest { ballot: req.ballot, learner: req.learner, last_committed: req.last_committed };
        if !handle.send(ReplicaEvent::Learn { request, reply: tx }) {
            return Err(ErrorKind::Busy.status("replica stopped"));
        }
        let reply = rx.await.map_err(|_| ErrorKind::Busy.status("replica dropped the learn request"))?;
        use v1::learn_response::Kind;
        Ok(Response::new(match reply {
            LearnReply::Log { start } => v1::LearnResponse { kind: Kind::Log as i32, start, ..Default::default() },
            LearnReply::Checkpoint { checkpoint_id, decree } => {
                v1::LearnResponse { kind: Kind::Checkpoint as i32, checkpoint_id, decree, ..Default::default() }
            }
            LearnReply::Refused { reason } => v1::LearnResponse { kind: Kind::Refused as i32, reason, ..Default::default() },
        }))
    }

    async fn checkpoint_manifest(&self, request: Request<v1::CheckpointManifestRequest>) -> Result<Response<v1::CheckpointManifestResponse>, Status> {
        let req = request.into_inner();
        let gpid = gpid_from(req.gpid.as_ref()).map_err(|e| core_status(&e))?;
        let cp = self
            .node
            .checkpoints
            .get(gpid, &req.checkpoint_id)
            .ok_or_else(|| ErrorKind::NotFound.status(format!("no checkpoint {} of {gpid}", req.checkpoint_id)))?;
        self.checkpoint_read(gpid, &req.checkpoint_id);
        Ok(Response::new(v1::CheckpointManifestResponse { decree: cp.decree, files: cp.files }))
    }

    async fn fetch_chunk(&self, request: Request<v1::FetchChunkRequest>) -> Result<Response<v1::FetchChunkResponse>, Status> {
        let req = request.into_inner();
        let gpid: Gpid = gpid_from(req.gpid.as_ref()).map_err(|e| core_status(&e))?;
        let length_max = (req.length_max as usize).clamp(1, 8 << 20);
        let node = self.node.clone();
        self.checkpoint_read(gpid, &req.checkpoint_id);
        let data = tokio::task::spawn_blocking(move || node.checkpoints.read_chunk(gpid, &req.checkpoint_id, &req.name, req.offset, length_max))
            .await
            .map_err(|e| ErrorKind::Internal.status(e.to_string()))?
            .map_err(|e| ErrorKind::NotFound.status(format!("{e:#}")))?;
        let crc32c = crc32c::crc32c(&data);
        self.node.metrics.checkpoint_served_bytes.inc_by(data.len() as u64);
        Ok(Response::new(v1::FetchChunkResponse { data, crc32c }))
    }

    async fn status(&self, _request: Request<v1::ReplicaStatusRequest>) -> Result<Response<v1::ReplicaStatusResponse>, Status> {
        let mut replicas: Vec<v1::ReplicaReport> = self.node.replica_handles().iter().map(|h| h.report()).collect();
        replicas.sort_by_key(|r| r.gpid.map(|g| (g.table_id, g.partition)));
        Ok(Response::new(v1::ReplicaStatusResponse { address: self.node.me.clone(), replicas }))
    }
}
