//! The data API of one table.

use crate::{Client, ClientError, Result};
use std::time::{Duration, Instant};
use tandem_core::limits::Limits;
use tandem_core::partition::partition_index;
use tandem_core::replica::{CheckType, DupRecord, DupWatermark, MutateOp, WriteRequest};
use tandem_proto::convert::write_request_to_wire;
use tandem_proto::errors::ErrorKind;
use tandem_proto::v1;
use crate::ReplicaConn;
use std::sync::Arc;
use tandem_proto::v1::{batch_call, batch_reply};

#[derive(Clone)]
pub struct Table {
    client: Client,
    name: String,
    limits: Limits,
}

/// Range and paging of `scan` / `multi_get_range`.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    pub start_sort_key: Vec<u8>,
    pub start_exclusive: bool,
    /// Empty: to the last sort key.
    pub stop_sort_key: Vec<u8>,
    pub stop_inclusive: bool,
    /// Records per page (0: the server's default).
    pub count_max: u32,
}

/// One page of a full scan; `next` resumes it (None: done).
#[derive(Clone, Debug, Default)]
pub struct FullScanPage {
    pub records: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    pub next: Option<String>,
}

/// Sends a write on the replica's batch stream.
async fn send_write(c: Arc<ReplicaConn>, req: v1::WriteRequest) -> std::result::Result<tonic::Response<v1::WriteResponse>, tonic::Status> {
    match c.batch.call(batch_call::Call::Write(req)).await? {
        batch_reply::Reply::Write(r) => Ok(tonic::Response::new(r)),
        _ => Err(tonic::Status::internal("a write was answered with another reply kind")),
    }
}

/// What `Table::duplicate` did at this site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DupApplied {
    pub applied: u64,
    pub superseded: u64,
}

enum Retry {
    /// Safe to send again whatever happened (reads, puts, deletes).
    Always,
    /// Only when the server proved it did not take the request.
    IfNotTaken,
}

