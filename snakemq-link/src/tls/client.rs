//! The connector side of TLS, and the one way to skip verifying the server.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::read_ahead::ReadAhead;
use super::{
    TlsVersion, certificates_from_pem, chain_of, config_error, handshake_error, into_byte_stream,
    key_from_pem, protocol_versions, provider, read_file, roots_from_pem, session_info,
};
use crate::stream::ByteStream;
use crate::{Endpoint, LinkError};

/// The client side of TLS: the roots a connector trusts, its own certificate (mutual TLS)
/// and the name the server must prove.
///
/// Built with [`TlsClient::builder`], or around any rustls configuration with
/// [`TlsClient::from_rustls`].
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
    /// False only for the Python compatibility opt-out: then the server's chain is not
    /// shown as verified and every connection logs a warning.
    verifies_server: bool,
}

/// Settings of a [`TlsClient`] before it is built.
pub struct TlsClientBuilder {
    roots: rustls::RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    server_name: Option<ServerName<'static>>,
    versions: Vec<TlsVersion>,
    no_verification: bool,
}

impl fmt::Debug for TlsClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("TlsClientBuilder")
            .field("roots", &self.roots.len())
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .field("versions", &self.versions)
            .field("no_verification", &self.no_verification)
            .finish()
    }
}

impl TlsClient {
    /// Uses a rustls client configuration as it is. Whatever server certificates its
    /// verifier accepts count as verified.
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> Self {
        TlsClient {
            config,
            server_name: None,
            verifies_server: true,
        }
    }

    /// Settings to fill in: at least one trusted root
    /// ([`TlsClientBuilder::trust_roots`]), optionally a client certificate.
    pub fn builder() -> TlsClientBuilder {
        TlsClientBuilder {
            roots: rustls::RootCertStore::empty(),
            identity: None,
            server_name: None,
            versions: TlsVersion::ALL.to_vec(),
            no_verification: false,
        }
    }

    /// **Insecure.** A client that does not verify the server's certificate at all: no
    /// trusted roots, no name check, no expiry check. It exists only to talk to Python
    /// snakeMQ peers run with snakeMQ's default SSL settings (`SSLConfig` with
    /// `cert_reqs=CERT_NONE`, typically a self-signed certificate), which cannot be
    /// verified.
    ///
    /// Anyone who can reach the connection can impersonate the server, read and change
    /// every message. The server's chain is not shown on
    /// [`ConnInfo::peer_certificates`](crate::ConnInfo::peer_certificates) (it is not
    /// evidence of anything), so messaging does not bind the peer's identity either.
    /// Every connection logs a warning. Prefer giving the Python peer a certificate from
    /// a CA you pass to [`TlsClientBuilder::trust_roots`]. To present a client
    /// certificate as well, use [`TlsClientBuilder::insecure_python_compat_no_verification`].
    ///
    /// # Errors
    /// None in practice (the result mirrors [`TlsClientBuilder::build`]).
    pub fn insecure_python_compat_no_verification() -> Result<TlsClient, LinkError> {
        TlsClient::builder()
            .insecure_python_compat_no_verification()
            .build()
    }

    /// The name the server's certificate must carry, instead of the endpoint's host.
    ///
    /// # Errors
    /// [`LinkError::InvalidEndpoint`] when `name` is neither a DNS name nor an IP address.
    pub fn server_name(mut self, name: &str) -> Result<Self, LinkError> {
        self.server_name = Some(parse_server_name(name)?);
        Ok(self)
    }

    /// The rustls configuration (QUIC endpoints build on it).
    pub fn rustls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// Whether the server's certificate is verified (false only for
    /// [`insecure_python_compat_no_verification`](Self::insecure_python_compat_no_verification)).
    pub fn verifies_server(&self) -> bool {
        self.verifies_server
    }

    /// The name to verify for a connection to `endpoint`: the configured one, else the
    /// endpoint's host (an IP address or a DNS name; a memory endpoint's name).
    ///
    /// # Errors
    /// [`LinkError::InvalidEndpoint`] when the host is not a valid server name.
    pub fn name_for(&self, endpoint: &Endpoint) -> Result<ServerName<'static>, LinkError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let text;
        let host = if let Endpoint::Memory(name) = endpoint {
            name.as_str()
        } else {
            // `host:port`, `[v6]:port`, or the same behind a scheme (`quic://`).
            text = endpoint.to_string();
            let addr = text
                .split_once("://")
                .map_or(text.as_str(), |(_, rest)| rest);
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            host.trim_start_matches('[').trim_end_matches(']')
        };
        parse_server_name(host).map_err(|_| LinkError::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            reason: "host is not a valid TLS server name; set TlsClientBuilder::server_name",
        })
    }

    /// Runs the client side of the handshake on a stream opened to `endpoint`. On success
    /// the stream carries plaintext and its [`ConnInfo`](crate::ConnInfo) holds the
    /// server's verified chain.
    ///
    /// The link calls this for connectors with [`ConnectOptions::tls`](crate::ConnectOptions::tls);
    /// it is public for transports and tests that open streams themselves.
    ///
    /// With TLS 1.3 a server verifies the client's certificate after the client finished
    /// its part: a refused client certificate shows up as an error on the first read,
    /// not here.
    ///
    /// # Errors
    /// [`LinkError::TlsHandshake`] with the reason; [`LinkError::InvalidEndpoint`] when
    /// no server name can be derived from `endpoint`.
    pub async fn connect(
        &self,
        endpoint: &Endpoint,
        stream: ByteStream,
    ) -> Result<ByteStream, LinkError> {
        let name = self.name_for(endpoint)?;
        let ByteStream {
            mut info,
            read,
            write,
        } = stream;
        let io = tokio::io::join(ReadAhead::new(read), write);
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, io)
            .await
            .map_err(|e| handshake_error(&info.remote, e))?;
        let (_, session) = tls.get_ref();
        info.tls = Some(session_info(session));
        if self.verifies_server {
            info.peer_certificates = chain_of(session.peer_certificates());
        } else {
            tracing::warn!(
                conn = %info.id,
                remote = %info.remote,
                "TLS server certificate NOT verified (insecure_python_compat_no_verification)"
            );
        }
        tracing::debug!(
            conn = %info.id,
            tls = ?info.tls,
            "TLS handshake done (client)"
        );
        Ok(into_byte_stream(info, tls))
    }
}

