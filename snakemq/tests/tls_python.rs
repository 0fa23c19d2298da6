//! TLS interoperability with the real Python snakeMQ 1.6 SSL link (`snakemq.link.SSLConfig`,
//! `ssl.wrap_socket` under Python 3.11), in both roles, with the Python side verified
//! against a test CA and without verification (the insecure Python opt-out).
//!
//! The Python peer is `tests/python/ssl_peer.py`: `peer.py` with an SSLConfig on every
//! listener and connector. Certificates are made at test time and written to a temporary
//! folder for Python.
#![cfg(feature = "tls")]

#[path = "common/python.rs"]
mod python;
#[path = "../../snakemq-link/tests/tls_certs/mod.rs"]
mod tls_certs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use python::{PyMessage, PythonPeer};
use snakemq::link::tls::{TlsClient, TlsServer, certificate_names};
use snakemq::link::{ConnInfo, ConnectOptions, ListenOptions};
use snakemq::{Error, Event, Events, Message, Messaging};
use tls_certs::{Ca, Leaf};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(30);

fn ssl_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ssl_peer.py")
}

/// PEM files for Python in a temporary folder (removed when dropped).
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> std::io::Result<Files> {
        Ok(Files {
            dir: tempfile::tempdir()?,
        })
    }

    fn write(&self, name: &str, pem: &str) -> std::io::Result<String> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem)?;
        Ok(path.to_string_lossy().into_owned())
    }

    /// `--ssl-cert` and `--ssl-key` arguments for a leaf.
    fn leaf_args(&self, name: &str, leaf: &Leaf) -> std::io::Result<Vec<String>> {
        Ok(vec![
            "--ssl-cert".into(),
            self.write(&format!("{name}.crt"), &leaf.cert)?,
            "--ssl-key".into(),
            self.write(&format!("{name}.key"), &leaf.key)?,
        ])
    }
}

fn python_peer(ident: &str, ssl_args: &[String]) -> python::PeerBuilder {
    ssl_args.iter().fold(
        PythonPeer::builder(ident).script(ssl_script()),
        |builder, arg| builder.arg(arg),
    )
}

/// "rust" listening with `server`, and a Python peer "py" (with `ssl_args`) connecting to
/// it to send one message: the Rust peer, its events and the Python peer.
async fn python_connects_to(
    server: TlsServer,
    ssl_args: &[String],
) -> Result<(Messaging, Events, PythonPeer), Box<dyn std::error::Error + Send + Sync>> {
    let rust = Messaging::builder("rust").start().await?;
    let bound = rust
        .listen_with("127.0.0.1:0", ListenOptions::tls(server))
        .await?;
    let events = rust.events();
    let py = python_peer("py", ssl_args)
        .connect(&bound)
        .reconnect_interval(Duration::from_millis(200))
        .send_to("rust")
        .message(&python_sends())
        .expect(1)
        .spawn()
        .await?;
    Ok((rust, events, py))
}

