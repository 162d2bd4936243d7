//! Conversions between wire messages and core types. Everything from the wire is checked:
//! a malformed message is an error, never a panic.

use crate::v1;
use tandem_core::replica::{CheckType, DiskShort, DupRecord, DupWatermark, MutateOp, WriteRequest};
use tandem_core::{Error, Gpid, PartitionConfig, Result};

impl From<Gpid> for v1::Gpid {
    fn from(g: Gpid) -> Self {
        v1::Gpid { table_id: g.table_id, partition: g.partition }
    }
}

pub fn gpid_from(g: Option<&v1::Gpid>) -> Result<Gpid> {
    let g = g.ok_or_else(|| Error::InvalidArgument("missing gpid".into()))?;
    Ok(Gpid::new(g.table_id, g.partition))
}

pub fn disk_short_to_wire(d: &DiskShort) -> v1::DiskShort {
    v1::DiskShort { dir: d.dir.clone(), free_bytes: d.free_bytes, reserve_bytes: d.reserve_bytes }
}

pub fn disk_short_from_wire(d: &v1::DiskShort) -> DiskShort {
    DiskShort { dir: d.dir.clone(), free_bytes: d.free_bytes, reserve_bytes: d.reserve_bytes }
}

pub fn config_to_wire(c: &PartitionConfig, partition_count: u32) -> v1::PartitionConfig {
    v1::PartitionConfig {
        gpid: Some(c.gpid.into()),
        ballot: c.ballot,
        primary: c.primary.clone().unwrap_or_default(),
        secondaries: c.secondaries.clone(),
        learners: c.learners.clone(),
        last_drops: c.last_drops.clone(),
        partition_count,
        tombstone_retention_ms: 0,
    }
}

pub fn config_from_wire(c: &v1::PartitionConfig) -> Result<PartitionConfig> {
    Ok(PartitionConfig {
        gpid: gpid_from(c.gpid.as_ref())?,
        ballot: c.ballot,
        primary: if c.primary.is_empty() { None } else { Some(c.primary.clone()) },
        secondaries: c.secondaries.clone(),
        learners: c.learners.clone(),
        last_drops: c.last_drops.clone(),
    })
}

pub fn write_request_from_wire(req: v1::WriteRequest) -> Result<WriteRequest> {
    use v1::write_request::Op;
    let hash_key = req.hash_key;
    let op = req.op.ok_or_else(|| Error::InvalidArgument("write request without an operation".into()))?;
    Ok(match op {
        Op::Set(s) => WriteRequest::Set { hash_key, sort_key: s.sort_key, value: s.value, ttl_s: s.ttl_seconds },
        Op::MultiSet(m) => WriteRequest::MultiSet {
            hash_key,
            kvs: m.kvs.into_iter().map(|kv| (kv.sort_key, kv.value)).collect(),
            ttl_s: m.ttl_seconds,
        },
        Op::Delete(d) => WriteRequest::Del { hash_key, sort_key: d.sort_key },
        Op::MultiDelete(d) => WriteRequest::MultiDel { hash_key, sort_keys: d.sort_keys },
        Op::Incr(i) => WriteRequest::Incr { hash_key, sort_key: i.sort_key, increment: i.increment, ttl_s: i.ttl_seconds },
        Op::CheckAndMutate(c) => {
            let check_type = u32::try_from(c.check_type)
                .ok()
                .and_then(CheckType::from_index)
                .ok_or_else(|| Error::InvalidArgument(format!("unknown check type {} (0..={})", c.check_type, CheckType::ALL.len() - 1)))?;
            let mutations = c
                .mutations
                .into_iter()
                .map(|m| match v1::mutate_op::Kind::try_from(m.kind) {
                    Ok(v1::mutate_op::Kind::Put) => Ok(MutateOp::Put { sort_key: m.sort_key, value: m.value, ttl_s: m.ttl_seconds }),
                    Ok(v1::mutate_op::Kind::Delete) => Ok(MutateOp::Delete { sort_key: m.sort_key }),
                    Err(_) => Err(Error::InvalidArgument(format!("unknown mutate kind {}", m.kind))),
                })
                .collect::<Result<Vec<_>>>()?;
            WriteRequest::CheckAndMutate {
                hash_key,
                check_sort_key: c.check_sort_key,
                check_type,
                check_operand: c.check_operand,
                mutations,
                return_check_value: c.return_check_value,
            }
        }
        Op::Duplicate(d) => {
            if !hash_key.is_empty() {
                return Err(Error::InvalidArgument("a duplicate batch is routed per record: leave hash_key empty".into()));
            }
            let watermark = match (d.origin_cluster_id, d.watermark_us) {
                (_, 0) => None,
                (origin, watermark_us) => Some(DupWatermark {
                    origin: u8::try_from(origin).map_err(|_| {
                        let max = tandem_core::timetag::CLUSTER_ID_MAX;
                        Error::InvalidArgument(format!("a duplicate batch's origin cluster id {origin} is above the limit {max}"))
                    })?,
                    watermark_us,
                }),
            };
            WriteRequest::Duplicate { records: d.records.into_iter().map(|r| DupRecord { key: r.key, value: r.value }).collect(), watermark }
        }
    })
}

