//! Two sites duplicating to each other (DESIGN.md §5, docs/duplication.md): two whole `Sim`s —
//! each with its own metas, store, replica servers, clients, faults and checkers — on one
//! virtual clock, and the link between them with its own latency, loss and cuts. Site B's clocks
//! are off site A's by up to 2 × `max_clock_offset`, so the apply's clock-ahead refusal is on
//! the path. The duplicators, the apply rule and the meta's duplication state run as production
//! code inside the sites; the world only carries messages across and judges the end state.
//!
//! ```text
//!   site-a (Sim: metas, store, servers, clients)      site-b (Sim, cluster id 2, skewed clocks)
//!        outbox ──▶ link (latency, loss, cuts) ──▶ receive          (and back)
//!   each step: the site (or the world) with the earliest event goes; per-site checkers run there
//!   both sites done (healed, final reads, converged) ─▶ draining ─▶ LWW oracle + digests equal
//! ```
//!
//! The workload: each site's clients keep their registers and bank under their own key prefix
//! (so each site's linearizability and bank checks see its own clients only) and both write a
//! few shared keys (sets and deletes). Every site's table is duplicated to the other; one site
//! or both add theirs with `--sync-existing` while clients write, the others before.

use crate::check::lww;
use crate::event::TraceLine;
use crate::faults::{FaultKind, FaultPlan, FaultSet};
use crate::hash::Fnv64;
use crate::msg::Envelope;
use crate::network::{Fate, Network};
use crate::rng::Rng;
use crate::sim::{CONVERGENCE_DEADLINE_US, Failure, Params, Phase, RECOVERY_DEADLINE_US, Sim, SiteParams, TABLE_ID};
use crate::stats::{Stats, path};
use std::collections::BTreeMap;
use tandem_core::Gpid;
use tandem_dup_core::verify::{Digests, digest_engine};

pub const SITE_NAMES: [&str; 2] = ["site-a", "site-b"];
/// Both sites must hold the same last writes this long after both are done.
pub const DRAIN_DEADLINE_US: u64 = 60_000_000;
const CHECK_DRAINED_US: u64 = 250_000;
/// The apply's `max_clock_offset_ms` default: the sites' clocks differ by up to twice that.
const MAX_CLOCK_OFFSET_US: i64 = 500_000;

#[derive(Debug)]
enum WorldEvent {
    /// A fault of the link between the sites.
    Fault,
    /// The link comes back.
    Uncut,
    /// Faults of the link stop.
    Heal,
    CheckDrained,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WorldPhase {
    Running,
    Draining { deadline_us: u64 },
    Done,
}

pub struct World {
    pub seed: u64,
    pub sites: [Sim; 2],
    link: Network,
    link_faults: bool,
    cut: bool,
    rng: Rng,
    now_us: u64,
    queue: BTreeMap<(u64, u64), WorldEvent>,
    seq: u64,
    phase: WorldPhase,
    fault_time_us: u64,
    pub failure: Option<Failure>,
    trace: Option<Vec<TraceLine>>,
    hash: Fnv64,
    cuts: u64,
}

/// A seed's two sites: their shapes and fault plans drawn as one-site runs draw them, from seeds
/// derived from the run's seed, then the two-site parts from the world's own generator.
fn site_rng(seed: u64, i: u64) -> Rng {
    Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(0x2_517e + i))
}

