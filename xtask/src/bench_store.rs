//! The persistent-queue half of `cargo xtask bench`: our durable sends and queue memory
//! beside what the storage underneath can do on this machine, in interleaved rounds.
//!
//! | row | ours | baseline |
//! |---|---|---|
//! | many in flight, SQLite `Full` | `snakemq bench --store F --in-flight 1024` | `store-baselines rusqlite-loop` (1000-row insert+delete transactions, WAL+FULL) and Python snakeMQ 1.6 persistent sends (`snakemq_py_bench.py --persistent`) |
//! | one producer | `snakemq bench --store F --in-flight 1 --runtime current-thread` | `store-baselines fsync-loop` (64 B write + fsync) |
//! | RocksDB, sync per group | `snakemq bench --store-backend rocksdb --in-flight 1024` | `store-baselines rocksdb-loop` (synced batches of 100 puts: `db_bench --sync=1 --batch_size=100` in rust-rocksdb, since Debian's db_bench is RocksDB 7.8 and ours 10.4) |
//! | memory per queued 64 B message | `snakemq bench --mode queue-memory` | `zmq_bench memory` (libzmq PUSH, no peer) |
//!
//! Ours are end to end: two processes over loopback TCP, each message committed before its
//! `send` returns and removed from the store when the receiver's acknowledgement comes back.
//! Every file lives in one folder of the target directory, so the fsync baseline runs on
//! the same file system as the stores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bench::{group_digits, json_number, last_json_line, median};
use crate::util;

/// A harness run must finish within this, or it counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The harnesses, in table order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Harness {
    OursMany,
    RusqliteLoop,
    Python,
    OursOne,
    FsyncLoop,
    OursOneMultiThread,
    OursRocks,
    RocksLoop,
    OursMemory,
    ZmqMemory,
}

impl Harness {
    const ALL: [Harness; 10] = [
        Harness::OursMany,
        Harness::RusqliteLoop,
        Harness::Python,
        Harness::OursOne,
        Harness::FsyncLoop,
        Harness::OursOneMultiThread,
        Harness::OursRocks,
        Harness::RocksLoop,
        Harness::OursMemory,
        Harness::ZmqMemory,
    ];

    fn name(self) -> &'static str {
        match self {
            Harness::OursMany => "ours, SQLite Full, 1024 in flight",
            Harness::RusqliteLoop => "rusqlite 1000-row loop",
            Harness::Python => "Python snakeMQ persistent",
            Harness::OursOne => "ours, SQLite Full, 1 in flight, current-thread runtime",
            Harness::FsyncLoop => "write+fsync loop",
            Harness::OursOneMultiThread => "ours, same, multi-thread runtime",
            Harness::OursRocks => "ours, RocksDB Full, 1024 in flight",
            Harness::RocksLoop => "rust-rocksdb synced batches",
            Harness::OursMemory => "ours, bytes per queued msg",
            Harness::ZmqMemory => "libzmq, bytes per queued msg",
        }
    }

    fn needs_rocksdb(self) -> bool {
        matches!(self, Harness::OursRocks | Harness::RocksLoop)
    }

    /// The JSON field holding the figure.
    fn field(self) -> &'static str {
        match self {
            Harness::OursMemory | Harness::ZmqMemory => "bytes_per_message",
            _ => "msgs_per_sec",
        }
    }

    /// Messages per run (full, quick).
    fn count(self, quick: bool) -> u64 {
        let (full, quick_count) = match self {
            Harness::OursMany | Harness::RusqliteLoop | Harness::OursRocks | Harness::RocksLoop => {
                (100_000, 10_000)
            }
            // Python snakeMQ commits twice per message (~30 msg/s here).
            Harness::Python => (300, 60),
            Harness::OursOne | Harness::FsyncLoop | Harness::OursOneMultiThread => (3_000, 500),
            Harness::OursMemory | Harness::ZmqMemory => (1_000_000, 200_000),
        };
        if quick { quick_count } else { full }
    }
}

/// One row of the table: ours against a baseline, with the target.
struct Row {
    what: &'static str,
    ours: Harness,
    baseline: Harness,
    /// The ratio ours/baseline must be at least this (or at most, for memory).
    target: f64,
    lower_is_better: bool,
}

const ROWS: [Row; 5] = [
    Row {
        what: "persistent msg/s, 1024 sends in flight, SQLite Full",
        ours: Harness::OursMany,
        baseline: Harness::RusqliteLoop,
        target: 0.5,
        lower_is_better: false,
    },
    Row {
        what: "persistent msg/s, same, against Python snakeMQ 1.6",
        ours: Harness::OursMany,
        baseline: Harness::Python,
        target: 100.0,
        lower_is_better: false,
    },
    Row {
        what: "persistent msg/s, one producer awaiting each send",
        ours: Harness::OursOne,
        baseline: Harness::FsyncLoop,
        target: 0.8,
        lower_is_better: false,
    },
    Row {
        what: "persistent msg/s, RocksDB, sync per group",
        ours: Harness::OursRocks,
        baseline: Harness::RocksLoop,
        target: 0.8,
        lower_is_better: false,
    },
    Row {
        what: "bytes of memory per queued 64 B message",
        ours: Harness::OursMemory,
        baseline: Harness::ZmqMemory,
        target: 0.8,
        lower_is_better: true,
    },
];

