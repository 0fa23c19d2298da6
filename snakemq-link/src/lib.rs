//! Transports and packet framing for snakemq.
//!
//! A [`Link`] owns listeners and reconnecting connectors and hands out [`Connection`]s: a
//! [`PacketReader`] that yields packet bodies and a [`PacketWriter`] that coalesces
//! queued packets into few writes. Packets are `size:u32 big-endian, body[size]`; a size
//! above the configured maximum closes the connection before any allocation of that size.
//!
//! The link knows nothing of the snakeMQ protocol, so it can carry any packet protocol a
//! user builds on top.
//!
//! With feature `tls`, a listener or connector is secured by giving it TLS settings:
//! `ListenOptions::tls(TlsServer::builder(cert, key)?.require_client_certificates(ca)?.build()?)`
//! and `ConnectOptions::tls(TlsClient::builder().trust_roots(ca)?.client_certificate(cert, key)?.build()?)`,
//! passed to [`Link::listen_with`] and [`Link::connect_with`]. The `tls` module documents
//! what each side verifies, the certificate chain on [`ConnInfo`], the typed handshake
//! errors ([`TlsFailure`]) and the one insecure opt-out meant for Python snakeMQ peers.
//!
//! With feature `quic`, an endpoint written `quic://host:port` ([`Endpoint::Quic`]) runs
//! the link over QUIC: UDP, one bidirectional stream per connection carrying the same
//! packets, so middleware and everything above run unchanged (Rust peers only: Python
//! snakeMQ has no QUIC). QUIC always runs TLS 1.3, so such a listener or connector *must*
//! be given TLS settings, the same `TlsServer`/`TlsClient` as above (mutual TLS included);
//! without them, or with settings that exclude TLS 1.3 or skip verification, listening and
//! connecting fail at once with an error. Facts worth knowing:
//! - a listener hands over a connection when the connecting side's first bytes arrive (a
//!   QUIC stream is announced with its data; snakeMQ peers send their version at once),
//!   within [`LinkConfig::establish_timeout`];
//! - all connections of a QUIC listener share its UDP socket, so removing the listener
//!   closes them, and frees the port before [`Link::remove_listener`] returns;
//! - a peer that vanishes is noticed after 15 s without a packet (keep-alives flow every
//!   5 s), or at once when a listener of this process comes back on its port;
//! - connectors reconnect as over TCP.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), snakemq_link::LinkError> {
//! use bytes::Bytes;
//! use snakemq_link::{Endpoint, Link, LinkConfig};
//!
//! let (server, mut accepted) = Link::new(LinkConfig::default());
//! let (_, bound) = server.listen(&"memory:doc-server".parse()?).await?;
//!
//! let (client, mut connected) = Link::new(LinkConfig::default());
//! client.connect(bound)?;
//!
//! let (_, _, writer) = connected.next().await.ok_or(snakemq_link::LinkError::Closed)?.into_parts();
//! writer.send_packet(Bytes::from_static(b"hello")).await?;
//!
//! let (_, mut reader, _) = accepted.next().await.ok_or(snakemq_link::LinkError::Closed)?.into_parts();
//! assert_eq!(reader.next().await?, Some(Bytes::from_static(b"hello")));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod backoff;
mod connection;
mod endpoint;
mod error;
mod event;
mod link;
mod memory;
pub mod middleware;
mod options;
pub mod packet;
#[cfg(feature = "quic")]
mod quic;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;

pub use backoff::Backoff;
pub use connection::{
    BoxRead, BoxWrite, ConnId, ConnInfo, Connection, Direction, PacketReader, PacketWriter,
    QueuedBytes, TlsSessionInfo, TransportKind,
};
pub use endpoint::Endpoint;
pub use error::{LinkError, TlsFailure};
pub use event::{EstablishFailure, Incoming, LinkEvent};
pub use link::{ConnectorId, Link, LinkConfig, ListenerId};
pub use options::{ConnectOptions, ListenOptions};
pub use packet::{DEFAULT_MAX_PACKET_SIZE, PacketDecoder};
pub use stream::{ByteStream, Passthrough};
