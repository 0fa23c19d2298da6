//! The RPC part of `cargo xtask bench` (issue 4): a 64-byte echo with our typed RPC beside
//! tarpc and Python snakeMQ 1.6's RPC, in interleaved rounds.
//!
//! - `rpc-bench paired latency --calls N`: one call outstanding, p50 and p99 of both stacks
//!   measured in one process, in alternating batches (the latency rows; see
//!   `bench/rpc-bench/src/paired.rs` for why);
//! - `rpc-bench ours|tarpc latency --calls N`: the same, each stack in a process of its own
//!   (printed under the table for reference);
//! - `rpc-bench ours|tarpc throughput --calls N --in-flight 64`: calls per second;
//! - `bench/snakemq_py_rpc_bench.py N`: Python snakeMQ's calls per second (its calls block,
//!   one outstanding is its best configuration).

use std::collections::BTreeMap;
use std::process::Command;

use crate::bench::median;
use crate::bench_store::target_row;
use crate::rounds::{Key, Rounds};
use crate::util;

/// Runs the RPC rounds and returns the rendered table.
pub(crate) fn run(rounds: usize, quick: bool) -> Result<String, String> {
    eprintln!("==> building rpc-bench (release)");
    util::run(util::cargo().args(["build", "--release", "-p", "rpc-bench"]))?;
    let root = util::workspace_root();
    let rpc_bench = util::target_dir().join("release").join("rpc-bench");
    let python = crate::python::ensure_python_venv()
        .map_err(|err| eprintln!("Python snakeMQ left out: {err}"))
        .ok();
    let calls = if quick { "2000" } else { "20000" };
    let python_calls = if quick { "500" } else { "3000" };

    let mut measured = Rounds::new(true);
    for round in 1..=rounds {
        let mut runs: Vec<(&'static str, Command, Vec<&'static str>)> = Vec::new();
        let mut paired = Command::new(&rpc_bench);
        paired.args(["paired", "latency", "--calls", calls]);
        runs.push((
            "paired",
            paired,
            vec!["ours_p50_us", "tarpc_p50_us", "ours_p99_us", "tarpc_p99_us"],
        ));
        for harness in ["ours", "tarpc"] {
            let mut latency = Command::new(&rpc_bench);
            latency.args([harness, "latency", "--calls", calls]);
            runs.push((harness, latency, vec!["p50_us", "p99_us"]));
            let mut throughput = Command::new(&rpc_bench);
            throughput.args([harness, "throughput", "--calls", calls, "--in-flight", "64"]);
            runs.push((harness, throughput, vec!["calls_per_sec"]));
        }
        if let Some(python) = &python {
            let mut command = Command::new(python);
            command
                .arg(root.join("bench").join("snakemq_py_rpc_bench.py"))
                .arg(python_calls);
            runs.push(("python", command, vec!["calls_per_sec"]));
        }
        for (harness, command, fields) in runs {
            measured.measure(round, rounds, harness, command, &fields);
        }
    }

    let mut table = render(measured.results(), rounds, quick);
    table.push_str(&measured.notes());
    Ok(table)
}

fn render(results: &BTreeMap<Key, Vec<f64>>, rounds: usize, quick: bool) -> String {
    let value = |key: Key| results.get(&key).and_then(|v| median(v));
    let mut table = format!(
        "RPC, 64-byte echo over 127.0.0.1, median of {rounds} interleaved round(s){}.\n\n\
         | measure | ours | baseline | ours/baseline | target | met |\n\
         |---|---:|---:|---:|---:|:-:|\n",
        if quick { ", --quick counts" } else { "" }
    );
    let rows: [(&str, Key, Key, f64, bool); 4] = [
        (
            "p50 µs, one outstanding",
            ("paired", "ours_p50_us"),
            ("paired", "tarpc_p50_us"),
            0.9,
            true,
        ),
        (
            "p99 µs, one outstanding",
            ("paired", "ours_p99_us"),
            ("paired", "tarpc_p99_us"),
            1.0,
            true,
        ),
        (
            "calls/s, 64 in flight",
            ("ours", "calls_per_sec"),
            ("tarpc", "calls_per_sec"),
            1.2,
            false,
        ),
        (
            "calls/s against Python snakeMQ 1.6",
            ("ours", "calls_per_sec"),
            ("python", "calls_per_sec"),
            100.0,
            false,
        ),
    ];
    for (what, ours, baseline, target, lower_is_better) in rows {
        table.push_str(&target_row(
            what,
            value(ours),
            value(baseline),
            // (The paired rows' baseline is tarpc, measured in the paired runs.)
            if baseline.0 == "paired" {
                "tarpc, paired"
            } else {
                baseline.0
            },
            target,
            lower_is_better,
        ));
    }
    // For reference, not a target: the same latency with each stack in a process of its
    // own, as before the paired runs.
    if let (Some(ours), Some(tarpc)) = (value(("ours", "p50_us")), value(("tarpc", "p50_us"))) {
        table.push_str(&format!(
            "\nFor reference: p50 with each stack in a process of its own, {ours:.1} / {tarpc:.1} µs \
             = {:.2}× tarpc.\n",
            ours / tarpc
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_targets_want_lower_and_throughput_higher() {
        let mut results = BTreeMap::new();
        results.insert(("paired", "ours_p50_us"), vec![30.0]);
        results.insert(("paired", "tarpc_p50_us"), vec![40.0]);
        results.insert(("ours", "calls_per_sec"), vec![100_000.0]);
        results.insert(("tarpc", "calls_per_sec"), vec![150_000.0]);
        let table = render(&results, 1, false);
        let line = |what: &str| crate::bench::table_row(&table, what);
        assert!(
            line("p50").ends_with("| 40.0 (tarpc, paired) | 0.75× | <= 0.9× | yes |"),
            "{table}"
        );
        assert!(
            line("64 in flight").ends_with("| 0.67× | >= 1.2× | no |"),
            "{table}"
        );
        assert!(line("p99").ends_with("| – | <= 1× | – |"), "{table}");
        assert!(!table.contains("For reference"), "{table}");
    }

    #[test]
    fn separate_process_latency_is_printed_for_reference() {
        let mut results = BTreeMap::new();
        results.insert(("ours", "p50_us"), vec![22.0, 23.0, 21.0]);
        results.insert(("tarpc", "p50_us"), vec![25.0]);
        let table = render(&results, 3, false);
        assert!(
            table.contains("own, 22.0 / 25.0 µs = 0.88× tarpc."),
            "{table}"
        );
        assert!(
            crate::bench::table_row(&table, "p50").ends_with("| – | <= 0.9× | – |"),
            "{table}"
        );
    }
}