impl Table {
    pub(crate) fn new(client: Client, name: &str) -> Table {
        Table { client, name: name.to_string(), limits: Limits::default() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls `f` on the primary of the partition of `hash_key` (or of `partition`), refreshing
    /// the route and retrying on the retryable errors within the request timeout.
    async fn call<T, F, Fut>(&self, hash_key: Option<&[u8]>, partition: Option<u32>, retry: Retry, mut f: F) -> Result<T>
    where
        F: FnMut(Arc<ReplicaConn>, v1::Route) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.client.inner.opts.request_timeout;
        let mut refresh = false;
        let mut backoff = Duration::from_millis(20);
        // A wrong route is refreshed once at once; refused again, it is not the route's age.
        let mut wrong_route_refreshed = false;
        loop {
            // Err((error, retryable))
            let attempt: std::result::Result<T, (ClientError, bool)> = async {
                let route = self.client.route(&self.name, refresh).await.map_err(|e| {
                    let retry = matches!(e, ClientError::Unavailable(_));
                    (e, retry)
                })?;
                let p = match (hash_key, partition) {
                    (Some(hk), _) => partition_index(hk, route.partition_count),
                    (None, Some(p)) => p,
                    (None, None) => unreachable!("call needs a hash key or a partition"),
                };
                if p >= route.partition_count {
                    return Err((ClientError::InvalidArgument(format!("partition {p} out of range 0..{}", route.partition_count)), false));
                }
                let Some(primary) = route.primaries[p as usize].clone() else {
                    return Err((ClientError::Unavailable(format!("partition {p} of {} has no primary", self.name)), true));
                };
                let replica = self.client.replica(&primary).map_err(|e| (e, false))?;
                let r = v1::Route { gpid: Some(v1::Gpid { table_id: route.table_id, partition: p }), partition_count: route.partition_count };
                match tokio::time::timeout(self.client.inner.opts.rpc_timeout, f(replica, r)).await {
                    Ok(Ok(resp)) => Ok(resp.into_inner()),
                    Ok(Err(status)) if ErrorKind::of(&status) == Some(ErrorKind::WrongRoute) => {
                        Err((ClientError::from_status(&status), !std::mem::replace(&mut wrong_route_refreshed, true)))
                    }
                    Ok(Err(status)) => {
                        let kind = ErrorKind::of(&status);
                        // Refused before it was taken: the primary moved, or the connection
                        // never opened.
                        let never_connected = match crate::batch::maybe_sent(&status) {
                            Some(sent) => !sent,
                            None => kind.is_none() && status.code() == tonic::Code::Unavailable && status.message().contains("connect"),
                        };
                        let not_taken = matches!(kind, Some(ErrorKind::NotPrimary | ErrorKind::Busy)) || never_connected;
                        let retry = match retry {
                            Retry::Always => {
                                matches!(kind, Some(ErrorKind::NotPrimary | ErrorKind::Busy | ErrorKind::OutcomeUnknown))
                                    || (kind.is_none() && status.code() == tonic::Code::Unavailable)
                            }
                            Retry::IfNotTaken => not_taken,
                        };
                        let error = match (retry, kind) {
                            // A transport failure after the write was sent (a broken stream).
                            (false, None) if status.code() == tonic::Code::Unavailable => {
                                ClientError::OutcomeUnknown(format!("{primary}: {}", status.message()))
                            }
                            _ => ClientError::from_status(&status),
                        };
                        Err((error, retry))
                    }
                    Err(_) => match retry {
                        Retry::IfNotTaken => Err((
                            ClientError::OutcomeUnknown(format!("{primary} did not answer in time; the write may or may not have been applied")),
                            false,
                        )),
                        Retry::Always => Err((ClientError::Unavailable(format!("{primary} did not answer in time")), true)),
                    },
                }
            }
            .await;
            match attempt {
                Ok(v) => return Ok(v),
                Err((e, true)) => {
                    if Instant::now() + backoff > deadline {
                        return Err(ClientError::Unavailable(format!("{e} (gave up after {:?})", self.client.inner.opts.request_timeout)));
                    }
                    // Back off before the retry: the cluster is electing or moving a primary.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    refresh = true;
                }
                Err((e, false)) => return Err(e),
            }
        }
    }

    /// Applies records shipped from the other site, each on the partition that owns its key here
    /// (partition counts of the two sites may differ), all partitions at once. Each record is
    /// written only if its timetag beats the stored one, so sending a batch again is harmless:
    /// every error is retried within the request timeout except a refusal. Returns how many
    /// records were written and how many lost to a stored record.
    /// `watermark` goes with every partition's part; with no records, to every partition (a
    /// heartbeat).
    pub async fn duplicate(&self, records: Vec<DupRecord>, watermark: Option<DupWatermark>) -> Result<DupApplied> {
        let route = self.client.route(&self.name, false).await?;
        // The one routing rule, shared with the simulator's shipping.
        let (groups, bad) = tandem_dup_core::split_by_partition(records, route.partition_count);
        if let Some(r) = bad.first() {
            return Err(ClientError::InvalidArgument(format!("{} duplicated records have keys that do not decode (the first: {:?})", bad.len(), r.key)));
        }
        let calls = groups.into_iter().map(|(p, records)| {
            let request = WriteRequest::Duplicate { records, watermark };
            async move {
                request.validate(&self.limits).map_err(|e| match e {
                    tandem_core::Error::TooLarge(m) => ClientError::TooLarge(m),
                    e => ClientError::InvalidArgument(e.to_string()),
                })?;
                self.call(None, Some(p), Retry::Always, |c, route| send_write(c, write_request_to_wire(route, request.clone()))).await
            }
        });
        let mut total = DupApplied::default();
        for reply in futures::future::join_all(calls).await {
            let reply = reply?;
            total.applied += reply.dup_applied as u64;
            total.superseded += reply.dup_superseded as u64;
        }
        Ok(total)
    }

    async fn write(&self, request: WriteRequest) -> Result<v1::WriteResponse> {
        request.validate(&self.limits).map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let retry = match request {
            WriteRequest::Incr { .. } | WriteRequest::CheckAndMutate { .. } => Retry::IfNotTaken,
            _ => Retry::Always,
        };
        let Some(hash_key) = request.hash_key().map(<[u8]>::to_vec) else {
            return Err(ClientError::InvalidArgument("a duplicate batch is sent with Table::duplicate".into()));
        };
        self.call(Some(&hash_key), None, retry, |c, route| send_write(c, write_request_to_wire(route, request.clone())))
        .await
    }

    pub async fn set(&self, hash_key: &[u8], sort_key: &[u8], value: &[u8], ttl_seconds: u32) -> Result<()> {
        self.write(WriteRequest::Set { hash_key: hash_key.into(), sort_key: sort_key.into(), value: value.into(), ttl_s: ttl_seconds }).await?;
        Ok(())
    }

    pub async fn multi_set(&self, hash_key: &[u8], kvs: Vec<(Vec<u8>, Vec<u8>)>, ttl_seconds: u32) -> Result<()> {
        self.write(WriteRequest::MultiSet { hash_key: hash_key.into(), kvs, ttl_s: ttl_seconds }).await?;
        Ok(())
    }

    pub async fn del(&self, hash_key: &[u8], sort_key: &[u8]) -> Result<()> {
        self.write(WriteRequest::Del { hash_key: hash_key.into(), sort_key: sort_key.into() }).await?;
        Ok(())
    }

    pub async fn multi_del(&self, hash_key: &[u8], sort_keys: Vec<Vec<u8>>) -> Result<()> {
        self.write(WriteRequest::MultiDel { hash_key: hash_key.into(), sort_keys }).await?;
        Ok(())
    }

    /// Adds `increment`; `ttl_seconds`: 0 keeps the TTL, > 0 sets it, -1 clears it.
    pub async fn incr(&self, hash_key: &[u8], sort_key: &[u8], increment: i64, ttl_seconds: i64) -> Result<i64> {
        let r = self.write(WriteRequest::Incr { hash_key: hash_key.into(), sort_key: sort_key.into(), increment, ttl_s: ttl_seconds }).await?;
        Ok(r.incr_value)
    }

    /// Applies `mutations` if the value at `check_sort_key` passes `check_type` against
    /// `operand`. Returns whether it applied and (if asked) the value that was checked.
    pub async fn check_and_mutate(
        &self,
        hash_key: &[u8],
        check_sort_key: &[u8],
        check_type: CheckType,
        operand: &[u8],
        mutations: Vec<MutateOp>,
        return_check_value: bool,
    ) -> Result<(bool, Option<Vec<u8>>)> {
        let r = self
            .write(WriteRequest::CheckAndMutate {
                hash_key: hash_key.into(),
                check_sort_key: check_sort_key.into(),
                check_type,
                check_operand: operand.into(),
                mutations,
                return_check_value,
            })
            .await?;
        Ok((r.check_applied, if r.check_value_exists { Some(r.check_value) } else { None }))
    }

    /// Sets `set_sort_key` to `value` if the check passes.
    #[allow(clippy::too_many_arguments)]
    pub async fn check_and_set(
        &self,
        hash_key: &[u8],
        check_sort_key: &[u8],
        check_type: CheckType,
        operand: &[u8],
        set_sort_key: &[u8],
        value: &[u8],
        ttl_seconds: u32,
    ) -> Result<(bool, Option<Vec<u8>>)> {
        let m = vec![MutateOp::Put { sort_key: set_sort_key.into(), value: value.into(), ttl_s: ttl_seconds }];
        self.check_and_mutate(hash_key, check_sort_key, check_type, operand, m, true).await
    }

    fn check_key(&self, hash_key: &[u8], sort_key: &[u8]) -> Result<()> {
        self.limits.check_key(hash_key, sort_key).map_err(|e| ClientError::InvalidArgument(e.to_string()))
    }

    /// The value and its remaining TTL in seconds (-1: never expires).
    pub async fn get_with_ttl(&self, hash_key: &[u8], sort_key: &[u8]) -> Result<Option<(Vec<u8>, i64)>> {
        self.check_key(hash_key, sort_key)?;
        let r = self
            .call(Some(hash_key), None, Retry::Always, |c, route| {
                let req = v1::GetRequest { route: Some(route), hash_key: hash_key.into(), sort_key: sort_key.into() };
                async move {
                    match c.batch.call(batch_call::Call::Get(req)).await? {
                        batch_reply::Reply::Get(r) => Ok(tonic::Response::new(r)),
                        _ => Err(tonic::Status::internal("a get was answered with another reply kind")),
                    }
                }
            })
            .await?;
        Ok(if r.found { Some((r.value, r.ttl_seconds)) } else { None })
    }

    pub async fn get(&self, hash_key: &[u8], sort_key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_with_ttl(hash_key, sort_key).await?.map(|(v, _)| v))
    }

