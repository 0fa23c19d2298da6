//! `cargo xtask bench`: our throughput beside three baselines, in interleaved rounds.
//!
//! - ours: `snakemq bench --size S --count C --json` (release build; it starts its own receiver
//!   process and prints one JSON line);
//! - libzmq PUSH/PULL: `bench/zmq_bench.c`;
//! - Python snakeMQ 1.6: `bench/snakemq_py_bench.py` in the interop virtualenv;
//! - raw loopback TCP (1 MiB only): `bench/tcp_bench.c`, the ceiling for bulk transfers.
//!
//! Every harness prints `{"size":..,"count":..,"seconds":..,"msgs_per_sec":..,"mib_per_sec":..}`.
//! Rounds are interleaved (all harnesses once, then again) so a slow phase of the machine hits
//! everyone alike; the table shows the median of the rounds.
//!
//! A second table, from [`bench_store`](crate::bench_store), covers persistent queues and
//! queue memory, a third, from [`bench_rpc`](crate::bench_rpc), typed RPC against tarpc and
//! Python snakeMQ, a fourth, from [`bench_transport`](crate::bench_transport), TLS and QUIC
//! links against in-memory rustls and raw quinn (`--only messaging|store|rpc|transport` runs
//! one of them; `--no-rocksdb` leaves out the RocksDB row and its long first release build).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{python, util};

/// A harness run must finish within this, or it counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// One message size with counts picked so each run takes about 1-3 s on a 2-core machine.
struct Case {
    size: u64,
    /// For ours and libzmq (and raw TCP).
    count: u64,
    /// Python snakeMQ moves ~15k small messages/s, so it gets fewer.
    python_count: u64,
}

const CASES: [Case; 3] = [
    Case {
        size: 64,
        count: 2_000_000,
        python_count: 30_000,
    },
    Case {
        size: 1024,
        count: 500_000,
        python_count: 30_000,
    },
    Case {
        size: 1 << 20,
        count: 2_000,
        python_count: 500,
    },
];

/// `--quick` divides every count by this.
const QUICK_DIVISOR: u64 = 20;

/// Which tables to produce.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    All,
    Messaging,
    Store,
    Rpc,
    Transport,
}

/// Parsed arguments of `bench`.
pub(crate) struct Args {
    rounds: usize,
    quick: bool,
    only: Only,
    rocksdb: bool,
}

pub(crate) fn parse_args(rest: &[String]) -> Result<Args, String> {
    let mut args = Args {
        rounds: 3,
        quick: false,
        only: Only::All,
        rocksdb: true,
    };
    let mut iter = rest.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--rounds" => {
                let value = iter.next().ok_or("--rounds needs a value")?;
                args.rounds = value
                    .parse()
                    .ok()
                    .filter(|rounds| *rounds > 0)
                    .ok_or_else(|| format!("--rounds: `{value}` is not a positive number"))?;
            }
            "--quick" => args.quick = true,
            "--no-rocksdb" => args.rocksdb = false,
            "--only" => {
                args.only = match iter.next().map(String::as_str) {
                    Some("messaging") => Only::Messaging,
                    Some("store") => Only::Store,
                    Some("rpc") => Only::Rpc,
                    Some("transport") => Only::Transport,
                    other => {
                        return Err(format!(
                            "--only takes `messaging`, `store`, `rpc` or `transport`, \
                             not {other:?}"
                        ));
                    }
                }
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (usage: bench [--rounds N] [--quick] \
                     [--only messaging|store|rpc|transport] [--no-rocksdb])"
                ));
            }
        }
    }
    Ok(args)
}

/// The harnesses, in table order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Harness {
    Ours,
    Zmq,
    Python,
    Tcp,
}

impl Harness {
    const ALL: [Harness; 4] = [Harness::Ours, Harness::Zmq, Harness::Python, Harness::Tcp];

    fn name(self) -> &'static str {
        match self {
            Harness::Ours => "ours (snakemq bench)",
            Harness::Zmq => "libzmq PUSH/PULL",
            Harness::Python => "Python snakeMQ 1.6",
            Harness::Tcp => "loopback TCP bulk",
        }
    }

    /// Raw TCP has no message framing, so it is only a meaningful ceiling for bulk sizes.
    fn applies_to(self, case: &Case) -> bool {
        self != Harness::Tcp || case.size >= 1 << 20
    }
}

/// The program (and fixed leading arguments) of each harness that could be prepared.
type Prepared = BTreeMap<Harness, Vec<PathBuf>>;

