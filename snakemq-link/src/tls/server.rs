//! The listener side of TLS.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::read_ahead::ReadAhead;
use super::{
    TlsVersion, certificates_from_pem, chain_of, config_error, handshake_error, into_byte_stream,
    key_from_pem, protocol_versions, provider, read_file, roots_from_pem, session_info,
};
use crate::LinkError;
use crate::stream::ByteStream;

/// The server side of TLS: the certificate a listener presents and how it checks clients.
///
/// Built with [`TlsServer::builder`] (PEM text) or [`TlsServer::builder_from_files`], or
/// around any rustls configuration with [`TlsServer::from_rustls`].
#[derive(Debug, Clone)]
pub struct TlsServer {
    config: Arc<rustls::ServerConfig>,
}

/// Whether and how a server asks for client certificates.
#[derive(Debug, Clone)]
enum ClientAuth {
    None,
    Required(rustls::RootCertStore),
    Optional(rustls::RootCertStore),
}

/// Settings of a [`TlsServer`] before it is built.
pub struct TlsServerBuilder {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    clients: ClientAuth,
    versions: Vec<TlsVersion>,
}

impl fmt::Debug for TlsServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("TlsServerBuilder")
            .field("chain_len", &self.chain.len())
            .field("clients", &self.clients)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Uses a rustls server configuration as it is. Whatever client certificates its
    /// verifier accepts count as verified (they appear on
    /// [`ConnInfo::peer_certificates`](crate::ConnInfo::peer_certificates)).
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        TlsServer { config }
    }

    /// A server presenting `cert_chain_pem` (its own certificate first, then any
    /// intermediates) with the private key `key_pem` (PKCS#8, PKCS#1 or SEC1). By default
    /// it asks for no client certificate and speaks TLS 1.2 and 1.3.
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when the PEM text holds no certificate or no key.
    pub fn builder(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsServerBuilder, LinkError> {
        Ok(TlsServerBuilder {
            chain: certificates_from_pem(cert_chain_pem, "server certificate chain")?,
            key: key_from_pem(key_pem)?,
            clients: ClientAuth::None,
            versions: TlsVersion::ALL.to_vec(),
        })
    }

    /// [`builder`](Self::builder) with the PEM text read from two files (they may be the
    /// same file).
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when a file cannot be read or holds no certificate/key.
    pub fn builder_from_files(
        cert_chain_pem: impl AsRef<Path>,
        key_pem: impl AsRef<Path>,
    ) -> Result<TlsServerBuilder, LinkError> {
        let chain = read_file(cert_chain_pem.as_ref(), "certificate file")?;
        let key = read_file(key_pem.as_ref(), "key file")?;
        TlsServer::builder(&chain, &key)
    }

    /// The rustls configuration (QUIC endpoints build on it).
    pub fn rustls_config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    /// Runs the server side of the handshake on an accepted stream. On success the
    /// stream carries plaintext and its [`ConnInfo`](crate::ConnInfo) holds the client's
    /// verified chain (empty when the client presented none).
    ///
    /// The link calls this for listeners with [`ListenOptions::tls`](crate::ListenOptions::tls);
    /// it is public for transports and tests that open streams themselves.
    ///
    /// # Errors
    /// [`LinkError::TlsHandshake`] with the reason.
    pub async fn accept(&self, stream: ByteStream) -> Result<ByteStream, LinkError> {
        let ByteStream {
            mut info,
            read,
            write,
        } = stream;
        let io = tokio::io::join(ReadAhead::new(read), write);
        let tls = tokio_rustls::TlsAcceptor::from(self.config.clone())
            .accept(io)
            .await
            .map_err(|e| handshake_error(&info.remote, e))?;
        let (_, session) = tls.get_ref();
        info.tls = Some(session_info(session));
        info.peer_certificates = chain_of(session.peer_certificates());
        tracing::debug!(
            conn = %info.id,
            tls = ?info.tls,
            client_certificate = info.peer_verified(),
            "TLS handshake done (server)"
        );
        Ok(into_byte_stream(info, tls))
    }
}

impl TlsServerBuilder {
    /// Mutual TLS: every client must present a certificate that chains to one of the
    /// roots in `ca_pem`; a client without one is refused in the handshake.
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when the PEM text holds no usable certificate.
    pub fn require_client_certificates(mut self, ca_pem: &[u8]) -> Result<Self, LinkError> {
        self.clients = ClientAuth::Required(roots_from_pem(ca_pem, "client CA")?);
        Ok(self)
    }

    /// [`require_client_certificates`](Self::require_client_certificates) with the roots
    /// read from a PEM file.
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when the file cannot be read or holds no certificate.
    pub fn require_client_certificates_from_file(
        self,
        ca_pem: impl AsRef<Path>,
    ) -> Result<Self, LinkError> {
        let pem = read_file(ca_pem.as_ref(), "client CA file")?;
        self.require_client_certificates(&pem)
    }

    /// Clients may present a certificate, which must then chain to one of the roots in
    /// `ca_pem`; clients without one are accepted too (their
    /// [`ConnInfo::peer_certificates`](crate::ConnInfo::peer_certificates) is empty, and
    /// messaging does not bind their identity).
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when the PEM text holds no usable certificate.
    pub fn optional_client_certificates(mut self, ca_pem: &[u8]) -> Result<Self, LinkError> {
        self.clients = ClientAuth::Optional(roots_from_pem(ca_pem, "client CA")?);
        Ok(self)
    }

    /// The protocol versions offered (default: TLS 1.3 and 1.2).
    pub fn versions(mut self, versions: &[TlsVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    /// The server.
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when the key does not match the certificate or is of an
    /// unsupported type, or no version is enabled.
    pub fn build(self) -> Result<TlsServer, LinkError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&protocol_versions(&self.versions)?)
            .map_err(|e| config_error("protocol versions", e))?;
        let builder = match self.clients {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| config_error("client verification", e))?;
                builder.with_client_cert_verifier(verifier)
            }
            ClientAuth::Optional(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| config_error("client verification", e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(self.chain, self.key)
            .map_err(|e| config_error("server certificate and key", e))?;
        Ok(TlsServer {
            config: Arc::new(config),
        })
    }
}
