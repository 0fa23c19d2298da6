//! TLS over TCP (feature `tls`): the handshake matrix with certificates made at test time.
//!
//! Handshakes are driven on both ends of a loopback TCP pair at once
//! ([`TlsServer::accept`], [`TlsClient::connect`]), so every refusal is seen as the typed
//! error each side returns, with no waiting on "nothing happened". Timeouts only guard
//! against a hang.
#![cfg(feature = "tls")]

#[path = "tls_certs/mod.rs"]
mod tls_certs;

use std::time::Duration;

use bytes::Bytes;
use snakemq_link::tls::{TlsClient, TlsServer, TlsVersion, certificate_names};
use snakemq_link::{
    ByteStream, ConnInfo, ConnectOptions, Direction, Endpoint, Link, LinkConfig, LinkError,
    ListenOptions, TlsFailure, TransportKind,
};
use tls_certs::{Ca, Leaf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Guard against a hang; a passing test never waits this long.
const GUARD: Duration = Duration::from_secs(20);

fn stream_of(tcp: TcpStream, direction: Direction) -> Result<ByteStream, LinkError> {
    let remote = tcp.peer_addr()?;
    let mut info = ConnInfo::new(TransportKind::Tcp, direction, remote.to_string());
    info.remote_addr = Some(remote);
    let (read, write) = tcp.into_split();
    Ok(ByteStream::new(info, Box::new(read), Box::new(write)))
}

/// Both ends of a fresh loopback TCP connection, and the endpoint the client dialled.
async fn tcp_pair() -> Result<(ByteStream, ByteStream, Endpoint), LinkError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = Endpoint::tcp(listener.local_addr()?);
    let (client, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr()?),
        listener.accept()
    );
    Ok((
        stream_of(accepted?.0, Direction::Inbound)?,
        stream_of(client?, Direction::Outbound)?,
        endpoint,
    ))
}

type Outcome = (Result<ByteStream, LinkError>, Result<ByteStream, LinkError>);

/// Runs both sides of a handshake over loopback TCP: (server result, client result).
async fn handshake(server: &TlsServer, client: &TlsClient) -> Result<Outcome, LinkError> {
    let (s, c, endpoint) = tcp_pair().await?;
    let both = async { tokio::join!(server.accept(s), client.connect(&endpoint, c)) };
    tokio::time::timeout(GUARD, both)
        .await
        .map_err(|_| LinkError::EstablishTimeout(GUARD))
}

fn failure(result: &Result<ByteStream, LinkError>) -> Option<&TlsFailure> {
    match result {
        Err(LinkError::TlsHandshake { failure, .. }) => Some(failure),
        _ => None,
    }
}

/// A stream whose handshake "succeeded" on this side but whose peer refused it: the first
/// read must fail or end, never yield data.
async fn first_read_fails(stream: ByteStream) -> TestResult {
    let mut read = stream.read;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(GUARD, read.read(&mut buf)).await? {
        Ok(0) | Err(_) => Ok(()),
        Ok(n) => Err(format!("read {n} bytes from a refused connection").into()),
    }
}

struct Pki {
    ca: Ca,
    alice: Leaf,
    bob: Leaf,
}

fn pki() -> Result<Pki, Box<dyn std::error::Error + Send + Sync>> {
    let ca = Ca::new("test CA")?;
    Ok(Pki {
        alice: ca.leaf(&["alice", "127.0.0.1"])?,
        bob: ca.leaf(&["bob"])?,
        ca,
    })
}

fn mutual_server(leaf: &Leaf, ca: &Ca) -> Result<TlsServer, LinkError> {
    TlsServer::builder(leaf.cert.as_bytes(), leaf.key.as_bytes())?
        .require_client_certificates(ca.pem.as_bytes())?
        .build()
}

fn client_with_cert(leaf: &Leaf, ca: &Ca) -> Result<TlsClient, LinkError> {
    TlsClient::builder()
        .trust_roots(ca.pem.as_bytes())?
        .client_certificate(leaf.cert.as_bytes(), leaf.key.as_bytes())?
        .build()
}

