//! The transport part of `cargo xtask bench` (issue 5): our `Link` over TLS and QUIC beside
//! their same-run ceilings, plain TCP for context, and memory per idle TLS connection, in
//! interleaved rounds.
//!
//! `bench/transport-bench MODE` runs one measurement and prints one JSON line:
//! - `tls-link` / `rustls-memory`: 1 MiB packets over our link with mutual TLS, against a
//!   rustls client and server connection passing the same bytes in memory (target 0.7×);
//! - `quic-link` / `quinn-raw`: 1 MiB packets over our link on QUIC, against raw quinn on
//!   one bidirectional stream (target 0.9×);
//! - `tcp-link`: our link over plain TCP (context);
//! - `tls-idle-memory`: bytes of resident memory per idle connection, plain TCP and TLS,
//!   listening and connecting side each in its own process (reported, no target).

use std::collections::BTreeMap;
use std::process::Command;

use crate::bench::{group_digits, median};
use crate::bench_store::target_row;
use crate::rounds::{Key, Rounds};
use crate::util;

const MIB_PER_SEC: &str = "mib_per_sec";

/// The memory figures of `tls-idle-memory`, in table order: (side, plain TCP, TLS, extra).
const MEMORY: [(&str, &str, &str, &str); 2] = [
    (
        "listening side",
        "tcp_server_bytes_per_conn",
        "tls_server_bytes_per_conn",
        "tls_extra_server_bytes_per_conn",
    ),
    (
        "connecting side",
        "tcp_client_bytes_per_conn",
        "tls_client_bytes_per_conn",
        "tls_extra_client_bytes_per_conn",
    ),
];

/// Runs the transport rounds and returns the rendered table.
pub(crate) fn run(rounds: usize, quick: bool) -> Result<String, String> {
    eprintln!("==> building transport-bench (release)");
    util::run(util::cargo().args(["build", "--release", "-p", "transport-bench"]))?;
    let bench = util::target_dir().join("release").join("transport-bench");
    let mib = if quick { "32" } else { "1024" };
    let connections = if quick { "100" } else { "500" };

    let mut measured = Rounds::new(false);
    let memory_keys: Vec<&'static str> = MEMORY
        .iter()
        .flat_map(|(_, tcp, tls, extra)| [*tcp, *tls, *extra])
        .collect();
    for round in 1..=rounds {
        let mut runs: Vec<(&'static str, Command, Vec<&'static str>)> = Vec::new();
        for mode in [
            "tls-link",
            "rustls-memory",
            "quic-link",
            "quinn-raw",
            "tcp-link",
        ] {
            let mut command = Command::new(&bench);
            command.args([mode, "--mib", mib]);
            runs.push((mode, command, vec![MIB_PER_SEC]));
        }
        let mut memory = Command::new(&bench);
        memory.args(["tls-idle-memory", "--connections", connections]);
        runs.push(("tls-idle-memory", memory, memory_keys.clone()));

        for (mode, command, fields) in runs {
            measured.measure(round, rounds, mode, command, &fields);
        }
    }

    let mut table = render(measured.results(), rounds, quick, mib, connections);
    table.push_str(&measured.notes());
    Ok(table)
}

fn render(
    results: &BTreeMap<Key, Vec<f64>>,
    rounds: usize,
    quick: bool,
    mib: &str,
    connections: &str,
) -> String {
    let value = |key: Key| results.get(&key).and_then(|v| median(v));
    let cell = |v: Option<f64>| v.map_or_else(|| "–".to_string(), group_digits);
    let mut table = format!(
        "Transports, median of {rounds} interleaved round(s){}: {mib} packets of 1 MiB one \
         way over 127.0.0.1 (MiB/s), both peers in one process on a 2-thread runtime, \
         mutual TLS 1.3 with rcgen certificates, rustls/ring; the rustls ceiling runs on one \
         thread in 64 KiB pieces.\n\n\
         | measure | ours | baseline | ours/baseline | target | met |\n\
         |---|---:|---:|---:|---:|:-:|\n",
        if quick { ", --quick counts" } else { "" }
    );
    table.push_str(&target_row(
        "TLS MiB/s, our Link over TCP",
        value(("tls-link", MIB_PER_SEC)),
        value(("rustls-memory", MIB_PER_SEC)),
        "rustls in memory",
        0.7,
        false,
    ));
    table.push_str(&target_row(
        "QUIC MiB/s, our Link",
        value(("quic-link", MIB_PER_SEC)),
        value(("quinn-raw", MIB_PER_SEC)),
        "raw quinn, one stream",
        0.9,
        false,
    ));
    let tcp = value(("tcp-link", MIB_PER_SEC));
    let tls = value(("tls-link", MIB_PER_SEC));
    table.push_str(&format!(
        "\nContext: our Link over plain TCP {} MiB/s (TLS link/plain link: {}).\n",
        cell(tcp),
        match (tls, tcp) {
            (Some(tls), Some(tcp)) if tcp > 0.0 => format!("{:.2}×", tls / tcp),
            _ => "–".to_string(),
        }
    ));
    table.push_str(&format!(
        "\nResident memory per idle connection of our Link ({connections} connections, \
         bytes; each side in its own process, reader task waiting):\n\n\
         | side | plain TCP | TLS | TLS extra (median of per-round differences) |\n\
         |---|---:|---:|---:|\n"
    ));
    for (side, tcp, tls, extra) in MEMORY {
        let memory = |key| {
            value(("tls-idle-memory", key))
                .map_or_else(|| "–".to_string(), |v| group_digits(v.max(0.0)))
        };
        table.push_str(&format!(
            "| {side} | {} | {} | {} |\n",
            memory(tcp),
            memory(tls),
            memory(extra)
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_against_the_ceilings() {
        let mut results = BTreeMap::new();
        results.insert(("tls-link", MIB_PER_SEC), vec![700.0, 800.0, 900.0]);
        results.insert(("rustls-memory", MIB_PER_SEC), vec![1000.0]);
        results.insert(("quic-link", MIB_PER_SEC), vec![100.0]);
        results.insert(("quinn-raw", MIB_PER_SEC), vec![200.0]);
        results.insert(
            ("tls-idle-memory", "tls_server_bytes_per_conn"),
            vec![90_000.0],
        );
        let table = render(&results, 3, false, "256", "500");
        let line = |what: &str| crate::bench::table_row(&table, what);
        assert!(
            line("TLS MiB/s").ends_with("| 0.80× | >= 0.7× | yes |"),
            "{table}"
        );
        assert!(
            line("QUIC MiB/s").ends_with("| 0.50× | >= 0.9× | no |"),
            "{table}"
        );
        assert!(
            line("listening side").starts_with("| listening side | – | 90,000 | – |"),
            "{table}"
        );
    }
}
