//! `cargo xtask crash [--messages N] [--kills K] [--seed S]`: persistent queues under SIGKILL.
//!
//! 1. Queue N persistent messages into the sender's store while no receiver runs
//!    (`snakemq send --persistent --count N --timeout 1`: every message is committed before
//!    `send` returns, then the command gives up waiting and exits 2, leaving them queued).
//! 2. Start the receiver (`snakemq listen --store … --json`) and the sender in its drain form
//!    (`snakemq send --store …` without messages: deliver what is queued, exit 0 when empty).
//!    Kill one of them with SIGKILL after a random 0–`max-delay` ms, K times each side, check
//!    the killed process's store with `snakemq queue STORE` (must exit 0), restart it.
//! 3. Let the sender drain the rest, then tally the receiver's output (kept in a file as it
//!    arrives, across all receiver lives): lost, duplicated and reordered messages.
//!
//! Lost or reordered messages fail the run; duplicates are allowed (a line printed by a
//! receiver killed before its acknowledgement left) and reported.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util;

/// Parsed arguments of `crash`.
pub(crate) struct Args {
    messages: u64,
    kills: u32,
    seed: u64,
    max_delay_ms: u64,
    timeout: Duration,
    durability: String,
}

const USAGE: &str = "usage: crash [--messages N] [--kills K] [--seed S] [--max-delay-ms MS] \
                     [--timeout SECONDS] [--durability normal|full]";

pub(crate) fn parse_args(rest: &[String]) -> Result<Args, String> {
    let mut args = Args {
        messages: 100_000,
        kills: 20,
        seed: 1,
        // Kills land 0-60 ms apart: a drain of 100,000 messages takes seconds, and with up to
        // 300 ms between kills the sender emptied the queue after 2 of its 20.
        max_delay_ms: 60,
        timeout: Duration::from_secs(1800),
        // A SIGKILL is a process crash, which `normal` survives; `full` adds an fsync per
        // commit that only a power loss needs.
        durability: "normal".into(),
    };
    let mut iter = rest.iter();
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let value = iter.next().ok_or(format!("{name} needs a value"))?;
            value
                .parse()
                .map_err(|_| format!("{name}: `{value}` is not a whole number"))
        };
        match arg.as_str() {
            "--messages" => args.messages = value("--messages")?,
            "--kills" => {
                args.kills = u32::try_from(value("--kills")?).map_err(|_| "--kills: too big")?;
            }
            "--seed" => args.seed = value("--seed")?,
            "--max-delay-ms" => args.max_delay_ms = value("--max-delay-ms")?,
            "--timeout" => args.timeout = Duration::from_secs(value("--timeout")?),
            "--durability" => {
                args.durability = iter.next().ok_or("--durability needs a value")?.clone();
            }
            other => return Err(format!("unknown argument `{other}` ({USAGE})")),
        }
    }
    Ok(args)
}

pub(crate) fn run(args: Args) -> Result<(), String> {
    eprintln!("==> building snakemq (release)");
    util::run(util::cargo().args(["build", "--release", "-p", "snakemq-cli"]))?;
    let binary = util::target_dir().join("release").join("snakemq");
    let dir = util::target_dir().join("crash");
    // A fresh folder: the stores of an earlier run would add their messages to this one.
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|err| format!("cannot clear {}: {err}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let config = Config {
        binary,
        dir,
        messages: args.messages,
        kills: args.kills,
        seed: args.seed,
        max_delay: Duration::from_millis(args.max_delay_ms),
        timeout: args.timeout,
        durability: args.durability,
    };
    let report = harness(&config)?;
    println!("{}", report.table());
    report.verdict()
}

/// One crash run.
struct Config {
    binary: PathBuf,
    /// Stores, the receiver's output and the logs go here.
    dir: PathBuf,
    messages: u64,
    /// SIGKILLs per side.
    kills: u32,
    seed: u64,
    max_delay: Duration,
    /// Bound on the whole run.
    timeout: Duration,
    /// `--durability` of both stores.
    durability: String,
}

