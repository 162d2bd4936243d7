//! Two sites, last writer wins. Every record any replica of either site applies to the workload
//! table — a local write, or one shipped from the other site — is observed; for each key the
//! oracle keeps the stored value with the largest timetag. After healing and draining, each
//! site must hold exactly the oracle's record for every key: the write with the largest
//! timetag of both sites' histories won everywhere, a delete (a tombstone) is never undone by an
//! older put (no deleted key comes back), and nothing appears that no replica ever applied. A
//! tombstone compaction dropped counts as held (reads see the same); a put under it that
//! came back does not.
//! Two different records of one key with the same timetag would make "last" ambiguous, so that
//! fails as soon as it is observed.

use std::collections::BTreeMap;
use tandem_core::key::decode_key;
use tandem_core::timetag::{timetag_cluster_id, timetag_is_delete, timetag_timestamp_us};
use tandem_core::value::decode_value;

/// Stored key → stored value (header included).
pub type Records = BTreeMap<Vec<u8>, Vec<u8>>;

fn timetag(stored: &[u8]) -> u64 {
    decode_value(stored).map_or(0, |(h, _)| h.timetag)
}

/// Observes one applied record.
pub fn observe(oracle: &mut Records, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
    match oracle.get(&key) {
        Some(old) if timetag(old) == timetag(&value) && *old != value => Err(format!(
            "key {}: two different records share timetag {}: {} and {}",
            describe_key(&key),
            timetag(&value),
            describe(old),
            describe(&value)
        )),
        Some(old) if timetag(old) >= timetag(&value) => Ok(()),
        _ => {
            oracle.insert(key, value);
            Ok(())
        }
    }
}

/// Both sites' observations: for each key the record with the largest timetag.
pub fn merge(a: &Records, b: &Records) -> Result<Records, String> {
    let mut out = a.clone();
    for (k, v) in b {
        observe(&mut out, k.clone(), v.clone())?;
    }
    Ok(out)
}

pub fn describe_key(key: &[u8]) -> String {
    match decode_key(key) {
        Ok((h, s)) if s.is_empty() => format!("{:?}", String::from_utf8_lossy(h)),
        Ok((h, s)) => format!("{:?}/{:?}", String::from_utf8_lossy(h), String::from_utf8_lossy(s)),
        Err(_) => format!("{key:?}"),
    }
}

/// A stored value as the failure message shows it.
pub fn describe(stored: &[u8]) -> String {
    match decode_value(stored) {
        Ok((h, user)) => {
            let t = h.timetag;
            let at = format!("ts {} cluster {}", timetag_timestamp_us(t), timetag_cluster_id(t));
            if timetag_is_delete(t) { format!("tombstone ({at})") } else { format!("{:?} ({at})", String::from_utf8_lossy(user)) }
        }
        Err(e) => format!("undecodable value: {e}"),
    }
}

/// Checks what `site` holds against the oracle's records. Lists up to a few differing keys.
pub fn check_site(site: &str, expected: &Records, held: &Records) -> Result<(), String> {
    let mut problems = Vec::new();
    let keys: std::collections::BTreeSet<&Vec<u8>> = expected.keys().chain(held.keys()).collect();
    for key in keys {
        let problem = match (expected.get(key), held.get(key)) {
            (Some(e), Some(h)) if e == h => continue,
            // Compacted away: reads see the same.
            (Some(e), None) if timetag_is_delete(timetag(e)) => continue,
            (Some(e), Some(h)) if timetag_is_delete(timetag(e)) && !timetag_is_delete(timetag(h)) => {
                format!("deleted key came back: {} holds {}, but the last write was {}", describe_key(key), describe(h), describe(e))
            }
            (Some(e), Some(h)) => format!("{} holds {}, but the last write was {}", describe_key(key), describe(h), describe(e)),
            (Some(e), None) => format!("{} is missing; the last write was {}", describe_key(key), describe(e)),
            (None, Some(h)) => format!("{} holds {}, which no replica of either site applied", describe_key(key), describe(h)),
            (None, None) => continue,
        };
        problems.push(problem);
    }
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(5);
    Err(format!("{site}: {n} key(s) differ from the last writes of both sites: {}", problems.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::key::encode_key;
    use tandem_core::timetag::make_timetag;
    use tandem_core::value::{encode_tombstone, encode_value};

    fn put(ts: u64, cluster: u8, v: &str) -> Vec<u8> {
        encode_value(0, make_timetag(ts, cluster, false), v.as_bytes())
    }

    #[test]
    fn the_largest_timetag_wins_and_a_delete_stays_deleted() {
        let k = encode_key(b"s1", b"");
        let mut a = Records::new();
        observe(&mut a, k.clone(), put(10, 1, "old")).unwrap();
        let tomb = encode_tombstone(make_timetag(20, 2, true));
        let mut b = Records::new();
        observe(&mut b, k.clone(), tomb.clone()).unwrap();
        observe(&mut b, k.clone(), put(10, 1, "old")).unwrap();
        let expected = merge(&a, &b).unwrap();
        assert_eq!(expected[&k], tomb);
        assert!(check_site("site-a", &expected, &Records::from([(k.clone(), tomb.clone())])).is_ok());
        let err = check_site("site-a", &expected, &Records::from([(k.clone(), put(10, 1, "old"))])).unwrap_err();
        assert!(err.contains("deleted key came back"), "{err}");
        // A tombstone compaction dropped reads as held; a put that never arrived does not.
        assert!(check_site("site-b", &expected, &Records::new()).is_ok());
        let only_a = merge(&a, &Records::new()).unwrap();
        assert!(check_site("site-b", &only_a, &Records::new()).unwrap_err().contains("is missing"));
    }

    #[test]
    fn two_records_with_one_timetag_fail() {
        let k = encode_key(b"s1", b"");
        let mut a = Records::new();
        observe(&mut a, k.clone(), put(10, 1, "x")).unwrap();
        observe(&mut a, k.clone(), put(10, 1, "x")).unwrap();
        assert!(observe(&mut a, k, put(10, 1, "y")).unwrap_err().contains("share timetag"));
    }
}
