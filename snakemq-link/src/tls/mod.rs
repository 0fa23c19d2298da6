//! TLS for links (feature `tls`): rustls with the ring provider, over any byte-stream
//! transport (TCP, memory), and the certificate settings QUIC connections use too.
//!
//! A listener gets a [`TlsServer`] through [`ListenOptions::tls`](crate::ListenOptions::tls),
//! a connector a [`TlsClient`] through [`ConnectOptions::tls`](crate::ConnectOptions::tls).
//! The handshake runs when a socket opens, before the middleware stack and before any
//! packet; a failed handshake is a [`LinkError::TlsHandshake`] naming the reason
//! ([`TlsFailure`]), and a connector counts it as a failed attempt (it retries with
//! backoff).
//!
//! What each side checks:
//! - a client verifies the server's certificate against the roots it was given, for the
//!   host of the endpoint it connects to (an IP address or a DNS name;
//!   [`TlsClientBuilder::server_name`] sets another name);
//! - a server asks for client certificates only when told to
//!   ([`TlsServerBuilder::require_client_certificates`] for mutual TLS,
//!   [`TlsServerBuilder::optional_client_certificates`] to verify those that come);
//! - the verified chain is on [`ConnInfo::peer_certificates`](crate::ConnInfo::peer_certificates)
//!   (Python's `getpeercert`), and [`names`] reads the names in it. Messaging uses them to
//!   bind the peer's IDENTIFICATION to its certificate.
//!
//! Both TLS 1.2 and 1.3 are on by default; [`TlsVersion`] lists restrict them.
//!
//! # Mutual TLS between two peers
//!
//! ```
//! use snakemq_link::tls::{TlsClient, TlsServer};
//! use snakemq_link::{ConnectOptions, ListenOptions, LinkError};
//!
//! # fn pem() -> Result<(String, String, String, String, String), Box<dyn std::error::Error>> {
//! # let ca_key = rcgen::KeyPair::generate()?;
//! # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
//! # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
//! # let ca_cert = ca.self_signed(&ca_key)?;
//! # let issuer = rcgen::Issuer::new(ca, ca_key);
//! # let leaf = |name: &str| -> Result<(String, String), rcgen::Error> {
//! #     let key = rcgen::KeyPair::generate()?;
//! #     let cert = rcgen::CertificateParams::new(vec![name.to_owned()])?.signed_by(&key, &issuer)?;
//! #     Ok((cert.pem(), key.serialize_pem()))
//! # };
//! # let (alice_cert, alice_key) = leaf("alice")?;
//! # let (bob_cert, bob_key) = leaf("bob")?;
//! # Ok((ca_cert.pem(), alice_cert, alice_key, bob_cert, bob_key))
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // PEM text, as read from files (`*_from_files` read them for you).
//! let (ca, alice_cert, alice_key, bob_cert, bob_key) = pem()?;
//!
//! // alice listens: her certificate, and clients must present one signed by the CA.
//! let server = TlsServer::builder(alice_cert.as_bytes(), alice_key.as_bytes())?
//!     .require_client_certificates(ca.as_bytes())?
//!     .build()?;
//! let listen = ListenOptions::tls(server);
//!
//! // bob connects: he trusts the CA, proves "bob" with his certificate, and expects the
//! // server to prove "alice" (instead of the host name of the address he connects to).
//! let client = TlsClient::builder()
//!     .trust_roots(ca.as_bytes())?
//!     .client_certificate(bob_cert.as_bytes(), bob_key.as_bytes())?
//!     .server_name("alice")?
//!     .build()?;
//! let connect = ConnectOptions::tls(client);
//! // link.listen_with(&endpoint, listen) / link.connect_with(endpoint, connect)
//! # let _ = (listen, connect);
//! # Ok(())
//! # }
//! ```
//!
//! # Python snakeMQ peers
//!
//! Python snakeMQ's SSL link (`snakemq.link.SSLConfig`) verifies nothing by default
//! (`cert_reqs=CERT_NONE`) and is often run with self-signed certificates. The right way
//! to talk to it is still to give the Python side a certificate from a CA the Rust side
//! trusts, and to set `cert_reqs=ssl.CERT_REQUIRED, ca_certs=...` on the Python side. When
//! that is not possible, [`TlsClient::insecure_python_compat_no_verification`] connects
//! without checking the server at all: anyone on the path can read and change the
//! traffic. It is named to be found in review, and it logs a warning on every connection.

