//! What the simulated clients saw: every operation with its invocation and completion times (true
//! simulated time) and outcome. The checkers read it.

/// The bank: one hash key, a version sort key and the accounts.
pub const BANK_HASH_KEY: &[u8] = b"bank";
pub const BANK_VERSION: &[u8] = b"ver";
pub const BANK_ACCOUNTS: usize = 4;
pub const BANK_INITIAL_BALANCE: i64 = 100;

pub fn bank_account(i: usize) -> Vec<u8> {
    format!("a{i}").into_bytes()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Register operations on hash key `key` (empty sort key).
    Set {
        value: Vec<u8>,
    },
    Del,
    Get,
    /// check_and_set: put `new` if the value equals `expected` (None: if absent).
    Cas {
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    /// Creates the accounts if the version key is absent.
    BankInit,
    /// Reads the version and every account in one read.
    BankRead,
    /// Moves `amount` from account `from` to `to`, if the version is still `version`.
    BankTransfer {
        version: i64,
        from: usize,
        to: usize,
        amount: i64,
        balances: Vec<i64>,
    },
}

impl OpKind {
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Get | OpKind::BankRead)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Done,
    Value(Option<Vec<u8>>),
    Applied(bool),
    /// The raw values of the version and every account, as one read returned them.
    Bank(Vec<Option<Vec<u8>>>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Ok(Output),
    /// May or may not have taken effect (timeout, lost answer, a primary stepping down).
    Unknown,
    /// Certainly not taken (refused before it reached a primary, or gave up retrying a read).
    Failed,
}

#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    /// The hash key (register key, or the bank's).
    pub key: Vec<u8>,
    pub kind: OpKind,
    pub call_us: u64,
    pub return_us: Option<u64>,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Default)]
pub struct History {
    /// In order of invocation (so of `call_us`).
    pub ops: Vec<Op>,
    /// Indexes into `ops` in order of completion (so of `return_us`): the online checker's feed.
    pub completions: Vec<usize>,
}

impl History {
    pub fn invoke(&mut self, client: usize, key: Vec<u8>, kind: OpKind, now_us: u64) -> usize {
        self.ops.push(Op { client, key, kind, call_us: now_us, return_us: None, outcome: Outcome::Pending });
        self.ops.len() - 1
    }

    pub fn complete(&mut self, id: usize, outcome: Outcome, now_us: u64) {
        let op = &mut self.ops[id];
        assert_eq!(op.outcome, Outcome::Pending, "op {id} completed twice");
        op.outcome = outcome;
        op.return_us = Some(now_us);
        self.completions.push(id);
    }

    /// A history of finished operations (tests): completions ordered by return time.
    pub fn from_ops(ops: Vec<Op>) -> History {
        let mut completions: Vec<usize> = (0..ops.len()).filter(|i| ops[*i].return_us.is_some()).collect();
        completions.sort_by_key(|i| ops[*i].return_us);
        History { ops, completions }
    }
}

/// Parses the bank's version and balances from one read of its sort keys.
pub fn parse_bank(values: &[Option<Vec<u8>>]) -> Option<(i64, Vec<i64>)> {
    let num = |v: &Option<Vec<u8>>| v.as_ref().and_then(|b| std::str::from_utf8(b).ok()?.parse::<i64>().ok());
    let version = num(values.first()?)?;
    let balances = values[1..].iter().map(num).collect::<Option<Vec<i64>>>()?;
    Some((version, balances))
}

/// An operation as the trace shows it: `set k1 v1`, `get k1`, `bank transfer 2 from a0 to a3`.
pub fn describe_op(op: &Op) -> String {
    let show = |v: &[u8]| String::from_utf8_lossy(v).to_string();
    let key = show(&op.key);
    match &op.kind {
        OpKind::Set { value } => format!("set {key} {}", show(value)),
        OpKind::Del => format!("del {key}"),
        OpKind::Get => format!("get {key}"),
        OpKind::Cas { expected, new } => {
            format!("check_and_set {key} {} -> {}", expected.as_deref().map_or("absent".into(), show), show(new))
        }
        OpKind::BankInit => "bank init".into(),
        OpKind::BankRead => "bank read".into(),
        OpKind::BankTransfer { version, from, to, amount, .. } => {
            format!("bank transfer {amount} from a{from} to a{to} at version {version}")
        }
    }
}

pub fn describe_outcome(outcome: &Outcome) -> String {
    let show = |v: &Option<Vec<u8>>| v.as_deref().map_or("none".into(), |v| String::from_utf8_lossy(v).to_string());
    match outcome {
        Outcome::Ok(Output::Done) => "ok".into(),
        Outcome::Ok(Output::Value(v)) => show(v),
        Outcome::Ok(Output::Applied(a)) => format!("applied={a}"),
        Outcome::Ok(Output::Bank(values)) => values.iter().map(show).collect::<Vec<_>>().join(" "),
        Outcome::Unknown => "unknown outcome".into(),
        Outcome::Failed => "failed".into(),
        Outcome::Pending => "pending".into(),
    }
}
