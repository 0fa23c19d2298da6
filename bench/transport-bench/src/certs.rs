//! A CA and two leaf certificates made with rcgen at start (nothing secret is committed),
//! and the TLS settings every mode builds from them.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use snakemq_link::tls::{TlsClient, TlsServer};

use crate::BoxError;

/// PEM text of a CA, a server certificate (for `127.0.0.1`) and a client certificate.
pub(crate) struct Pki {
    pub(crate) ca: String,
    pub(crate) server_cert: String,
    pub(crate) server_key: String,
    pub(crate) client_cert: String,
    pub(crate) client_key: String,
}

/// The environment variables that hand the certificates to a child process.
const ENV: [&str; 5] = [
    "TRANSPORT_BENCH_CA",
    "TRANSPORT_BENCH_SERVER_CERT",
    "TRANSPORT_BENCH_SERVER_KEY",
    "TRANSPORT_BENCH_CLIENT_CERT",
    "TRANSPORT_BENCH_CLIENT_KEY",
];

impl Pki {
    /// A fresh CA and leaves (rcgen's default key type, ECDSA P-256).
    pub(crate) fn generate() -> Result<Pki, BoxError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "transport-bench CA");
        let ca = ca_params.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: &[&str]| -> Result<(String, String), BoxError> {
            let key = KeyPair::generate()?;
            let params =
                CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(&["bench-server", "127.0.0.1"])?;
        let (client_cert, client_key) = leaf(&["bench-client"])?;
        Ok(Pki {
            ca,
            server_cert,
            server_key,
            client_cert,
            client_key,
        })
    }

    /// The certificates as environment variables for a child process.
    pub(crate) fn to_env(&self) -> [(&'static str, &str); 5] {
        let [ca, server_cert, server_key, client_cert, client_key] = ENV;
        [
            (ca, self.ca.as_str()),
            (server_cert, self.server_cert.as_str()),
            (server_key, self.server_key.as_str()),
            (client_cert, self.client_cert.as_str()),
            (client_key, self.client_key.as_str()),
        ]
    }

    /// The certificates a parent process handed over with [`Pki::to_env`].
    pub(crate) fn from_env() -> Result<Pki, BoxError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|e| -> BoxError { format!("{name}: {e}").into() })
        };
        let [ca, server_cert, server_key, client_cert, client_key] = ENV;
        Ok(Pki {
            ca: var(ca)?,
            server_cert: var(server_cert)?,
            server_key: var(server_key)?,
            client_cert: var(client_cert)?,
            client_key: var(client_key)?,
        })
    }

    /// Server settings: mutual TLS, client certificates from the CA required (how peers
    /// that bind identities to certificates run).
    pub(crate) fn tls_server(&self) -> Result<TlsServer, BoxError> {
        Ok(
            TlsServer::builder(self.server_cert.as_bytes(), self.server_key.as_bytes())?
                .require_client_certificates(self.ca.as_bytes())?
                .build()?,
        )
    }

    /// Client settings: trusts the CA, presents the client certificate, verifies the
    /// server as `127.0.0.1`.
    pub(crate) fn tls_client(&self) -> Result<TlsClient, BoxError> {
        Ok(TlsClient::builder()
            .trust_roots(self.ca.as_bytes())?
            .client_certificate(self.client_cert.as_bytes(), self.client_key.as_bytes())?
            .build()?)
    }
}