/// What a run saw.
struct Report {
    expected: u64,
    received_lines: u64,
    distinct: u64,
    duplicates: u64,
    reordered: u64,
    malformed: u64,
    sender_kills: u32,
    receiver_kills: u32,
    unexpected_exits: u32,
    integrity_checks: u32,
    elapsed: Duration,
}

impl Report {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.distinct)
    }

    fn table(&self) -> String {
        let rows = [
            ("messages queued", self.expected.to_string()),
            ("lines received", self.received_lines.to_string()),
            ("distinct received", self.distinct.to_string()),
            ("lost", self.lost().to_string()),
            ("duplicated", self.duplicates.to_string()),
            ("reordered", self.reordered.to_string()),
            ("malformed lines", self.malformed.to_string()),
            ("sender SIGKILLs", self.sender_kills.to_string()),
            ("receiver SIGKILLs", self.receiver_kills.to_string()),
            ("unexpected exits", self.unexpected_exits.to_string()),
            ("store checks passed", self.integrity_checks.to_string()),
            ("time", format!("{:.1} s", self.elapsed.as_secs_f64())),
        ];
        let mut text = String::from("| what | count |\n|---|---:|\n");
        for (what, count) in rows {
            text.push_str(&format!("| {what} | {count} |\n"));
        }
        text
    }

    fn verdict(&self) -> Result<(), String> {
        if self.lost() > 0 || self.reordered > 0 || self.malformed > 0 || self.unexpected_exits > 0
        {
            Err(format!(
                "{} lost, {} reordered, {} malformed, {} unexpected exits",
                self.lost(),
                self.reordered,
                self.malformed,
                self.unexpected_exits
            ))
        } else {
            Ok(())
        }
    }
}

/// xorshift64*: reproducible kill moments from `--seed` without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Zero is xorshift's fixed point.
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }
}

/// The receiver: a `snakemq listen` whose stdout lines are appended to the output file.
struct Receiver {
    child: Child,
    copier: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Kills (SIGKILL) and reaps it, then waits until every line it wrote is in the file.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(copier) = self.copier.take() {
            // The pipe's writer died with the process, so the copier reaches the end.
            let _ = copier.join();
        }
    }
}

struct Paths {
    sender_store: PathBuf,
    receiver_store: PathBuf,
    output: PathBuf,
    sender_log: PathBuf,
    receiver_log: PathBuf,
}

fn log_file(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| format!("cannot open {}: {err}", path.display()))
}

fn spawn_receiver(config: &Config, paths: &Paths, addr: &str) -> Result<Receiver, String> {
    let mut child = Command::new(&config.binary)
        .args([
            "listen", "--ident", "bob", "--bind", addr, "--json", "--store",
        ])
        .arg(&paths.receiver_store)
        .args(["--durability", &config.durability])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(&paths.receiver_log)?)
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", config.binary.display()))?;
    let stdout = child.stdout.take().ok_or("the receiver has no stdout")?;
    let mut output = log_file(&paths.output)?;
    let copier = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A line cut short by the kill is kept on a line of its own, so the next
            // receiver's first line stays intact; the tally counts it as malformed.
            if line.last() != Some(&b'\n') {
                line.push(b'\n');
            }
            if output.write_all(&line).is_err() {
                break;
            }
        }
    });
    Ok(Receiver {
        child,
        copier: Some(copier),
    })
}

fn spawn_sender(config: &Config, paths: &Paths, addr: &str, queue: bool) -> Result<Child, String> {
    let mut command = Command::new(&config.binary);
    command
        .args([
            "send",
            "--ident",
            "alice",
            "--connect",
            addr,
            "--to",
            "bob",
            "--store",
        ])
        .arg(&paths.sender_store)
        .args(["--durability", &config.durability]);
    if queue {
        command.args(["--persistent", "--count", &config.messages.to_string()]);
        command.args(["--size", "16", "--timeout", "1"]);
    }
    command
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log_file(&paths.sender_log)?)
        .stderr(log_file(&paths.sender_log)?)
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", config.binary.display()))
}

