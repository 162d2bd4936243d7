//! Command-line definitions (clap). Execution lives in the modules named after each area.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "tandem", version, about = "Tandem: a dual-site distributed key-value store", propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Meta server address(es), comma-separated.
    #[arg(long, env = "TANDEM_META", default_value = "127.0.0.1:34601", global = true)]
    pub meta: String,
    /// Print JSON instead of a human table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a request after this long (retries included).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: std::time::Duration,
}

/// The client flags of `tandem site`, where `--meta` names the other site's meta servers: this
/// site's come from `--local-meta` or `TANDEM_META`.
#[derive(Args, Debug, Clone)]
pub struct SiteClientArgs {
    /// This site's meta server address(es), comma-separated.
    #[arg(long, env = "TANDEM_META", default_value = "127.0.0.1:34601", global = true)]
    pub local_meta: String,
    /// Print JSON instead of a human table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a request after this long (retries included).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: std::time::Duration,
}

impl SiteClientArgs {
    pub fn client_args(&self) -> ClientArgs {
        ClientArgs { meta: self.local_meta.clone(), json: self.json, timeout: self.timeout }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start two local sites (each a meta server and 3 replica servers, table demo duplicated
    /// both ways; --sites 1 for one) and serve until Ctrl-C.
    Playground(PlaygroundArgs),
    /// Run or configure a meta server.
    Meta {
        #[command(subcommand)]
        command: MetaCommand,
    },
    /// Run a replica server.
    Replica {
        #[command(subcommand)]
        command: ReplicaCommand,
    },
    /// Server configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Create, list, show, drop and recall tables.
    Table {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: TableCommand,
    },
    /// Per-table redundancy policy: replicas, duplication, backups.
    Policy {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The other sites tables are duplicated to: add, list, remove.
    Site {
        #[command(flatten)]
        client: SiteClientArgs,
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Duplication of tables to other sites: add, list, pause, resume, remove.
    Dup {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: DupCommand,
    },
    /// Backups of tables to S3-compatible or file targets: now, list, show.
    Backup {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Create a table from a complete backup (`tandem restore ID --table NEW`), or list
    /// restores (`tandem restore list`).
    #[command(args_conflicts_with_subcommands = true)]
    Restore {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: Option<RestoreCommand>,
        /// The backup to restore (`tandem backup list` shows them).
        id: Option<u64>,
        /// The new table's name.
        #[arg(long, value_name = "NEW_NAME")]
        table: Option<String>,
        /// Recreate the backed-up table under its own name (which must be free: drop it first).
        #[arg(long, conflicts_with = "table")]
        as_original: bool,
        /// Follow it until every partition opened the restored data (exit 1 if it fails).
        #[arg(long)]
        wait: bool,
        /// Who restores, recorded with it (default: TANDEM_USER, then $USER).
        #[arg(long = "as", env = "TANDEM_USER")]
        who: Option<String>,
    },
    /// Replica servers and their liveness.
    Nodes {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cluster health; exits 3 when any partition is unhealthy.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a value.
    Set {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        sort_key: String,
        /// The value; `-` reads it from standard input.
        value: String,
        /// Time to live in seconds (0 = forever).
        #[arg(long, default_value_t = 0)]
        ttl: u32,
    },
    /// Read a value (exit 4 when absent).
    Get {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        sort_key: String,
    },
    /// Delete a value.
    Del {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        sort_key: String,
    },
    /// Whether a value exists (exit 4 when absent).
    Exist {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        sort_key: String,
    },
    /// Remaining time to live in seconds (-1 = forever; exit 4 when absent).
    Ttl {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        sort_key: String,
    },
    /// Add to an integer value (absent = 0).
    Incr {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        sort_key: String,
        #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
        by: i64,
        /// 0 keeps the TTL, > 0 sets it, -1 clears it.
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        ttl: i64,
    },
    /// Set a value if another value of the same hash key passes a check (exit 5 when not).
    CheckAndSet {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        #[arg(long)]
        check_sort_key: String,
        /// no_check, value_not_exist, value_not_exist_or_empty, value_exist, value_not_empty,
        /// match_anywhere, match_prefix, match_postfix, bytes_less, bytes_less_or_equal,
        /// bytes_equal, bytes_greater_or_equal, bytes_greater, int_less, int_less_or_equal,
        /// int_equal, int_greater_or_equal, int_greater
        #[arg(long)]
        check_type: String,
        #[arg(long, default_value = "")]
        operand: String,
        #[arg(long)]
        set_sort_key: String,
        #[arg(long)]
        value: String,
        #[arg(long, default_value_t = 0)]
        ttl: u32,
    },
    /// Write several sort keys of one hash key atomically: SORT_KEY=VALUE ...
    MultiSet {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        #[arg(required = true)]
        pairs: Vec<String>,
        #[arg(long, default_value_t = 0)]
        ttl: u32,
    },
    /// Read several sort keys of one hash key (all of them when none is given).
    MultiGet {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        sort_keys: Vec<String>,
    },
    /// Delete several sort keys of one hash key atomically.
    MultiDel {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        #[arg(required = true)]
        sort_keys: Vec<String>,
    },
    /// Count the sort keys of a hash key.
    SortkeyCount {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
    },
    /// Sort-key range of one hash key.
    Scan {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        hash_key: String,
        #[arg(long, default_value = "")]
        start: String,
        /// Exclusive unless --stop-inclusive; empty = to the end.
        #[arg(long, default_value = "")]
        stop: String,
        #[arg(long)]
        stop_inclusive: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Every record of a table, partition by partition; resumable with --token.
    FullScan {
        #[command(flatten)]
        client: ClientArgs,
        table: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        token: Option<String>,
    },
    /// YCSB-style benchmark against a Tandem table, and against etcd and Redis for ratios.
    Bench(crate::bench::BenchArgs),
    /// Deterministic simulation of a site (production protocol code, simulated IO and faults).
    Sim(tandem_sim::SimArgs),
}

#[derive(Args, Debug)]
pub struct PlaygroundArgs {
    /// Where the meta store and the replica data live.
    #[arg(long, default_value = "./tandem-data")]
    pub data_dir: PathBuf,
    /// Delete the data directory first.
    #[arg(long)]
    pub fresh: bool,
    /// The first site's meta listens on this port and its replica servers on base+200,
    /// base+201, …; the second site's meta on base+1, its replica servers on base+300, ….
    #[arg(long, default_value_t = 34601)]
    pub base_port: u16,
    /// Replica servers per site.
    #[arg(long, default_value_t = 3)]
    pub replicas: u16,
    /// 2: site-a (cluster id 1) and site-b (cluster id 2), table demo duplicated both ways;
    /// 1: one site.
    #[arg(long, default_value_t = 2)]
    pub sites: u8,
    /// Start only this site of the two (site-a or site-b), on its usual ports, duplicating demo
    /// to the other, which another `tandem playground --site` process runs (ops/bench-dup
    /// --split puts each on its own core).
    #[arg(long, conflicts_with = "sites")]
    pub site: Option<String>,
    /// Exit after the cluster is healthy instead of serving (for scripts and tests).
    #[arg(long, hide = true)]
    pub exit_when_ready: bool,
}

/// Flags shared by the server commands.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// TOML configuration file (see `tandem config default`).
    #[arg(long, env = "TANDEM_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub listen: Option<String>,
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Print the configuration this server would run with (defaults ← file ← TANDEM_* ← flags)
    /// as TOML, and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Subcommand, Debug)]
pub enum MetaCommand {
    /// Run a meta server.
    Start {
        #[command(flatten)]
        server: ServerArgs,
        /// sqlite://PATH or postgres://USER@HOST/DATABASE
        #[arg(long)]
        store: Option<String>,
        /// Used for the default SQLite store (DIR/meta.db) when --store is not given.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, value_parser = humantime::parse_duration)]
        grace_period: Option<std::time::Duration>,
        /// Address other meta servers send clients to when this one leads (default: --listen).
        #[arg(long)]
        advertise: Option<String>,
        /// The leader lease's time to live (e.g. 30s; see docs/meta.md).
        #[arg(long, value_parser = humantime::parse_duration)]
        lease_ttl: Option<std::time::Duration>,
        /// This site's name.
        #[arg(long)]
        site: Option<String>,
        /// Sites tables may be duplicated to, comma-separated.
        #[arg(long)]
        peer_sites: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReplicaCommand {
    /// Run a replica server.
    Start {
        #[command(flatten)]
        server: ServerArgs,
        /// Meta server address(es), comma-separated.
        #[arg(long)]
        meta: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        advertise: Option<String>,
        #[arg(long, value_parser = humantime::parse_duration)]
        lease_period: Option<std::time::Duration>,
        #[arg(long, value_parser = humantime::parse_duration)]
        prepare_timeout: Option<std::time::Duration>,
        /// every_batch or none
        #[arg(long)]
        log_sync: Option<String>,
        /// For all replicas of this server together, e.g. 256MiB; small values force learners
        /// onto checkpoints.
        #[arg(long)]
        log_cache_bytes_max: Option<String>,
        /// How long a replica left out of its partition's configuration is kept, e.g. 10m.
        #[arg(long, value_parser = humantime::parse_duration)]
        inactive_replica_gc_delay: Option<std::time::Duration>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print a documented example configuration (the defaults).
    Default,
}

#[derive(Subcommand, Debug)]
pub enum TableCommand {
    /// Create a table.
    Create {
        name: String,
        /// A power of two.
        #[arg(long, default_value_t = 8)]
        partitions: u32,
        #[arg(long, default_value_t = 3)]
        replicas: u32,
        /// The table's owner (default: --as, TANDEM_USER, then $USER).
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        policy: PolicyFlags,
        /// Who creates the table, for the policy history (default: TANDEM_USER, then $USER).
        #[arg(long = "as", env = "TANDEM_USER")]
        who: Option<String>,
    },
    /// List tables.
    List {
        /// Include dropped (recallable) tables.
        #[arg(long)]
        all: bool,
    },
    /// Show a table's partitions: ballot, primary, secondaries, decrees, health.
    Show { name: String },
    /// Drop a table (recallable during the recall window, 7 days by default).
    Drop { name: String },
    /// Bring back a dropped table.
    Recall { name: String },
}

/// Policy flags shared by `policy set` and `table create`. Durations need units: 30s, 15m, 6h, 7d.
#[derive(Args, Debug, Clone, Default)]
pub struct PolicyFlags {
    /// Preset: 1 = replicas only, 2 = + duplication, 3 = + backup. Explicit flags override it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3))]
    pub level: Option<u32>,
    /// Duplicate every write to SITE, or `off`.
    #[arg(long = "dup", value_name = "off|SITE")]
    pub dup: Option<String>,
    /// Back up every interval (e.g. 6h, 1d), or `off`.
    #[arg(long, value_name = "off|EVERY", value_parser = parse_backup_every)]
    pub backup: Option<BackupEvery>,
    /// How many backups to keep.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub backup_keep: Option<u32>,
    /// s3://BUCKET[/PREFIX] or file:///PATH
    #[arg(long)]
    pub backup_target: Option<String>,
    /// Start scheduled backups at HH:MM (24-hour, UTC, or 'HH:MM ZONE' with an IANA zone such as
    /// Europe/Paris), then every interval within the day; `off` = an interval after the last.
    #[arg(long, value_name = "off|HH:MM [ZONE]")]
    pub backup_at: Option<String>,
    /// How long deletes are remembered (e.g. 1d).
    #[arg(long, value_parser = parse_duration_with_unit)]
    pub tombstone_retention: Option<std::time::Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupEvery {
    Off,
    Every(std::time::Duration),
}

/// A duration that must carry a unit: "90" is refused (seconds? minutes?).
pub fn parse_duration_with_unit(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("'{text}' has no unit: write e.g. {text}s, {text}m, {text}h or {text}d"));
    }
    humantime::parse_duration(text).map_err(|e| format!("'{text}' is not a duration ({e}); use units like 30s, 15m, 6h, 7d"))
}

fn parse_backup_every(text: &str) -> Result<BackupEvery, String> {
    if text.trim() == "off" {
        return Ok(BackupEvery::Off);
    }
    let every = parse_duration_with_unit(text)?;
    if every.is_zero() {
        return Err("a backup interval of 0 means never: write `off`".into());
    }
    Ok(BackupEvery::Every(every))
}

#[derive(Subcommand, Debug)]
pub enum SiteCommand {
    /// Make another site known by name, with the addresses of its meta servers.
    Add {
        name: String,
        /// HOST:PORT of the site's meta servers, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        meta: Vec<String>,
    },
    /// The known sites.
    List,
    /// Forget a site (refused while a duplication ships to it).
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
pub enum DupCommand {
    /// Duplicate a table's writes to SITE (whose table of the same name must exist).
    Add {
        table: String,
        #[arg(long = "to", value_name = "SITE")]
        to: String,
        /// First ship a snapshot of what the table holds already.
        #[arg(long)]
        sync_existing: bool,
        /// slow: hold the log until everything shipped; skip: past the lag bounds, re-sync
        /// from a snapshot instead of holding the log.
        #[arg(long, default_value = "slow", value_parser = ["slow", "skip"])]
        fail_mode: String,
    },
    /// Duplications with, per partition, the confirmed decree and the lag.
    List {
        table: Option<String>,
        /// Include removed duplications.
        #[arg(long)]
        all: bool,
    },
    /// Compare the two sites' copies of a table, partition by partition; exits 3 when they
    /// differ.
    Verify {
        table: String,
        /// The other site (default: the one the table is duplicated to).
        #[arg(long = "to", value_name = "SITE")]
        to: Option<String>,
        /// Leave out writes this recent (they may be on their way), e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = parse_duration_with_unit)]
        ignore_last: std::time::Duration,
    },
    /// Stop shipping (the log is still kept for it).
    Pause { table: String, dup: String },
    /// Ship again after a pause.
    Resume { table: String, dup: String },
    /// Stop shipping for good and release the log.
    Remove { table: String, dup: String },
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Back a table up now: each partition's primary checkpoints and uploads it; the backup is
    /// complete once every partition and the table manifest are written.
    Now {
        table: String,
        /// s3://BUCKET[/PREFIX] or file:///PATH (default: the table policy's, else the meta's
        /// backup_target).
        #[arg(long, value_name = "URL")]
        target: Option<String>,
        /// Follow it to its end (exit 1 if it fails).
        #[arg(long)]
        wait: bool,
        /// Who asks, recorded with the backup (default: TANDEM_USER, then $USER).
        #[arg(long = "as", env = "TANDEM_USER")]
        who: Option<String>,
    },
    /// Backups of a table (all tables without one), dropped tables' too.
    List { table: Option<String> },
    /// One backup: per partition, its decree, files, bytes, new versus reused bytes, duration
    /// (or, while it runs, its progress).
    Show { id: u64 },
    /// Re-read every object of a complete backup from its target and check sizes and
    /// checksums from the record down; exits 1 and lists every problem if any.
    Verify { id: u64 },
    /// Delete a complete backup: its record says deleted, and what no kept backup references
    /// is removed from the target.
    Delete {
        id: u64,
        /// Who deletes it, recorded with it (default: TANDEM_USER, then $USER).
        #[arg(long = "as", env = "TANDEM_USER")]
        who: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RestoreCommand {
    /// Running and finished restores.
    List,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Change a table's policy. Unset flags keep their value.
    Set {
        table: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5))]
        replicas: Option<u32>,
        #[command(flatten)]
        flags: PolicyFlags,
        /// Who makes the change, recorded in the history (default: TANDEM_USER, then $USER).
        #[arg(long = "as", env = "TANDEM_USER")]
        who: Option<String>,
    },
    /// A table's policy and owner.
    Show { table: String },
    /// Who changed a table's policy, when, old → new.
    History { table: String },
    /// Desired vs actual protection at each level; exits 3 while replicas are below the policy.
    Status { table: String },
}
