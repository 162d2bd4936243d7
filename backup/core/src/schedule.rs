//! When scheduled backups start, given a start time (`tandem policy set T --backup 6h
//! --backup-at 02:30 [ZONE]`): at the start time on every local day of the zone, then every
//! interval after it within that day (6h at 02:30: 02:30, 08:30, 14:30, 20:30); an interval of
//! whole days starts at the start time on every n-th local day, counted from 1970-01-01.
//!
//! Pegasus could only name the hour (apache/incubator-pegasus#483). A start to the minute in a
//! named zone is what an operator with a nightly quiet window asks for. The zone rules come from
//! the IANA database compiled into the binary (jiff's bundle), so every meta server and the
//! simulator agree whatever the host has installed, and the decision stays IO-free.
//!
//! Daylight saving: a start time that a spring-forward skips runs at the first instant after
//! the gap; one a fall-back repeats runs at its first occurrence (RFC 5545's rules, jiff's
//! "compatible" disambiguation).

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

const DAY_MS: u64 = 24 * 3_600_000;
pub const ZONE_BYTES_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupAt {
    /// Minutes after local midnight, 0..1440.
    pub minute: u32,
    /// "UTC" or an IANA zone name ("Europe/Paris").
    pub zone: String,
}

impl std::fmt::Display for BackupAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02} {}", self.minute / 60, self.minute % 60, self.zone)
    }
}

impl BackupAt {
    /// `HH:MM` (UTC) or `HH:MM ZONE`, as the flag takes it.
    pub fn parse(s: &str) -> Result<BackupAt, String> {
        let s = s.trim();
        let (time, zone) = match s.split_once(char::is_whitespace) {
            Some((t, z)) => (t, z.trim()),
            None => (s, "UTC"),
        };
        let bad = || format!("--backup-at {s:?}: give the start time as HH:MM (24-hour, UTC) or 'HH:MM ZONE' with an IANA zone such as Europe/Paris");
        let (h, m) = time.split_once(':').ok_or_else(bad)?;
        let two_digits = |x: &str| (x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit())).then(|| x.parse::<u32>().ok()).flatten();
        let (h, m) = (two_digits(h).ok_or_else(bad)?, two_digits(m).ok_or_else(bad)?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        let at = BackupAt { minute: h * 60 + m, zone: zone.to_string() };
        at.time_zone()?;
        Ok(at)
    }

    fn time_zone(&self) -> Result<TimeZone, String> {
        if self.zone.len() > ZONE_BYTES_MAX {
            return Err(format!("time zone name is longer than {ZONE_BYTES_MAX} bytes"));
        }
        if self.zone.eq_ignore_ascii_case("UTC") {
            return Ok(TimeZone::UTC);
        }
        jiff::tz::db().get(&self.zone).map_err(|_| format!("unknown time zone {:?}: use UTC or an IANA name such as Europe/Paris or America/New_York", self.zone))
    }

    /// The start time suits interval `every_ms`: at most a day, or whole days.
    pub fn validate(&self, every_ms: u64) -> Result<(), String> {
        if self.minute >= 1440 {
            return Err(format!("start minute {} is not a time of day", self.minute));
        }
        self.time_zone()?;
        if every_ms > DAY_MS && every_ms % DAY_MS != 0 {
            return Err(format!(
                "with --backup-at, an interval longer than a day must be whole days (such as 2d or 7d), not {}",
                humantime::format_duration(std::time::Duration::from_millis(every_ms))
            ));
        }
        Ok(())
    }

    /// The latest scheduled start at or before `now_ms` (ms since the Unix epoch).
    pub fn latest_slot_ms(&self, every_ms: u64, now_ms: u64) -> Option<u64> {
        let tz = self.time_zone().ok()?;
        let today = Timestamp::from_millisecond(i64::try_from(now_ms).ok()?).ok()?.to_zoned(tz.clone()).date();
        let mut day = today;
        // The slots of a day can run past midnight into the next one: look back one day more
        // than the interval spans.
        for _ in 0..=every_ms.div_ceil(DAY_MS).max(1) {
            if let Some(slot) = self.day_slots(&tz, day, every_ms).into_iter().rev().find(|s| *s <= now_ms) {
                return Some(slot);
            }
            day = day.yesterday().ok()?;
        }
        None
    }