/// Programs each harness runs, once prepared.
struct Programs {
    snakemq: PathBuf,
    baselines: PathBuf,
    zmq: Option<PathBuf>,
    python: Option<(PathBuf, PathBuf)>,
}

/// Runs the persistent-queue rounds and returns the rendered table.
pub(crate) fn run(rounds: usize, quick: bool, rocksdb: bool) -> Result<String, String> {
    let programs = prepare(rocksdb)?;
    let folder = util::target_dir().join("bench-store");
    // A clean folder per run: a store left by an interrupted run would be refused.
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder)
        .map_err(|err| format!("creating {}: {err}", folder.display()))?;

    let mut results: BTreeMap<Harness, Vec<f64>> = BTreeMap::new();
    let mut broken: BTreeMap<Harness, String> = BTreeMap::new();
    for round in 1..=rounds {
        for harness in Harness::ALL {
            if broken.contains_key(&harness) || (harness.needs_rocksdb() && !rocksdb) {
                continue;
            }
            let count = harness.count(quick);
            eprint!(
                "round {round}/{rounds}: {:<36} count {:>8} ... ",
                harness.name(),
                count
            );
            let store = folder.join(format!("ours-{round}-{harness:?}"));
            match command(&programs, harness, &folder, &store, count)
                .and_then(|mut command| figure(&mut command, harness.field()))
            {
                Ok(value) => {
                    eprintln!("{}", group_digits(value));
                    results.entry(harness).or_default().push(value);
                }
                Err(err) => {
                    eprintln!("failed\n{err}");
                    broken.insert(harness, err);
                }
            }
            // Each run's store is left empty but takes room; the next round makes its own.
            // (A SQLite store's log goes with its clean close; a RocksDB store is a folder.)
            let _ = std::fs::remove_dir_all(&store);
            let _ = std::fs::remove_file(&store);
        }
    }
    let _ = std::fs::remove_dir_all(&folder);

    let mut table = render(&results, rounds, quick);
    for (harness, err) in &broken {
        table.push_str(&format!(
            "\nnote: {} left out:\n    {}\n",
            harness.name(),
            err.replace('\n', "\n    ")
        ));
    }
    Ok(table)
}

/// Builds the release `snakemq` and `store-baselines` (with RocksDB when asked).
pub(crate) fn build_release(rocksdb: bool) -> Result<(), String> {
    eprintln!(
        "==> building snakemq and store-baselines (release{})",
        if rocksdb {
            ", with RocksDB: the first build takes a while"
        } else {
            ""
        }
    );
    let mut build = util::cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "snakemq-cli",
        "-p",
        "store-baselines",
    ]);
    if rocksdb {
        build.args(["--features", "snakemq-cli/rocksdb,store-baselines/rocksdb"]);
    }
    util::run(&mut build)
}

/// Builds the release binaries and finds the other programs.
fn prepare(rocksdb: bool) -> Result<Programs, String> {
    let root = util::workspace_root();
    let target = util::target_dir();
    build_release(rocksdb)?;

    let zmq = crate::bench::compile_c(
        &root.join("bench").join("zmq_bench.c"),
        &target.join("zmq_bench"),
        &["-lzmq", "-lpthread"],
    )
    .map_err(|err| eprintln!("libzmq memory left out: {err}"))
    .ok();
    let python = crate::python::ensure_python_venv()
        .map(|python| (python, root.join("bench").join("snakemq_py_bench.py")))
        .map_err(|err| eprintln!("Python snakeMQ left out: {err}"))
        .ok();
    Ok(Programs {
        snakemq: target.join("release").join("snakemq"),
        baselines: target.join("release").join("store-baselines"),
        zmq,
        python,
    })
}

/// The command line of one harness run.
fn command(
    programs: &Programs,
    harness: Harness,
    folder: &Path,
    store: &Path,
    count: u64,
) -> Result<Command, String> {
    let count = count.to_string();
    let ours = |in_flight: &str, backend: &str| {
        let mut command = Command::new(&programs.snakemq);
        command
            .args(["bench", "--json", "--size", "64", "--count", &count])
            .args(["--in-flight", in_flight, "--store-backend", backend])
            .arg("--store")
            .arg(store);
        command
    };
    let baseline = |name: &str| {
        let mut command = Command::new(&programs.baselines);
        command.arg(name).arg(folder).arg(&count);
        command
    };
    Ok(match harness {
        Harness::OursMany => ours("1024", "sqlite"),
        // A lone producer runs on a current-thread runtime (see `snakemq bench --runtime`).
        Harness::OursOne => {
            let mut command = ours("1", "sqlite");
            command.args(["--runtime", "current-thread"]);
            command
        }
        Harness::OursOneMultiThread => ours("1", "sqlite"),
        Harness::OursRocks => ours("1024", "rocksdb"),
        Harness::RusqliteLoop => baseline("rusqlite-loop"),
        Harness::FsyncLoop => baseline("fsync-loop"),
        Harness::RocksLoop => baseline("rocksdb-loop"),
        Harness::OursMemory => {
            let mut command = Command::new(&programs.snakemq);
            command.args(["bench", "--json", "--mode", "queue-memory", "--size", "64"]);
            command.args(["--count", &count]);
            command
        }
        Harness::ZmqMemory => {
            let zmq = programs.zmq.as_ref().ok_or("libzmq harness not built")?;
            let mut command = Command::new(zmq);
            command.args(["memory", "64", &count]);
            command
        }
        Harness::Python => {
            let (python, script) = programs.python.as_ref().ok_or("no Python virtualenv")?;
            let mut command = Command::new(python);
            command
                .arg(script)
                .arg("--persistent")
                .arg(folder)
                .args(["64", &count]);
            command
        }
    })
}

