//! QUIC links (feature `quic`): quinn over UDP, TLS 1.3 from the same [`TlsServer`] and
//! [`TlsClient`] settings as TLS over TCP, and one bidirectional stream per connection that
//! carries the usual length-prefixed packets.
//!
//! The connector opens the stream, the listener accepts it; its two halves become the
//! [`ByteStream`] every other transport yields, so the middleware, the packet framing and
//! everything above run unchanged. Because a QUIC stream is announced to the peer with its
//! first bytes, a listener hands over a connection once the connecting side has sent
//! something (snakeMQ peers send their protocol version at once); until then it counts as
//! being established, within [`LinkConfig::establish_timeout`](crate::LinkConfig).
//!
//! All connections of a listener share its UDP socket: removing the listener closes them.

mod handshake;
mod socket;

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::io::AsyncWrite;

use self::handshake::handshake_error;
use self::socket::ClosableUdpSocket;
use crate::connection::{ConnId, ConnInfo, Direction, TlsSessionInfo, TransportKind};
use crate::stream::ByteStream;
use crate::tls::{TlsClient, TlsServer};
use crate::{Endpoint, LinkError};

/// The ALPN protocol both sides announce; QUIC requires one.
pub(crate) const ALPN: &[u8] = b"snakemq";
/// A connection that hears nothing (not even a keep-alive) for this long is gone.
const IDLE_TIMEOUT_MS: u32 = 15_000;
/// Keep-alives well inside the idle timeout keep a quiet link open.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long closing the write half waits for the peer to acknowledge the data sent.
const FINISH_GRACE: Duration = Duration::from_secs(5);
/// The application close code of a removed listener.
const CLOSE_LISTENER_REMOVED: u32 = 1;

/// Shared by every QUIC endpoint of the process, so that its stateless-reset key is too (it
/// is random per process, so it stays secret): a listener that comes back on the same port
/// resets a peer's stale connection at once, instead of leaving it to the idle timeout.
fn endpoint_config() -> quinn::EndpointConfig {
    static CONFIG: OnceLock<quinn::EndpointConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut config = quinn::EndpointConfig::default();
            config.cid_generator(|| Box::new(RandomCids));
            config
        })
        .clone()
}

/// Random 8-byte connection ids. quinn's default generator signs its ids with a key of
/// its own endpoint and drops packets whose id another endpoint made, which would keep a
/// listener that came back from sending the stateless reset above.
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&rand::random::<[u8; 8]>())
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn transport(listener: bool) -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(IDLE_TIMEOUT_MS))));
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    // One stream per connection, opened by the connecting side: nothing else is allowed.
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport.max_concurrent_bidi_streams(VarInt::from_u32(u32::from(listener)));
    Arc::new(transport)
}

fn unusable(what: &str, error: impl std::fmt::Display) -> LinkError {
    LinkError::TlsConfig(format!(
        "{what} cannot be used for QUIC (TLS 1.3 is required): {error}"
    ))
}

fn invalid(endpoint: &Endpoint, reason: &'static str) -> LinkError {
    LinkError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason,
    }
}

/// Checks, when a connector is added, that it can ever connect to `endpoint`: TLS settings
/// that verify the server and work with QUIC.
pub(crate) fn check_connect(endpoint: &Endpoint, tls: Option<&TlsClient>) -> Result<(), LinkError> {
    let Some(tls) = tls else {
        return Err(invalid(
            endpoint,
            "a QUIC endpoint needs TLS settings: ConnectOptions::tls",
        ));
    };
    if !tls.verifies_server() {
        // The opt-out exists for Python peers' TLS; no Python peer speaks QUIC.
        return Err(invalid(
            endpoint,
            "QUIC connects to Rust peers only: the insecure Python opt-out does not apply",
        ));
    }
    client_config(tls, &tls.name_for(endpoint)?).map(drop)
}

