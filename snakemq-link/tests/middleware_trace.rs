//! What `TraceLayer` tells a tracing subscriber: one `connection` span per connection
//! with its facts, a `packet` event per packet inside it, and a `closed` report with the
//! connection's counters.
//!
//! A minimal recording subscriber stands in for a real one (the library never installs a
//! subscriber); it is the thread's default, and the test runs on the current-thread
//! runtime, so every task's events reach it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use snakemq_link::middleware::TraceLayer;
use snakemq_link::{Link, LinkConfig};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A span or event: its name and fields, printed.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    fields: HashMap<String, String>,
    parent: Option<u64>,
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.fields
            .insert(field.name().to_owned(), format!("{value:?}"));
    }
}

#[derive(Default)]
struct Recorded {
    spans: HashMap<u64, Seen>,
    events: Vec<Seen>,
}

#[derive(Clone, Default)]
struct Recorder {
    next: Arc<AtomicU64>,
    seen: Arc<Mutex<Recorded>>,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("snakemq_link::middleware")
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut seen = Seen {
            name: span.metadata().name().to_owned(),
            ..Seen::default()
        };
        span.record(&mut seen);
        self.lock().spans.insert(id, seen);
        Id::from_u64(id)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut seen = Seen {
            parent: event.parent().map(Id::into_u64),
            ..Seen::default()
        };
        event.record(&mut seen);
        seen.name = seen.fields.remove("message").unwrap_or_default();
        self.lock().events.push(seen);
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[tokio::test]
async fn trace_layer_reports_a_span_per_connection_and_an_event_per_packet() -> TestResult {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());

    let (server, mut accepted) = Link::new(LinkConfig::default());
    server.listen(&"memory:mw-trace-events".parse()?).await?;
    let (client, mut connected) = Link::new(LinkConfig::default().middleware(TraceLayer::new()));
    client.connect("memory:mw-trace-events".parse()?)?;
    let (_, _, writer) = connected.next().await.ok_or("no connection")?.into_parts();
    let (_, mut reader, _) = accepted.next().await.ok_or("no connection")?.into_parts();
    for body in [&b"one"[..], b"", &[9u8; 100]] {
        writer.send_packet(Bytes::copy_from_slice(body)).await?;
    }
    for _ in 0..3 {
        reader.next().await?.ok_or("stream ended")?;
    }
    // Every half of the client's connection gone: the close is reported.
    writer.finish().await;
    drop(connected);
    client.shutdown();

    let seen = recorder.lock();
    let (&span_id, span) = seen
        .spans
        .iter()
        .find(|(_, s)| s.name == "connection")
        .ok_or("no connection span")?;
    for field in ["conn", "remote", "transport", "direction"] {
        assert!(
            span.fields.contains_key(field),
            "span lacks {field}: {span:?}"
        );
    }
    assert_eq!(
        span.fields.get("remote").map(String::as_str),
        Some("memory:mw-trace-events")
    );
    assert_eq!(
        span.fields.get("direction").map(String::as_str),
        Some("Outbound")
    );
    let in_span: Vec<&Seen> = seen
        .events
        .iter()
        .filter(|e| e.parent == Some(span_id))
        .collect();
    let packets: Vec<(Option<&str>, Option<&str>)> = in_span
        .iter()
        .filter(|e| e.name == "packet")
        .map(|e| {
            (
                e.fields.get("dir").map(String::as_str),
                e.fields.get("len").map(String::as_str),
            )
        })
        .collect();
    assert_eq!(
        packets,
        vec![
            (Some("\"out\""), Some("3")),
            (Some("\"out\""), Some("0")),
            (Some("\"out\""), Some("100"))
        ]
    );
    assert!(in_span.iter().any(|e| e.name == "opened"));
    let closed = in_span
        .iter()
        .find(|e| e.name == "closed")
        .ok_or("no close report")?;
    assert_eq!(
        closed.fields.get("bytes_out").map(String::as_str),
        Some("115")
    );
    assert_eq!(
        closed.fields.get("packets_out").map(String::as_str),
        Some("3")
    );
    assert_eq!(closed.fields.get("bytes_in").map(String::as_str), Some("0"));
    Ok(())
}
