//! Real Python snakeMQ 1.6 peers for interop tests.
//!
//! Spawns `tests/python/peer.py` (see its docstring for the full command line and the JSON events)
//! with the interpreter of the snakeMQ virtualenv, reads its JSON event lines and kills it when the
//! [`PythonPeer`] is dropped, so a failing test leaves no stray process.
//!
//! Interpreter lookup: `$SNAKEMQ_PYTHON` (must exist when set), else `$SNAKEMQ_VENV/bin/python`,
//! else `$HOME/.cache/snakemq-venv/bin/python`. When none exists the spawn fails with a message that
//! says to run `cargo xtask python-env`: interop tests are never skipped silently.
//!
//! ```ignore
//! let mut py = PythonPeer::builder("py").listen("127.0.0.1:0").keepalive_secs(1.0, 0.5).spawn().await?;
//! let port = py.listening_port().await?;
//! // ... connect a Rust peer to 127.0.0.1:port, send to "py" ...
//! let msg = py.received().await?;
//! assert_eq!(msg.data.as_deref(), Some(&b"hello"[..]));
//! ```
//!
//! The waits use real time: do not use these peers under `tokio::time::pause()`.
#![allow(dead_code)] // each test binary uses a different part of this helper

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Error type of this helper: tests return `Result<(), Error>` and use `?`.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result of this helper.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// Default wait for one event. Generous: CI machines are slow, and a passing test never waits it.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// How many stderr lines of the Python process are kept for error messages.
const STDERR_KEEP: usize = 200;

/// Test data shared with `peer.py` (`pattern_len`): byte `i` is `i % 251`. Cheap to build on both
/// sides, so big messages need neither a JSON copy nor a hash library.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The Python interpreter of the snakeMQ virtualenv (see the module docs for the lookup order).
pub(crate) fn python_interpreter() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SNAKEMQ_PYTHON") {
        let path = PathBuf::from(path);
        if path.exists() {
            return Ok(path);
        }
        return Err(format!(
            "SNAKEMQ_PYTHON is set to {} but that file does not exist; \
             run `cargo xtask python-env` to create the snakeMQ virtualenv",
            path.display()
        )
        .into());
    }
    let mut candidates = Vec::new();
    if let Some(venv) = std::env::var_os("SNAKEMQ_VENV") {
        candidates.push(PathBuf::from(venv).join("bin").join("python"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/snakemq-venv/bin/python"));
    }
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| {
            format!(
                "no Python with snakeMQ 1.6 found (looked at $SNAKEMQ_PYTHON and {candidates:?}); \
             run `cargo xtask python-env` to create it"
            )
            .into()
        })
}

/// Path of `peer.py`.
pub(crate) fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/peer.py")
}

/// A message for the Python peer to send (one JSON line of `peer.py`'s input).
#[derive(Debug, Clone)]
pub(crate) struct PyMessage {
    data: Option<Vec<u8>>,
    pattern_len: Option<usize>,
    ttl: Option<f64>,
    flags: u32,
    uuid: Option<[u8; 16]>,
    to: Option<String>,
}

impl PyMessage {
    /// A message with this data, no expiry (`ttl` null; note Python's own default is 0), flags 0,
    /// a random uuid, sent to the peer's `--send-to`.
    pub(crate) fn new(data: impl Into<Vec<u8>>) -> Self {
        PyMessage {
            data: Some(data.into()),
            pattern_len: None,
            ttl: None,
            flags: 0,
            uuid: None,
            to: None,
        }
    }

    /// A message of `len` bytes of [`pattern`], built by Python itself (for big messages).
    pub(crate) fn pattern(len: usize) -> Self {
        PyMessage {
            data: None,
            pattern_len: Some(len),
            ..PyMessage::new(Vec::new())
        }
    }

    /// TTL in seconds (Python accepts fractions; 0 = only if connected now).
    pub(crate) fn ttl_secs(mut self, secs: f64) -> Self {
        self.ttl = Some(secs);
        self
    }