    /// The first scheduled start after `now_ms`.
    pub fn next_slot_ms(&self, every_ms: u64, now_ms: u64) -> Option<u64> {
        let tz = self.time_zone().ok()?;
        let mut day = Timestamp::from_millisecond(i64::try_from(now_ms).ok()?).ok()?.to_zoned(tz.clone()).date();
        for _ in 0..=every_ms.div_ceil(DAY_MS).max(1) {
            if let Some(slot) = self.day_slots(&tz, day, every_ms).into_iter().find(|s| *s > now_ms) {
                return Some(slot);
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// The starts of local day `day`: the start time, then every `every_ms` until the next
    /// local day's start time (none on a day an interval of several days skips).
    fn day_slots(&self, tz: &TimeZone, day: Date, every_ms: u64) -> Vec<u64> {
        let start = |d: Date| -> Option<u64> {
            let time = Time::new((self.minute / 60) as i8, (self.minute % 60) as i8, 0, 0).ok()?;
            let ms = d.to_datetime(time).to_zoned(tz.clone()).ok()?.timestamp().as_millisecond();
            u64::try_from(ms).ok()
        };
        let Some(first) = start(day) else { return vec![] };
        if every_ms >= DAY_MS {
            let n = (every_ms / DAY_MS) as i64;
            return if day_number(day).is_some_and(|d| d.rem_euclid(n) == 0) { vec![first] } else { vec![] };
        }
        let end = day.tomorrow().ok().and_then(start).unwrap_or(first + DAY_MS);
        let every = every_ms.max(1);
        (0..).map(|k| first + k * every).take_while(|s| *s < end).collect()
    }
}

/// `2026-12-07 02:30 UTC`, for status lines.
pub fn format_utc_ms(ms: u64) -> String {
    match i64::try_from(ms).ok().and_then(|ms| Timestamp::from_millisecond(ms).ok()) {
        Some(t) => t.to_zoned(TimeZone::UTC).strftime("%Y-%m-%d %H:%M UTC").to_string(),
        None => format!("{ms} ms"),
    }
}

/// Days from 1970-01-01 to `d`.
fn day_number(d: Date) -> Option<i64> {
    let midnight = d.to_datetime(Time::midnight()).to_zoned(TimeZone::UTC).ok()?;
    Some(midnight.timestamp().as_second().div_euclid(86_400))
}


#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    /// ms since the epoch of a UTC date and time.
    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> u64 {
        Date::new(y, mo, d).unwrap().to_datetime(Time::new(h, mi, 0, 0).unwrap()).to_zoned(TimeZone::UTC).unwrap().timestamp().as_millisecond() as u64
    }

    #[test]
    fn parses_the_flag_and_names_the_fix() {
        assert_eq!(BackupAt::parse("02:30").unwrap(), BackupAt { minute: 150, zone: "UTC".into() });
        assert_eq!(BackupAt::parse(" 23:05  Europe/Paris ").unwrap().to_string(), "23:05 Europe/Paris");
        for bad in ["2:30", "24:00", "02:60", "0230", "02:30:00", "xx:yy", ""] {
            assert!(BackupAt::parse(bad).unwrap_err().contains("HH:MM"), "{bad}");
        }
        assert!(BackupAt::parse("02:30 Mars/Olympus").unwrap_err().contains("unknown time zone"));
    }

    #[test]
    fn slots_repeat_within_each_local_day_from_the_start_time() {
        let at = BackupAt::parse("02:30").unwrap();
        // 6h: 02:30, 08:30, 14:30, 20:30.
        assert_eq!(at.latest_slot_ms(6 * H, utc(2026, 12, 7, 10, 0)), Some(utc(2026, 12, 7, 8, 30)));
        assert_eq!(at.latest_slot_ms(6 * H, utc(2026, 12, 7, 8, 30)), Some(utc(2026, 12, 7, 8, 30)));
        assert_eq!(at.latest_slot_ms(6 * H, utc(2026, 12, 7, 1, 0)), Some(utc(2026, 12, 6, 20, 30)), "before the day's first slot: yesterday's last");
        assert_eq!(at.next_slot_ms(6 * H, utc(2026, 12, 7, 21, 0)), Some(utc(2026, 12, 8, 2, 30)));
        // 5h does not divide a day: 02:30, 07:30, 12:30, 17:30, 22:30, then 02:30 again.
        assert_eq!(at.next_slot_ms(5 * H, utc(2026, 12, 7, 23, 0)), Some(utc(2026, 12, 8, 2, 30)));
        // Daily.
        assert_eq!(at.latest_slot_ms(24 * H, utc(2026, 12, 7, 2, 29)), Some(utc(2026, 12, 6, 2, 30)));
    }

    #[test]
    fn intervals_of_whole_days_count_days_from_the_epoch() {
        let at = BackupAt::parse("00:15").unwrap();
        let week = 7 * 24 * H;
        let latest = at.latest_slot_ms(week, utc(2026, 12, 7, 12, 0)).unwrap();
        assert_eq!((latest - 15 * 60_000) % week, 0, "on a day number divisible by 7");
        assert!(utc(2026, 12, 7, 12, 0) - latest < week);
        assert_eq!(at.next_slot_ms(week, latest), Some(latest + week));
        assert!(at.validate(36 * H).unwrap_err().contains("whole days"));
        at.validate(2 * 24 * H).unwrap();
        at.validate(90 * 60_000).unwrap();
    }

    #[test]
    fn a_named_zone_follows_its_offset_and_daylight_saving() {
        let paris = BackupAt::parse("02:30 Europe/Paris").unwrap();
        // Winter: UTC+1.
        assert_eq!(paris.latest_slot_ms(24 * H, utc(2026, 12, 7, 12, 0)), Some(utc(2026, 12, 7, 1, 30)));
        // Summer: UTC+2.
        assert_eq!(paris.latest_slot_ms(24 * H, utc(2026, 7, 7, 12, 0)), Some(utc(2026, 7, 7, 0, 30)));
        // 2026-03-29: 02:00 to 03:00 does not exist in Paris; 02:30 runs at 03:30 CEST = 01:30 UTC.
        assert_eq!(paris.latest_slot_ms(24 * H, utc(2026, 3, 29, 12, 0)), Some(utc(2026, 3, 29, 1, 30)));
        // 2026-10-25: 02:30 happens twice; the first (CEST, 00:30 UTC) runs.
        assert_eq!(paris.latest_slot_ms(24 * H, utc(2026, 10, 25, 12, 0)), Some(utc(2026, 10, 25, 0, 30)));
    }
}