#[tokio::test]
async fn mutual_tls_link_carries_packets_and_shows_both_chains() -> TestResult {
    let p = pki()?;
    let (server, mut accepted) = Link::new(LinkConfig::default());
    let (_, bound) = server
        .listen_with(
            &"127.0.0.1:0".parse()?,
            ListenOptions::tls(mutual_server(&p.alice, &p.ca)?),
        )
        .await?;
    let (client, mut connected) = Link::new(LinkConfig::default());
    client.connect_with(bound, ConnectOptions::tls(client_with_cert(&p.bob, &p.ca)?))?;

    let (c_info, mut c_reader, c_writer) = tokio::time::timeout(GUARD, connected.next())
        .await?
        .ok_or("client link closed")?
        .into_parts();
    let (s_info, mut s_reader, s_writer) = tokio::time::timeout(GUARD, accepted.next())
        .await?
        .ok_or("server link closed")?
        .into_parts();

    c_writer
        .send_packet(Bytes::from_static(b"to alice"))
        .await?;
    s_writer.send_packet(Bytes::from_static(b"to bob")).await?;
    assert_eq!(
        tokio::time::timeout(GUARD, s_reader.next()).await??,
        Some(Bytes::from_static(b"to alice"))
    );
    assert_eq!(
        tokio::time::timeout(GUARD, c_reader.next()).await??,
        Some(Bytes::from_static(b"to bob"))
    );

    // The getpeercert equivalent: each side sees the other's verified chain.
    assert!(c_info.peer_verified() && s_info.peer_verified());
    let server_names = certificate_names(c_info.peer_certificates.first().ok_or("no chain")?)?;
    assert_eq!(server_names.dns_names, ["alice"]);
    let client_names = certificate_names(s_info.peer_certificates.first().ok_or("no chain")?)?;
    assert!(client_names.matches("bob"));
    assert!(!client_names.matches("alice"));
    Ok(())
}

#[tokio::test]
async fn tls_runs_over_the_memory_transport_with_the_endpoint_name_as_server_name() -> TestResult {
    let ca = Ca::new("test CA")?;
    let server_leaf = ca.leaf(&["tls-memory-server"])?;
    let server =
        TlsServer::builder(server_leaf.cert.as_bytes(), server_leaf.key.as_bytes())?.build()?;
    let (link, mut accepted) = Link::new(LinkConfig::default());
    let (_, bound) = link
        .listen_with(
            &"memory:tls-memory-server".parse()?,
            ListenOptions::tls(server),
        )
        .await?;
    let (client_link, mut connected) = Link::new(LinkConfig::default());
    let client = TlsClient::builder()
        .trust_roots(ca.pem.as_bytes())?
        .build()?;
    client_link.connect_with(bound, ConnectOptions::tls(client))?;
    let (info, _, writer) = tokio::time::timeout(GUARD, connected.next())
        .await?
        .ok_or("client link closed")?
        .into_parts();
    assert_eq!(info.transport, TransportKind::Memory);
    assert!(info.peer_verified());
    writer
        .send_packet(Bytes::from_static(b"over memory"))
        .await?;
    let (_, mut reader, _) = tokio::time::timeout(GUARD, accepted.next())
        .await?
        .ok_or("server link closed")?
        .into_parts();
    assert_eq!(
        tokio::time::timeout(GUARD, reader.next()).await??,
        Some(Bytes::from_static(b"over memory"))
    );
    Ok(())
}

