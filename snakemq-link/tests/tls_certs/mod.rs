//! Certificates made at test time with rcgen (nothing secret is committed): a CA and leaf
//! certificates for peers, valid, expired, not yet valid or from another CA.
//!
//! Shared by the TLS tests of snakemq-link and snakemq (`#[path]` include).
#![allow(dead_code)] // each test binary uses a different part of this helper

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};

/// Error type of the helper.
pub(crate) type CertError = Box<dyn std::error::Error + Send + Sync>;

/// A certificate authority that signs leaf certificates.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM (what peers trust).
    pub(crate) pem: String,
}

/// A leaf certificate and its key, PEM.
pub(crate) struct Leaf {
    /// The certificate.
    pub(crate) cert: String,
    /// The private key (PKCS#8).
    pub(crate) key: String,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub(crate) fn new(name: &str) -> Result<Ca, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        })
    }

    /// A leaf valid now for `names` (DNS names or IP addresses as subject alternative
    /// names), with the first name as common name.
    pub(crate) fn leaf(&self, names: &[&str]) -> Result<Leaf, CertError> {
        self.leaf_with(names, |_| {})
    }

    /// A leaf that expired in 2001.
    pub(crate) fn expired_leaf(&self, names: &[&str]) -> Result<Leaf, CertError> {
        self.leaf_with(names, |p| {
            p.not_before = date_time_ymd(2000, 1, 1);
            p.not_after = date_time_ymd(2001, 1, 1);
        })
    }

    /// A leaf valid only from 2099 on.
    pub(crate) fn future_leaf(&self, names: &[&str]) -> Result<Leaf, CertError> {
        self.leaf_with(names, |p| {
            p.not_before = date_time_ymd(2099, 1, 1);
            p.not_after = date_time_ymd(2100, 1, 1);
        })
    }

    /// A leaf for `names` after `adjust` changed its parameters.
    pub(crate) fn leaf_with(
        &self,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Result<Leaf, CertError> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}
