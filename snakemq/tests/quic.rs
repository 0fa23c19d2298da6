//! Messaging and RPC over QUIC (feature `quic`), unchanged from TCP: messages both ways
//! with acknowledgements, the verified certificates on `Connected`, identity binding (an
//! impostor with a valid certificate for another name gets nothing), a peer that restarts
//! on the same port and is found again, and a typed RPC call.
//!
//! Certificates are made at test time by rcgen. Outcomes are observed as events; timeouts
//! only guard against a hang.
#![cfg(feature = "quic")]

#[path = "common/secure.rs"]
mod secure;
#[path = "../../snakemq-link/tests/tls_certs/mod.rs"]
mod tls_certs;

use secure::*;
use snakemq::link::TransportKind;
use snakemq::{Error, Event, Message, Messaging};

type TestResult = Result<(), BoxError>;

#[tokio::test]
async fn messages_and_acks_flow_both_ways_over_quic() -> TestResult {
    let p = pki()?;
    let (alice, addr) = listening("alice", "quic://127.0.0.1:0", &p.alice, &p.ca).await?;
    assert!(addr.starts_with("quic://127.0.0.1:"), "{addr}");
    let mut alice_events = alice.events();
    // Queued before bob exists: it waits for him.
    alice.send("bob", Message::new("to bob")).await?;
    let bob = Messaging::builder("bob")
        .connect_with(&addr, client(Some(&p.bob), &p.ca)?)
        .start()
        .await?;
    let mut bob_events = bob.events();
    bob.send("alice", Message::new("to alice")).await?;

    let at_alice = wait_for(&mut alice_events, "bob connected", connected_to("bob")).await?;
    let at_bob = wait_for(&mut bob_events, "alice connected", connected_to("alice")).await?;
    assert_eq!(at_alice.transport, TransportKind::Quic);
    assert_eq!(at_bob.transport, TransportKind::Quic);
    assert_eq!(leaf_names(&at_alice)?, ["bob"]);
    assert_eq!(leaf_names(&at_bob)?, ["alice"]);

    let got = wait_for(&mut bob_events, "message at bob", received_data).await?;
    assert_eq!(got, ("alice".to_owned(), b"to bob".to_vec()));
    let got = wait_for(&mut alice_events, "message at alice", received_data).await?;
    assert_eq!(got, ("bob".to_owned(), b"to alice".to_vec()));
    // Acknowledged once each side's application is done with its message.
    bob_events.confirm();
    alice_events.confirm();
    wait_for(&mut alice_events, "delivered to bob", delivered_to("bob")).await?;
    wait_for(&mut bob_events, "delivered to alice", delivered_to("alice")).await?;
    assert_eq!(alice.queue_stats("bob")?.messages, 0);
    assert_eq!(bob.queue_stats("alice")?.messages, 0);

    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn identity_binding_refuses_an_impostor_over_quic() -> TestResult {
    let p = pki()?;
    let (alice, addr) = listening("alice", "quic://127.0.0.1:0", &p.alice, &p.ca).await?;
    let mut alice_events = alice.events();
    alice.send("bob", Message::new("for bob only")).await?;

    // mallory holds a valid certificate of the CA, for "mallory", and claims to be bob.
    let mallory_cert = p.ca.leaf(&["mallory"])?;
    let mallory = Messaging::builder("bob")
        .connect_with(&addr, client(Some(&mallory_cert), &p.ca)?)
        .start()
        .await?;
    let mut mallory_events = mallory.events();

    let refusal = wait_for(&mut alice_events, "identity mismatch", |e| match e {
        Event::Connected { peer, .. } => Some(Err(format!("{peer} was registered"))),
        Event::Error { error, .. } => match &**error {
            Error::IdentityMismatch { identity, names } => {
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
    assert_eq!(alice.queue_stats("bob")?.messages, 1, "the message left");

    // The real bob gets it.
    let bob = Messaging::builder("bob")
        .connect_with(&addr, client(Some(&p.bob), &p.ca)?)
        .start()
        .await?;
    let mut bob_events = bob.events();
    let got = wait_for(&mut bob_events, "message at bob", received_data).await?;
    assert_eq!(got, ("alice".to_owned(), b"for bob only".to_vec()));

    mallory.shutdown().await;
    let leaked: Vec<_> = std::iter::from_fn(|| mallory_events.try_next())
        .filter(|e| matches!(e, Event::Received { .. }))
        .collect();
    assert!(leaked.is_empty(), "the impostor received {leaked:?}");
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn connector_finds_a_peer_restarted_on_the_same_quic_port() -> TestResult {
    let p = pki()?;
    let (alice, addr) = listening("alice", "quic://127.0.0.1:0", &p.alice, &p.ca).await?;
    let bob = Messaging::builder("bob")
        .connect_with(&addr, client(Some(&p.bob), &p.ca)?)
        .start()
        .await?;
    let mut bob_events = bob.events();
    wait_for(&mut bob_events, "alice connected", connected_to("alice")).await?;

    // alice goes away; bob notices and queues for her meanwhile.
    alice.shutdown().await;
    wait_for(&mut bob_events, "alice gone", |e| {
        matches!(e, Event::Disconnected { peer, .. } if &**peer == "alice").then_some(())
    })
    .await?;
    bob.send("alice", Message::new("while you were away"))
        .await?;

    // She comes back on the same port (free at once after shutdown) and gets it.
    let (alice, again) = listening("alice", &addr, &p.alice, &p.ca).await?;
    assert_eq!(again, addr);
    let mut alice_events = alice.events();
    let got = wait_for(&mut alice_events, "the queued message", received_data).await?;
    assert_eq!(got, ("bob".to_owned(), b"while you were away".to_vec()));
    alice_events.confirm();
    wait_for(&mut bob_events, "delivered to alice", delivered_to("alice")).await?;

    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}

#[cfg(feature = "rpc")]
mod rpc {
    use super::*;
    use snakemq::rpc::Rpc;

    /// The service called over QUIC.
    #[snakemq::service]
    pub(crate) trait Greeter {
        /// A greeting for `name`.
        async fn greet(&self, name: String) -> String;
        /// Fails for an empty name.
        async fn check(&self, name: String) -> Result<u32, String>;
    }

    struct Polite;

    impl Greeter for Polite {
        async fn greet(&self, name: String) -> String {
            format!("hello {name}")
        }
        async fn check(&self, name: String) -> Result<u32, String> {
            match name.len() {
                0 => Err("no name".to_owned()),
                n => Ok(n as u32),
            }
        }
    }

    #[tokio::test]
    async fn typed_rpc_runs_over_quic() -> TestResult {
        let p = pki()?;
        let (alice, addr) = listening("alice", "quic://127.0.0.1:0", &p.alice, &p.ca).await?;
        let bob = Messaging::builder("bob")
            .connect_with(&addr, client(Some(&p.bob), &p.ca)?)
            .start()
            .await?;
        let (alice_rpc, bob_rpc) = (Rpc::new(&alice)?, Rpc::new(&bob)?);
        alice_rpc.serve("greeter", GreeterServer::new(Polite));
        alice_rpc.spawn_dispatch(&alice);
        bob_rpc.spawn_dispatch(&bob);

        let greeter = GreeterClient::new(&bob_rpc, "alice", "greeter").with_deadline(GUARD);
        assert_eq!(greeter.greet("bob".into()).await?, "hello bob");
        assert_eq!(greeter.check("bob".into()).await?, Ok(3));
        assert_eq!(
            greeter.check(String::new()).await?,
            Err("no name".to_owned())
        );

        bob.shutdown().await;
        alice.shutdown().await;
        Ok(())
    }
}
