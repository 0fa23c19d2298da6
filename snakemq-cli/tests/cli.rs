//! The `snakemq` binary end to end: listen, send, demo, and their exit codes.
//!
//! Every child process is killed when its guard is dropped and every wait is bounded, so
//! a broken binary fails the tests instead of hanging them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[path = "common/proc.rs"]
mod proc;

use proc::{Proc, WAIT, listener, run};

fn is_uuid(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn listen_json_prints_exactly_what_send_sent() -> TestResult {
    let (listener, addr) = listener("3")?;

    let (status, ids, stderr) = run(&[
        "send",
        "--ident",
        "alice",
        "--connect",
        &addr,
        "--to",
        "bob",
        "--ttl",
        "600",
        "--flags",
        "5",
        "--print-uuids",
        "hello",
        "wörld \"quoted\"",
    ])?;
    assert!(status.success(), "{status}: {stderr}");
    let ids: Vec<&str> = ids.lines().collect();
    let [id0, id1] = ids.as_slice() else {
        return Err(format!("two ids expected: {ids:?}").into());
    };
    assert!(ids.iter().all(|id| is_uuid(id)), "{ids:?}");

    // Not UTF-8: reported as data_b64. No --ttl: no expiry, null.
    let (status, binary_id, stderr) = run(&[
        "send",
        "--ident",
        "alice",
        "--connect",
        &addr,
        "--to",
        "bob",
        "--persistent",
        "--hex",
        "--print-uuids",
        "ff00fe",
    ])?;
    assert!(status.success(), "{status}: {stderr}");
    let binary_id = binary_id.trim();
    assert!(is_uuid(binary_id), "{binary_id:?}");

    let (status, stdout, stderr) = listener.finish()?;
    assert!(status.success(), "{status}: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let [line0, line1, line2] = lines.as_slice() else {
        return Err(format!("three lines expected: {stdout}").into());
    };
    // The sender announces the remaining whole seconds, so 600 may already be 599.
    for (line, id, data, len) in [
        (line0, id0, r#""data":"hello""#, 5),
        (line1, id1, r#""data":"wörld \"quoted\"""#, 15),
    ] {
        let expected = |ttl: u32| {
            format!(r#"{{"from":"alice","uuid":"{id}","ttl":{ttl},"flags":5,"len":{len},{data}}}"#)
        };
        assert!(*line == expected(600) || *line == expected(599), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(parsed.get("len"), Some(&serde_json::Value::from(len)));
    }
    assert_eq!(
        *line2,
        format!(
            r#"{{"from":"alice","uuid":"{binary_id}","ttl":null,"flags":1,"len":3,"data_b64":"/wD+"}}"#
        )
    );
    Ok(())
}

#[test]
fn send_to_an_unreachable_peer_times_out_naming_it() -> TestResult {
    // A port that was free a moment ago: nothing listens there.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.to_string()
    };
    let started = Instant::now();
    let (status, _, stderr) = run(&[
        "send",
        "--ident",
        "alice",
        "--connect",
        &addr,
        "--to",
        "bob",
        "--timeout",
        "1",
        "one",
        "two",
        "three",
    ])?;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        stderr.contains("3 of 3 messages to bob undelivered"),
        "{stderr}"
    );
    assert!(stderr.contains(&addr), "{stderr}");
    Ok(())
}

#[test]
fn address_in_use_is_one_line_and_exit_1() -> TestResult {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let (status, stdout, stderr) = run(&["listen", "--ident", "bob", "--bind", &addr])?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
    drop(taken);
    Ok(())
}

#[test]
fn bad_flags_exit_2() -> TestResult {
    let (status, _, stderr) = run(&[
        "send",
        "--ident",
        "a",
        "--connect",
        "127.0.0.1:1",
        "--to",
        "b",
        "--ttl",
        "soon",
        "x",
    ])?;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--ttl"), "{stderr}");
    Ok(())
}

#[test]
fn generated_messages_are_numbered_and_padded() -> TestResult {
    let (listener, addr) = listener("12")?;
    let (status, _, stderr) = run(&[
        "send",
        "--ident",
        "alice",
        "--connect",
        &addr,
        "--to",
        "bob",
        "--count",
        "12",
        "--size",
        "4",
    ])?;
    assert!(status.success(), "{status}: {stderr}");
    let (status, stdout, stderr) = listener.finish()?;
    assert!(status.success(), "{status}: {stderr}");
    let data: Vec<Option<String>> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|v| v.get("data").map(|d| d.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let expected: Vec<Option<String>> = (0..12).map(|i| Some(format!("\"{i:.<4}\""))).collect();
    assert_eq!(data, expected);
    Ok(())
}

#[test]
fn demo_runs_by_itself() -> TestResult {
    let (status, stdout, stderr) = run(&["demo"])?;
    assert!(status.success(), "{status}: {stderr}\n{stdout}");
    assert!(
        stdout.contains("bob receives \"while you were away #3\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "bob connects to the new alice and receives \"kept on disk across a restart\""
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("bob #1 shuts down in the middle of the call"),
        "{stdout}"
    );
    assert!(
        stdout.contains("alice gets \"hello alice, from bob #2\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "the call ran to completion exactly once (handler runs started/finished: \
             bob #1 1/0, bob #2 1/1)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("done in"), "{stdout}");
    Ok(())
}

/// The Python interpreter with snakeMQ 1.6, found as the messaging crate's interop tests
/// find it; missing is a failure that says how to set it up, never a silent skip.
fn python() -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    if let Some(path) = std::env::var_os("SNAKEMQ_PYTHON") {
        return Ok(path.into());
    }
    let mut candidates = Vec::new();
    if let Some(venv) = std::env::var_os("SNAKEMQ_VENV") {
        candidates.push(std::path::PathBuf::from(venv).join("bin/python"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(std::path::PathBuf::from(home).join(".cache/snakemq-venv/bin/python"));
    }
    candidates
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| "no Python with snakeMQ 1.6 found; run `cargo xtask python-env`".into())
}

/// A Python snakeMQ peer (`snakemq/tests/python/peer.py`), killed on drop.
struct PyPeer(Child);

impl PyPeer {
    fn spawn(
        args: &[&str],
    ) -> Result<(PyPeer, mpsc::Receiver<String>), Box<dyn std::error::Error>> {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../snakemq/tests/python/peer.py"
        );
        let mut child = Command::new(python()?)
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok((PyPeer(child), rx))
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next JSON event line from the Python peer whose "event" is `name`.
fn py_event(
    lines: &mpsc::Receiver<String>,
    name: &str,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .map_err(|_| format!("no {name:?} event from the Python peer"))?;
        let value: serde_json::Value = serde_json::from_str(&line)?;
        if value.get("event").and_then(|e| e.as_str()) == Some(name) {
            return Ok(value);
        }
    }
}

#[test]
fn listen_and_send_talk_to_python_snakemq() -> TestResult {
    // Python -> listen.
    let mut listener = Proc::spawn(&[
        "listen",
        "--ident",
        "rust",
        "--bind",
        "127.0.0.1:0",
        "--json",
        "--count",
        "2",
    ])?;
    let addr = listener.stderr_line("listening on ")?;
    let (_sender, events) = PyPeer::spawn(&[
        "--ident",
        "py",
        "--connect",
        &addr,
        "--send-to",
        "rust",
        "--message",
        r#"{"data_b64":"aGk=","ttl":30,"flags":1,"uuid":"00112233445566778899aabbccddeeff"}"#,
        "--message",
        r#"{"data_hex":"ff01","uuid":"ffeeddccbbaa99887766554433221100"}"#,
        "--expect-sent",
        "2",
        "--linger",
        "1",
        "--timeout",
        "20",
    ])?;
    let (status, stdout, stderr) = listener.finish()?;
    assert!(status.success(), "{status}: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let [first, second] = lines.as_slice() else {
        return Err(format!("two lines expected: {stdout}").into());
    };
    let first_ok = |ttl: u32| {
        format!(
            r#"{{"from":"py","uuid":"00112233445566778899aabbccddeeff","ttl":{ttl},"flags":1,"len":2,"data":"hi"}}"#
        )
    };
    assert!(*first == first_ok(30) || *first == first_ok(29), "{first}");
    assert_eq!(
        *second,
        r#"{"from":"py","uuid":"ffeeddccbbaa99887766554433221100","ttl":null,"flags":0,"len":2,"data_b64":"/wE="}"#
    );
    py_event(&events, "exit")?;

    // send -> Python.
    let (_receiver, events) = PyPeer::spawn(&[
        "--ident",
        "py",
        "--listen",
        "127.0.0.1:0",
        "--expect",
        "1",
        "--timeout",
        "20",
    ])?;
    let listening = py_event(&events, "listening")?;
    let port = listening
        .get("port")
        .and_then(|p| p.as_u64())
        .ok_or("no port")?;
    let (status, _, stderr) = run(&[
        "send",
        "--ident",
        "rust",
        "--connect",
        &format!("127.0.0.1:{port}"),
        "--to",
        "py",
        "--flags",
        "4",
        "--timeout",
        "20",
        "to python",
    ])?;
    assert!(status.success(), "{status}: {stderr}");
    let received = py_event(&events, "received")?;
    assert_eq!(received.get("from").and_then(|v| v.as_str()), Some("rust"));
    assert_eq!(received.get("flags").and_then(|v| v.as_u64()), Some(4));
    assert_eq!(
        received.get("data_hex").and_then(|v| v.as_str()),
        Some(hex::encode("to python").as_str())
    );
    Ok(())
}