impl World {
    pub fn new(seed: u64, fault_time_us: u64, allowed: &FaultSet, trace: bool) -> World {
        let mut rng = site_rng(seed, 0);
        let mut rngs = [site_rng(seed, 1), site_rng(seed, 2)];
        let mut params = rngs.each_mut().map(|r| Params::draw(r, fault_time_us));
        let mut late = [FaultPlan::late_rng(seed ^ 1), FaultPlan::late_rng(seed ^ 2)];
        let plans = [0, 1].map(|i| FaultPlan::draw(allowed, &mut rngs[i], &mut late[i]));
        let skew = rng.range(0, 4 * MAX_CLOCK_OFFSET_US as u64) as i64 - 2 * MAX_CLOCK_OFFSET_US;
        let shared_keys = rng.range(1, 4) as usize;
        for i in 0..2 {
            let sync_existing = rng.chance(0.4);
            // Without --sync-existing the duplication comes first and clients wait for it.
            let dup_add_at_us = if sync_existing { rng.range(3_000_000, 15_000_000) } else { 2_500_000 };
            let peer_metas = params[1 - i].metas;
            params[i].site = Some(SiteParams {
                name: SITE_NAMES[i].into(),
                peer: SITE_NAMES[1 - i].into(),
                cluster_id: i as u8 + 1,
                peer_metas,
                key_prefix: ["a", "b"][i].into(),
                shared_keys,
                wall_offset_us: if i == 0 { 0 } else { skew },
                sync_existing,
                dup_add_at_us,
                pause_toggles: rng.chance(0.3),
                // The workload's values are at most ~20 bytes: 64..=256 refuses batches of a
                // handful of records upward.
                value_bytes_max: rng.chance(0.3).then(|| rng.range(64, 256) as usize),
                tombstone_retention_ms: rng.range(100, 3_000),
            });
        }
        let link_faults = allowed.contains(FaultKind::Partition) && rng.chance(0.75);
        let loss = if allowed.contains(FaultKind::Loss) && rng.chance(0.5) { rng.range(1, 50) as f64 / 1000.0 } else { 0.0 };
        let mut link = Network::new(loss, 0.0, rng.range(500, 20_000));
        link.latency_min_us = rng.range(1_000, 30_000);
        let ([ra, rb], [pa, pb], [fa, fb]) = (rngs, params, plans);
        let mut world = World {
            seed,
            sites: [Sim::with(seed, ra, pa, fa, trace), Sim::with(seed, rb, pb, fb, trace)],
            link,
            link_faults,
            cut: false,
            rng,
            now_us: 0,
            queue: BTreeMap::new(),
            seq: 0,
            phase: WorldPhase::Running,
            fault_time_us,
            failure: None,
            trace: trace.then(Vec::new),
            hash: Fnv64::default(),
            cuts: 0,
        };
        if world.link_faults {
            let first = world.rng.range(3_000_000, 12_000_000);
            world.schedule(first, WorldEvent::Fault);
        }
        world.schedule(fault_time_us.max(4_000_000), WorldEvent::Heal);
        if let Some(t) = world.trace.as_mut() {
            let s = world.sites[1].params.site.as_ref().map_or(0, |s| s.wall_offset_us);
            t.push(TraceLine { at_us: 0, text: format!("world: site-b's clocks are {s} µs off site-a's; link {:?}", world.link), message: false });
        }
        world
    }

