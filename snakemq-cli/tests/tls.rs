//! `snakemq certs` and the `--tls-*` flags end to end: certificates made by the command
//! itself carry mutual TLS between `listen` and `send`; a peer whose certificate comes from
//! another CA delivers nothing.

use std::path::Path;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[path = "common/proc.rs"]
mod proc;

use proc::{Proc, run};

/// `snakemq certs --out DIR alice bob`.
fn make_certs(dir: &Path) -> TestResult {
    let out = dir.to_str().ok_or("temp path is not UTF-8")?;
    let (status, stdout, stderr) = run(&["certs", "--out", out, "alice", "bob"])?;
    assert!(status.success(), "{status}: {stderr}");
    assert!(stdout.contains("ca.pem"), "{stdout}");
    for file in [
        "ca.pem",
        "ca-key.pem",
        "alice.pem",
        "alice-key.pem",
        "bob.pem",
        "bob-key.pem",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    Ok(())
}

/// `--tls-cert/--tls-key/--tls-ca` of `name` from `dir`.
fn tls_flags(dir: &Path, name: &str, ca_dir: &Path) -> Vec<String> {
    let path = |p: &Path, file: String| p.join(file).to_string_lossy().into_owned();
    vec![
        "--tls-cert".into(),
        path(dir, format!("{name}.pem")),
        "--tls-key".into(),
        path(dir, format!("{name}-key.pem")),
        "--tls-ca".into(),
        path(ca_dir, "ca.pem".into()),
    ]
}

/// `listen` as bob with mutual TLS on a free port, for one message.
fn tls_listener(dir: &Path) -> Result<(Proc, String), Box<dyn std::error::Error>> {
    listener_with(dir, &[])
}

/// [`tls_listener`] with more flags (`--quic`).
fn listener_with(dir: &Path, extra: &[&str]) -> Result<(Proc, String), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = [
        "listen",
        "--ident",
        "bob",
        "--bind",
        "127.0.0.1:0",
        "--count",
        "1",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args.extend(tls_flags(dir, "bob", dir));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut listener = Proc::spawn(&args)?;
    let addr = listener.stderr_line("listening on ")?;
    Ok((listener, addr))
}

fn send_args<'a>(addr: &'a str, flags: &'a [String], timeout: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "send",
        "--ident",
        "alice",
        "--connect",
        addr,
        "--to",
        "bob",
        "--timeout",
        timeout,
    ];
    args.extend(flags.iter().map(String::as_str));
    args.push("over tls");
    args
}

#[test]
fn mutual_tls_between_listen_and_send_with_generated_certificates() -> TestResult {
    let dir = tempfile::tempdir()?;
    make_certs(dir.path())?;
    let (listener, addr) = tls_listener(dir.path())?;
    let flags = tls_flags(dir.path(), "alice", dir.path());
    let (status, _, stderr) = run(&send_args(&addr, &flags, "20"))?;
    assert!(status.success(), "{status}: {stderr}");
    let (status, stdout, stderr) = listener.finish()?;
    assert!(status.success(), "{status}: {stderr}");
    assert!(stdout.starts_with("alice: \"over tls\""), "{stdout}");
    Ok(())
}

#[test]
fn mutual_tls_over_quic_between_listen_and_send() -> TestResult {
    let dir = tempfile::tempdir()?;
    make_certs(dir.path())?;
    let (listener, addr) = listener_with(dir.path(), &["--quic"])?;
    assert!(addr.starts_with("quic://"), "{addr}");
    let mut flags = vec!["--quic".to_owned()];
    flags.extend(tls_flags(dir.path(), "alice", dir.path()));
    let (status, _, stderr) = run(&send_args(&addr, &flags, "20"))?;
    assert!(status.success(), "{status}: {stderr}");
    let (status, stdout, stderr) = listener.finish()?;
    assert!(status.success(), "{status}: {stderr}");
    assert!(stdout.starts_with("alice: \"over tls\""), "{stdout}");
    Ok(())
}

#[test]
fn a_certificate_from_another_ca_delivers_nothing() -> TestResult {
    let (ours, theirs) = (tempfile::tempdir()?, tempfile::tempdir()?);
    make_certs(ours.path())?;
    make_certs(theirs.path())?;
    let (listener, addr) = tls_listener(ours.path())?;
    // alice trusts our CA (so she would accept the server) but presents a certificate
    // from another CA: the listener refuses the handshake, nothing is delivered.
    let flags = tls_flags(theirs.path(), "alice", ours.path());
    let (status, _, stderr) = run(&send_args(&addr, &flags, "2"))?;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("1 of 1 messages to bob undelivered"),
        "{stderr}"
    );
    drop(listener);
    Ok(())
}

#[test]
fn tls_flags_that_cannot_work_are_one_line_and_exit_1() -> TestResult {
    let dir = tempfile::tempdir()?;
    make_certs(dir.path())?;
    let cert = dir.path().join("alice.pem").to_string_lossy().into_owned();
    let key = dir
        .path()
        .join("alice-key.pem")
        .to_string_lossy()
        .into_owned();
    // A connector must be told how to verify the server.
    let (status, _, stderr) = run(&[
        "send",
        "--ident",
        "alice",
        "--connect",
        "127.0.0.1:1",
        "--to",
        "bob",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "x",
    ])?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--tls-ca"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // A missing file is named.
    let (status, _, stderr) = run(&[
        "listen",
        "--ident",
        "bob",
        "--bind",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent.pem",
        "--tls-key",
        &key,
    ])?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent.pem"), "{stderr}");
    Ok(())
}
