//! `--tls-*`, `--quic`, `--throttle`: how a peer's connections travel.
//!
//! One set of flags serves both roles: a listener presents `--tls-cert`/`--tls-key` and,
//! with `--tls-ca`, requires client certificates signed by it (mutual TLS); a connector
//! verifies the server against `--tls-ca` and presents `--tls-cert`/`--tls-key` as its
//! client certificate when given.

use std::path::PathBuf;

use snakemq::link::middleware::ThrottleLayer;
use snakemq::link::tls::{TlsClient, TlsServer};
use snakemq::link::{ConnectOptions, LinkConfig, ListenOptions};

use crate::common::CliError;

/// Transport flags, flattened into the commands that run a peer.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct TransportArgs {
    /// PEM certificate chain this peer presents: the server certificate of its listeners,
    /// the client certificate of its connectors (mutual TLS). Turns TLS on.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM CA certificates: connectors verify servers against them; listeners require
    /// client certificates signed by them (mutual TLS). Turns TLS on.
    #[arg(long, value_name = "PEM")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// INSECURE: TLS without verifying the server at all. Only for Python snakeMQ peers
    /// that use snakeMQ's default SSL settings (no CA to verify against).
    #[arg(long, conflicts_with = "tls_ca")]
    pub(crate) tls_insecure_python: bool,
    /// QUIC instead of TCP (UDP, same ports). Needs TLS: --tls-cert/--tls-key to listen,
    /// --tls-ca to connect. Rust peers only.
    #[arg(long, conflicts_with = "tls_insecure_python")]
    pub(crate) quic: bool,
    /// Limit every connection to BYTES_PER_SEC (written bytes).
    #[arg(long, value_name = "BYTES_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) throttle: Option<u64>,
}

impl TransportArgs {
    /// Whether any TLS flag was given.
    fn tls(&self) -> bool {
        self.tls_cert.is_some() || self.tls_ca.is_some() || self.tls_insecure_python || self.quic
    }

    /// The same flags as command-line arguments, for a child process (`snakemq bench`
    /// starts its receiver with them).
    pub(crate) fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let files = [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-ca", &self.tls_ca),
        ];
        for (flag, path) in files {
            if let Some(path) = path {
                args.push(flag.into());
                args.push(path.into());
            }
        }
        if self.tls_insecure_python {
            args.push("--tls-insecure-python".into());
        }
        if self.quic {
            args.push("--quic".into());
        }
        if let Some(rate) = self.throttle {
            args.push("--throttle".into());
            args.push(rate.to_string().into());
        }
        args
    }

    /// A builder for `identity` listening on `addr` with these settings.
    pub(crate) fn listening(
        &self,
        identity: &str,
        addr: &str,
    ) -> Result<snakemq::MessagingBuilder, CliError> {
        Ok(snakemq::Messaging::builder(identity)
            .link_config(self.link_config())
            .listen_with(&self.endpoint(addr), self.listen_options()?))
    }

    /// A builder for `identity` connecting to `addr` with these settings.
    pub(crate) fn connecting(
        &self,
        identity: &str,
        addr: &str,
    ) -> Result<snakemq::MessagingBuilder, CliError> {
        Ok(snakemq::Messaging::builder(identity)
            .link_config(self.link_config())
            .connect_with(&self.endpoint(addr), self.connect_options()?))
    }

    /// What the connections travel over, for a report: "TCP", "TLS over TCP", "QUIC",
    /// with ", throttled to N B/s" when throttled.
    pub(crate) fn describe(&self) -> String {
        let base = if self.quic {
            "QUIC"
        } else if self.tls() {
            "TLS over TCP"
        } else {
            "TCP"
        };
        match self.throttle {
            Some(rate) => format!("{base}, throttled to {rate} B/s"),
            None => base.to_owned(),
        }
    }

    /// The endpoint text for `addr`: `quic://addr` with --quic.
    pub(crate) fn endpoint(&self, addr: &str) -> String {
        if self.quic && !addr.starts_with("quic://") {
            format!("quic://{addr}")
        } else {
            addr.to_owned()
        }
    }

    /// Link settings: the throttle, if any.
    pub(crate) fn link_config(&self) -> LinkConfig {
        let config = LinkConfig::default();
        match self.throttle {
            Some(rate) => config.middleware(ThrottleLayer::per_connection(rate)),
            None => config,
        }
    }

    /// Options of every listener.
    pub(crate) fn listen_options(&self) -> Result<ListenOptions, CliError> {
        if !self.tls() {
            return Ok(ListenOptions::plain());
        }
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Err(
                "--bind with TLS or QUIC needs --tls-cert CERT.pem --tls-key KEY.pem".into(),
            );
        };
        let mut server = TlsServer::builder_from_files(cert, key)?;
        if let Some(ca) = &self.tls_ca {
            server = server.require_client_certificates_from_file(ca)?;
        }
        Ok(ListenOptions::tls(server.build()?))
    }

    /// Options of every connector.
    pub(crate) fn connect_options(&self) -> Result<ConnectOptions, CliError> {
        if !self.tls() {
            return Ok(ConnectOptions::plain());
        }
        let mut client = TlsClient::builder();
        match (&self.tls_ca, self.tls_insecure_python) {
            (Some(ca), _) => client = client.trust_roots_from_file(ca)?,
            (None, true) => client = client.insecure_python_compat_no_verification(),
            (None, false) => {
                return Err(
                    "--connect with TLS or QUIC needs --tls-ca CA.pem to verify the server \
                     (or, for a Python peer with snakeMQ's default SSL settings only, \
                     --tls-insecure-python)"
                        .into(),
                );
            }
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            client = client.client_certificate_from_files(cert, key)?;
        }
        Ok(ConnectOptions::tls(client.build()?))
    }
}
