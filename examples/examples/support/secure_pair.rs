//! What the `tls_link` and `quic_link` examples share: certificates made with rcgen (a CA and
//! one certificate per peer; a user would load PEM files with the `*_from_files` builders)
//! and two peers exchanging a message each way over mutual TLS. Each side checks that the
//! other's IDENTIFICATION matches its certificate before any message flows.
//!
//! Not an example of its own: cargo runs only files directly in `examples/` and folders
//! with a `main.rs`.

use std::time::Duration;

use snakemq::link::tls::{TlsClient, TlsServer, certificate_names};
use snakemq::link::{ConnectOptions, ListenOptions};
use snakemq::{Event, Events, Message, Messaging};

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A CA and two peer certificates, PEM: (ca, (alice cert, key), (bob cert, key)).
type Pki = (String, (String, String), (String, String));

fn make_certificates() -> Result<Pki> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "example CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    // The peer's identity is a DNS name of its certificate; alice's also carries the
    // address bob dials, which is the name a connector checks by default.
    let leaf = |names: &[&str]| -> Result<(String, String)> {
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    Ok((
        ca_cert.pem(),
        leaf(&["alice", "127.0.0.1"])?,
        leaf(&["bob"])?,
    ))
}

async fn connected(events: &mut Events, who: &str) -> Result<()> {
    while let Some(event) = events.next().await {
        match event {
            Event::Connected { peer, info, .. } => {
                let names = match info.peer_certificates.first() {
                    Some(leaf) => certificate_names(leaf)?.dns_names,
                    None => Vec::new(),
                };
                println!(
                    "{who}: {peer} connected over {:?} from {}, verified certificate for \
                     {names:?} ({} certificate(s) in the chain)",
                    info.transport,
                    info.remote,
                    info.peer_certificates.len()
                );
                return Ok(());
            }
            Event::Error { error, .. } => return Err(format!("{who}: {error}").into()),
            _ => {}
        }
    }
    Err("event stream ended".into())
}

async fn received(events: &mut Events, who: &str) -> Result<()> {
    while let Some(event) = events.next().await {
        if let Event::Received { from, message } = event {
            println!(
                "{who} got {:?} from {from}",
                String::from_utf8_lossy(message.data())
            );
            return Ok(());
        }
    }
    Err("event stream ended".into())
}

/// Alice listens on `listen` (`127.0.0.1:0` for TLS over TCP, `quic://127.0.0.1:0` for
/// QUIC) with mutual TLS, bob connects, one message goes each way; `over` names the
/// transport in the messages.
pub(crate) async fn run(listen: &str, over: &str) -> Result<()> {
    let (ca, (alice_cert, alice_key), (bob_cert, bob_key)) = make_certificates()?;

    let server = TlsServer::builder(alice_cert.as_bytes(), alice_key.as_bytes())?
        .require_client_certificates(ca.as_bytes())?
        .build()?;
    let alice = Messaging::builder("alice").start().await?;
    let endpoint = alice
        .listen_with(listen, ListenOptions::tls(server))
        .await?
        .to_string();
    println!("alice listens on {endpoint} ({over}) and requires client certificates");

    let client = TlsClient::builder()
        .trust_roots(ca.as_bytes())?
        .client_certificate(bob_cert.as_bytes(), bob_key.as_bytes())?
        .build()?;
    let bob = Messaging::builder("bob")
        .connect_with(&endpoint, ConnectOptions::tls(client))
        .start()
        .await?;

    let mut alice_events = alice.events();
    let mut bob_events = bob.events();
    let exchange = async {
        connected(&mut alice_events, "alice").await?;
        connected(&mut bob_events, "bob").await?;
        alice
            .send("bob", Message::new(format!("hello bob, over {over}")))
            .await?;
        bob.send("alice", Message::new(format!("hello alice, over {over}")))
            .await?;
        received(&mut bob_events, "bob").await?;
        received(&mut alice_events, "alice").await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| "timed out")??;
    // The messages were handed out; acknowledge them before leaving.
    bob_events.confirm();
    alice_events.confirm();
    bob.shutdown().await;
    alice.shutdown().await;
    println!("done");
    Ok(())
}