/// Runs a harness and reads `field` from its JSON line.
fn figure(command: &mut Command, field: &str) -> Result<f64, String> {
    let output = util::run_with_timeout(command, RUN_TIMEOUT, false)?;
    let line = last_json_line(&output.stdout)
        .ok_or_else(|| format!("no JSON line in `{}`", util::describe(command)))?;
    match json_number(line, field) {
        Some(value) if value.is_finite() && value > 0.0 => Ok(value),
        _ => Err(format!("no plausible {field} in `{line}`")),
    }
}

/// One row of a targets table: ours, the baseline, their ratio and whether the target is
/// met (`lower_is_better`: the ratio must be at most `target`, else at least).
pub(crate) fn target_row(
    what: &str,
    ours: Option<f64>,
    baseline: Option<f64>,
    baseline_name: &str,
    target: f64,
    lower_is_better: bool,
) -> String {
    let cell = |v: Option<f64>| v.map_or_else(|| "–".to_string(), group_digits);
    let ratio = match (ours, baseline) {
        (Some(ours), Some(baseline)) if baseline > 0.0 => Some(ours / baseline),
        _ => None,
    };
    let met = ratio.map_or("–", |ratio| {
        let ok = if lower_is_better {
            ratio <= target
        } else {
            ratio >= target
        };
        if ok { "yes" } else { "no" }
    });
    format!(
        "| {what} | {} | {} ({baseline_name}) | {} | {} {target}× | {met} |\n",
        cell(ours),
        cell(baseline),
        ratio.map_or_else(|| "–".to_string(), |r| format!("{r:.2}×")),
        if lower_is_better { "<=" } else { ">=" },
    )
}

fn render(results: &BTreeMap<Harness, Vec<f64>>, rounds: usize, quick: bool) -> String {
    let value = |harness: Harness| results.get(&harness).and_then(|v| median(v));
    let mut table = format!(
        "Persistent queues, median of {rounds} interleaved round(s){}; 64 B messages.\n\n\
         | measure | ours | baseline | ours/baseline | target | met |\n\
         |---|---:|---:|---:|---:|:-:|\n",
        if quick { ", --quick counts" } else { "" }
    );
    for row in &ROWS {
        let (ours, baseline) = (value(row.ours), value(row.baseline));
        table.push_str(&target_row(
            row.what,
            ours,
            baseline,
            row.baseline.name(),
            row.target,
            row.lower_is_better,
        ));
    }
    // For reference, not a target: the one-producer row on the runtime the other rows use.
    if let (Some(ours), Some(fsync)) = (
        value(Harness::OursOneMultiThread),
        value(Harness::FsyncLoop),
    ) {
        table.push_str(&format!(
            "\nFor reference: one producer on a multi-thread runtime, {} msg/s = {:.2}× the \
             write+fsync loop.\n",
            group_digits(ours),
            ours / fsync
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_judges_each_target_in_its_direction() {
        let mut results = BTreeMap::new();
        results.insert(Harness::OursMany, vec![60_000.0]);
        results.insert(Harness::RusqliteLoop, vec![100_000.0]);
        results.insert(Harness::Python, vec![30.0]);
        results.insert(Harness::OursMemory, vec![112.0]);
        results.insert(Harness::ZmqMemory, vec![176.0]);
        let table = render(&results, 1, false);
        let line = |what: &str| crate::bench::table_row(&table, what);
        assert!(line("1024 sends in flight").ends_with("| 0.60× | >= 0.5× | yes |"));
        assert!(line("Python").contains("2000.00×"));
        assert!(line("bytes of memory").ends_with("| 0.64× | <= 0.8× | yes |"));
        assert!(line("one producer").ends_with("| – | >= 0.8× | – |"));
        assert!(!table.contains("For reference"));
        results.insert(Harness::OursOneMultiThread, vec![4_000.0]);
        results.insert(Harness::FsyncLoop, vec![5_000.0]);
        let table = render(&results, 1, false);
        assert!(table.contains("multi-thread runtime, 4,000 msg/s = 0.80× the"));
    }
}