pub(crate) fn run(args: Args) -> Result<(), String> {
    let mut summary = String::new();
    let wants = |only: Only| args.only == Only::All || args.only == only;
    if wants(Only::Messaging) {
        summary.push_str(&run_messaging(&args)?);
    }
    if wants(Only::Store) {
        let table = crate::bench_store::run(args.rounds, args.quick, args.rocksdb)?;
        println!("\n{table}");
        summary.push('\n');
        summary.push_str(&table);
    }
    if wants(Only::Rpc) {
        let table = crate::bench_rpc::run(args.rounds, args.quick)?;
        println!("\n{table}");
        summary.push('\n');
        summary.push_str(&table);
    }
    if wants(Only::Transport) {
        let table = crate::bench_transport::run(args.rounds, args.quick)?;
        println!("\n{table}");
        summary.push('\n');
        summary.push_str(&table);
    }
    let path = util::target_dir().join("bench-summary.md");
    std::fs::write(&path, &summary).map_err(|err| format!("writing {}: {err}", path.display()))?;
    eprintln!("tables written to {}", path.display());
    Ok(())
}

/// The messaging rounds; returns the rendered table.
fn run_messaging(args: &Args) -> Result<String, String> {
    let prepared = prepare(args.rocksdb);
    if prepared.is_empty() {
        return Err("no harness could be prepared (see the messages above)".into());
    }

    // results[(size, harness)] = msgs/s of each successful round.
    let mut results: BTreeMap<(u64, Harness), Vec<f64>> = BTreeMap::new();
    let mut broken: BTreeMap<Harness, String> = BTreeMap::new();
    for round in 1..=args.rounds {
        for case in &CASES {
            for harness in Harness::ALL {
                let Some(program) = prepared.get(&harness) else {
                    continue;
                };
                if !harness.applies_to(case) || broken.contains_key(&harness) {
                    continue;
                }
                let count = count_for(harness, case, args.quick);
                eprint!(
                    "round {round}/{}: {:<22} size {:>8} count {:>8} ... ",
                    args.rounds,
                    harness.name(),
                    case.size,
                    count
                );
                match run_harness(program, harness, case.size, count) {
                    Ok(rate) => {
                        eprintln!("{} msg/s", group_digits(rate));
                        results.entry((case.size, harness)).or_default().push(rate);
                    }
                    Err(err) => {
                        // A harness that fails once is dropped for the rest of the run: the
                        // failure is almost always structural (missing subcommand, library).
                        eprintln!("failed\n{err}");
                        broken.insert(harness, err);
                    }
                }
            }
        }
    }

    let table = render_table(&results, args.rounds, args.quick);
    println!("\n{table}");
    for (harness, err) in &broken {
        println!(
            "note: {} left out:\n    {}",
            harness.name(),
            err.replace('\n', "\n    ")
        );
    }
    Ok(table)
}

fn count_for(harness: Harness, case: &Case, quick: bool) -> u64 {
    let count = if harness == Harness::Python {
        case.python_count
    } else {
        case.count
    };
    if quick {
        (count / QUICK_DIVISOR).max(2)
    } else {
        count
    }
}

/// Builds our release binary and compiles the C harnesses. A harness that cannot be prepared is
/// reported and left out, so the rest still runs.
fn prepare(rocksdb: bool) -> Prepared {
    let root = util::workspace_root();
    let target = util::target_dir();
    let mut prepared = Prepared::new();

    eprintln!("==> building snakemq (release)");
    // The same build as the store table's, so running both does not rebuild in between.
    match crate::bench_store::build_release(rocksdb) {
        Ok(()) => {
            let binary = target.join("release").join("snakemq");
            prepared.insert(Harness::Ours, vec![binary]);
        }
        Err(err) => eprintln!("ours left out: the release build of snakemq-cli failed: {err}"),
    }

    eprintln!("==> compiling the C baselines");
    match compile_c(
        &root.join("bench").join("zmq_bench.c"),
        &target.join("zmq_bench"),
        &["-lzmq", "-lpthread"],
    ) {
        Ok(binary) => {
            prepared.insert(Harness::Zmq, vec![binary]);
        }
        Err(err) => eprintln!(
            "libzmq left out: {err}\n(the libzmq headers come with: apt-get install libzmq3-dev)"
        ),
    }
    match compile_c(
        &root.join("bench").join("tcp_bench.c"),
        &target.join("tcp_bench"),
        &[],
    ) {
        Ok(binary) => {
            prepared.insert(Harness::Tcp, vec![binary]);
        }
        Err(err) => eprintln!("loopback TCP left out: {err}"),
    }

    eprintln!("==> Python snakeMQ virtualenv");
    match python::ensure_python_venv() {
        Ok(python) => {
            let script = root.join("bench").join("snakemq_py_bench.py");
            prepared.insert(Harness::Python, vec![python, script]);
        }
        Err(err) => eprintln!("Python snakeMQ left out: {err}"),
    }
    prepared
}

pub(crate) fn compile_c(source: &Path, output: &Path, libs: &[&str]) -> Result<PathBuf, String> {
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|err| format!("creating {}: {err}", parent.display()))?;
    }
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    util::run(
        Command::new(cc)
            .arg("-O2")
            .arg(source)
            .args(libs)
            .arg("-o")
            .arg(output),
    )?;
    Ok(output.to_path_buf())
}

