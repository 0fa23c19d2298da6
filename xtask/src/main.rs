//! Project automation, run as `cargo xtask <command>` (the alias lives in `.cargo/config.toml`).
//!
//! Plain `std::process` and no dependencies, so it compiles in seconds on a fresh machine.
//!
//! Commands:
//! - `ci`: format check, clippy, tests (with the Python interop virtualenv), docs, examples.
//! - `fuzz --seconds N`: every cargo-fuzz target in `fuzz/` for N seconds each.
//! - `bench [--rounds N] [--quick] [--only messaging|store|rpc|transport] [--no-rocksdb]`: our
//!   throughput against libzmq, Python snakeMQ and raw TCP; persistent queues against rusqlite,
//!   fsync, rust-rocksdb and Python snakeMQ; queue memory against libzmq; RPC against tarpc and
//!   Python snakeMQ; TLS and QUIC links against in-memory rustls and raw quinn.
//! - `crash [--messages N] [--kills K] [--seed S]`: persistent delivery under SIGKILL.
//! - `python-env`: ensure the interop virtualenv and print its interpreter path.
//! - `certs [--out DIR] [NAME...]`: a local CA and peer certificates for trying TLS and QUIC
//!   (runs `snakemq certs`).

mod bench;
mod bench_rpc;
mod bench_store;
mod bench_transport;
mod ci;
mod crash;
mod fuzz;
mod python;
mod rounds;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci                          fmt check, clippy, tests, docs, examples (what .ci/run runs)
  fuzz --seconds N            run every fuzz target in fuzz/ for N seconds each
  bench [--rounds N] [--quick] [--only messaging|store|rpc|transport] [--no-rocksdb]
                              throughput: ours vs libzmq vs Python snakeMQ vs raw TCP;
                              persistent queues and queue memory vs their baselines;
                              typed RPC vs tarpc and Python snakeMQ; TLS and QUIC links
                              vs in-memory rustls and raw quinn, memory per idle TLS link
  crash [--messages N] [--kills K] [--seed S] [--max-delay-ms MS] [--timeout SECONDS]
                              persistent delivery while sender and receiver get SIGKILLed
  python-env                  ensure the Python interop virtualenv, print its interpreter
                              (export SNAKEMQ_PYTHON=$(cargo xtask python-env))
  certs [--out DIR] [NAME...] a local CA and a certificate per peer (default: alice bob in
                              ./certs) for trying --tls-* and --quic";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let result = match command.as_str() {
        "ci" => no_args(rest).and_then(|()| ci::run()),
        "fuzz" => fuzz::parse_args(rest).and_then(fuzz::run),
        "bench" => bench::parse_args(rest).and_then(bench::run),
        "crash" => crash::parse_args(rest).and_then(crash::run),
        "python-env" => no_args(rest).and_then(|()| {
            let python = python::ensure_python_venv()?;
            // Only the path on stdout, so `$(cargo xtask python-env)` works.
            println!("{}", python.display());
            Ok(())
        }),
        "certs" => certs(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {command}: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `snakemq certs ARGS`, run from the caller's folder so that `--out` is relative to it.
fn certs(rest: &[String]) -> Result<(), String> {
    let here = std::env::current_dir().map_err(|e| format!("no current folder: {e}"))?;
    let manifest = util::workspace_root().join("Cargo.toml");
    let mut command = util::cargo();
    command
        .current_dir(here)
        .arg("run")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(manifest)
        .args(["-p", "snakemq-cli", "--", "certs"])
        .args(rest);
    util::run(&mut command)
}

fn no_args(rest: &[String]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => Err(format!("unexpected argument `{arg}`\n\n{USAGE}")),
    }
}
