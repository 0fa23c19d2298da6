//! Messaging over TLS (feature `tls`): mutual TLS, the certificate shown on `Connected`,
//! and identity binding — a peer whose certificate names someone else never receives what
//! is queued for the identity it claims.
//!
//! Refusals are observed as events (the refused side's `Error`, or the test's own TLS
//! end returning its handshake error); timeouts only guard against a hang.
#![cfg(feature = "tls")]

#[path = "common/secure.rs"]
mod secure;
#[path = "../../snakemq-link/tests/tls_certs/mod.rs"]
mod tls_certs;

use secure::*;
use snakemq::link::tls::TlsServer;
use snakemq::link::{ByteStream, ConnInfo, Direction, LinkError, TlsFailure, TransportKind};
use snakemq::{Error, Event, Message, Messaging};
use tls_certs::Ca;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn mutual_tls_delivers_both_ways_and_shows_verified_certificates() -> TestResult {
    let p = pki()?;
    let (alice, addr) = listening("alice", "127.0.0.1:0", &p.alice, &p.ca).await?;
    let mut alice_events = alice.events();
    alice.send("bob", Message::new("to bob")).await?;
    let bob = Messaging::builder("bob")
        .connect_with(&addr, client(Some(&p.bob), &p.ca)?)
        .start()
        .await?;
    let mut bob_events = bob.events();
    bob.send("alice", Message::new("to alice")).await?;

    let at_alice = wait_for(&mut alice_events, "bob connected", connected_to("bob")).await?;
    let at_bob = wait_for(&mut bob_events, "alice connected", connected_to("alice")).await?;
    assert_eq!(leaf_names(&at_alice)?, ["bob"]);
    assert_eq!(leaf_names(&at_bob)?, ["alice"]);

    let got = wait_for(&mut bob_events, "message at bob", received_data).await?;
    assert_eq!(got, ("alice".to_owned(), b"to bob".to_vec()));
    let got = wait_for(&mut alice_events, "message at alice", received_data).await?;
    assert_eq!(got, ("bob".to_owned(), b"to alice".to_vec()));
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn identity_other_than_the_certificate_name_gets_nothing() -> TestResult {
    let p = pki()?;
    let (alice, addr) = listening("alice", "127.0.0.1:0", &p.alice, &p.ca).await?;
    let mut alice_events = alice.events();
    alice.send("bob", Message::new("for bob only")).await?;

    // mallory holds a valid certificate of the CA, for "mallory", and claims to be bob.
    let mallory_cert = p.ca.leaf(&["mallory"])?;
    let mallory = Messaging::builder("bob")
        .connect_with(&addr, client(Some(&mallory_cert), &p.ca)?)
        .start()
        .await?;
    let mut mallory_events = mallory.events();

    // Nothing about "bob" may happen at alice before the refusal: no Connected.
    let refusal = wait_for(&mut alice_events, "identity mismatch", |e| match e {
        Event::Connected { peer, .. } => Some(Err(format!("{peer} was registered"))),
        Event::Error { error, peer, .. } => match &**error {
            Error::IdentityMismatch { identity, names } if peer.is_none() => {
                Some(Ok((identity.clone(), names.clone())))
            }
            _ => None,
        },
        _ => None,
    })
    .await?;
    let (identity, names) = refusal?;
    assert_eq!(identity, "bob");
    assert_eq!(names, ["mallory"]);
    assert_eq!(
        alice.queue_stats("bob")?.messages,
        1,
        "the message left the queue"
    );

    // The real bob gets it.
    let bob = Messaging::builder("bob")
        .connect_with(&addr, client(Some(&p.bob), &p.ca)?)
        .start()
        .await?;
    let mut bob_events = bob.events();
    let got = wait_for(&mut bob_events, "message at bob", received_data).await?;
    assert_eq!(got, ("alice".to_owned(), b"for bob only".to_vec()));
    bob_events.confirm();
    wait_for(&mut alice_events, "delivered to bob", |e| {
        matches!(e, Event::Delivered { to, .. } if &**to == "bob").then_some(())
    })
    .await?;

    // Nothing ever reached the impostor.
    mallory.shutdown().await;
    let leaked: Vec<_> = drain(&mut mallory_events)
        .into_iter()
        .filter(|e| matches!(e, Event::Received { .. }))
        .collect();
    assert!(leaked.is_empty(), "the impostor received {leaked:?}");
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn connector_binds_the_server_identity_too() -> TestResult {
    let p = pki()?;
    // "carol" listens with alice's certificate: valid for the address, not for "carol".
    let (carol, addr) = listening("carol", "127.0.0.1:0", &p.alice, &p.ca).await?;
    let bob = Messaging::builder("bob")
        .connect_with(&addr, client(Some(&p.bob), &p.ca)?)
        .start()
        .await?;
    let mut bob_events = bob.events();
    bob.send("carol", Message::new("for carol")).await?;
    let identity = wait_for(&mut bob_events, "identity mismatch", |e| match e {
        Event::Error { error, .. } => match &**error {
            Error::IdentityMismatch { identity, .. } => Some(identity.clone()),
            _ => None,
        },
        _ => None,
    })
    .await?;
    assert_eq!(identity, "carol");
    assert_eq!(bob.queue_stats("carol")?.messages, 1);
    bob.shutdown().await;
    carol.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn binding_can_be_turned_off() -> TestResult {
    let p = pki()?;
    let alice = Messaging::builder("alice")
        .bind_identities_to_certificates(false)
        .start()
        .await?;
    let addr = alice
        .listen_with("127.0.0.1:0", mutual_server(&p.alice, &p.ca)?)
        .await?
        .to_string();
    let mut alice_events = alice.events();
    // Certificates that name hosts, not identities: "bob" with a certificate for a host.
    let host_cert = p.ca.leaf(&["host-17.example.net"])?;
    let bob = Messaging::builder("bob")
        .connect_with(&addr, client(Some(&host_cert), &p.ca)?)
        .start()
        .await?;
    let info = wait_for(&mut alice_events, "bob connected", connected_to("bob")).await?;
    assert_eq!(leaf_names(&info)?, ["host-17.example.net"]);
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn missing_client_certificate_gets_nothing() -> TestResult {
    let p = pki()?;
    let (alice, addr) = listening("alice", "127.0.0.1:0", &p.alice, &p.ca).await?;
    let mut alice_events = alice.events();
    alice.send("bob", Message::new("for bob only")).await?;
    let bob = Messaging::builder("bob")
        .connect_with(&addr, client(None, &p.ca)?)
        .start()
        .await?;
    let mut bob_events = bob.events();
    // TLS 1.3: bob's handshake completes, then the server's refusal arrives as an alert
    // on bob's first read: a connection error before anyone identified.
    let error = wait_for(&mut bob_events, "bob's connection refused", |e| match e {
        Event::Error {
            error, peer: None, ..
        } => Some(error.to_string()),
        _ => None,
    })
    .await?;
    assert!(
        error.contains("Certificate") || error.contains("certificate"),
        "{error}"
    );
    // alice's side refused the handshake and says why.
    let refusal = wait_for(&mut alice_events, "alice's refusal", tls_refusal).await?;
    assert_eq!(refusal, (Direction::Inbound, TlsFailure::NoCertificate));
    bob.shutdown().await;
    let at_alice = drain(&mut alice_events);
    assert!(
        !at_alice
            .iter()
            .any(|e| matches!(e, Event::Connected { .. } | Event::Delivered { .. })),
        "{at_alice:?}"
    );
    assert_eq!(alice.queue_stats("bob")?.messages, 1);
    alice.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn untrusted_server_gets_no_connection_and_no_message() -> TestResult {
    let p = pki()?;
    // The test itself is the server, with a certificate from a CA bob does not trust.
    let rogue = Ca::new("rogue")?.leaf(&["alice", "127.0.0.1"])?;
    let server = TlsServer::builder(rogue.cert.as_bytes(), rogue.key.as_bytes())?.build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();

    let bob = Messaging::builder("bob")
        .connect_with(&addr, client(Some(&p.bob), &p.ca)?)
        .start()
        .await?;
    let mut bob_events = bob.events();
    bob.send("alice", Message::new("for alice")).await?;

    let (tcp, remote) = tokio::time::timeout(GUARD, listener.accept()).await??;
    let (read, write) = tcp.into_split();
    let stream = ByteStream::new(
        ConnInfo::new(TransportKind::Tcp, Direction::Inbound, remote.to_string()),
        Box::new(read),
        Box::new(write),
    );
    let refused = tokio::time::timeout(GUARD, server.accept(stream)).await?;
    match refused {
        Err(LinkError::TlsHandshake {
            failure: TlsFailure::PeerAlert(_),
            ..
        }) => {}
        other => return Err(format!("expected bob to refuse the server, got {other:?}").into()),
    }
    // Bob refused in the handshake and reports why; no connection ever reached messaging.
    let refusal = wait_for(&mut bob_events, "bob's refusal", tls_refusal).await?;
    assert_eq!(refusal, (Direction::Outbound, TlsFailure::UnknownIssuer));
    let seen = drain(&mut bob_events);
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Connected { .. })),
        "{seen:?}"
    );
    assert_eq!(bob.queue_stats("alice")?.messages, 1);
    bob.shutdown().await;
    Ok(())
}

/// A `ConnectionFailed` event for a refused TLS handshake: its direction and reason.
fn tls_refusal(event: &Event) -> Option<(Direction, TlsFailure)> {
    match event {
        Event::ConnectionFailed { failure } => match &failure.error {
            LinkError::TlsHandshake {
                failure: reason, ..
            } => Some((failure.direction, reason.clone())),
            _ => None,
        },
        _ => None,
    }
}