/// Runs one harness once and returns its messages per second.
fn run_harness(
    program: &[PathBuf],
    harness: Harness,
    size: u64,
    count: u64,
) -> Result<f64, String> {
    run_harness_inner(program, harness, size, count).map_err(|err| {
        if harness == Harness::Ours {
            format!(
                "{err}\n(`snakemq bench --size S --count C --json` must print one JSON line \
                 with msgs_per_sec; it may not be implemented yet)"
            )
        } else {
            err
        }
    })
}

fn run_harness_inner(
    program: &[PathBuf],
    harness: Harness,
    size: u64,
    count: u64,
) -> Result<f64, String> {
    let (first, rest) = program
        .split_first()
        .ok_or("internal: harness without a program")?;
    if harness == Harness::Ours && !first.is_file() {
        return Err(format!(
            "{} does not exist; the build did not produce the `snakemq` binary",
            first.display()
        ));
    }
    let mut command = Command::new(first);
    command.args(rest);
    if harness == Harness::Ours {
        command.args([
            "bench",
            "--size",
            &size.to_string(),
            "--count",
            &count.to_string(),
            "--json",
        ]);
    } else {
        command.args([size.to_string(), count.to_string()]);
    }
    let output = util::run_with_timeout(&mut command, RUN_TIMEOUT, false)?;
    let line = last_json_line(&output.stdout)
        .ok_or_else(|| format!("no JSON line in the output of {}", first.display()))?;
    let rate =
        json_number(line, "msgs_per_sec").ok_or_else(|| format!("no msgs_per_sec in `{line}`"))?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(format!("implausible msgs_per_sec in `{line}`"))
    }
}

/// The last line of a harness's output that looks like a JSON object (its result).
pub(crate) fn last_json_line(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('{'))
}

/// The number after `"key":` in a flat JSON object; enough for the harnesses' one-line output.
pub(crate) fn json_number(line: &str, key: &str) -> Option<f64> {
    let quoted = format!("\"{key}\"");
    let after = line.get(line.find(&quoted)? + quoted.len()..)?;
    let after = after.trim_start().strip_prefix(':')?.trim_start();
    let end = after
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(after.len());
    after.get(..end)?.parse().ok()
}

pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted.get(mid).copied()
    } else {
        Some((sorted.get(mid.checked_sub(1)?)? + sorted.get(mid)?) / 2.0)
    }
}

fn render_table(
    results: &BTreeMap<(u64, Harness), Vec<f64>>,
    rounds: usize,
    quick: bool,
) -> String {
    let rate = |size: u64, harness: Harness| {
        results
            .get(&(size, harness))
            .and_then(|values| median(values))
    };
    let cell = |value: Option<f64>| value.map_or_else(|| "–".to_string(), group_digits);
    let ratio = |ours: Option<f64>, other: Option<f64>| match (ours, other) {
        (Some(ours), Some(other)) if other > 0.0 => format!("{:.2}×", ours / other),
        _ => "–".to_string(),
    };

    let mut table = String::new();
    table.push_str(&format!(
        "Messages per second, median of {rounds} interleaved round(s){}; \
         two processes over 127.0.0.1.\n\n",
        if quick { ", --quick counts" } else { "" }
    ));
    table.push_str(
        "| size | ours msg/s | libzmq | python | tcp bulk | ours/libzmq | ours/python | ours/tcp (1 MiB) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for case in &CASES {
        let ours = rate(case.size, Harness::Ours);
        let zmq = rate(case.size, Harness::Zmq);
        let python = rate(case.size, Harness::Python);
        let tcp = rate(case.size, Harness::Tcp);
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            size_label(case.size),
            cell(ours),
            cell(zmq),
            cell(python),
            cell(tcp),
            ratio(ours, zmq),
            ratio(ours, python),
            ratio(ours, tcp),
        ));
    }
    table
}

fn size_label(size: u64) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// Whole number with thousands separators (`1,234,567`); small rates keep one decimal.
pub(crate) fn group_digits(value: f64) -> String {
    if value < 100.0 {
        return format!("{value:.1}");
    }
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The line of a rendered table that mentions `what` (empty when none does), for the table
/// tests of the benchmark drivers.
#[cfg(test)]
pub(crate) fn table_row<'a>(table: &'a str, what: &str) -> &'a str {
    table
        .lines()
        .find(|line| line.contains(what))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_harness_json() {
        let line = r#"{"size":64,"count":200000,"seconds":0.5,"msgs_per_sec":400000.0,"mib_per_sec":24.4}"#;
        assert_eq!(json_number(line, "msgs_per_sec"), Some(400_000.0));
        assert_eq!(json_number(line, "size"), Some(64.0));
        assert_eq!(
            json_number(r#"{"msgs_per_sec": 1.5e3}"#, "msgs_per_sec"),
            Some(1500.0)
        );
        assert_eq!(json_number(line, "missing"), None);
    }

    #[test]
    fn medians_and_labels() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(size_label(64), "64 B");
        assert_eq!(size_label(1024), "1 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(group_digits(1_234_567.4), "1,234,567");
        assert_eq!(group_digits(999.0), "999");
        assert_eq!(group_digits(12.34), "12.3");
    }
}
