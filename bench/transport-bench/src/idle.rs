//! `tls-idle-memory`: resident memory per idle connection of our `Link`, over plain TCP and
//! over TLS.
//!
//! Each transport is measured in a fresh `idle-memory` process (freed memory is not always
//! given back to the system, so two measurements in one process would disturb each other).
//! That process is the listening side; the connecting side is an `idle-clients` child
//! process, so each process's resident set holds one side only. Both open a few warm-up
//! connections first (runtime threads, TLS settings, first allocations), read their
//! resident set, open N more, read it again: (after - before) / N. Every connection has a
//! task waiting in a read, as a peer's reader would.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use snakemq_link::{ConnectOptions, Connection, Endpoint, Link, LinkConfig, ListenOptions};
use tokio::sync::mpsc;

use crate::certs::Pki;
use crate::{Args, BoxError, within};

/// Connections opened before the first reading.
const WARM_UP_CONNECTIONS: usize = 16;
/// Time for every new connection's reader task to reach its first read (which allocates
/// its buffer); nothing signals that moment.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs `idle-memory` for plain TCP and for TLS and prints both, with TLS's extra bytes.
pub(crate) async fn compare(args: &Args) -> Result<String, BoxError> {
    let exe = std::env::current_exe()?;
    let mut line = format!(
        "{{\"mode\":\"{}\",\"connections\":{}",
        args.mode, args.connections
    );
    let mut per_side = Vec::new();
    for transport in ["tcp", "tls"] {
        let output = Command::new(&exe)
            .args(["idle-memory", "--transport", transport])
            .args(["--connections", &args.connections.to_string()])
            .args(["--threads", &args.threads.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!("idle-memory --transport {transport}: {}", output.status).into());
        }
        let result = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or("idle-memory printed no JSON line")?
            .to_owned();
        for side in ["server", "client"] {
            let key = format!("{side}_bytes_per_conn");
            let value = number(&result, &key).ok_or_else(|| format!("no {key} in {result}"))?;
            line.push_str(&format!(",\"{transport}_{key}\":{value:.0}"));
            per_side.push((transport, side, value));
        }
    }
    for side in ["server", "client"] {
        let find = |transport: &str| {
            per_side
                .iter()
                .find(|(t, s, _)| *t == transport && *s == side)
                .map(|(_, _, v)| *v)
        };
        if let (Some(tcp), Some(tls)) = (find("tcp"), find("tls")) {
            line.push_str(&format!(
                ",\"tls_extra_{side}_bytes_per_conn\":{:.0}",
                tls - tcp
            ));
        }
    }
    line.push('}');
    Ok(line)
}

/// The number after `"key":` in a flat JSON line.
fn number(line: &str, key: &str) -> Option<f64> {
    let quoted = format!("\"{key}\":");
    let after = line.get(line.find(&quoted)? + quoted.len()..)?;
    let end = after
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-')))
        .unwrap_or(after.len());
    after.get(..end)?.parse().ok()
}

/// Resident set size of this process, from `/proc/self/status`.
fn rss_bytes() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}

/// Keeps a connection open with a task waiting in a read until the peer closes it.
fn hold(connection: Connection) {
    tokio::spawn(async move {
        let (_info, mut reader, writer) = connection.into_parts();
        while let Ok(Some(_)) = reader.next().await {}
        drop(writer);
    });
}

/// `idle-memory`: the listening side, measured; starts `idle-clients` for the other side.
pub(crate) async fn listener_side(args: &Args) -> Result<String, BoxError> {
    let pki = Pki::generate()?;
    let listen = match args.transport.as_str() {
        "tcp" => ListenOptions::plain(),
        "tls" => ListenOptions::tls(pki.tls_server()?),
        other => return Err(format!("--transport takes tcp or tls, not {other}").into()),
    };
    // Room to spare: a connection the limit refused would come back only after the
    // connector's backoff.
    let config =
        LinkConfig::default().max_connections(2 * (args.connections + WARM_UP_CONNECTIONS));
    let (server, mut incoming) = Link::new(config);
    let (_, bound) = server.listen_with(&"127.0.0.1:0".parse()?, listen).await?;

    let mut child = Command::new(std::env::current_exe()?)
        .args(["idle-clients", "--transport", &args.transport])
        .args(["--endpoint", &bound.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .envs(pki.to_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut to_child = child.stdin.take().ok_or("no stdin pipe to the child")?;
    let from_child = child.stdout.take().ok_or("no stdout pipe from the child")?;
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from_child).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut readings = Vec::new();
    for batch in [WARM_UP_CONNECTIONS, args.connections] {
        writeln!(to_child, "open {batch}")?;
        to_child.flush()?;
        for accepted in 0..batch {
            let what = format!("accepted connection {} of {batch}", accepted + 1);
            hold(
                within(&what, incoming.next())
                    .await?
                    .ok_or("the listening link closed")?,
            );
        }
        let reply = within("the connecting side", lines.recv())
            .await?
            .ok_or("the connecting side exited")?;
        let client_rss: u64 = reply
            .strip_prefix("ready ")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("unexpected reply `{reply}`"))?;
        tokio::time::sleep(SETTLE).await;
        readings.push((rss_bytes()?, client_rss));
    }
    drop(to_child);
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    if !status.success() {
        return Err(format!("idle-clients: {status}").into());
    }
    server.close().await;

    let [(server_before, client_before), (server_after, client_after)] = readings[..] else {
        return Err("missing readings".into());
    };
    let per = |before: u64, after: u64| (after as f64 - before as f64) / args.connections as f64;
    Ok(format!(
        "{{\"mode\":\"idle-memory\",\"transport\":\"{}\",\"connections\":{},\
         \"server_bytes_per_conn\":{:.0},\"client_bytes_per_conn\":{:.0},\
         \"server_rss_before\":{server_before},\"server_rss_after\":{server_after},\
         \"client_rss_before\":{client_before},\"client_rss_after\":{client_after}}}",
        args.transport,
        args.connections,
        per(server_before, server_after),
        per(client_before, client_after),
    ))
}

/// `idle-clients`: opens connections to `--endpoint` when told to on stdin (`open K`),
/// answers `ready RSS` once they are all up; exits at the end of stdin.
pub(crate) async fn client_side(args: &Args) -> Result<String, BoxError> {
    let endpoint: Endpoint = args.endpoint.parse()?;
    let connect = match args.transport.as_str() {
        "tcp" => ConnectOptions::plain(),
        "tls" => ConnectOptions::tls(Pki::from_env()?.tls_client()?),
        other => return Err(format!("--transport takes tcp or tls, not {other}").into()),
    };
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (client, mut connected) = Link::new(LinkConfig::default().max_connections(1 << 20));
    while let Some(line) = lines.recv().await {
        let count: usize = line
            .strip_prefix("open ")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("unexpected command `{line}`"))?;
        for _ in 0..count {
            client.connect_with(endpoint.clone(), connect.clone())?;
        }
        for _ in 0..count {
            hold(
                within("a connection", connected.next())
                    .await?
                    .ok_or("the connecting link closed")?,
            );
        }
        tokio::time::sleep(SETTLE).await;
        println!("ready {}", rss_bytes()?);
    }
    client.close().await;
    Ok("{\"mode\":\"idle-clients\"}".to_owned())
}
