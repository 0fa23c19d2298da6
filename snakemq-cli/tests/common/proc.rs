//! Running the `snakemq` binary in tests: a child process killed on drop, its stdout
//! collected, its stderr read line by line, every wait bounded.
//!
//! Shared by the CLI test files (`#[path = "common/proc.rs"] mod proc;`); each uses a part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_snakemq");
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A running child: killed on drop; stdout collected, stderr forwarded line by line.
pub(crate) struct Proc {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Proc {
    pub(crate) fn spawn(args: &[&str]) -> Result<Proc, Box<dyn std::error::Error>> {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut out = child.stdout.take().ok_or("no stdout")?;
        let err = child.stderr.take().ok_or("no stderr")?;
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let (tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            child,
            stdout: Some(stdout),
            stderr,
            stderr_seen: Vec::new(),
        })
    }

    /// The next stderr line that starts with `prefix` (the rest of it), within [`WAIT`].
    pub(crate) fn stderr_line(
        &mut self,
        prefix: &str,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stderr
                .recv_timeout(left)
                .map_err(|_| format!("no stderr line {prefix:?}; saw {:?}", self.stderr_seen))?;
            self.stderr_seen.push(line.clone());
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.to_owned());
            }
        }
    }

    /// Waits (bounded) for the exit; returns the status, stdout and all of stderr.
    pub(crate) fn finish(
        mut self,
    ) -> Result<(ExitStatus, String, String), Box<dyn std::error::Error>> {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                return Err(format!("{BIN} did not exit within {WAIT:?}").into());
            }
            // Polling the exit status: std has no wait with a timeout.
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self
            .stdout
            .take()
            .ok_or("stdout taken")?
            .join()
            .map_err(|_| "stdout reader panicked")?;
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        // The writer end is closed once the process exited, so this ends.
        while let Ok(line) = self.stderr.recv_timeout(WAIT) {
            stderr.push(line);
        }
        Ok((status, stdout, stderr.join("\n")))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn run(
    args: &[&str],
) -> Result<(ExitStatus, String, String), Box<dyn std::error::Error>> {
    Proc::spawn(args)?.finish()
}

/// `listen --json` for `count` messages as bob on a free port; returns it and its address.
pub(crate) fn listener(count: &str) -> Result<(Proc, String), Box<dyn std::error::Error>> {
    let mut listener = Proc::spawn(&[
        "listen",
        "--ident",
        "bob",
        "--bind",
        "127.0.0.1:0",
        "--json",
        "--count",
        count,
    ])?;
    let addr = listener.stderr_line("listening on ")?;
    Ok((listener, addr))
}
