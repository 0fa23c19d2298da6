//! TLS for links (feature `tls`): rustls with the ring provider, over any byte-stream
//! transport (TCP, memory), and the certificate settings QUIC connections use too.
//!
//! A listener gets a [`TlsServer`] through [`ListenOptions::tls`](crate::ListenOptions::tls),
//! a connector a [`TlsClient`] through [`ConnectOptions::tls`](crate::ConnectOptions::tls).

use std::sync::Arc;

pub use rustls;
use rustls::pki_types::ServerName;

use crate::{Endpoint, LinkError};

/// The server side of TLS: the certificate a listener presents and how it checks clients.
#[derive(Debug, Clone)]
pub struct TlsServer {
    config: Arc<rustls::ServerConfig>,
}

impl TlsServer {
    /// Uses a rustls server configuration as it is.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        TlsServer { config }
    }

    /// The rustls configuration.
    pub fn rustls_config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }
}

/// The client side of TLS: the roots a connector trusts, its own certificate (mutual TLS)
/// and the name the server must prove.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl TlsClient {
    /// Uses a rustls client configuration as it is.
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> Self {
        TlsClient {
            config,
            server_name: None,
        }
    }

    /// The name the server's certificate must carry, instead of the endpoint's host.
    pub fn server_name(mut self, name: &str) -> Result<Self, LinkError> {
        let name =
            ServerName::try_from(name.to_owned()).map_err(|_| LinkError::InvalidEndpoint {
                endpoint: name.to_owned(),
                reason: "not a valid TLS server name",
            })?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// The rustls configuration.
    pub fn rustls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// The name to verify for a connection to `endpoint`: the configured one, else the
    /// endpoint's host (an IP address or a DNS name).
    pub fn name_for(&self, endpoint: &Endpoint) -> Result<ServerName<'static>, LinkError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let text = endpoint.to_string();
        let host = match text.rsplit_once(':') {
            Some((host, _port)) => host,
            None => text.as_str(),
        };
        let host = host
            .trim_start_matches("memory:")
            .trim_start_matches('[')
            .trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|_| LinkError::InvalidEndpoint {
            endpoint: text.clone(),
            reason: "host is not a valid TLS server name; set TlsClient::server_name",
        })
    }
}