    /// The 32-bit flags.
    pub(crate) fn flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }

    /// FLAG_PERSISTENT (bit 0): stored in the peer's `--sqlite` queue.
    pub(crate) fn persistent(mut self) -> Self {
        self.flags |= 1;
        self
    }

    /// A fixed uuid.
    pub(crate) fn uuid(mut self, uuid: [u8; 16]) -> Self {
        self.uuid = Some(uuid);
        self
    }

    /// Destination identity (default: the peer's `--send-to`).
    pub(crate) fn to(mut self, ident: impl Into<String>) -> Self {
        self.to = Some(ident.into());
        self
    }

    /// The JSON object `peer.py` reads.
    pub(crate) fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        if let Some(data) = &self.data {
            obj.insert("data_hex".into(), Value::String(to_hex(data)));
        }
        if let Some(len) = self.pattern_len {
            obj.insert("pattern_len".into(), json!(len));
        }
        obj.insert("ttl".into(), json!(self.ttl));
        obj.insert("flags".into(), json!(self.flags));
        if let Some(uuid) = &self.uuid {
            obj.insert("uuid".into(), Value::String(to_hex(uuid)));
        }
        if let Some(to) = &self.to {
            obj.insert("to".into(), Value::String(to.clone()));
        }
        Value::Object(obj)
    }
}

/// A message the Python peer reported as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    /// Sender identity.
    pub(crate) from: String,
    /// Message uuid.
    pub(crate) uuid: [u8; 16],
    /// TTL as Python handed it to the application (`None` = infinite).
    pub(crate) ttl: Option<u64>,
    /// Flags.
    pub(crate) flags: u32,
    /// Data length.
    pub(crate) len: usize,
    /// The data, for messages of at most 64 KiB.
    pub(crate) data: Option<Vec<u8>>,
    /// Whether the data equals [`pattern`]`(len)`.
    pub(crate) pattern_ok: bool,
    /// SHA-256 of the data, hex.
    pub(crate) sha256: String,
}

impl Received {
    fn from_event(ev: &Value) -> Result<Self> {
        let field = |name: &str| ev.get(name).ok_or_else(|| format!("no {name} in {ev}"));
        let uuid = from_hex(str_of(field("uuid")?)?)?;
        Ok(Received {
            from: str_of(field("from")?)?.to_owned(),
            uuid: uuid
                .try_into()
                .map_err(|_| format!("uuid is not 16 bytes in {ev}"))?,
            ttl: match field("ttl")? {
                Value::Null => None,
                v => Some(v.as_u64().ok_or_else(|| format!("bad ttl in {ev}"))?),
            },
            flags: field("flags")?
                .as_u64()
                .and_then(|f| u32::try_from(f).ok())
                .ok_or_else(|| format!("bad flags in {ev}"))?,
            len: field("len")?
                .as_u64()
                .and_then(|l| usize::try_from(l).ok())
                .ok_or_else(|| format!("bad len in {ev}"))?,
            data: match ev.get("data_hex") {
                Some(v) => Some(from_hex(str_of(v)?)?),
                None => None,
            },
            pattern_ok: field("pattern_ok")?.as_bool().unwrap_or(false),
            sha256: str_of(field("sha256")?)?.to_owned(),
        })
    }
}

/// Options of a Python peer; [`PeerBuilder::spawn`] starts it.
#[derive(Debug, Clone)]
pub(crate) struct PeerBuilder {
    ident: String,
    args: Vec<OsString>,
    timeout: Duration,
    script: Option<PathBuf>,
}

