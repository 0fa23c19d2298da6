//! Two peers over QUIC on loopback: alice listens on `quic://127.0.0.1:0` and requires a
//! client certificate, bob connects with his. QUIC always runs TLS 1.3, so both sides get
//! the same TLS settings as over TCP (certificates made here with rcgen; a user would load
//! PEM files with the `*_from_files` builders), and identity binding holds as over TLS.
//! One message goes each way over the connection's single bidirectional stream.
//!
//! Run: `cargo run -p examples --example quic_link`

use std::time::Duration;

use snakemq::link::tls::{TlsClient, TlsServer, certificate_names};
use snakemq::link::{ConnectOptions, ListenOptions};
use snakemq::{Event, Events, Message, Messaging};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

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
                    "{who}: {peer} connected over {:?} from {}, verified certificate for {names:?}",
                    info.transport, info.remote
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

#[tokio::main]
async fn main() -> Result<()> {
    let (ca, (alice_cert, alice_key), (bob_cert, bob_key)) = make_certificates()?;

    let server = TlsServer::builder(alice_cert.as_bytes(), alice_key.as_bytes())?
        .require_client_certificates(ca.as_bytes())?
        .build()?;
    let alice = Messaging::builder("alice").start().await?;
    let endpoint = alice
        .listen_with("quic://127.0.0.1:0", ListenOptions::tls(server))
        .await?
        .to_string();
    println!("alice listens on {endpoint} and requires client certificates");

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
            .send("bob", Message::new("hello bob, over QUIC"))
            .await?;
        bob.send("alice", Message::new("hello alice, over QUIC"))
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