fn parse_server_name(name: &str) -> Result<ServerName<'static>, LinkError> {
    ServerName::try_from(name.to_owned()).map_err(|_| LinkError::InvalidEndpoint {
        endpoint: name.to_owned(),
        reason: "not a valid TLS server name",
    })
}

impl TlsClientBuilder {
    /// Trusts the certificates of `ca_pem` as roots (may be called more than once).
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when the PEM text holds no usable certificate.
    pub fn trust_roots(mut self, ca_pem: &[u8]) -> Result<Self, LinkError> {
        let roots = roots_from_pem(ca_pem, "trusted roots")?;
        self.roots.roots.extend(roots.roots);
        Ok(self)
    }

    /// [`trust_roots`](Self::trust_roots) read from a PEM file.
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when the file cannot be read or holds no certificate.
    pub fn trust_roots_from_file(self, ca_pem: impl AsRef<Path>) -> Result<Self, LinkError> {
        let pem = read_file(ca_pem.as_ref(), "CA file")?;
        self.trust_roots(&pem)
    }

    /// Presents this certificate chain (own certificate first) and key when the server
    /// asks for one (mutual TLS).
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when the PEM text holds no certificate or no key.
    pub fn client_certificate(
        mut self,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, LinkError> {
        self.identity = Some((
            certificates_from_pem(cert_chain_pem, "client certificate chain")?,
            key_from_pem(key_pem)?,
        ));
        Ok(self)
    }

    /// [`client_certificate`](Self::client_certificate) read from files (they may be the
    /// same file).
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when a file cannot be read or holds no certificate/key.
    pub fn client_certificate_from_files(
        self,
        cert_chain_pem: impl AsRef<Path>,
        key_pem: impl AsRef<Path>,
    ) -> Result<Self, LinkError> {
        let chain = read_file(cert_chain_pem.as_ref(), "certificate file")?;
        let key = read_file(key_pem.as_ref(), "key file")?;
        self.client_certificate(&chain, &key)
    }

    /// The name the server's certificate must carry, instead of the endpoint's host.
    ///
    /// # Errors
    /// [`LinkError::InvalidEndpoint`] when `name` is neither a DNS name nor an IP address.
    pub fn server_name(mut self, name: &str) -> Result<Self, LinkError> {
        self.server_name = Some(parse_server_name(name)?);
        Ok(self)
    }

    /// The protocol versions offered (default: TLS 1.3 and 1.2).
    pub fn versions(mut self, versions: &[TlsVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    /// **Insecure**: see [`TlsClient::insecure_python_compat_no_verification`]. This form
    /// keeps the other settings (a client certificate for a Python server that asks for
    /// one); trusted roots given here are ignored.
    pub fn insecure_python_compat_no_verification(mut self) -> Self {
        self.no_verification = true;
        self
    }

    /// The client.
    ///
    /// # Errors
    /// [`LinkError::TlsConfig`] when no root is trusted (and verification is on), the key
    /// does not fit, or no version is enabled.
    pub fn build(self) -> Result<TlsClient, LinkError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&protocol_versions(&self.versions)?)
            .map_err(|e| config_error("protocol versions", e))?;
        let builder = if self.no_verification {
            tracing::warn!(
                "TLS client built WITHOUT server certificate verification \
                 (insecure_python_compat_no_verification): connections can be intercepted"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider)))
        } else {
            if self.roots.is_empty() {
                return Err(LinkError::TlsConfig(
                    "no trusted root: give the CA that signed the servers' certificates \
                     (TlsClientBuilder::trust_roots)"
                        .to_owned(),
                ));
            }
            builder.with_root_certificates(self.roots)
        };
        let config = match self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_error("client certificate and key", e))?,
            None => builder.with_no_client_auth(),
        };
        Ok(TlsClient {
            config: Arc::new(config),
            server_name: self.server_name,
            verifies_server: !self.no_verification,
        })
    }
}

/// Accepts any server certificate. The handshake signatures are still checked, so the
/// server must hold the key of the certificate it sent; what is skipped is every reason
/// to believe that certificate.
#[derive(Debug)]
struct NoServerVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
