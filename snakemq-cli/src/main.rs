//! The `snakemq` command: talk to any snakeMQ peer (Python included), measure, demonstrate.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod certs;
mod common;
mod demo;
mod listen;
mod queue;
mod send;
mod transport;

/// Brokerless peer-to-peer messaging, wire-compatible with Python snakeMQ.
#[derive(Debug, Parser)]
#[command(name = "snakemq", version, about)]
struct Cli {
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive messages and print them.
    Listen(listen::ListenArgs),
    /// Send messages and wait until they are delivered.
    Send(send::SendArgs),
    /// Measure throughput and latency between two peers.
    Bench(bench::BenchArgs),
    /// A narrated tour on loopback: two peers, a peer going away and coming back.
    Demo(demo::DemoArgs),
    /// List the queues of a store (peers, counts, bytes, oldest message), or import
    /// Python snakeMQ queues into one.
    Queue(queue::QueueArgs),
    /// Make a local CA and a certificate per peer, for trying TLS and QUIC.
    Certs(certs::CertsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_logging(cli.verbose, cli.quiet);
    let mut builder = match &cli.command {
        Command::Bench(args) => args.runtime.builder(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("snakemq: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Listen(args) => listen::run(args).await,
            Command::Send(args) => send::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Queue(args) => queue::run(args),
            Command::Certs(args) => certs::run(args).map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("snakemq: {error}");
            ExitCode::FAILURE
        }
    }
}