impl PeerBuilder {
    fn push(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// `--listen HOST:PORT` (IPv4 only: Python 1.6 uses AF_INET). Port 0: see
    /// [`PythonPeer::listening_port`].
    pub(crate) fn listen(self, addr: impl Display) -> Self {
        self.push(&["--listen", &addr.to_string()])
    }

    /// `--connect HOST:PORT` (IPv4 only).
    pub(crate) fn connect(self, addr: impl Display) -> Self {
        self.push(&["--connect", &addr.to_string()])
    }

    /// Connector retry interval (Python's default is 3 s).
    pub(crate) fn reconnect_interval(self, interval: Duration) -> Self {
        self.push(&["--reconnect-interval", &interval.as_secs_f64().to_string()])
    }

    /// Python keepalive: PING after `interval` s of silence, close (and crash, see peer.py) when
    /// no packet arrives within `wait` s.
    pub(crate) fn keepalive_secs(self, interval: f64, wait: f64) -> Self {
        self.push(&["--keepalive", &interval.to_string(), &wait.to_string()])
    }

    /// Persistent queues in this SQLite file (SqliteQueuesStorage).
    pub(crate) fn sqlite(mut self, path: impl AsRef<Path>) -> Self {
        self.args.push("--sqlite".into());
        self.args.push(path.as_ref().as_os_str().to_owned());
        self
    }

    /// Default destination of messages.
    pub(crate) fn send_to(self, ident: &str) -> Self {
        self.push(&["--send-to", ident])
    }

    /// A message queued at start-up, before any connection.
    pub(crate) fn message(self, msg: &PyMessage) -> Self {
        self.push(&["--message", &msg.to_json().to_string()])
    }

    /// Exit 0 after `n` messages received (combined with `expect_sent`: after both).
    pub(crate) fn expect(self, n: usize) -> Self {
        self.push(&["--expect", &n.to_string()])
    }

    /// Exit 0 after `n` messages written to the socket.
    pub(crate) fn expect_sent(self, n: usize) -> Self {
        self.push(&["--expect-sent", &n.to_string()])
    }

    /// Exit 0 after this long.
    pub(crate) fn run_for(self, time: Duration) -> Self {
        self.push(&["--run", &time.as_secs_f64().to_string()])
    }

    /// Exit 1 after this long (default: 60 s; the Python side's own guard against a hung test).
    pub(crate) fn timeout(mut self, time: Duration) -> Self {
        self.timeout = time;
        self
    }

    /// Run another script with `peer.py`'s interface instead (`tests/python/ssl_peer.py`, the
    /// same peer over snakeMQ's SSL link).
    pub(crate) fn script(mut self, script: PathBuf) -> Self {
        self.script = Some(script);
        self
    }

    /// Any other `peer.py` argument.
    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Start the peer. Its stdout events and stderr lines are read by background tasks.
    pub(crate) async fn spawn(self) -> Result<PythonPeer> {
        let python = python_interpreter()?;
        let mut cmd = Command::new(&python);
        cmd.arg(self.script.clone().unwrap_or_else(peer_script))
            .arg("--ident")
            .arg(&self.ident)
            .arg("--timeout")
            .arg(self.timeout.as_secs_f64().to_string())
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let stdin = child.stdin.take();

        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let ev = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"event": "non_json", "line": line}));
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        let stderr_lines = Arc::new(Mutex::new(VecDeque::new()));
        let keep = Arc::clone(&stderr_lines);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut keep) = keep.lock() {
                    if keep.len() == STDERR_KEEP {
                        keep.pop_front();
                    }
                    keep.push_back(line);
                }
            }
        });
        Ok(PythonPeer {
            ident: self.ident,
            child,
            stdin,
            events,
            backlog: VecDeque::new(),
            history: Vec::new(),
            stderr: stderr_lines,
            next_tag: 0,
        })
    }
}

/// A running `peer.py`. Killed when dropped.
#[derive(Debug)]
pub(crate) struct PythonPeer {
    ident: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<Value>,
    /// Events read but not yet consumed by a `wait_for`, in arrival order.
    backlog: VecDeque<Value>,
    /// Every event read, for error messages and for tests that check order.
    history: Vec<Value>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Last tag given to a message sent through stdin.
    next_tag: u64,
}

impl PythonPeer {
    /// Options for a peer named `ident`.
    pub(crate) fn builder(ident: &str) -> PeerBuilder {
        PeerBuilder {
            ident: ident.to_owned(),
            args: Vec::new(),
            timeout: Duration::from_secs(60),
            script: None,
        }
    }

    /// The peer's identity.
    pub(crate) fn ident(&self) -> &str {
        &self.ident
    }

