//! Mutations: the effects of one client write (puts and deletes of stored keys and values), as
//! logged, replicated and applied. Non-idempotent requests (`incr`, `check_and_*`) are turned into
//! their effects on the primary before they become a mutation, so replay is idempotent.

use crate::error::{Error, Result};
use crate::types::{Ballot, Decree, Gpid};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Stored key and stored value (header included).
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
    /// The other site `origin` (its cluster id) has shipped here every record it made before
    /// `watermark_us`: the engine keeps the largest per origin, and compaction holds tombstones
    /// back until every origin's watermark passes them (docs/duplication.md, "Tombstones").
    Watermark { origin: u8, watermark_us: u64 },
}

impl WriteOp {
    /// The stored key written; None for a watermark, which is no record.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => Some(key),
            WriteOp::Watermark { .. } => None,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            WriteOp::Put { key, value } => 9 + key.len() + value.len(),
            WriteOp::Delete { key } => 5 + key.len(),
            WriteOp::Watermark { .. } => 10,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub ballot: Ballot,
    pub decree: Decree,
    /// The partition clock's timestamp when the primary built this mutation.
    pub timestamp_us: u64,
    pub ops: Vec<WriteOp>,
}

/// One record of the mutation log, shared by every replica of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogRecord {
    Mutation { gpid: Gpid, mutation: Mutation },
    /// Everything logged earlier for `gpid` is void: its state was replaced (checkpoint learned,
    /// replica dropped); replay starts after `decree`.
    Reset { gpid: Gpid, decree: Decree },
}

impl LogRecord {
    pub fn gpid(&self) -> Gpid {
        match self {
            LogRecord::Mutation { gpid, .. } | LogRecord::Reset { gpid, .. } => *gpid,
        }
    }

    /// The mutation's decree, or the decree a reset replays after.
    pub fn decree(&self) -> Decree {
        match self {
            LogRecord::Mutation { mutation, .. } => mutation.decree,
            LogRecord::Reset { decree, .. } => *decree,
        }
    }
}

impl Mutation {
    pub fn encoded_bytes(&self) -> usize {
        28 + self.ops.iter().map(WriteOp::bytes).sum::<usize>()
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ballot.to_be_bytes());
        out.extend_from_slice(&self.decree.to_be_bytes());
        out.extend_from_slice(&self.timestamp_us.to_be_bytes());
        out.extend_from_slice(&(self.ops.len() as u32).to_be_bytes());
        for op in &self.ops {
            match op {
                WriteOp::Put { key, value } => {
                    out.push(1);
                    put_bytes(out, key);
                    put_bytes(out, value);
                }
                WriteOp::Delete { key } => {
                    out.push(2);
                    put_bytes(out, key);
                }
                WriteOp::Watermark { origin, watermark_us } => {
                    out.push(3);
                    out.push(*origin);
                    out.extend_from_slice(&watermark_us.to_be_bytes());
                }
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_bytes());
        self.encode_into(&mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Mutation> {
        let mut r = Reader { bytes, pos: 0 };
        let m = Mutation::read(&mut r)?;
        r.finish()?;
        Ok(m)
    }

    fn read(r: &mut Reader<'_>) -> Result<Mutation> {
        let ballot = r.u64()?;
        let decree = r.u64()?;
        let timestamp_us = r.u64()?;
        let count = r.u32()? as usize;
        // Every op takes at least 5 bytes: refuse counts the input cannot hold before allocating.
        if count > r.remaining() / 5 {
            return Err(Error::corrupt("mutation", format!("{count} ops in {} bytes", r.remaining())));
        }
        let mut ops = Vec::with_capacity(count);
        for _ in 0..count {
            match r.u8()? {
                1 => {
                    let key = r.bytes()?;
                    let value = r.bytes()?;
                    ops.push(WriteOp::Put { key, value });
                }
                2 => ops.push(WriteOp::Delete { key: r.bytes()? }),
                3 => ops.push(WriteOp::Watermark { origin: r.u8()?, watermark_us: r.u64()? }),
                tag => return Err(Error::corrupt("mutation", format!("unknown op tag {tag}"))),
            }
        }
        Ok(Mutation { ballot, decree, timestamp_us, ops })
    }
}

impl LogRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            LogRecord::Mutation { gpid, mutation } => LogRecord::encode_mutation_into(*gpid, mutation, out),
            LogRecord::Reset { gpid, decree } => {
                out.push(2);
                put_gpid(out, *gpid);
                out.extend_from_slice(&decree.to_be_bytes());
            }
        }
    }

    /// The encoding of `LogRecord::Mutation { gpid, mutation }`, without building the record
    /// (which would copy the mutation).
    pub fn encode_mutation_into(gpid: Gpid, mutation: &Mutation, out: &mut Vec<u8>) {
        out.reserve(9 + mutation.encoded_bytes());
        out.push(1);
        put_gpid(out, gpid);
        mutation.encode_into(out);
    }

    pub fn decode(bytes: &[u8]) -> Result<LogRecord> {
        let mut r = Reader { bytes, pos: 0 };
        let tag = r.u8()?;
        let gpid = Gpid::new(r.u32()?, r.u32()?);
        let rec = match tag {
            1 => LogRecord::Mutation { gpid, mutation: Mutation::read(&mut r)? },
            2 => LogRecord::Reset { gpid, decree: r.u64()? },
            t => return Err(Error::corrupt("log record", format!("unknown record tag {t}"))),
        };
        r.finish()?;
        Ok(rec)
    }
}

fn put_gpid(out: &mut Vec<u8>, gpid: Gpid) {
    out.extend_from_slice(&gpid.table_id.to_be_bytes());
    out.extend_from_slice(&gpid.partition.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.remaining() < n {
            return Err(Error::corrupt("mutation", format!("truncated: need {n} bytes, {} left", self.remaining())));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }

    fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::corrupt("mutation", format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Mutation {
        Mutation {
            ballot: 3,
            decree: 17,
            timestamp_us: 99,
            ops: vec![
                WriteOp::Put { key: b"k".to_vec(), value: b"v".to_vec() },
                WriteOp::Delete { key: b"d".to_vec() },
                WriteOp::Watermark { origin: 2, watermark_us: 1 << 50 },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(m.encode().len(), m.encoded_bytes());
        assert_eq!(Mutation::decode(&m.encode()).unwrap(), m);
        let rec = LogRecord::Mutation { gpid: Gpid::new(1, 2), mutation: m };
        assert_eq!(LogRecord::decode(&rec.encode()).unwrap(), rec);
        let reset = LogRecord::Reset { gpid: Gpid::new(4, 0), decree: 8 };
        assert_eq!(LogRecord::decode(&reset.encode()).unwrap(), reset);
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_error_or_a_value_never_a_panic() {
        let bytes = LogRecord::Mutation { gpid: Gpid::new(1, 2), mutation: sample() }.encode();
        for n in 0..bytes.len() {
            assert!(LogRecord::decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        for i in 0..bytes.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = LogRecord::decode(&b);
            }
        }
    }
}