fn server_config(tls: &TlsServer) -> Result<quinn::ServerConfig, LinkError> {
    let mut rustls = (**tls.rustls_config()).clone();
    rustls.alpn_protocols = vec![ALPN.to_vec()];
    // No 0-RTT: replayable early data has no place in a message queue.
    rustls.max_early_data_size = 0;
    let rustls = Arc::new(rustls);
    // quinn unwraps this when a client arrives; refuse an unusable config here instead.
    rustls::quic::ServerConnection::new(rustls.clone(), rustls::quic::Version::V1, Vec::new())
        .map_err(|e| unusable("the TLS server settings", e))?;
    let crypto =
        QuicServerConfig::try_from(rustls).map_err(|e| unusable("the TLS server settings", e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(true));
    Ok(config)
}

fn client_config(
    tls: &TlsClient,
    name: &rustls::pki_types::ServerName<'static>,
) -> Result<quinn::ClientConfig, LinkError> {
    let mut rustls = (**tls.rustls_config()).clone();
    rustls.alpn_protocols = vec![ALPN.to_vec()];
    rustls.enable_early_data = false;
    let rustls = Arc::new(rustls);
    rustls::quic::ClientConnection::new(
        rustls.clone(),
        rustls::quic::Version::V1,
        name.clone(),
        Vec::new(),
    )
    .map_err(|e| unusable("the TLS client settings", e))?;
    let crypto =
        QuicClientConfig::try_from(rustls).map_err(|e| unusable("the TLS client settings", e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(false));
    Ok(config)
}

/// A bound QUIC listener: its endpoint and the socket under it.
#[derive(Debug)]
pub(crate) struct QuicListener {
    endpoint: quinn::Endpoint,
    socket: Arc<ClosableUdpSocket>,
    local_addr: SocketAddr,
}

impl QuicListener {
    /// Binds `endpoint` (its `host:port` is `addr`, resolved now) with the listener's TLS
    /// settings, which QUIC requires.
    pub(crate) async fn bind(
        endpoint: &Endpoint,
        addr: &str,
        tls: Option<&TlsServer>,
    ) -> Result<Self, LinkError> {
        let tls = tls.ok_or_else(|| {
            invalid(
                endpoint,
                "a QUIC endpoint needs TLS settings: ListenOptions::tls",
            )
        })?;
        let config = server_config(tls)?;
        let bind_error = |source| LinkError::Bind {
            endpoint: endpoint.to_string(),
            source,
        };
        let bound = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
            let socket = Arc::new(ClosableUdpSocket::bind(&addrs)?);
            let local_addr = quinn::AsyncUdpSocket::local_addr(&*socket)?;
            let quic = quinn::Endpoint::new_with_abstract_socket(
                endpoint_config(),
                Some(config),
                socket.clone(),
                Arc::new(quinn::TokioRuntime),
            )?;
            Ok::<_, io::Error>((quic, socket, local_addr))
        };
        let (endpoint, socket, local_addr) = bound.await.map_err(bind_error)?;
        Ok(QuicListener {
            endpoint,
            socket,
            local_addr,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next connection attempt; `None` once the endpoint is closed.
    pub(crate) async fn accept(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }
}

impl Drop for QuicListener {
    fn drop(&mut self) {
        // The connections share the socket, so they end with the listener; then the port
        // is freed at once (see `socket`).
        self.endpoint.close(
            VarInt::from_u32(CLOSE_LISTENER_REMOVED),
            b"listener removed",
        );
        self.socket.close();
    }
}

/// Completes an incoming connection: the QUIC handshake, then the connector's stream.
pub(crate) async fn accept(
    incoming: quinn::Incoming,
    local_addr: SocketAddr,
) -> Result<ByteStream, LinkError> {
    let remote = incoming.remote_address().to_string();
    let connection = incoming
        .accept()
        .map_err(io::Error::from)?
        .await
        .map_err(|error| handshake_error(&remote, error))?;
    let (send, recv) = connection
        .accept_bi()
        .await
        .map_err(|error| handshake_error(&remote, error))?;
    Ok(byte_stream(
        &connection,
        local_addr,
        Direction::Inbound,
        send,
        recv,
    ))
}

/// Opens a connection to `endpoint` (`addr` is its `host:port`, resolved now) with the
/// QUIC handshake verifying the server against `tls`, then opens the stream.
///
/// Nothing refuses a QUIC handshake to an address where nobody listens (unlike TCP's
/// refusal): it would only end with the establish timeout. So every address the host
/// resolves to (IPv6 and IPv4 for `localhost`, say) is tried at once, and the first
/// connection made wins.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    addr: &str,
    tls: &TlsClient,
) -> Result<ByteStream, LinkError> {
    let connect_error = |source: io::Error| LinkError::Connect {
        endpoint: endpoint.to_string(),
        source,
    };
    let name = tls.name_for(endpoint)?;
    let config = client_config(tls, &name)?;
    let remotes = tokio::net::lookup_host(addr).await.map_err(connect_error)?;
    // Dropped (so aborted) once one attempt has won.
    let mut attempts = tokio::task::JoinSet::new();
    for remote in remotes {
        attempts.spawn(connect_to(
            remote,
            config.clone(),
            name.to_str().into_owned(),
        ));
    }
    let mut failure = Attempt::Io(io::Error::new(
        io::ErrorKind::NotFound,
        "the host has no address",
    ));
    while let Some(attempt) = attempts.join_next().await {
        match attempt {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => failure = error,
            Err(error) => failure = Attempt::Io(io::Error::other(error)),
        }
    }
    Err(match failure {
        Attempt::Io(source) => connect_error(source),
        Attempt::Handshake(error) => handshake_error(&endpoint.to_string(), error),
    })
}

/// How one connection attempt failed: before QUIC's handshake could run, or in it.
enum Attempt {
    Io(io::Error),
    Handshake(quinn::ConnectionError),
}

impl From<io::Error> for Attempt {
    fn from(error: io::Error) -> Self {
        Attempt::Io(error)
    }
}

/// One connection attempt to `remote`, from a UDP socket of its own.
async fn connect_to(
    remote: SocketAddr,
    config: quinn::ClientConfig,
    name: String,
) -> Result<ByteStream, Attempt> {
    let bind: SocketAddr = if remote.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(bind)?;
    let local_addr = socket.local_addr()?;
    // The endpoint's tasks live as long as its connection; no handle needs to be kept.
    let quic = quinn::Endpoint::new(
        endpoint_config(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let connection = quic
        .connect_with(config, remote, &name)
        .map_err(io::Error::other)?
        .await
        .map_err(Attempt::Handshake)?;
    let (send, recv) = connection.open_bi().await.map_err(Attempt::Handshake)?;
    Ok(byte_stream(
        &connection,
        local_addr,
        Direction::Outbound,
        send,
        recv,
    ))
}

fn byte_stream(
    connection: &quinn::Connection,
    local_addr: SocketAddr,
    direction: Direction,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) -> ByteStream {
    let remote_addr = connection.remote_address();
    let local_addr = match connection.local_ip() {
        Some(ip) => SocketAddr::new(ip, local_addr.port()),
        None => local_addr,
    };
    let peer_certificates = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|chain| {
            chain
                .iter()
                .map(|cert| Bytes::copy_from_slice(cert.as_ref()))
                .collect()
        })
        .unwrap_or_default();
    let info = ConnInfo {
        id: ConnId::next(),
        remote_addr: Some(remote_addr),
        local_addr: Some(local_addr),
        remote: remote_addr.to_string(),
        transport: TransportKind::Quic,
        direction,
        peer_certificates,
        tls: Some(TlsSessionInfo {
            version: format!("{:?}", rustls::ProtocolVersion::TLSv1_3),
            cipher_suite: None,
        }),
    };
    // The streams keep the connection alive; when both are gone it closes.
    ByteStream::new(info, Box::new(recv), Box::new(QuicWrite::new(send)))
}

type Closing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The write half: a QUIC send stream whose shutdown waits (a bounded time) until the peer
/// has the data, because the connection closes as soon as both halves are dropped and a
/// QUIC close discards what is still in flight.
struct QuicWrite {
    send: quinn::SendStream,
    closing: Option<Closing>,
}

impl QuicWrite {
    fn new(send: quinn::SendStream) -> Self {
        QuicWrite {
            send,
            closing: None,
        }
    }
}

impl AsyncWrite for QuicWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let closing = this.closing.get_or_insert_with(|| {
            // An error means the stream is already finished or reset: nothing to wait for,
            // and `stopped` then returns at once.
            let _ = this.send.finish();
            let stopped = this.send.stopped();
            Box::pin(async move {
                let _ = tokio::time::timeout(FINISH_GRACE, stopped).await;
            })
        });
        closing.as_mut().poll(cx).map(Ok)
    }
}
