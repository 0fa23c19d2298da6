//! Certificates for the QUIC tests, made at test time by rcgen (nothing secret is
//! committed): a throwaway CA, leaf certificates it signs, and the rustls settings of
//! listeners and connectors built from them. Shared with snakemq's QUIC tests.

#![allow(dead_code)]

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use snakemq_link::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use snakemq_link::tls::rustls::server::WebPkiClientVerifier;
use snakemq_link::tls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use snakemq_link::tls::{TlsClient, TlsServer};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A certificate chain and its key.
pub(crate) struct Leaf {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl Leaf {
    /// The leaf certificate's DER bytes.
    pub(crate) fn der(&self) -> &[u8] {
        self.chain.first().map(|cert| cert.as_ref()).unwrap_or(&[])
    }
}

/// A throwaway certificate authority.
pub(crate) struct Pki {
    ca: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    pub(crate) fn new() -> Result<Self, BoxError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "snakemq test CA");
        let ca = params.self_signed(&key)?;
        Ok(Pki {
            ca: ca.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A certificate for `names` (DNS names or IP addresses); the first is also the
    /// common name.
    pub(crate) fn leaf(&self, names: &[&str]) -> Result<Leaf, BoxError> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    fn roots(&self) -> Result<RootCertStore, BoxError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(roots)
    }

    /// Listener settings presenting `leaf`; with `client_auth`, clients must present a
    /// certificate of this CA.
    pub(crate) fn server(&self, leaf: &Leaf, client_auth: bool) -> Result<TlsServer, BoxError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)?;
        let builder = if client_auth {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider())
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(leaf.chain.clone(), leaf.key.clone_key())?;
        Ok(TlsServer::from_rustls(Arc::new(config)))
    }

    /// Connector settings trusting this CA, presenting `leaf` if given.
    pub(crate) fn client(&self, leaf: Option<&Leaf>) -> Result<TlsClient, BoxError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)?
            .with_root_certificates(self.roots()?);
        let config = match leaf {
            Some(leaf) => {
                builder.with_client_auth_cert(leaf.chain.clone(), leaf.key.clone_key())?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(TlsClient::from_rustls(Arc::new(config)))
    }
}