mod client;
pub mod names;
mod read_ahead;
mod server;

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
pub use rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use client::{TlsClient, TlsClientBuilder};
pub use names::{CertificateNames, certificate_names, identity_allowed};
pub use server::{TlsServer, TlsServerBuilder};

use crate::stream::ByteStream;
use crate::{LinkError, TlsFailure};

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// Both versions, the default of the builders.
    pub const ALL: [TlsVersion; 2] = [TlsVersion::Tls13, TlsVersion::Tls12];

    fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// The rustls versions of a list, refusing an empty one (rustls would build a config that
/// can never complete a handshake).
fn protocol_versions(
    list: &[TlsVersion],
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, LinkError> {
    if list.is_empty() {
        return Err(LinkError::TlsConfig(
            "no TLS version enabled; give at least one".to_owned(),
        ));
    }
    Ok(list.iter().map(|v| v.rustls()).collect())
}

/// The ring provider: the one crypto backend of this project (no aws-lc, no cmake).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(context: &str, error: impl std::fmt::Display) -> LinkError {
    LinkError::TlsConfig(format!("{context}: {error}"))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path)
        .map_err(|e| config_error(&format!("cannot read {what} {}", path.display()), e))
}

/// Every certificate of a PEM text, in order; at least one.
fn certificates_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, LinkError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(what, e))?;
    if certs.is_empty() {
        return Err(LinkError::TlsConfig(format!(
            "{what}: no \"BEGIN CERTIFICATE\" block in the PEM input"
        )));
    }
    Ok(certs)
}

/// The first private key of a PEM text (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, LinkError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| config_error("private key", e))
}

/// A root store of every certificate of a PEM text.
fn roots_from_pem(pem: &[u8], what: &str) -> Result<rustls::RootCertStore, LinkError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates_from_pem(pem, what)? {
        roots.add(cert).map_err(|e| config_error(what, e))?;
    }
    Ok(roots)
}

/// What went wrong in a handshake, from the error rustls reported.
///
/// Public so that other transports with rustls handshakes (QUIC) report the same reasons.
pub fn classify(error: &rustls::Error) -> TlsFailure {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => TlsFailure::UnknownIssuer,
            C::Expired | C::ExpiredContext { .. } => TlsFailure::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => TlsFailure::NotYetValid,
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                TlsFailure::WrongName(cert.to_string())
            }
            other => TlsFailure::BadCertificate(other.to_string()),
        },
        rustls::Error::NoCertificatesPresented => TlsFailure::NoCertificate,
        rustls::Error::AlertReceived(alert) => TlsFailure::PeerAlert(format!("{alert:?}")),
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => {
            TlsFailure::NotTls(error.to_string())
        }
        other => TlsFailure::Other(other.to_string()),
    }
}

/// A handshake's I/O error as a [`LinkError::TlsHandshake`]: tokio-rustls carries the
/// rustls error inside the `io::Error`.
fn handshake_error(remote: &str, error: io::Error) -> LinkError {
    let failure = match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => classify(tls),
        None => match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => TlsFailure::Closed,
            _ => TlsFailure::Other(error.to_string()),
        },
    };
    LinkError::TlsHandshake {
        remote: remote.to_owned(),
        failure,
    }
}

/// The peer's chain as shared bytes.
fn chain_of(certs: Option<&[CertificateDer<'_>]>) -> Vec<Bytes> {
    certs
        .unwrap_or_default()
        .iter()
        .map(|c| Bytes::copy_from_slice(c.as_ref()))
        .collect()
}

/// Splits a TLS stream into the boxed halves of a [`ByteStream`].
fn into_byte_stream<S>(info: crate::ConnInfo, tls: S) -> ByteStream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(tls);
    ByteStream::new(info, Box::new(read), Box::new(write))
}

/// What a finished handshake settled on, for [`ConnInfo::tls`](crate::ConnInfo::tls).
fn session_info(session: &rustls::CommonState) -> crate::TlsSessionInfo {
    crate::TlsSessionInfo {
        version: version_name(session.protocol_version()),
        cipher_suite: session
            .negotiated_cipher_suite()
            .map(|suite| format!("{:?}", suite.suite())),
    }
}

fn version_name(version: Option<rustls::ProtocolVersion>) -> String {
    match version {
        Some(v) => format!("{v:?}"),
        None => "unknown".to_owned(),
    }
}
