//! The names a certificate vouches for, and whether a snakeMQ identity is one of them.
//!
//! Identity binding: once a peer's certificate chain has been verified, the IDENTIFICATION
//! the peer sends must be a name of its certificate, or anyone holding *some* certificate of
//! the trusted CA could claim any identity and receive the messages queued for it. The
//! check lives here, next to the TLS settings, so that every transport with certificates
//! (TLS, QUIC) binds identities the same way.
//!
//! The rule follows RFC 6125 as browsers and rustls apply it to host names:
//! - the DNS names of the subject alternative name extension count;
//! - the subject's common name counts only when the certificate has no DNS names at all
//!   (older certificates, such as those made for Python peers with `openssl req`);
//! - comparison is exact, ASCII case-insensitive; wildcards are not expanded (an identity
//!   is a name, not a host under a domain).

use x509_parser::extensions::GeneralName;

use crate::LinkError;

/// The names in one certificate that identity binding looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateNames {
    /// DNS names of the subject alternative name extension, in certificate order.
    pub dns_names: Vec<String>,
    /// The subject's common names (usually one).
    pub common_names: Vec<String>,
}

impl CertificateNames {
    /// The names an identity may match: the DNS names, or the common names when the
    /// certificate has no DNS name.
    pub fn identity_names(&self) -> &[String] {
        if self.dns_names.is_empty() {
            &self.common_names
        } else {
            &self.dns_names
        }
    }

    /// Whether `identity` is one of [`identity_names`](Self::identity_names).
    pub fn matches(&self, identity: &str) -> bool {
        self.identity_names()
            .iter()
            .any(|name| name.eq_ignore_ascii_case(identity))
    }
}

/// Reads the names of a DER certificate (the first entry of
/// [`ConnInfo::peer_certificates`](crate::ConnInfo::peer_certificates)).
///
/// # Errors
/// [`LinkError::TlsConfig`] when the bytes are not an X.509 certificate.
pub fn certificate_names(der: &[u8]) -> Result<CertificateNames, LinkError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| LinkError::TlsConfig(format!("not an X.509 certificate: {e}")))?;
    let mut names = CertificateNames::default();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| LinkError::TlsConfig(format!("bad subject alternative names: {e}")))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.dns_names.push((*dns).to_owned());
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        // A common name in a string type that is not text cannot name an identity.
        if let Ok(text) = cn.as_str() {
            names.common_names.push(text.to_owned());
        }
    }
    Ok(names)
}

/// Whether a peer that presented `chain` (DER, its own certificate first) may use
/// `identity`: true when the chain is empty (no certificate, nothing to bind to) or its
/// first certificate names the identity (see the module docs for the rule).
///
/// # Errors
/// [`LinkError::TlsConfig`] when the first certificate cannot be parsed.
pub fn identity_allowed(chain: &[bytes::Bytes], identity: &str) -> Result<bool, LinkError> {
    match chain.first() {
        None => Ok(true),
        Some(leaf) => Ok(certificate_names(leaf)?.matches(identity)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dns: &[&str], cn: &[&str]) -> CertificateNames {
        CertificateNames {
            dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
            common_names: cn.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn dns_names_win_over_the_common_name() {
        let n = names(&["bob", "bob.example.net"], &["mallory"]);
        assert!(n.matches("bob"));
        assert!(n.matches("BOB.example.net"));
        assert!(!n.matches("mallory"));
        assert!(!n.matches("bo"));
    }

    #[test]
    fn common_name_counts_without_dns_names() {
        let n = names(&[], &["py"]);
        assert!(n.matches("py"));
        assert!(!n.matches("rust"));
        assert!(!names(&[], &[]).matches(""));
    }

    #[test]
    fn wildcards_are_not_expanded() {
        assert!(!names(&["*.example.net"], &[]).matches("bob.example.net"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(certificate_names(b"not a certificate").is_err());
        assert!(certificate_names(&[]).is_err());
    }
}
