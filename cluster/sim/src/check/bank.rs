//! The bank's sum stays constant: every transfer moves money between accounts of one hash key in
//! one check-and-mutate, so any read of all accounts (one snapshot) and the final state of every
//! replica must sum to the initial total. The version key also must never be present without all
//! the accounts (the initialization is atomic).

use crate::history::{BANK_ACCOUNTS, BANK_INITIAL_BALANCE, BANK_VERSION, bank_account};
use std::collections::BTreeMap;
use tandem_core::key::encode_key;
use tandem_core::value::decode_value;

pub const BANK_TOTAL: i64 = BANK_ACCOUNTS as i64 * BANK_INITIAL_BALANCE;

/// One read of the version and every account, in that order.
pub fn check_read(values: &[Option<Vec<u8>>]) -> Result<(), String> {
    if values.first().is_none_or(|v| v.is_none()) {
        if values.iter().any(Option::is_some) {
            return Err(format!("bank read shows accounts without a version: {values:?}"));
        }
        return Ok(());
    }
    let Some((version, balances)) = crate::history::parse_bank(values) else {
        return Err(format!("bank read is missing accounts or holds garbage: {values:?}"));
    };
    let sum: i64 = balances.iter().sum();
    if sum != BANK_TOTAL {
        return Err(format!("bank read at version {version} sums to {sum}, not {BANK_TOTAL}: {balances:?}"));
    }
    Ok(())
}

/// The bank under `hash_key` as stored in a replica's engine (stored keys and values, with
/// headers; a tombstone is absence).
pub fn check_engine(data: &BTreeMap<Vec<u8>, Vec<u8>>, hash_key: &[u8]) -> Result<(), String> {
    let user = |sort_key: &[u8]| -> Result<Option<Vec<u8>>, String> {
        match data.get(&encode_key(hash_key, sort_key)) {
            None => Ok(None),
            Some(stored) => decode_value(stored).map(|(h, v)| (!h.is_tombstone()).then(|| v.to_vec())).map_err(|e| e.to_string()),
        }
    };
    let values =
        std::iter::once(user(BANK_VERSION)).chain((0..BANK_ACCOUNTS).map(|i| user(&bank_account(i)))).collect::<Result<Vec<_>, _>>()?;
    check_read(&values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn sums_and_atomic_initialization() {
        assert!(check_read(&[None, None, None, None, None]).is_ok());
        assert!(check_read(&[b("3"), b("90"), b("110"), b("100"), b("100")]).is_ok());
        assert!(check_read(&[b("3"), b("90"), b("100"), b("100"), b("100")]).unwrap_err().contains("sums to 390"));
        assert!(check_read(&[None, b("100"), None, None, None]).unwrap_err().contains("without a version"));
        assert!(check_read(&[b("0"), b("100"), None, b("100"), b("100")]).unwrap_err().contains("missing"));
    }
}