    pub async fn exist(&self, hash_key: &[u8], sort_key: &[u8]) -> Result<bool> {
        Ok(self.get_with_ttl(hash_key, sort_key).await?.is_some())
    }

    /// Remaining TTL: None = no such record, Some(-1) = never expires.
    pub async fn ttl(&self, hash_key: &[u8], sort_key: &[u8]) -> Result<Option<i64>> {
        Ok(self.get_with_ttl(hash_key, sort_key).await?.map(|(_, t)| t))
    }

    pub async fn multi_get(&self, hash_key: &[u8], sort_keys: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.limits.check_hash_key(hash_key).map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        if sort_keys.is_empty() {
            return Err(ClientError::InvalidArgument("multi_get needs at least one sort key (or use scan)".into()));
        }
        let r = self
            .call(Some(hash_key), None, Retry::Always, |c, route| {
                let mut c = c.grpc.clone();
                let req = v1::MultiGetRequest { route: Some(route), hash_key: hash_key.into(), sort_keys: sort_keys.clone(), ..Default::default() };
                async move { c.multi_get(req).await }
            })
            .await?;
        Ok(r.kvs.into_iter().map(|kv| (kv.sort_key, kv.value)).collect())
    }

    /// One page of the sort-key range of a hash key; the second value is where the next page
    /// starts (exclusive), if there is one.
    pub async fn scan_page(&self, hash_key: &[u8], opts: &ScanOptions) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>)> {
        self.limits.check_hash_key(hash_key).map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let r = self
            .call(Some(hash_key), None, Retry::Always, |c, route| {
                let mut c = c.grpc.clone();
                let req = v1::MultiGetRequest {
                    route: Some(route),
                    hash_key: hash_key.into(),
                    sort_keys: vec![],
                    start_sort_key: opts.start_sort_key.clone(),
                    start_inclusive: !opts.start_exclusive,
                    stop_sort_key: opts.stop_sort_key.clone(),
                    stop_inclusive: opts.stop_inclusive,
                    count_max: opts.count_max,
                    bytes_max: 0,
                };
                async move { c.multi_get(req).await }
            })
            .await?;
        let next = if r.more { Some(r.next_sort_key) } else { None };
        Ok((r.kvs.into_iter().map(|kv| (kv.sort_key, kv.value)).collect(), next))
    }

    /// Every record of the range, page by page.
    pub async fn scan(&self, hash_key: &[u8], opts: &ScanOptions) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut all = Vec::new();
        let mut o = opts.clone();
        loop {
            let (page, next) = self.scan_page(hash_key, &o).await?;
            all.extend(page);
            match next {
                Some(n) => {
                    o.start_sort_key = n;
                    o.start_exclusive = true;
                }
                None => return Ok(all),
            }
        }
    }

    pub async fn sortkey_count(&self, hash_key: &[u8]) -> Result<u64> {
        self.limits.check_hash_key(hash_key).map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let r = self
            .call(Some(hash_key), None, Retry::Always, |c, route| {
                let mut c = c.grpc.clone();
                let req = v1::SortkeyCountRequest { route: Some(route), hash_key: hash_key.into() };
                async move { c.sortkey_count(req).await }
            })
            .await?;
        Ok(r.count)
    }

    /// One page of a scan over every partition; pass the returned `next` to continue.
    /// The table's partition count, as routed now.
    pub async fn partition_count(&self) -> Result<u32> {
        Ok(self.client.route(&self.name, false).await?.partition_count)
    }

    /// `dup verify`: partition `partition`'s digests per bucket of live records older than
    /// `before_us` (see `tandem_dup_core::verify`).
    pub async fn verify_digest(&self, partition: u32, buckets: u32, before_us: u64) -> Result<Vec<v1::BucketDigest>> {
        let r = self
            .call(None, Some(partition), Retry::Always, |c, route| {
                let mut c = c.grpc.clone();
                let req = v1::VerifyDigestRequest { route: Some(route), buckets, before_us };
                async move { c.verify_digest(req).await }
            })
            .await?;
        Ok(r.buckets)
    }

    /// `dup verify`: a page of the key versions of `bucket` that partition `partition` holds.
    pub async fn verify_keys(&self, partition: u32, buckets: u32, bucket: u32, after: &[u8], limit: u32) -> Result<v1::VerifyKeysResponse> {
        self.call(None, Some(partition), Retry::Always, |c, route| {
            let mut c = c.grpc.clone();
            let req = v1::VerifyKeysRequest { route: Some(route), buckets, bucket, after_key: after.to_vec(), limit };
            async move { c.verify_keys(req).await }
        })
        .await
    }

    pub async fn full_scan(&self, token: Option<&str>, count_max: u32) -> Result<FullScanPage> {
        let (mut partition, mut after) = match token {
            Some(t) => decode_token(t)?,
            None => (0, None),
        };
        let route = self.client.route(&self.name, false).await?;
        loop {
            if partition >= route.partition_count {
                return Ok(FullScanPage::default());
            }
            let r = self
                .call(None, Some(partition), Retry::Always, |c, route| {
                    let mut c = c.grpc.clone();
                    let req = v1::FullScanRequest {
                        route: Some(route),
                        after_key: after.clone().unwrap_or_default(),
                        has_after_key: after.is_some(),
                        count_max,
                    };
                    async move { c.full_scan(req).await }
                })
                .await?;
            let records: Vec<_> = r.records.into_iter().map(|rec| (rec.hash_key, rec.sort_key, rec.value)).collect();
            let next = if r.more {
                Some(encode_token(partition, &r.next_key))
            } else if partition + 1 < route.partition_count {
                Some(format!("{}:", partition + 1))
            } else {
                None
            };
            if !records.is_empty() || next.is_none() {
                return Ok(FullScanPage { records, next });
            }
            partition += 1;
            after = None;
        }
    }
}

fn encode_token(partition: u32, key: &[u8]) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("{partition}:{hex}")
}

fn decode_token(t: &str) -> Result<(u32, Option<Vec<u8>>)> {
    let bad = || ClientError::InvalidArgument(format!("malformed scan token {t:?}"));
    let (p, hex) = t.split_once(':').ok_or_else(bad)?;
    let p: u32 = p.parse().map_err(|_| bad())?;
    if hex.is_empty() {
        return Ok((p, None));
    }
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let key = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad())).collect::<Result<Vec<u8>>>()?;
    Ok((p, Some(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        assert_eq!(decode_token(&encode_token(3, b"\x00ab")).unwrap(), (3, Some(b"\x00ab".to_vec())));
        assert_eq!(decode_token("2:").unwrap(), (2, None));
        for bad in ["", "x:", "1:abc", "1:zz", "nocolon"] {
            assert!(decode_token(bad).is_err(), "{bad}");
        }
    }
}
