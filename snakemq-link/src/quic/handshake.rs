//! QUIC handshake failures as the same typed [`TlsFailure`]s a TLS-over-TCP handshake gives.
//!
//! quinn reports a refused TLS handshake as a connection error with a "crypto" error code
//! (0x100 plus the TLS alert): when this side refused, with rustls's message as the reason;
//! when the peer refused, as the peer's close with only the alert.

use std::io;

use crate::{LinkError, TlsFailure};

/// QUIC's error codes for TLS alerts: 0x100 + the alert number (RFC 9001, section 4.8).
const CRYPTO_ERRORS: std::ops::RangeInclusive<u64> = 0x100..=0x1ff;

/// `error` as a [`LinkError::TlsHandshake`] when TLS refused the handshake; any other
/// connection error (a timeout, a reset, a closed endpoint) stays an I/O error.
pub(crate) fn handshake_error(remote: &str, error: quinn::ConnectionError) -> LinkError {
    let failure = match &error {
        quinn::ConnectionError::TransportError(local) if is_crypto(local.code) => {
            Some(local_failure(&local.reason))
        }
        quinn::ConnectionError::ConnectionClosed(close) if is_crypto(close.error_code) => {
            Some(TlsFailure::PeerAlert(alert_name(close.error_code)))
        }
        _ => None,
    };
    match failure {
        Some(failure) => LinkError::TlsHandshake {
            remote: remote.to_owned(),
            failure,
        },
        None => LinkError::Io(io::Error::from(error)),
    }
}

fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    CRYPTO_ERRORS.contains(&u64::from(code))
}

/// The alert's name as rustls spells it (`UnknownCA`), as TLS over TCP reports it.
fn alert_name(code: quinn::TransportErrorCode) -> String {
    let alert = u8::try_from(u64::from(code) & 0xff).unwrap_or_default();
    format!("{:?}", rustls::AlertDescription::from(alert))
}

/// The verdict of this side's certificate check. quinn keeps rustls's error only as its
/// message, so the verdict is read back from rustls 0.23's wording (the QUIC tests pin it:
/// a change of wording shows up there as `Other` or `BadCertificate`).
fn local_failure(reason: &str) -> TlsFailure {
    let has = |text: &str| reason.contains(text);
    if has("UnknownIssuer") {
        TlsFailure::UnknownIssuer
    } else if has("certificate expired") || reason.ends_with("Expired") {
        TlsFailure::Expired
    } else if has("certificate not valid yet") || has("NotValidYet") {
        TlsFailure::NotYetValid
    } else if has("not valid for name") || has("NotValidForName") {
        TlsFailure::WrongName(reason.to_owned())
    } else if has("peer sent no certificates") {
        TlsFailure::NoCertificate
    } else if has("invalid peer certificate") {
        TlsFailure::BadCertificate(reason.to_owned())
    } else {
        TlsFailure::Other(reason.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_messages_map_to_their_verdicts() {
        let cases = [
            (
                "invalid peer certificate: UnknownIssuer",
                TlsFailure::UnknownIssuer,
            ),
            (
                "invalid peer certificate: certificate expired: verification time 2 (UNIX), \
                 but certificate is not valid after 1 (1 seconds ago)",
                TlsFailure::Expired,
            ),
            (
                "invalid peer certificate: certificate not valid yet: verification time 1 \
                 (UNIX), but certificate is not valid before 2 (1 seconds in future)",
                TlsFailure::NotYetValid,
            ),
            ("peer sent no certificates", TlsFailure::NoCertificate),
        ];
        for (reason, want) in cases {
            assert_eq!(local_failure(reason), want, "{reason}");
        }
        assert!(matches!(
            local_failure("invalid peer certificate: certificate not valid for name \"a\""),
            TlsFailure::WrongName(_)
        ));
        assert!(matches!(
            local_failure("something else"),
            TlsFailure::Other(_)
        ));
    }

    #[test]
    fn crypto_codes_carry_the_alert() {
        let unknown_ca = quinn::TransportErrorCode::crypto(48);
        assert!(is_crypto(unknown_ca));
        assert_eq!(alert_name(unknown_ca), "UnknownCA");
        assert!(!is_crypto(quinn::TransportErrorCode::PROTOCOL_VIOLATION));
    }
}