#[tokio::test]
async fn missing_client_certificate_is_refused() -> TestResult {
    let p = pki()?;
    let client = TlsClient::builder()
        .trust_roots(p.ca.pem.as_bytes())?
        .build()?;
    let (server, client) = handshake(&mutual_server(&p.alice, &p.ca)?, &client).await?;
    assert_eq!(
        failure(&server),
        Some(&TlsFailure::NoCertificate),
        "{server:?}"
    );
    // TLS 1.3: the client finished its part before the server looked at its (absent)
    // certificate, so it learns of the refusal on its first read.
    match client {
        Ok(stream) => first_read_fails(stream).await?,
        Err(LinkError::TlsHandshake { .. }) => {}
        Err(other) => return Err(format!("unexpected client error {other}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn untrusted_ca_is_refused_on_both_sides() -> TestResult {
    let p = pki()?;
    let other_ca = Ca::new("someone else's CA")?;

    // The server's certificate comes from a CA the client does not trust.
    let rogue_server = other_ca.leaf(&["alice", "127.0.0.1"])?;
    let (server, client) = handshake(
        &mutual_server(&rogue_server, &p.ca)?,
        &client_with_cert(&p.bob, &p.ca)?,
    )
    .await?;
    assert_eq!(
        failure(&client),
        Some(&TlsFailure::UnknownIssuer),
        "{client:?}"
    );
    assert!(
        matches!(failure(&server), Some(TlsFailure::PeerAlert(_))),
        "{server:?}"
    );

    // The client's certificate comes from a CA the server does not trust.
    let rogue_client = other_ca.leaf(&["bob"])?;
    let (server, client) = handshake(
        &mutual_server(&p.alice, &p.ca)?,
        &client_with_cert(&rogue_client, &p.ca)?,
    )
    .await?;
    assert_eq!(
        failure(&server),
        Some(&TlsFailure::UnknownIssuer),
        "{server:?}"
    );
    if let Ok(stream) = client {
        first_read_fails(stream).await?;
    }
    Ok(())
}

#[tokio::test]
async fn expired_certificates_are_refused() -> TestResult {
    let p = pki()?;
    let old_server = p.ca.expired_leaf(&["alice", "127.0.0.1"])?;
    let (_, client) = handshake(
        &mutual_server(&old_server, &p.ca)?,
        &client_with_cert(&p.bob, &p.ca)?,
    )
    .await?;
    assert_eq!(failure(&client), Some(&TlsFailure::Expired), "{client:?}");

    let old_client = p.ca.expired_leaf(&["bob"])?;
    let (server, _) = handshake(
        &mutual_server(&p.alice, &p.ca)?,
        &client_with_cert(&old_client, &p.ca)?,
    )
    .await?;
    assert_eq!(failure(&server), Some(&TlsFailure::Expired), "{server:?}");
    Ok(())
}

#[tokio::test]
async fn not_yet_valid_certificates_are_refused() -> TestResult {
    let p = pki()?;
    let early_server = p.ca.future_leaf(&["alice", "127.0.0.1"])?;
    let (_, client) = handshake(
        &mutual_server(&early_server, &p.ca)?,
        &client_with_cert(&p.bob, &p.ca)?,
    )
    .await?;
    assert_eq!(
        failure(&client),
        Some(&TlsFailure::NotYetValid),
        "{client:?}"
    );

    let early_client = p.ca.future_leaf(&["bob"])?;
    let (server, _) = handshake(
        &mutual_server(&p.alice, &p.ca)?,
        &client_with_cert(&early_client, &p.ca)?,
    )
    .await?;
    assert_eq!(
        failure(&server),
        Some(&TlsFailure::NotYetValid),
        "{server:?}"
    );
    Ok(())
}

#[tokio::test]
async fn wrong_server_name_is_refused() -> TestResult {
    let p = pki()?;
    // Valid for "alice" only, dialled as 127.0.0.1: the endpoint's host is checked.
    let no_ip = p.ca.leaf(&["alice"])?;
    let (_, client) = handshake(
        &mutual_server(&no_ip, &p.ca)?,
        &client_with_cert(&p.bob, &p.ca)?,
    )
    .await?;
    assert!(
        matches!(failure(&client), Some(TlsFailure::WrongName(_))),
        "{client:?}"
    );

    // An explicit name that the certificate does not carry.
    let expecting_carol = TlsClient::builder()
        .trust_roots(p.ca.pem.as_bytes())?
        .client_certificate(p.bob.cert.as_bytes(), p.bob.key.as_bytes())?
        .server_name("carol")?
        .build()?;
    let (_, client) = handshake(&mutual_server(&p.alice, &p.ca)?, &expecting_carol).await?;
    assert!(
        matches!(failure(&client), Some(TlsFailure::WrongName(_))),
        "{client:?}"
    );

    // The right explicit name works even though the address is an IP.
    let expecting_alice = TlsClient::builder()
        .trust_roots(p.ca.pem.as_bytes())?
        .client_certificate(p.bob.cert.as_bytes(), p.bob.key.as_bytes())?
        .server_name("alice")?
        .build()?;
    let (server, client) = handshake(&mutual_server(&no_ip, &p.ca)?, &expecting_alice).await?;
    assert!(server.is_ok() && client.is_ok(), "{server:?} {client:?}");
    Ok(())
}

#[tokio::test]
async fn plain_tcp_to_a_tls_port_is_refused() -> TestResult {
    let p = pki()?;
    let (s, c, _) = tcp_pair().await?;
    let server = mutual_server(&p.alice, &p.ca)?;
    let plain_peer = async {
        // What a plain snakeMQ peer sends first: PROTOCOL_VERSION(1), IDENTIFICATION "bob".
        let mut write = c.write;
        let mut read = c.read;
        write
            .write_all(&[0, 0, 0, 5, 0, 0, 0, 0, 1, 0, 0, 0, 4, 2, b'b', b'o', b'b'])
            .await?;
        let mut sink = Vec::new();
        // Whatever the server answers (an alert), it must then close.
        read.read_to_end(&mut sink).await.map(|_| ())
    };
    let (accepted, plain) =
        tokio::time::timeout(GUARD, async { tokio::join!(server.accept(s), plain_peer) }).await?;
    assert!(
        matches!(failure(&accepted), Some(TlsFailure::NotTls(_))),
        "{accepted:?}"
    );
    let _ = plain; // reset or clean end: either way, closed
    Ok(())
}

#[tokio::test]
async fn tls_to_a_plain_port_is_refused() -> TestResult {
    let p = pki()?;
    let (s, c, endpoint) = tcp_pair().await?;
    let plain_peer = async {
        // A plain snakeMQ peer greets at once, then reads until the client gives up.
        let mut write = s.write;
        let mut read = s.read;
        write.write_all(&[0, 0, 0, 5, 0, 0, 0, 0, 1]).await?;
        let mut sink = Vec::new();
        read.read_to_end(&mut sink).await.map(|_| ())
    };
    let client = client_with_cert(&p.bob, &p.ca)?;
    let (connected, _) = tokio::time::timeout(GUARD, async {
        tokio::join!(client.connect(&endpoint, c), plain_peer)
    })
    .await?;
    assert!(
        matches!(
            failure(&connected),
            Some(TlsFailure::NotTls(_) | TlsFailure::Closed)
        ),
        "{connected:?}"
    );
    Ok(())
}

#[tokio::test]
async fn tls12_only_and_tls13_only_configurations_connect() -> TestResult {
    let p = pki()?;
    for only in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let server = TlsServer::builder(p.alice.cert.as_bytes(), p.alice.key.as_bytes())?
            .require_client_certificates(p.ca.pem.as_bytes())?
            .versions(&[only])
            .build()?;
        let (s, c) = handshake(&server, &client_with_cert(&p.bob, &p.ca)?).await?;
        let (s, c) = (s?, c?);
        assert!(s.info.peer_verified() && c.info.peer_verified(), "{only:?}");
        // Both ends report the version they were limited to, and a suite of it.
        let want = match only {
            TlsVersion::Tls12 => ("TLSv1_2", "TLS_ECDHE_"),
            _ => ("TLSv1_3", "TLS13_"),
        };
        for info in [&s.info, &c.info] {
            let session = info.tls.as_ref().ok_or("no TLS session info")?;
            assert_eq!(session.version, want.0, "{session:?}");
            let suite = session.cipher_suite.as_deref().unwrap_or_default();
            assert!(suite.starts_with(want.1), "{session:?}");
        }

        // The restriction is real: a client limited to the other version cannot connect.
        let other = match only {
            TlsVersion::Tls12 => TlsVersion::Tls13,
            _ => TlsVersion::Tls12,
        };
        let client = TlsClient::builder()
            .trust_roots(p.ca.pem.as_bytes())?
            .client_certificate(p.bob.cert.as_bytes(), p.bob.key.as_bytes())?
            .versions(&[other])
            .build()?;
        let (s, c) = handshake(&server, &client).await?;
        assert!(
            s.is_err() && c.is_err(),
            "{only:?} server vs {other:?} client"
        );
    }
    Ok(())
}

#[tokio::test]
async fn optional_client_certificates_verify_what_comes() -> TestResult {
    let p = pki()?;
    let server = TlsServer::builder(p.alice.cert.as_bytes(), p.alice.key.as_bytes())?
        .optional_client_certificates(p.ca.pem.as_bytes())?
        .build()?;
    let anonymous = TlsClient::builder()
        .trust_roots(p.ca.pem.as_bytes())?
        .build()?;
    let (s, c) = handshake(&server, &anonymous).await?;
    assert!(!s?.info.peer_verified());
    assert!(c?.info.peer_verified());

    let (s, _) = handshake(&server, &client_with_cert(&p.bob, &p.ca)?).await?;
    assert!(s?.info.peer_verified());

    let rogue = Ca::new("rogue")?.leaf(&["bob"])?;
    let (s, _) = handshake(&server, &client_with_cert(&rogue, &p.ca)?).await?;
    assert_eq!(failure(&s), Some(&TlsFailure::UnknownIssuer));
    Ok(())
}

#[tokio::test]
async fn insecure_python_compat_client_accepts_anything_but_shows_no_chain() -> TestResult {
    // A self-signed server certificate that nobody could verify, as Python peers use.
    let self_signed = Ca::new("python")?.leaf(&["whatever"])?;
    let server =
        TlsServer::builder(self_signed.cert.as_bytes(), self_signed.key.as_bytes())?.build()?;
    let client = TlsClient::insecure_python_compat_no_verification()?;
    assert!(!client.verifies_server());
    let (s, c) = handshake(&server, &client).await?;
    let (mut s, mut c) = (s?, c?);
    // Unverified, so not shown as evidence of anything.
    assert!(!c.info.peer_verified());
    c.write.write_all(b"ping").await?;
    c.write.flush().await?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(GUARD, s.read.read_exact(&mut buf)).await??;
    assert_eq!(&buf, b"ping");
    Ok(())
}

#[tokio::test]
async fn bad_settings_are_config_errors() -> TestResult {
    let p = pki()?;
    assert!(matches!(
        TlsServer::builder(b"", p.alice.key.as_bytes()),
        Err(LinkError::TlsConfig(_))
    ));
    assert!(matches!(
        TlsServer::builder(p.alice.cert.as_bytes(), b"no key here"),
        Err(LinkError::TlsConfig(_))
    ));
    // A key that is not the certificate's.
    assert!(matches!(
        TlsServer::builder(p.alice.cert.as_bytes(), p.bob.key.as_bytes())?.build(),
        Err(LinkError::TlsConfig(_))
    ));
    assert!(matches!(
        TlsClient::builder().build(),
        Err(LinkError::TlsConfig(_))
    ));
    assert!(matches!(
        TlsClient::builder()
            .trust_roots(p.ca.pem.as_bytes())?
            .versions(&[])
            .build(),
        Err(LinkError::TlsConfig(_))
    ));
    assert!(matches!(
        TlsServer::builder_from_files("/nonexistent/cert.pem", "/nonexistent/key.pem"),
        Err(LinkError::TlsConfig(_))
    ));
    Ok(())
}

#[test]
fn names_come_from_dns_names_else_the_common_name() -> TestResult {
    let ca = Ca::new("test CA")?;
    let der = |leaf: &Leaf| -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        use snakemq_link::tls::rustls::pki_types::CertificateDer;
        use snakemq_link::tls::rustls::pki_types::pem::PemObject;
        Ok(CertificateDer::from_pem_slice(leaf.cert.as_bytes())?.to_vec())
    };
    let with_san = certificate_names(&der(&ca.leaf(&["bob", "10.0.0.7"])?)?)?;
    assert_eq!(with_san.dns_names, ["bob"]);
    assert_eq!(with_san.common_names, ["bob"]);
    assert!(with_san.matches("bob") && !with_san.matches("10.0.0.7"));

    // As `openssl req -subj /CN=py` makes them for Python peers: no SAN at all.
    let cn_only = ca.leaf_with(&[], |p| {
        p.distinguished_name.push(rcgen::DnType::CommonName, "py");
    })?;
    let names = certificate_names(&der(&cn_only)?)?;
    assert!(names.dns_names.is_empty());
    assert!(names.matches("py") && !names.matches("rust"));
    Ok(())
}

#[tokio::test]
async fn name_for_uses_the_endpoint_host() -> TestResult {
    let client = TlsClient::insecure_python_compat_no_verification()?;
    let name = |e: &str| -> Result<String, LinkError> {
        Ok(client.name_for(&e.parse()?)?.to_str().into_owned())
    };
    assert_eq!(name("127.0.0.1:4000")?, "127.0.0.1");
    assert_eq!(name("[::1]:4000")?, "::1");
    assert_eq!(name("alice.example.net:4000")?, "alice.example.net");
    assert_eq!(name("memory:alice")?, "alice");
    let fixed = client.server_name("bob")?;
    assert_eq!(fixed.name_for(&"127.0.0.1:1".parse()?)?.to_str(), "bob");
    Ok(())
}
