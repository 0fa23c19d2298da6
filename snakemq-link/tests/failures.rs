//! Connections that could not be established are reported on `Incoming::next_event`: a
//! refused connect, a TLS handshake refused on either side (over TCP and QUIC), with the
//! connector and its attempt count; `Incoming::next` still returns connections only.
#![cfg(feature = "quic")]

#[path = "tls_certs/mod.rs"]
mod tls_certs;

#[path = "support/mod.rs"]
mod support;

use snakemq_link::tls::{TlsClient, TlsServer};
use snakemq_link::{
    ConnectOptions, Direction, Endpoint, EstablishFailure, Incoming, Link, LinkError, LinkEvent,
    ListenOptions, TlsFailure,
};
use support::*;
use tls_certs::Ca;

/// The next failure report; a connection arriving instead fails the test.
async fn next_failure(incoming: &mut Incoming, what: &str) -> Result<EstablishFailure, BoxError> {
    match within(what, incoming.next_event()).await? {
        Some(LinkEvent::Failed(failure)) => Ok(failure),
        Some(LinkEvent::Connected(conn)) => {
            Err(format!("{what}: a connection came: {:?}", conn.info()).into())
        }
        Some(other) => Err(format!("{what}: unexpected {other:?}").into()),
        None => Err(format!("{what}: the link closed").into()),
    }
}

fn tls_failure(failure: &EstablishFailure) -> Option<&TlsFailure> {
    match &failure.error {
        LinkError::TlsHandshake { failure, .. } => Some(failure),
        _ => None,
    }
}

/// A server certificate for "127.0.0.1" from one CA, and a client that trusts another.
fn untrusted_pair() -> Result<(TlsServer, TlsClient), BoxError> {
    let ca = Ca::new("server CA")?;
    let stranger = Ca::new("another CA")?;
    let leaf = ca.leaf(&["127.0.0.1"])?;
    let server = TlsServer::builder(leaf.cert.as_bytes(), leaf.key.as_bytes())?.build()?;
    let client = TlsClient::builder()
        .trust_roots(stranger.pem.as_bytes())?
        .build()?;
    Ok((server, client))
}

#[tokio::test]
async fn a_refused_connect_is_reported_with_its_connector_and_attempt() -> TestResult {
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let (link, mut incoming) = Link::new(config());
    let id = link.connect(Endpoint::tcp(closed))?;
    for attempt in 1..=2 {
        let failure = next_failure(&mut incoming, "a connect failure").await?;
        assert_eq!(failure.direction, Direction::Outbound);
        assert_eq!(failure.connector, Some(id));
        assert_eq!(failure.attempt, attempt, "{failure:?}");
        assert_eq!(failure.remote, Endpoint::tcp(closed).to_string());
        assert!(
            matches!(failure.error, LinkError::Connect { .. }),
            "{failure:?}"
        );
    }
    link.close().await;
    Ok(())
}

/// Connects with a client that does not trust the server over `listen` (TLS or QUIC) and
/// returns what each side reported, after checking what both transports share.
async fn refused_handshake(listen: &str) -> Result<(EstablishFailure, EstablishFailure), BoxError> {
    let (server_tls, client_tls) = untrusted_pair()?;
    let (server, mut accepted) = Link::new(config());
    let (_, bound) = server
        .listen_with(&listen.parse()?, ListenOptions::tls(server_tls))
        .await?;
    let (client, mut connected) = Link::new(config());
    let id = client.connect_with(bound.clone(), ConnectOptions::tls(client_tls))?;

    let at_client = next_failure(&mut connected, "the client's failure").await?;
    assert_eq!(at_client.direction, Direction::Outbound);
    assert_eq!(at_client.connector, Some(id));
    assert_eq!(at_client.remote, bound.to_string());
    assert_eq!(tls_failure(&at_client), Some(&TlsFailure::UnknownIssuer));

    let at_server = next_failure(&mut accepted, "the server's failure").await?;
    assert_eq!(at_server.direction, Direction::Inbound);
    assert_eq!(at_server.connector, None);
    client.close().await;
    server.close().await;
    Ok((at_client, at_server))
}

#[tokio::test]
async fn a_refused_tls_handshake_is_reported_on_both_sides() -> TestResult {
    let (_, at_server) = refused_handshake("127.0.0.1:0").await?;
    assert!(
        matches!(tls_failure(&at_server), Some(TlsFailure::PeerAlert(_))),
        "{at_server:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_quic_handshake_is_reported_on_both_sides_typed_as_tls() -> TestResult {
    let (_, at_server) = refused_handshake("quic://127.0.0.1:0").await?;
    assert!(
        matches!(tls_failure(&at_server), Some(TlsFailure::PeerAlert(alert)) if alert == "UnknownCA"),
        "{at_server:?}"
    );
    Ok(())
}

#[tokio::test]
async fn next_skips_failure_reports_and_returns_the_next_connection() -> TestResult {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let (server, _accepted) = Link::new(config());
    let (_, bound) = server.listen(&"127.0.0.1:0".parse()?).await?;
    let (client, mut connected) = Link::new(config());
    client.connect(Endpoint::tcp(closed))?;
    // A failure report is queued before the good connector starts.
    let failure = next_failure(&mut connected, "a connect failure").await?;
    assert_eq!(failure.attempt, 1);
    client.connect(bound)?;
    let connection = within("a connection", connected.next())
        .await?
        .ok_or("the link closed")?;
    assert_eq!(connection.info().direction, Direction::Outbound);
    client.close().await;
    server.close().await;
    Ok(())
}