    /// The first event (oldest first, including ones skipped by earlier waits) that matches
    /// `pred`, which is consumed; other events stay available. Fails on `timeout`, or when the
    /// process ends first, with the events seen and the end of its stderr.
    pub(crate) async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        if let Some(pos) = self.backlog.iter().position(&mut pred) {
            if let Some(ev) = self.backlog.remove(pos) {
                return Ok(ev);
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    self.history.push(ev.clone());
                    if pred(&ev) {
                        return Ok(ev);
                    }
                    self.backlog.push_back(ev);
                }
                Ok(None) => {
                    let status = self.child.try_wait().ok().flatten();
                    return Err(self.failure(what, &format!("process ended ({status:?})")));
                }
                Err(_) => return Err(self.failure(what, &format!("timed out after {timeout:?}"))),
            }
        }
    }

    fn failure(&self, what: &str, why: &str) -> Error {
        let stderr = self
            .stderr
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        let events: Vec<String> = self.history.iter().map(Value::to_string).collect();
        format!(
            "python peer {:?}: waiting for {what}: {why}\n--- events ---\n{}\n--- stderr (end) ---\n{stderr}",
            self.ident,
            events.join("\n")
        )
        .into()
    }

    /// The next event named `name` whose fields include `fields` (e.g. `json!({"ident": "rust"})`).
    pub(crate) async fn event(&mut self, name: &str, fields: Value) -> Result<Value> {
        let what = format!("{name} {fields}");
        self.wait_for(&what, DEFAULT_WAIT, |ev| {
            ev.get("event").and_then(Value::as_str) == Some(name) && has_fields(ev, &fields)
        })
        .await
    }

    /// The bound port of the (first) `--listen`.
    pub(crate) async fn listening_port(&mut self) -> Result<u16> {
        let ev = self.event("listening", json!({})).await?;
        ev.get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("bad listening event {ev}").into())
    }

    /// Wait until Python reports `ident` as connected (identification received).
    pub(crate) async fn connected(&mut self, ident: &str) -> Result<()> {
        self.event("connected", json!({ "ident": ident }))
            .await
            .map(drop)
    }

    /// Wait until Python reports `ident` as disconnected.
    pub(crate) async fn disconnected(&mut self, ident: &str) -> Result<()> {
        self.event("disconnected", json!({ "ident": ident }))
            .await
            .map(drop)
    }

    /// The next received message.
    pub(crate) async fn received(&mut self) -> Result<Received> {
        let ev = self.event("received", json!({})).await?;
        Received::from_event(&ev)
    }

    /// Write one JSON line to the peer's stdin.
    pub(crate) async fn write_json(&mut self, value: &Value) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("stdin already closed")?;
        let mut line = value.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Queue a message in Python (`send_message`); returns whether Python queued it (it drops a
    /// ttl-0 message for a peer that is not connected).
    pub(crate) async fn send(&mut self, msg: &PyMessage) -> Result<bool> {
        // The tag pairs this request with its "queued" event (start-up messages have none).
        self.next_tag += 1;
        let tag = self.next_tag;
        let mut line = msg.to_json();
        if let Some(obj) = line.as_object_mut() {
            obj.insert("tag".into(), json!(tag));
        }
        self.write_json(&line).await?;
        let ev = self.event("queued", json!({ "tag": tag })).await?;
        ev.get("queued")
            .and_then(Value::as_bool)
            .ok_or_else(|| format!("bad queued event {ev}").into())
    }

    /// Close every connection of the Python peer now (its connectors reconnect later).
    pub(crate) async fn disconnect_all(&mut self) -> Result<()> {
        self.write_json(&json!({"cmd": "disconnect"})).await
    }

    /// Queue lengths per destination identity, as Python holds them.
    pub(crate) async fn queue_lengths(&mut self) -> Result<serde_json::Map<String, Value>> {
        self.write_json(&json!({"cmd": "queues"})).await?;
        let ev = self.event("queues", json!({})).await?;
        match ev.get("queues") {
            Some(Value::Object(map)) => Ok(map.clone()),
            _ => Err(format!("bad queues event {ev}").into()),
        }
    }

    /// Ask for a graceful stop and wait for the exit code (0 expected).
    pub(crate) async fn stop(&mut self) -> Result<i32> {
        self.write_json(&json!({"cmd": "stop"})).await?;
        self.wait_exit(DEFAULT_WAIT).await
    }

    /// Wait for the process to end by itself (`--expect`, `--run`, ...); its exit code: 0 =
    /// success, 1 = its `--timeout`, 2 = bad input, 3 = a snakeMQ exception (crash).
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> Result<i32> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(code_of(status?)),
            Err(_) => Err(self.failure("exit", &format!("timed out after {timeout:?}"))),
        }
    }

    /// Like [`wait_exit`](Self::wait_exit) but fails unless the code is 0.
    pub(crate) async fn wait_success(&mut self) -> Result<()> {
        match self.wait_exit(DEFAULT_WAIT).await? {
            0 => Ok(()),
            code => {
                // Drain what is left so the error shows the final events (crash traceback).
                while let Ok(Some(ev)) =
                    tokio::time::timeout(Duration::from_secs(1), self.events.recv()).await
                {
                    self.history.push(ev);
                }
                Err(self.failure("exit code 0", &format!("exit code {code}")))
            }
        }
    }

    /// SIGKILL the process (a crash: no graceful close, nothing flushed) and reap it.
    pub(crate) async fn kill(&mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Every event read so far, in order.
    pub(crate) fn history(&self) -> &[Value] {
        &self.history
    }
}

fn code_of(status: ExitStatus) -> i32 {
    // None = killed by a signal.
    status.code().unwrap_or(-1)
}

fn has_fields(ev: &Value, fields: &Value) -> bool {
    match fields.as_object() {
        Some(map) => map.iter().all(|(k, v)| ev.get(k) == Some(v)),
        None => true,
    }
}

fn str_of(v: &Value) -> Result<&str> {
    v.as_str()
        .ok_or_else(|| format!("expected a string, got {v}").into())
}

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string.
pub(crate) fn from_hex(text: &str) -> Result<Vec<u8>> {
    if text.len() % 2 != 0 {
        return Err(format!("odd hex length: {text:?}").into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("bad hex: {text:?}").into())
        })
        .collect()
}
