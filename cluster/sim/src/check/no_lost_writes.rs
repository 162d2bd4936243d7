//! No acknowledged write is lost. After healing, the final read of each register key must show
//! the effect of its last acknowledged write whenever that write is certainly the last one: every
//! other write of the key that may have taken effect (acknowledged or unknown) returned before it
//! was invoked. For the bank, the final version counts the applied transfers: at least every
//! acknowledged one, at most those plus the unknown ones.

use crate::history::{History, Op, OpKind, Outcome, Output};

fn may_have_taken_effect(op: &Op) -> bool {
    match (&op.kind, &op.outcome) {
        (OpKind::Get | OpKind::BankRead, _) => false,
        (OpKind::Cas { .. } | OpKind::BankTransfer { .. } | OpKind::BankInit, Outcome::Ok(Output::Applied(false))) => false,
        (_, Outcome::Ok(_) | Outcome::Unknown | Outcome::Pending) => true,
        (_, Outcome::Failed) => false,
    }
}

fn effect(op: &Op) -> Option<Vec<u8>> {
    match &op.kind {
        OpKind::Set { value } => Some(value.clone()),
        OpKind::Cas { new, .. } => Some(new.clone()),
        _ => None,
    }
}

/// `final_reads`: the value each register key showed in its final read.
pub fn check_registers(history: &History, final_reads: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), String> {
    for (key, seen) in final_reads {
        let writes: Vec<&Op> = history.ops.iter().filter(|o| o.key == *key && may_have_taken_effect(o)).collect();
        for w in writes.iter().filter(|w| matches!(w.outcome, Outcome::Ok(_))) {
            let last =
                writes.iter().all(|x| std::ptr::eq(*x, *w) || x.return_us.is_some_and(|r| r < w.call_us) && x.outcome != Outcome::Unknown);
            if last && effect(w) != *seen {
                return Err(format!(
                    "key {:?}: acknowledged write {:?} (invoked at {}µs) was the last write, but the final read shows {:?}",
                    String::from_utf8_lossy(key),
                    w.kind,
                    w.call_us,
                    seen.as_ref().map(|v| String::from_utf8_lossy(v).to_string())
                ));
            }
        }
    }
    Ok(())
}

/// `final_version`: the bank version of the final read (None: never initialized).
pub fn check_bank(history: &History, final_version: Option<i64>) -> Result<(), String> {
    let transfers = history.ops.iter().filter(|o| matches!(o.kind, OpKind::BankTransfer { .. }));
    let acked = transfers.clone().filter(|o| o.outcome == Outcome::Ok(Output::Applied(true))).count() as i64;
    let unknown = transfers.filter(|o| matches!(o.outcome, Outcome::Unknown | Outcome::Pending)).count() as i64;
    let version = final_version.unwrap_or(0);
    if final_version.is_none() && acked > 0 {
        return Err(format!("{acked} transfers were acknowledged, but the bank is gone"));
    }
    if version < acked || version > acked + unknown {
        return Err(format!("final bank version {version}, but {acked} transfers were acknowledged and {unknown} have unknown outcomes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, call: u64, ret: u64, outcome: Outcome) -> Op {
        Op { client: 0, key: b"k".to_vec(), kind, call_us: call, return_us: Some(ret), outcome }
    }

    fn set(v: &str) -> OpKind {
        OpKind::Set { value: v.as_bytes().to_vec() }
    }

    #[test]
    fn the_last_acknowledged_write_must_survive() {
        let h = History::from_ops(vec![op(set("a"), 0, 1, Outcome::Ok(Output::Done)), op(set("b"), 2, 3, Outcome::Ok(Output::Done))]);
        assert!(check_registers(&h, &[(b"k".to_vec(), Some(b"b".to_vec()))]).is_ok());
        assert!(check_registers(&h, &[(b"k".to_vec(), Some(b"a".to_vec()))]).unwrap_err().contains("was the last write"));
        assert!(check_registers(&h, &[(b"k".to_vec(), None)]).is_err());
    }

    #[test]
    fn a_concurrent_or_unknown_write_may_win() {
        let h = History::from_ops(vec![op(set("a"), 0, 5, Outcome::Ok(Output::Done)), op(set("b"), 1, 2, Outcome::Ok(Output::Done))]);
        assert!(check_registers(&h, &[(b"k".to_vec(), Some(b"a".to_vec()))]).is_ok());
        assert!(check_registers(&h, &[(b"k".to_vec(), Some(b"b".to_vec()))]).is_ok());
        let h = History::from_ops(vec![op(set("a"), 0, 1, Outcome::Unknown), op(set("b"), 2, 3, Outcome::Ok(Output::Done))]);
        assert!(check_registers(&h, &[(b"k".to_vec(), Some(b"a".to_vec()))]).is_ok());
    }

    #[test]
    fn bank_version_counts_applied_transfers() {
        let t = || OpKind::BankTransfer { version: 0, from: 0, to: 1, amount: 1, balances: vec![100; 4] };
        let h = History::from_ops(vec![op(t(), 0, 1, Outcome::Ok(Output::Applied(true))), op(t(), 2, 3, Outcome::Unknown)]);
        assert!(check_bank(&h, Some(1)).is_ok());
        assert!(check_bank(&h, Some(2)).is_ok());
        assert!(check_bank(&h, Some(0)).unwrap_err().contains("1 transfers were acknowledged"));
        assert!(check_bank(&h, Some(3)).is_err());
    }
}