async fn wait_for<T>(
    events: &mut Events,
    what: &str,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> Result<T, String> {
    let search = async {
        let mut seen = Vec::new();
        while let Some(event) = events.next().await {
            if let Some(found) = f(&event) {
                return Ok(found);
            }
            seen.push(event.to_string());
        }
        Err(format!(
            "event stream ended waiting for {what}; saw {seen:?}"
        ))
    };
    tokio::time::timeout(WAIT, search)
        .await
        .map_err(|_| format!("timed out waiting for {what}"))?
}

async fn connected_py(events: &mut Events) -> Result<ConnInfo, String> {
    wait_for(events, "py connected", |e| match e {
        Event::Connected { peer, info, acks } if &**peer == "py" => {
            assert!(!acks, "a Python peer does not acknowledge");
            Some(info.clone())
        }
        _ => None,
    })
    .await
}

/// One message each way between the Rust peer and a Python peer already told to send one
/// to "rust" and to exit after receiving one.
async fn exchange(rust: &Messaging, events: &mut Events, py: &mut PythonPeer) -> TestResult {
    rust.send("py", Message::new("from rust over tls")).await?;
    let (from, data) = wait_for(events, "message from py", |e| match e {
        Event::Received { from, message } => Some((from.to_string(), message.data().to_vec())),
        _ => None,
    })
    .await?;
    assert_eq!(from, "py");
    assert_eq!(data, b"from python over ssl");
    let got = py.received().await?;
    assert_eq!(got.from, "rust");
    assert_eq!(got.data.as_deref(), Some(&b"from rust over tls"[..]));
    py.wait_success().await?;
    Ok(())
}

fn python_sends() -> PyMessage {
    PyMessage::new(&b"from python over ssl"[..])
}

#[tokio::test]
async fn rust_listens_and_verifies_a_python_client_certificate() -> TestResult {
    let ca = Ca::new("test CA")?;
    let files = Files::new()?;
    let rust_leaf = ca.leaf(&["rust", "127.0.0.1"])?;
    let server = TlsServer::builder(rust_leaf.cert.as_bytes(), rust_leaf.key.as_bytes())?
        .require_client_certificates(ca.pem.as_bytes())?
        .build()?;
    // Python verifies the Rust server against the CA and presents its own certificate.
    let mut args = files.leaf_args("py", &ca.leaf(&["py"])?)?;
    args.extend(["--ssl-ca".to_owned(), files.write("ca.crt", &ca.pem)?]);
    let (rust, mut events, mut py) = python_connects_to(server, &args).await?;

    let info = connected_py(&mut events).await?;
    let leaf = info
        .peer_certificates
        .first()
        .ok_or("no Python certificate")?;
    assert_eq!(certificate_names(leaf)?.dns_names, ["py"]);
    exchange(&rust, &mut events, &mut py).await?;
    rust.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rust_listens_for_a_python_client_with_default_ssl_settings() -> TestResult {
    let ca = Ca::new("test CA")?;
    let rust_leaf = ca.leaf(&["rust", "127.0.0.1"])?;
    let server =
        TlsServer::builder(rust_leaf.cert.as_bytes(), rust_leaf.key.as_bytes())?.build()?;
    // snakeMQ's defaults: no client certificate, CERT_NONE.
    let (rust, mut events, mut py) = python_connects_to(server, &[]).await?;

    let info = connected_py(&mut events).await?;
    assert!(!info.peer_verified(), "no client certificate was asked for");
    exchange(&rust, &mut events, &mut py).await?;
    rust.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rust_connects_and_verifies_a_python_server() -> TestResult {
    let ca = Ca::new("test CA")?;
    let files = Files::new()?;
    // Python requires a client certificate from the CA, and proves "py" (and the address).
    let mut args = files.leaf_args("py", &ca.leaf(&["py", "127.0.0.1"])?)?;
    args.extend(["--ssl-ca".to_owned(), files.write("ca.crt", &ca.pem)?]);
    let mut py = python_peer("py", &args)
        .listen("127.0.0.1:0")
        .send_to("rust")
        .message(&python_sends())
        .expect(1)
        .spawn()
        .await?;
    let port = py.listening_port().await?;

    let rust_leaf = ca.leaf(&["rust"])?;
    let client = TlsClient::builder()
        .trust_roots(ca.pem.as_bytes())?
        .client_certificate(rust_leaf.cert.as_bytes(), rust_leaf.key.as_bytes())?
        .build()?;
    let rust = Messaging::builder("rust")
        .connect_with(&format!("127.0.0.1:{port}"), ConnectOptions::tls(client))
        .start()
        .await?;
    let mut events = rust.events();
    let info = connected_py(&mut events).await?;
    let leaf = info
        .peer_certificates
        .first()
        .ok_or("no Python certificate")?;
    assert!(certificate_names(leaf)?.matches("py"));
    exchange(&rust, &mut events, &mut py).await?;
    rust.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rust_connects_to_a_python_server_without_verification() -> TestResult {
    // A self-signed certificate nobody can verify, and snakeMQ's default CERT_NONE.
    let files = Files::new()?;
    let args = files.leaf_args("py", &Ca::new("python")?.leaf(&["localhost"])?)?;
    let mut py = python_peer("py", &args)
        .listen("127.0.0.1:0")
        .send_to("rust")
        .message(&python_sends())
        .expect(1)
        .spawn()
        .await?;
    let port = py.listening_port().await?;

    let rust = Messaging::builder("rust")
        .connect_with(
            &format!("127.0.0.1:{port}"),
            ConnectOptions::tls(TlsClient::insecure_python_compat_no_verification()?),
        )
        .start()
        .await?;
    let mut events = rust.events();
    let info = connected_py(&mut events).await?;
    assert!(
        !info.peer_verified(),
        "an unverified chain must not look verified"
    );
    exchange(&rust, &mut events, &mut py).await?;
    rust.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn python_server_with_another_identity_is_refused() -> TestResult {
    let ca = Ca::new("test CA")?;
    let files = Files::new()?;
    // A valid certificate for "py", used by a Python peer identifying as "mallory".
    let args = files.leaf_args("py", &ca.leaf(&["py", "127.0.0.1"])?)?;
    let mut py = python_peer("mallory", &args)
        .listen("127.0.0.1:0")
        .run_for(Duration::from_secs(20))
        .spawn()
        .await?;
    let port = py.listening_port().await?;

    let client = TlsClient::builder()
        .trust_roots(ca.pem.as_bytes())?
        .build()?;
    let rust = Messaging::builder("rust")
        .connect_with(&format!("127.0.0.1:{port}"), ConnectOptions::tls(client))
        .start()
        .await?;
    let mut events = rust.events();
    rust.send("mallory", Message::new("never")).await?;
    let claimed = wait_for(&mut events, "identity mismatch", |e| match e {
        Event::Error { error, .. } => match &**error {
            Error::IdentityMismatch { identity, .. } => Some(identity.clone()),
            _ => None,
        },
        _ => None,
    })
    .await?;
    assert_eq!(claimed, "mallory");
    assert_eq!(rust.queue_stats("mallory")?.messages, 1);
    rust.shutdown().await;
    py.kill().await?;
    Ok(())
}