    fn schedule(&mut self, at_us: u64, event: WorldEvent) {
        self.seq += 1;
        self.queue.insert((at_us.max(self.now_us), self.seq), event);
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(TraceLine { at_us: self.now_us, text: format!("world: {}", line()), message: false });
        }
    }

    pub fn run(mut self) -> (Stats, Option<Failure>, Option<Vec<String>>) {
        let end = self.fault_time_us + RECOVERY_DEADLINE_US * 2 + CONVERGENCE_DEADLINE_US + DRAIN_DEADLINE_US + 10_000_000;
        while self.failure.is_none() && self.phase != WorldPhase::Done {
            let world_next = self.queue.first_key_value().map(|(k, _)| k.0);
            let site_next = [self.sites[0].next_event_at(), self.sites[1].next_event_at()];
            // The earliest event goes; on a tie the world first, then site-a.
            let candidates = [(world_next, 0usize), (site_next[0], 1), (site_next[1], 2)];
            let Some((at, who)) = candidates.iter().filter_map(|(t, w)| t.map(|t| (t, *w))).min() else { break };
            if at > end {
                break;
            }
            self.now_us = at;
            self.hash.u64(at).u64(who as u64);
            match who {
                0 => {
                    let (_, event) = self.queue.pop_first().expect("first exists");
                    self.handle(event);
                }
                _ => self.step_site(who - 1),
            }
        }
        if self.failure.is_none() && self.phase != WorldPhase::Done {
            let phases: Vec<String> = self.sites.iter().map(|s| format!("{:?}", s.phase)).collect();
            self.fail(format!("the run did not finish by {}s (world {:?}, sites {phases:?})", end / 1_000_000, self.phase));
        }
        let mut stats = self.sites[0].stats.clone();
        let b = &self.sites[1].stats;
        stats.events += b.events;
        stats.ops_ok += b.ops_ok;
        stats.ops_unknown += b.ops_unknown;
        stats.ops_failed += b.ops_failed;
        stats.recovery_ms = stats.recovery_ms.max(b.recovery_ms);
        stats.lin_inconclusive += b.lin_inconclusive;
        stats.lin_online_gave_up += b.lin_online_gave_up;
        stats.lin_online_widened += b.lin_online_widened;
        for k in &b.enabled {
            if !stats.enabled.contains(k) {
                stats.enabled.push(k);
            }
        }
        for (k, n) in &b.faults {
            *stats.faults.entry(k).or_default() += n;
        }
        for (k, n) in &b.paths {
            *stats.paths.entry(k).or_default() += n;
        }
        if self.cuts > 0 {
            *stats.paths.entry(path::SITES_CUT).or_default() += self.cuts;
        }
        stats.sim_time_us = self.now_us;
        stats.trace_hash = self.hash.u64(self.sites[0].trace_hash()).u64(self.sites[1].trace_hash()).finish();
        let trace = self.trace.take().map(|mut world| {
            for (i, site) in self.sites.iter_mut().enumerate() {
                for mut line in site.trace.take().unwrap_or_default() {
                    line.text = format!("{}: {}", SITE_NAMES[i], line.text);
                    world.push(line);
                }
            }
            world.sort_by_key(|l| l.at_us);
            world.iter().map(TraceLine::to_string).collect()
        });
        (stats, self.failure, trace)
    }

    fn fail(&mut self, message: String) {
        if self.failure.is_none() {
            self.failure = Some(Failure { at_us: self.now_us, message });
        }
    }

    /// Site `i` handles its next event; what it sent to the other site crosses the link.
    fn step_site(&mut self, i: usize) {
        self.sites[i].step_one();
        if let Some(f) = self.sites[i].failure.take() {
            self.failure = Some(Failure { at_us: f.at_us, message: format!("{}: {}", SITE_NAMES[i], f.message) });
            return;
        }
        let outbox = std::mem::take(&mut self.sites[i].outbox);
        for env in outbox {
            self.cross(i, env);
        }
        if self.phase == WorldPhase::Running && self.sites.iter().all(|s| s.phase == Phase::Done) {
            self.phase = WorldPhase::Draining { deadline_us: self.now_us + DRAIN_DEADLINE_US };
            self.note(|| "both sites are done: draining the duplications".into());
            self.schedule(self.now_us, WorldEvent::CheckDrained);
        }
    }

    /// Carries `env` (as site `from` addressed it) over the link.
    fn cross(&mut self, from: usize, env: Envelope) {
        let kind = env.msg.kind();
        let names = (env.from.name(), env.to.name());
        let (fate, deliveries) = if self.cut { (Fate::Blocked, Vec::new()) } else { self.link.send(env, self.now_us, &mut self.rng) };
        if fate != Fate::Delivered
            && let Some(t) = self.trace.as_mut()
        {
            let text = format!("world: {} {} -> {} {kind}: {fate:?}", SITE_NAMES[from], names.0, names.1);
            t.push(TraceLine { at_us: self.now_us, text, message: true });
        }
        for (at, env) in deliveries {
            if env.to.is_peer() {
                // To the other site, which sees the sender as its peer.
                let (Some(f), Some(t)) = (env.from.across(), env.to.across()) else { continue };
                self.sites[1 - from].receive(at, Envelope { from: f, to: t, msg: env.msg });
            } else {
                // A lost request's failure, back to its sender.
                self.sites[from].receive(at, env);
            }
        }
    }

    fn handle(&mut self, event: WorldEvent) {
        match event {
            WorldEvent::Fault => {
                if self.phase != WorldPhase::Running || self.now_us >= self.fault_time_us {
                    return;
                }
                if !self.cut {
                    self.cut = true;
                    self.cuts += 1;
                    // Now and then longer than a batch's deadline and the duplicators' backoff.
                    let back = if self.rng.chance(0.2) { self.rng.range(12_000_000, 30_000_000) } else { self.rng.range(500_000, 8_000_000) };
                    self.note(|| format!("fault: the sites are cut apart for {} ms", back / 1_000));
                    self.schedule(self.now_us + back, WorldEvent::Uncut);
                }
                let next = self.rng.range(3_000_000, 15_000_000);
                self.schedule(self.now_us + next, WorldEvent::Fault);
            }
            WorldEvent::Uncut => {
                if self.cut {
                    self.cut = false;
                    self.note(|| "the sites are joined again".into());
                }
            }
            WorldEvent::Heal => {
                self.cut = false;
                self.link.loss = 0.0;
                self.note(|| "heal: the link's faults stop".into());
            }
            WorldEvent::CheckDrained => self.check_drained(),
        }
    }

    /// After both sites are done: every site must hold exactly the last writes of both sites'
    /// histories (the LWW oracle), and their digests must match; waits for that until the
    /// deadline.
    fn check_drained(&mut self) {
        let WorldPhase::Draining { deadline_us } = self.phase else { return };
        match self.judge() {
            Ok(()) => {
                self.note(|| "the sites hold the same last writes".into());
                self.phase = WorldPhase::Done;
            }
            Err(e) if self.now_us >= deadline_us => {
                let status = self.dup_status();
                self.fail(format!("the sites did not converge within {} s of both being done: {e}\n{status}", DRAIN_DEADLINE_US / 1_000_000));
            }
            Err(_) => self.schedule(self.now_us + CHECK_DRAINED_US, WorldEvent::CheckDrained),
        }
    }

    fn judge(&self) -> Result<(), String> {
        let expected = lww::merge(&self.sites[0].oracle, &self.sites[1].oracle)?;
        let mut digests = Vec::new();
        let buckets = self.sites.iter().map(|s| s.params.partitions).max().unwrap_or(1);
        for (i, site) in self.sites.iter().enumerate() {
            let mut held = lww::Records::new();
            let mut d = Digests::default();
            for p in 0..site.params.partitions {
                let engine = primary_engine(site, Gpid::new(TABLE_ID, p)).ok_or_else(|| format!("{}: partition {p} has no primary up", SITE_NAMES[i]))?;
                held.extend(engine.data());
                d.merge(&digest_engine(&engine, buckets, u64::MAX, u32::MAX).map_err(|e| e.to_string())?);
            }
            lww::check_site(SITE_NAMES[i], &expected, &held)?;
            digests.push(d);
        }
        if digests[0] != digests[1] {
            let differing = digests[0].buckets.iter().filter(|(b, v)| digests[1].buckets.get(b) != Some(v)).count();
            return Err(format!("the sites' verify digests differ in {differing} bucket(s) although their records match"));
        }
        Ok(())
    }

    /// Each site's duplicators, for a failure message.
    fn dup_status(&self) -> String {
        let mut out = Vec::new();
        for (i, site) in self.sites.iter().enumerate() {
            let snapshot = site.site.store.load();
            out.push(format!("{}: dups {:?}, persisted confirmed {:?}", SITE_NAMES[i], snapshot.dups, snapshot.dup_confirmed));
            if let Some(m) = site.leading_meta() {
                let state = site.site.metas[m].machine.state().map(|s| s.dups.values().map(|d| (d.id, d.status)).collect::<Vec<_>>());
                out.push(format!("  the leading meta {} holds {state:?}", crate::msg::Endpoint::Meta(m).name()));
            }
            for s in site.site.servers.iter().filter(|s| s.up) {
                for (gpid, slot) in &s.replicas {
                    let ctx = s.ctx(site.now_us);
                    let now = tandem_dup_core::Now { now_ms: ctx.now_ms, wall_us: ctx.wall_us };
                    for (dup, state) in slot.hosted.duplications().progress(now) {
                        out.push(format!("  {} {gpid} dup {dup}: {state:?}", s.me));
                    }
                }
            }
        }
        out.join("\n")
    }
}

/// The engine of `gpid`'s primary at `site`, as the store's configuration names it.
fn primary_engine(site: &Sim, gpid: Gpid) -> Option<crate::engine::SimEngine> {
    let primary = site.site.store.partition(gpid)?.primary.clone()?;
    let server = site.site.servers.iter().find(|s| s.up && s.me == primary)?;
    server.engine(gpid).cloned()
}

/// Runs a two-site seed.
pub fn run(seed: u64, fault_time_us: u64, allowed: &FaultSet, trace: bool) -> (Stats, Option<Failure>, Option<Vec<String>>) {
    World::new(seed, fault_time_us, allowed, trace).run()
}
