//! Per-listener and per-connector settings: how the connections of one listener or one
//! connector are secured.
//!
//! Link-wide settings (packet size, backoff, middleware) live in
//! [`LinkConfig`](crate::LinkConfig); these are the settings that differ between two
//! listeners of the same link, such as a TLS port next to a plain one.

use crate::LinkError;
use crate::stream::ByteStream;

/// Settings of one listener ([`Link::listen_with`](crate::Link::listen_with)).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListenOptions {
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsServer>,
}

impl ListenOptions {
    /// Plain connections: no TLS.
    pub fn plain() -> Self {
        ListenOptions::default()
    }

    /// TLS on every accepted connection (required for QUIC endpoints).
    #[cfg(feature = "tls")]
    pub fn tls(server: crate::tls::TlsServer) -> Self {
        ListenOptions { tls: Some(server) }
    }

    /// The TLS settings, if any.
    #[cfg(feature = "tls")]
    pub fn tls_server(&self) -> Option<&crate::tls::TlsServer> {
        self.tls.as_ref()
    }

    /// Secures an accepted stream (the TLS handshake, when configured).
    pub(crate) async fn secure(&self, stream: ByteStream) -> Result<ByteStream, LinkError> {
        #[cfg(feature = "tls")]
        if let Some(server) = &self.tls {
            return server.accept(stream).await;
        }
        Ok(stream)
    }
}

/// Settings of one connector ([`Link::connect_with`](crate::Link::connect_with)).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsClient>,
}

impl ConnectOptions {
    /// Plain connections: no TLS.
    pub fn plain() -> Self {
        ConnectOptions::default()
    }

    /// TLS on every connection this connector opens (required for QUIC endpoints).
    #[cfg(feature = "tls")]
    pub fn tls(client: crate::tls::TlsClient) -> Self {
        ConnectOptions { tls: Some(client) }
    }

    /// The TLS settings, if any.
    #[cfg(feature = "tls")]
    pub fn tls_client(&self) -> Option<&crate::tls::TlsClient> {
        self.tls.as_ref()
    }

    /// Secures a stream this connector opened to `endpoint` (the TLS handshake, when
    /// configured; the endpoint's host is the name the server must prove).
    pub(crate) async fn secure(
        &self,
        endpoint: &crate::Endpoint,
        stream: ByteStream,
    ) -> Result<ByteStream, LinkError> {
        #[cfg(feature = "tls")]
        if let Some(client) = &self.tls {
            return client.connect(endpoint, stream).await;
        }
        #[cfg(not(feature = "tls"))]
        let _ = endpoint;
        Ok(stream)
    }
}
