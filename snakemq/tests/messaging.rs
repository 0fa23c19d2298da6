//! End-to-end messaging between two instances on the in-memory transport and on TCP.

use std::time::Duration;

use bytes::Bytes;
use snakemq::{DropReason, Event, Events, Message, Messaging};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn next_matching<F, T>(events: &mut Events, mut f: F) -> Result<T, String>
where
    F: FnMut(Event) -> Option<T>,
{
    let wait = async {
        while let Some(event) = events.next().await {
            if let Some(found) = f(event) {
                return Ok(found);
            }
        }
        Err("event stream ended".to_owned())
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .map_err(|_| "timed out waiting for an event".to_owned())?
}

fn unique(name: &str) -> String {
    format!("{name}-{}", snakemq::uuid_hex(&rand_id()))
}

fn rand_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = (std::process::id() as u8)
            .wrapping_add(i as u8)
            .wrapping_mul(31)
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0) as u8);
    }
    id
}

#[tokio::test]
async fn messages_flow_both_ways_with_acks() -> TestResult {
    let addr = format!("memory:{}", unique("bob"));
    let bob = Messaging::builder("bob").listen(&addr).start().await?;
    let alice = Messaging::builder("alice").connect(&addr).start().await?;
    let mut bob_events = bob.events();
    let mut alice_events = alice.events();

    let sent = alice
        .send(
            "bob",
            Message::new("hello").flags(5).ttl(Duration::from_secs(600)),
        )
        .await?;
    let (from, message) = next_matching(&mut bob_events, |e| match e {
        Event::Received { from, message } => Some((from, message)),
        _ => None,
    })
    .await?;
    assert_eq!(&*from, "alice");
    assert_eq!(message.uuid, sent);
    assert_eq!(message.flags, 5);
    assert_eq!(message.data, Bytes::from_static(b"hello"));
    assert!(matches!(message.ttl, Some(599 | 600)), "{:?}", message.ttl);
    // bob is done with it: the acknowledgement goes out now.
    bob_events.confirm();

    let delivered = next_matching(&mut alice_events, |e| match e {
        Event::Delivered { to, uuid } => Some((to, uuid)),
        _ => None,
    })
    .await?;
    assert_eq!((&*delivered.0, delivered.1), ("bob", sent));
    assert_eq!(alice.queue_stats("bob")?.messages, 0);

    bob.send("alice", "pong").await?;
    let reply = next_matching(&mut alice_events, |e| match e {
        Event::Received { message, .. } => Some(message.data),
        _ => None,
    })
    .await?;
    assert_eq!(reply, Bytes::from_static(b"pong"));
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn queued_messages_wait_for_the_peer_and_arrive_in_order() -> TestResult {
    let alice = Messaging::builder("alice")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let addr = alice
        .local_endpoints()
        .first()
        .map(|e| e.to_string())
        .ok_or("no listener")?;
    for i in 0..500 {
        alice.send("bob", format!("m{i}").into_bytes()).await?;
    }
    assert_eq!(alice.queue_stats("bob")?.messages, 500);

    let bob = Messaging::builder("bob").connect(&addr).start().await?;
    let mut events = bob.events();
    for i in 0..500 {
        let data = next_matching(&mut events, |e| match e {
            Event::Received { message, .. } => Some(message.data),
            _ => None,
        })
        .await?;
        assert_eq!(data, Bytes::from(format!("m{i}")));
    }
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn peer_restart_gets_the_rest_of_the_queue() -> TestResult {
    let addr = format!("memory:{}", unique("restart"));
    let alice = Messaging::builder("alice").connect(&addr).start().await?;
    let mut alice_events = alice.events();

    let bob = Messaging::builder("bob").listen(&addr).start().await?;
    let mut bob_events = bob.events();
    alice.send("bob", "first").await?;
    next_matching(&mut bob_events, |e| {
        matches!(e, Event::Received { .. }).then_some(())
    })
    .await?;
    bob_events.confirm();
    bob.shutdown().await;
    next_matching(&mut alice_events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await?;

    alice.send("bob", "while away 1").await?;
    alice.send("bob", "while away 2").await?;
    let bob = Messaging::builder("bob").listen(&addr).start().await?;
    let mut bob_events = bob.events();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(
            next_matching(&mut bob_events, |e| match e {
                Event::Received { message, .. } => Some(message.data),
                _ => None,
            })
            .await?,
        );
    }
    assert_eq!(
        got,
        vec![Bytes::from("while away 1"), Bytes::from("while away 2")]
    );
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn ttl_zero_without_connection_is_dropped_and_reported() -> TestResult {
    let alice = Messaging::builder("alice").start().await?;
    let mut events = alice.events();
    let uuid = alice
        .send("nobody", Message::new("x").ttl(Duration::ZERO))
        .await?;
    let dropped = next_matching(&mut events, |e| match e {
        Event::Dropped { uuid, reason, .. } => Some((uuid, reason)),
        _ => None,
    })
    .await?;
    assert_eq!(dropped, (uuid, DropReason::NotConnected));
    assert_eq!(alice.queue_stats("nobody")?.messages, 0);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn expired_messages_are_swept_and_reported() -> TestResult {
    let alice = Messaging::builder("alice").start().await?;
    let mut events = alice.events();
    let short = alice
        .send("away", Message::new("short").ttl(Duration::from_secs(5)))
        .await?;
    alice
        .send("away", Message::new("long").ttl(Duration::from_secs(3600)))
        .await?;
    alice.send("away", Message::new("forever")).await?;
    let dropped = next_matching(&mut events, |e| match e {
        Event::Dropped { uuid, reason, .. } => Some((uuid, reason)),
        _ => None,
    })
    .await?;
    assert_eq!(dropped, (short, DropReason::Expired));
    assert_eq!(alice.queue_stats("away")?.messages, 2);
    Ok(())
}

#[tokio::test]
async fn duplicate_identity_is_refused() -> TestResult {
    let addr = format!("memory:{}", unique("dup"));
    let server = Messaging::builder("server").listen(&addr).start().await?;
    let mut events = server.events();
    let first = Messaging::builder("twin").connect(&addr).start().await?;
    next_matching(&mut events, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    })
    .await?;
    let second = Messaging::builder("twin").connect(&addr).start().await?;
    let error = next_matching(&mut events, |e| match e {
        Event::Error { error, .. } => Some(error),
        _ => None,
    })
    .await?;
    assert!(
        matches!(&*error, snakemq::Error::DuplicateIdentity(name) if name == "twin"),
        "{error}"
    );
    assert_eq!(server.connected_peers(), vec!["twin".to_owned()]);
    second.shutdown().await;
    first.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn invalid_identities_are_refused_at_build() {
    for bad in ["", &"x".repeat(51)] {
        assert!(Messaging::builder(bad).start().await.is_err(), "{bad:?}");
    }
}

/// A large payload goes to the writer without a copy; acknowledgements owed at that moment
/// must not end up between its header and its body.
#[tokio::test]
async fn large_messages_interleaved_with_acks_keep_the_stream_intact() -> TestResult {
    let addr = format!("memory:{}", unique("large"));
    let a = Messaging::builder("a").listen(&addr).start().await?;
    let b = Messaging::builder("b").connect(&addr).start().await?;
    let mut a_events = a.events();
    let mut b_events = b.events();
    let big = Bytes::from(vec![0xa5u8; 256 * 1024]);
    for round in 0..5 {
        // b receives a small message (and so owes an ack) while it sends a big one back.
        a.send("b", format!("small {round}").into_bytes()).await?;
        next_matching(&mut b_events, |e| {
            matches!(e, Event::Received { .. }).then_some(())
        })
        .await?;
        b.send("a", big.clone()).await?;
        let got = next_matching(&mut a_events, |e| match e {
            Event::Received { message, .. } => Some(message.data),
            _ => None,
        })
        .await?;
        assert_eq!(got, big);
    }
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// A receiver that stops before it is done with a message (never asks for the next event,
/// never confirms) has not acknowledged it: the sender delivers it again to the next
/// instance instead of losing it.
#[tokio::test]
async fn messages_the_application_did_not_finish_are_delivered_again() -> TestResult {
    let addr = format!("memory:{}", unique("unfinished"));
    let alice = Messaging::builder("alice").connect(&addr).start().await?;
    let mut alice_events = alice.events();
    let bob = Messaging::builder("bob").listen(&addr).start().await?;
    let mut bob_events = bob.events();
    alice.send("bob", "important").await?;
    let got = next_matching(&mut bob_events, |e| match e {
        Event::Received { message, .. } => Some(message.data),
        _ => None,
    })
    .await?;
    assert_eq!(got, Bytes::from_static(b"important"));
    // bob stops before he is done with it.
    bob.shutdown().await;
    next_matching(&mut alice_events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await?;
    assert_eq!(
        alice.queue_stats("bob")?.messages,
        1,
        "not acknowledged, still queued"
    );

    let bob = Messaging::builder("bob").listen(&addr).start().await?;
    let mut bob_events = bob.events();
    let again = next_matching(&mut bob_events, |e| match e {
        Event::Received { message, .. } => Some(message.data),
        _ => None,
    })
    .await?;
    assert_eq!(again, Bytes::from_static(b"important"));
    bob_events.confirm();
    next_matching(&mut alice_events, |e| {
        matches!(e, Event::Delivered { .. }).then_some(())
    })
    .await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}
