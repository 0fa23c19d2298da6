//! Persistent queues under SIGKILL: the reduced form of `cargo xtask crash`.
//!
//! 2 000 persistent messages are queued in the sender's store while nobody listens, then
//! delivered while the sender (`snakemq send --store` in its drain form) and the receiver
//! (`snakemq listen --store --json`) are each killed 3 times at random moments (a seeded
//! xorshift, so a failure can be replayed) and restarted. Nothing may be lost or
//! reordered; a message printed by a receiver killed before its acknowledgement left may
//! come again, and is only counted. Every wait is bounded and every child is killed on the
//! way out, so a broken binary fails the test instead of hanging it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_snakemq");
const MESSAGES: u64 = 2_000;
const KILLS: u32 = 3;
const MAX_DELAY_MS: u64 = 40;
/// The whole run, queueing included, ends within this or fails.
const BOUND: Duration = Duration::from_secs(180);

/// xorshift64*: reproducible kill moments without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}

struct Run {
    dir: PathBuf,
    addr: String,
}

impl Run {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn log(&self, name: &str) -> TestResult<File> {
        Ok(OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))?)
    }

    fn sender(&self, queue: bool) -> TestResult<Child> {
        let mut command = Command::new(BIN);
        command
            .args([
                "send",
                "--ident",
                "alice",
                "--connect",
                &self.addr,
                "--to",
                "bob",
            ])
            .arg("--store")
            .arg(self.path("sender.db"))
            .args(["--durability", "normal"]);
        if queue {
            let count = MESSAGES.to_string();
            command.args(["--persistent", "--count", &count, "--size", "16"]);
            command.args(["--timeout", "1"]);
        }
        Ok(command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(self.log("sender.log")?)
            .stderr(self.log("sender.log")?)
            .spawn()?)
    }

    fn receiver(&self) -> TestResult<Receiver> {
        let mut child = Command::new(BIN)
            .args(["listen", "--ident", "bob", "--bind", &self.addr, "--json"])
            .arg("--store")
            .arg(self.path("receiver.db"))
            .args(["--durability", "normal"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.log("receiver.log")?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut output = self.log("received.jsonl")?;
        // Lines go to the file as they arrive, so a kill loses none that were printed.
        let copier = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while let Ok(1..) = reader.read_until(b'\n', &mut line) {
                // A line cut short by the kill stays on a line of its own.
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                if output.write_all(&line).is_err() {
                    break;
                }
                line.clear();
            }
        });
        Ok(Receiver {
            child,
            copier: Some(copier),
        })
    }

    /// `snakemq queue STORE` opens and reads the store of a killed process.
    fn check_store(&self, name: &str) -> TestResult {
        let output = Command::new(BIN)
            .arg("queue")
            .arg(self.path(name))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprintln!("    {name}: {}", stdout.trim().replace('\n', " / "));
        if !output.status.success() {
            return Err(format!(
                "snakemq queue {name}: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(())
    }
}

/// A receiver: killed and reaped on drop, its copier joined so every line is in the file.
struct Receiver {
    child: Child,
    copier: Option<JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(copier) = self.copier.take() {
            let _ = copier.join();
        }
    }
}

/// Kills the sender when dropped, whichever way the test leaves.
struct Sender(Child);

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sender's exit status if it exits within `delay`.
fn exited(sender: &mut Child, delay: Duration) -> TestResult<Option<ExitStatus>> {
    let until = Instant::now() + delay;
    loop {
        if let Some(status) = sender.try_wait()? {
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

/// The sequence number of a `listen --json` line from alice (payload: digits, then dots).
fn sequence(line: &str) -> Option<u64> {
    if !line.starts_with(r#"{"from":"alice","#) {
        return None;
    }
    let (_, data) = line.split_once(r#""data":""#)?;
    let (data, _) = data.split_once('"')?;
    data.trim_end_matches('.').parse().ok()
}

/// Kills and restarts until the kills are spent or the sender reports an empty queue.
fn deliver(run: &Run, rng: &mut Rng, started: Instant) -> TestResult<(u32, u32)> {
    let mut receiver = run.receiver()?;
    let mut sender = Sender(run.sender(false)?);
    let (mut sender_kills, mut receiver_kills) = (0, 0);
    while sender_kills < KILLS || receiver_kills < KILLS {
        let delay = Duration::from_millis(rng.below(MAX_DELAY_MS + 1));
        if let Some(status) = exited(&mut sender.0, delay)? {
            if status.success() {
                eprintln!("  sender drained the queue before all kills were spent");
                return Ok((sender_kills, receiver_kills));
            }
            return Err(format!("the sender exited on its own: {status}").into());
        }
        if receiver.child.try_wait()?.is_some() {
            return Err("the receiver exited on its own; see receiver.log".into());
        }
        let kill_sender = receiver_kills == KILLS || (sender_kills < KILLS && rng.below(2) == 0);
        if kill_sender {
            drop(sender);
            sender_kills += 1;
            eprintln!("  SIGKILL sender ({sender_kills})");
            run.check_store("sender.db")?;
            sender = Sender(run.sender(false)?);
        } else {
            drop(receiver);
            receiver_kills += 1;
            eprintln!("  SIGKILL receiver ({receiver_kills})");
            run.check_store("receiver.db")?;
            receiver = run.receiver()?;
        }
    }
    eprintln!("  kills done; draining");
    let left = BOUND.saturating_sub(started.elapsed());
    match exited(&mut sender.0, left)? {
        Some(status) if status.success() => Ok((sender_kills, receiver_kills)),
        Some(status) => Err(format!("the sender exited on its own: {status}").into()),
        None => Err(format!("the queue was not drained within {BOUND:?}").into()),
    }
}

#[test]
fn persistent_messages_survive_sigkill_of_sender_and_receiver() -> TestResult {
    let started = Instant::now();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "crash-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // A free port, reused by every receiver so the sender's connector finds each one.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let run = Run { dir, addr };
    let seed = 0x5eed_u64;
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);

    // Nobody listens yet: every message is committed, then the command gives up (exit 2).
    let status = run.sender(true)?.wait()?;
    assert_eq!(status.code(), Some(2), "queueing: {status}");
    run.check_store("sender.db")?;

    let (sender_kills, receiver_kills) = deliver(&run, &mut rng, started)?;
    run.check_store("sender.db")?;
    run.check_store("receiver.db")?;

    let mut seen = HashSet::new();
    let (mut lines, mut duplicates, mut reordered, mut malformed) = (0u64, 0u64, 0u64, 0u64);
    let mut max_seen = None;
    for line in BufReader::new(File::open(run.path("received.jsonl"))?).lines() {
        let line = line?;
        lines += 1;
        let Some(seq) = sequence(&line).filter(|seq| *seq < MESSAGES) else {
            malformed += 1;
            eprintln!("  malformed: {line}");
            continue;
        };
        if !seen.insert(seq) {
            duplicates += 1;
        } else {
            if max_seen.is_some_and(|max| seq < max) {
                reordered += 1;
            }
            max_seen = max_seen.max(Some(seq));
        }
    }
    let lost = MESSAGES - seen.len() as u64;
    eprintln!(
        "seed {seed:#x}: {lines} lines, {} distinct, {lost} lost, {duplicates} duplicated, \
         {reordered} reordered, {malformed} malformed; {sender_kills} sender and \
         {receiver_kills} receiver kills; {:.1} s",
        seen.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(lost, 0, "lost messages");
    assert_eq!(reordered, 0, "reordered messages");
    assert_eq!(malformed, 0, "malformed lines");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&run.dir);
    Ok(())
}