/// `snakemq queue STORE` must open and read the store of a process that was just killed.
fn check_store(config: &Config, store: &Path, log: &mut impl FnMut(&str)) -> Result<(), String> {
    let output = Command::new(&config.binary)
        .arg("queue")
        .arg(store)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot start `snakemq queue`: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = stdout.lines().map(str::trim).take(4).collect();
    if !output.status.success() {
        return Err(format!(
            "store check failed: `snakemq queue {}` {}: {}",
            store.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    log(&format!(
        "    store {} ok: {}",
        store.file_name().unwrap_or_default().to_string_lossy(),
        summary.join(" / ")
    ));
    Ok(())
}

/// Waits up to `delay` for the sender to exit; its exit status if it did.
fn sender_exit(sender: &mut Child, delay: Duration) -> Result<Option<ExitStatus>, String> {
    let until = Instant::now() + delay;
    loop {
        if let Some(status) = sender
            .try_wait()
            .map_err(|err| format!("waiting for the sender: {err}"))?
        {
            return Ok(Some(status));
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // std has no wait with a timeout: poll the exit status.
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

/// A free loopback port for the receiver, kept across its restarts so the sender's
/// reconnecting connector finds every new receiver (tokio sets SO_REUSEADDR).
fn free_addr() -> Result<String, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|err| format!("cannot bind 127.0.0.1:0: {err}"))?;
    let addr = listener
        .local_addr()
        .map_err(|err| format!("no local address: {err}"))?;
    Ok(addr.to_string())
}

/// Runs the three phases; progress goes to stderr.
fn harness(config: &Config) -> Result<Report, String> {
    let started = Instant::now();
    let paths = Paths {
        sender_store: config.dir.join("sender.db"),
        receiver_store: config.dir.join("receiver.db"),
        output: config.dir.join("received.jsonl"),
        sender_log: config.dir.join("sender.log"),
        receiver_log: config.dir.join("receiver.log"),
    };
    let mut log = |line: &str| eprintln!("{line}");
    let addr = free_addr()?;
    let mut rng = Rng::new(config.seed);
    let mut report = Report {
        expected: config.messages,
        received_lines: 0,
        distinct: 0,
        duplicates: 0,
        reordered: 0,
        malformed: 0,
        sender_kills: 0,
        receiver_kills: 0,
        unexpected_exits: 0,
        integrity_checks: 0,
        elapsed: Duration::ZERO,
    };

    // Phase 1: nobody listens, so everything stays queued; exit 2 is "undelivered".
    log(&format!(
        "==> queueing {} persistent messages in {}",
        config.messages,
        paths.sender_store.display()
    ));
    let status = spawn_sender(config, &paths, &addr, true)?
        .wait()
        .map_err(|err| format!("waiting for the queueing sender: {err}"))?;
    if status.code() != Some(2) {
        return Err(format!(
            "queueing: `snakemq send --count` {status}, expected exit 2 (undelivered); see {}",
            paths.sender_log.display()
        ));
    }
    check_store(config, &paths.sender_store, &mut log)?;
    report.integrity_checks += 1;

    // Phase 2: deliver under fire.
    log(&format!(
        "==> delivering with {} SIGKILLs per side (seed {}, 0-{} ms apart)",
        config.kills,
        config.seed,
        config.max_delay.as_millis()
    ));
    let deadline = started + config.timeout;
    let mut receiver = spawn_receiver(config, &paths, &addr)?;
    let mut sender = spawn_sender(config, &paths, &addr, false)?;
    let result = deliver(
        config,
        &paths,
        &addr,
        &mut rng,
        &mut report,
        &mut receiver,
        &mut sender,
        deadline,
        &mut log,
    );
    // Whatever happened, no child outlives the run; every printed line reaches the file.
    let _ = sender.kill();
    let _ = sender.wait();
    receiver.kill();
    result?;

    // Phase 3: both stores must still open, and the tally.
    check_store(config, &paths.sender_store, &mut log)?;
    check_store(config, &paths.receiver_store, &mut log)?;
    report.integrity_checks += 2;
    tally(&paths.output, &mut report)?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The kill loop, then the wait for the sender to report an empty queue.
#[allow(clippy::too_many_arguments)]
fn deliver(
    config: &Config,
    paths: &Paths,
    addr: &str,
    rng: &mut Rng,
    report: &mut Report,
    receiver: &mut Receiver,
    sender: &mut Child,
    deadline: Instant,
    log: &mut impl FnMut(&str),
) -> Result<(), String> {
    let mut sender_left = config.kills;
    let mut receiver_left = config.kills;
    let max_delay = u64::try_from(config.max_delay.as_millis()).unwrap_or(u64::MAX);
    while sender_left + receiver_left > 0 {
        if Instant::now() > deadline {
            return Err("timed out during the kill phase".into());
        }
        let delay = Duration::from_millis(rng.below(max_delay.saturating_add(1)));
        if let Some(status) = sender_exit(sender, delay)? {
            if status.success() {
                log(&format!(
                    "    sender drained the queue with {sender_left} sender and \
                     {receiver_left} receiver kills left"
                ));
                return Ok(());
            }
            report.unexpected_exits += 1;
            log(&format!(
                "    sender exited on its own: {status}; restarting it"
            ));
            *sender = spawn_sender(config, paths, addr, false)?;
            continue;
        }
        let kill_sender = receiver_left == 0 || (sender_left > 0 && rng.below(2) == 0);
        if kill_sender {
            let _ = sender.kill();
            let _ = sender.wait();
            sender_left -= 1;
            report.sender_kills += 1;
            log(&format!(
                "  SIGKILL sender ({} of {})",
                report.sender_kills, config.kills
            ));
            check_store(config, &paths.sender_store, log)?;
            report.integrity_checks += 1;
            *sender = spawn_sender(config, paths, addr, false)?;
        } else {
            if let Some(status) = receiver.child.try_wait().map_err(|err| err.to_string())? {
                report.unexpected_exits += 1;
                log(&format!("    receiver had exited on its own: {status}"));
            }
            receiver.kill();
            receiver_left -= 1;
            report.receiver_kills += 1;
            log(&format!(
                "  SIGKILL receiver ({} of {})",
                report.receiver_kills, config.kills
            ));
            check_store(config, &paths.receiver_store, log)?;
            report.integrity_checks += 1;
            *receiver = spawn_receiver(config, paths, addr)?;
        }
    }
    log("==> kills done; draining");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "the sender did not drain its queue within {} s; see {}",
                config.timeout.as_secs(),
                paths.sender_log.display()
            ));
        }
        match sender_exit(sender, left.min(Duration::from_secs(1)))? {
            None => {}
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                report.unexpected_exits += 1;
                log(&format!(
                    "    sender exited on its own: {status}; restarting it"
                ));
                *sender = spawn_sender(config, paths, addr, false)?;
            }
        }
    }
}

