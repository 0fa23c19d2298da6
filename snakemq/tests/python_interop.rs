//! Interoperability with the real Python snakeMQ 1.6 (from PyPI, in the test virtualenv).
//!
//! Each test runs a Python peer as a subprocess (tests/python/peer.py) and checks, field
//! by field, what crosses the wire in both directions and in both roles.

#[path = "common/python.rs"]
mod python;

use std::time::Duration;

use bytes::Bytes;
use python::{PyMessage, PythonPeer, pattern};
use snakemq::{Event, Events, Message, Messaging, ReceivedMessage};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(30);

async fn next_matching<T>(
    events: &mut Events,
    mut f: impl FnMut(Event) -> Option<T>,
) -> Result<T, String> {
    let wait = async {
        while let Some(event) = events.next().await {
            if let Some(found) = f(event) {
                return Ok(found);
            }
        }
        Err("event stream ended".to_owned())
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .map_err(|_| "timed out waiting for an event".to_owned())?
}

async fn received(events: &mut Events) -> Result<(String, ReceivedMessage), String> {
    next_matching(events, |e| match e {
        Event::Received { from, message } => Some((from.to_string(), message)),
        _ => None,
    })
    .await
}

async fn connected(events: &mut Events, peer: &str) -> Result<bool, String> {
    next_matching(events, |e| match e {
        Event::Connected { peer: p, acks, .. } if &*p == peer => Some(acks),
        _ => None,
    })
    .await
}

fn port_of(messaging: &Messaging) -> Result<u16, String> {
    let endpoint = messaging
        .local_endpoints()
        .into_iter()
        .next()
        .ok_or("no listener")?;
    let text = endpoint.to_string();
    let port = text.rsplit(':').next().ok_or("no port")?;
    port.parse().map_err(|e| format!("{e}"))
}

#[tokio::test]
async fn rust_connector_and_python_listener_exchange_exact_fields() -> TestResult {
    let mut py = PythonPeer::builder("py")
        .listen("127.0.0.1:0")
        .keepalive_secs(1.0, 0.5)
        .send_to("rust")
        .message(
            &PyMessage::new(&b"from python"[..])
                .ttl_secs(60.0)
                .flags(7)
                .uuid([0xab; 16]),
        )
        .message(&PyMessage::new(vec![0xff, 0x00, 0xfe]).flags(0))
        .expect(3)
        .spawn()
        .await?;
    let port = py.listening_port().await?;
    let rust = Messaging::builder("rust")
        .connect(&format!("127.0.0.1:{port}"))
        .start()
        .await?;
    let mut events = rust.events();
    assert!(
        !connected(&mut events, "py").await?,
        "a Python peer never uses acks"
    );

    // Python -> Rust: uuid, ttl, flags and data byte-exact.
    let (from, first) = received(&mut events).await?;
    assert_eq!(from, "py");
    assert_eq!(first.uuid, [0xab; 16]);
    assert_eq!(first.flags, 7);
    assert!(matches!(first.ttl, Some(59 | 60)), "{:?}", first.ttl);
    assert_eq!(first.data, Bytes::from_static(b"from python"));
    let (_, second) = received(&mut events).await?;
    assert_eq!(second.ttl, None, "no ttl given: infinite");
    assert_eq!(second.data, Bytes::from_static(&[0xff, 0x00, 0xfe]));

    // Rust -> Python.
    rust.send(
        "py",
        Message::new("ttl")
            .ttl(Duration::from_secs(30))
            .flags(5)
            .uuid([1; 16]),
    )
    .await?;
    rust.send(
        "py",
        Message::new("forever").flags(0xdead_beef).uuid([2; 16]),
    )
    .await?;
    rust.send("py", Message::new(vec![0u8, 1, 2, 255]).uuid([3; 16]))
        .await?;
    let a = py.received().await?;
    assert_eq!((a.from.as_str(), a.uuid, a.flags), ("rust", [1; 16], 5));
    assert!(matches!(a.ttl, Some(29 | 30)), "{:?}", a.ttl);
    assert_eq!(a.data.as_deref(), Some(&b"ttl"[..]));
    let b = py.received().await?;
    assert_eq!((b.uuid, b.flags, b.ttl), ([2; 16], 0xdead_beef, None));
    let c = py.received().await?;
    assert_eq!(c.data.as_deref(), Some(&[0u8, 1, 2, 255][..]));
    py.wait_success().await?;
    rust.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn python_connector_and_rust_listener_carry_20_mib_both_ways() -> TestResult {
    let rust = Messaging::builder("rust")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let mut events = rust.events();
    let port = port_of(&rust)?;
    let big = 20 << 20;
    // No Python keepalive here: Python queues its PING behind its own 20 MiB message and
    // counts only whole packets as signs of life, so a slow transfer of a big packet makes
    // it time out (and crash) whatever the other side does. Keepalive has its own test.
    let mut py = PythonPeer::builder("py")
        .connect(format!("127.0.0.1:{port}"))
        .send_to("rust")
        .message(&PyMessage::pattern(big).flags(3))
        .expect(1)
        .spawn()
        .await?;
    assert!(!connected(&mut events, "py").await?);
    let (_, message) = received(&mut events).await?;
    assert_eq!(message.data.len(), big);
    assert!(message.data == pattern(big), "20 MiB payload differs");
    assert_eq!(message.flags, 3);

    rust.send("py", Message::new(pattern(big))).await?;
    let got = py.received().await?;
    assert_eq!((got.len, got.pattern_ok), (big, true));
    py.wait_success().await?;
    rust.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn python_keepalive_gets_answers_and_the_link_stays_up() -> TestResult {
    let rust = Messaging::builder("rust")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let mut events = rust.events();
    let port = port_of(&rust)?;
    // Python pings after 0.3 s of silence and gives up 0.5 s later (and then crashes
    // itself, which the peer script reports as exit code 3).
    let mut py = PythonPeer::builder("py")
        .connect(format!("127.0.0.1:{port}"))
        .keepalive_secs(0.3, 0.5)
        .expect(1)
        .spawn()
        .await?;
    connected(&mut events, "py").await?;
    // Several keepalive rounds of silence, observed through the Python peer's own events:
    // a disconnect would show up there.
    let quiet = py
        .wait_for(
            "a disconnect during idle time",
            Duration::from_secs(3),
            |ev| ev.get("event").and_then(|e| e.as_str()) == Some("disconnected"),
        )
        .await;
    assert!(
        quiet.is_err(),
        "the Python peer dropped the connection while idle"
    );
    rust.send("py", "still here").await?;
    let got = py.received().await?;
    assert_eq!(got.data.as_deref(), Some(&b"still here"[..]));
    py.wait_success().await?;
    rust.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn python_peer_restart_receives_what_rust_kept_queued() -> TestResult {
    let rust = Messaging::builder("rust")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let mut events = rust.events();
    let port = port_of(&rust)?;

    let mut py = PythonPeer::builder("py")
        .connect(format!("127.0.0.1:{port}"))
        .spawn()
        .await?;
    connected(&mut events, "py").await?;
    rust.send("py", "before").await?;
    assert_eq!(py.received().await?.data.as_deref(), Some(&b"before"[..]));
    py.kill().await?;
    next_matching(&mut events, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await?;

    for i in 0..3 {
        rust.send("py", format!("queued {i}").into_bytes()).await?;
    }
    assert_eq!(rust.queue_stats("py")?.messages, 3);

    let mut py = PythonPeer::builder("py")
        .connect(format!("127.0.0.1:{port}"))
        .expect(3)
        .spawn()
        .await?;
    for i in 0..3 {
        let got = py.received().await?;
        assert_eq!(got.data, Some(format!("queued {i}").into_bytes()));
    }
    py.wait_success().await?;
    rust.shutdown().await;
    Ok(())
}