pub fn write_request_to_wire(route: v1::Route, req: WriteRequest) -> v1::WriteRequest {
    use v1::write_request::Op;
    let (hash_key, op) = match req {
        WriteRequest::Set { hash_key, sort_key, value, ttl_s } => (hash_key, Op::Set(v1::SetOp { sort_key, value, ttl_seconds: ttl_s })),
        WriteRequest::MultiSet { hash_key, kvs, ttl_s } => (
            hash_key,
            Op::MultiSet(v1::MultiSetOp {
                kvs: kvs.into_iter().map(|(sort_key, value)| v1::KeyValue { sort_key, value }).collect(),
                ttl_seconds: ttl_s,
            }),
        ),
        WriteRequest::Del { hash_key, sort_key } => (hash_key, Op::Delete(v1::DelOp { sort_key })),
        WriteRequest::MultiDel { hash_key, sort_keys } => (hash_key, Op::MultiDelete(v1::MultiDelOp { sort_keys })),
        WriteRequest::Incr { hash_key, sort_key, increment, ttl_s } => {
            (hash_key, Op::Incr(v1::IncrOp { sort_key, increment, ttl_seconds: ttl_s }))
        }
        WriteRequest::CheckAndMutate { hash_key, check_sort_key, check_type, check_operand, mutations, return_check_value } => (
            hash_key,
            Op::CheckAndMutate(v1::CheckAndMutateOp {
                check_sort_key,
                check_type: check_type.index() as i32,
                check_operand,
                mutations: mutations
                    .into_iter()
                    .map(|m| match m {
                        MutateOp::Put { sort_key, value, ttl_s } => {
                            v1::MutateOp { kind: v1::mutate_op::Kind::Put as i32, sort_key, value, ttl_seconds: ttl_s }
                        }
                        MutateOp::Delete { sort_key } => {
                            v1::MutateOp { kind: v1::mutate_op::Kind::Delete as i32, sort_key, value: vec![], ttl_seconds: 0 }
                        }
                    })
                    .collect(),
                return_check_value,
            }),
        ),
        WriteRequest::Duplicate { records, watermark } => (
            Vec::new(),
            Op::Duplicate(v1::DuplicateOp {
                records: records.into_iter().map(|r| v1::DupRecord { key: r.key, value: r.value }).collect(),
                origin_cluster_id: watermark.map_or(0, |w| w.origin as u32),
                watermark_us: watermark.map_or(0, |w| w.watermark_us),
            }),
        ),
    };
    v1::WriteRequest { route: Some(route), hash_key, op: Some(op) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire enum and the core's list agree value by value and name by name, so the values
    /// clients sent as bare numbers before the enum keep their meaning.
    #[test]
    fn check_types_on_the_wire_are_the_cores_by_index_and_name() {
        for (i, (name, check_type)) in CheckType::ALL.iter().enumerate() {
            assert_eq!(check_type.index() as usize, i);
            let wire = v1::CheckType::try_from(i as i32).unwrap_or_else(|_| panic!("no wire check type {i}"));
            assert_eq!(wire.as_str_name(), format!("CHECK_TYPE_{}", name.to_uppercase()));
        }
        assert!(v1::CheckType::try_from(CheckType::ALL.len() as i32).is_err(), "the wire enum has a value the core lacks");
    }
}