/// Reads the receiver's output: sequence numbers in arrival order.
fn tally(output: &Path, report: &mut Report) -> Result<(), String> {
    let file =
        File::open(output).map_err(|err| format!("cannot read {}: {err}", output.display()))?;
    let mut seen = HashSet::new();
    let mut max_seen: Option<u64> = None;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|err| format!("cannot read {}: {err}", output.display()))?;
        report.received_lines += 1;
        let Some(seq) = sequence(&line).filter(|seq| *seq < report.expected) else {
            report.malformed += 1;
            continue;
        };
        if !seen.insert(seq) {
            report.duplicates += 1;
            continue;
        }
        if max_seen.is_some_and(|max| seq < max) {
            report.reordered += 1;
        }
        max_seen = max_seen.max(Some(seq));
    }
    report.distinct = u64::try_from(seen.len()).unwrap_or(u64::MAX);
    Ok(())
}

/// The sequence number in a `listen --json` line from alice: `"data":"123............."`.
/// The payloads are digits and dots, so no JSON escapes need handling.
fn sequence(line: &str) -> Option<u64> {
    if !line.starts_with(r#"{"from":"alice","#) {
        return None;
    }
    let (_, data) = line.split_once(r#""data":""#)?;
    let (data, _) = data.split_once('"')?;
    data.trim_end_matches('.').parse().ok()
}
