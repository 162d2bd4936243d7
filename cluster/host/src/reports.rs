//! What a beacon says of the server's replicas (docs/scale.md, "Beacons"): every report the
//! first time and whenever the meta asks, otherwise only those that changed since the last
//! answered beacon and the replicas gone since, with the digest of all of them. A server of a
//! thousand idle replicas then beacons a few bytes. The runtime gathers the reports (they live
//! in the replica tasks); what to send is decided here, and the simulator runs it too.

use std::collections::BTreeMap;
use tandem_core::Gpid;

/// One beacon's reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportsDelta<R> {
    /// `changed` is every report (the meta replaces what it had).
    pub full: bool,
    pub changed: Vec<(Gpid, R)>,
    pub gone: Vec<Gpid>,
}

/// The reports the meta holds of this server, as far as this server knows.
#[derive(Debug)]
pub struct BeaconReports<R> {
    /// What the last answered beacon left the meta with (None: nothing known, send every one).
    acked: Option<BTreeMap<Gpid, R>>,
    /// What the meta holds once the beacon in flight is answered.
    sent: Option<BTreeMap<Gpid, R>>,
}

impl<R> Default for BeaconReports<R> {
    fn default() -> Self {
        BeaconReports { acked: None, sent: None }
    }
}

impl<R: Clone + PartialEq> BeaconReports<R> {
    /// What the next beacon carries, given every report now.
    pub fn delta(&mut self, current: BTreeMap<Gpid, R>) -> ReportsDelta<R> {
        let delta = match &self.acked {
            None => ReportsDelta { full: true, changed: current.iter().map(|(g, r)| (*g, r.clone())).collect(), gone: vec![] },
            Some(acked) => ReportsDelta {
                full: false,
                changed: current.iter().filter(|(g, r)| acked.get(g) != Some(r)).map(|(g, r)| (*g, r.clone())).collect(),
                gone: acked.keys().filter(|g| !current.contains_key(g)).copied().collect(),
            },
        };
        self.sent = Some(current);
        delta
    }

    /// The beacon was answered; `resend`: the meta's view differed from the digest, so the next
    /// beacon sends every report.
    pub fn answered(&mut self, resend: bool) {
        let sent = self.sent.take();
        self.acked = if resend { None } else { sent.or(self.acked.take()) };
    }

    /// The beacon failed: the meta may or may not have taken it. The next is computed against
    /// what was acked before, a superset of what changed since, which the meta takes either way.
    pub fn failed(&mut self) {
        self.sent = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: u32) -> Gpid {
        Gpid::new(1, p)
    }

    #[test]
    fn only_what_changed_goes_once_the_meta_has_the_rest() {
        let mut r: BeaconReports<u64> = BeaconReports::default();
        let now = |pairs: &[(u32, u64)]| pairs.iter().map(|(p, v)| (g(*p), *v)).collect::<BTreeMap<_, _>>();
        let first = r.delta(now(&[(0, 1), (1, 1), (2, 1)]));
        assert!(first.full && first.changed.len() == 3);
        r.answered(false);
        // Idle: nothing.
        assert_eq!(r.delta(now(&[(0, 1), (1, 1), (2, 1)])), ReportsDelta { full: false, changed: vec![], gone: vec![] });
        r.answered(false);
        // One changed, one gone, one new.
        let d = r.delta(now(&[(0, 2), (1, 1), (3, 1)]));
        assert_eq!(d, ReportsDelta { full: false, changed: vec![(g(0), 2), (g(3), 1)], gone: vec![g(2)] });
        // That beacon failed: the next is computed against the last acked state again.
        r.failed();
        let d = r.delta(now(&[(0, 2), (1, 1), (3, 1)]));
        assert_eq!(d, ReportsDelta { full: false, changed: vec![(g(0), 2), (g(3), 1)], gone: vec![g(2)] });
        r.answered(false);
        assert_eq!(r.delta(now(&[(0, 2), (1, 1), (3, 1)])).changed, vec![]);
        // The meta's view differed (a new leader, a purged table): every report next time.
        r.answered(true);
        let d = r.delta(now(&[(0, 2), (1, 1), (3, 1)]));
        assert!(d.full && d.changed.len() == 3 && d.gone.is_empty());
    }
}
