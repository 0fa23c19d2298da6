//! Where to listen or connect: `host:port` for TCP, `quic://host:port` for QUIC (feature
//! `quic`), `memory:NAME` for the in-process transport.

use std::fmt;
use std::str::FromStr;

use crate::LinkError;

/// A listen or connect address.
///
/// Parsed from text: `127.0.0.1:4000`, `[::1]:4000`, `example.net:4000` (resolved at each
/// connection attempt), `quic://127.0.0.1:4000` or `memory:alice`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// A TCP address: `host:port`, host being an IP address or a name.
    Tcp(String),
    /// A name on the in-process memory network.
    Memory(String),
    /// A QUIC address (`quic://host:port`, stored without the scheme): UDP, TLS 1.3, one
    /// bidirectional stream per connection. Needs the `quic` feature, and TLS settings on
    /// the listener ([`ListenOptions::tls`](crate::ListenOptions)) or connector
    /// ([`ConnectOptions::tls`](crate::ConnectOptions)).
    Quic(String),
}

impl Endpoint {
    /// A TCP endpoint from a socket address.
    pub fn tcp(addr: std::net::SocketAddr) -> Self {
        Endpoint::Tcp(addr.to_string())
    }

    /// A QUIC endpoint from a socket address.
    pub fn quic(addr: std::net::SocketAddr) -> Self {
        Endpoint::Quic(addr.to_string())
    }

    /// A memory endpoint.
    pub fn memory(name: impl Into<String>) -> Self {
        Endpoint::Memory(name.into())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => f.write_str(addr),
            Endpoint::Memory(name) => write!(f, "memory:{name}"),
            Endpoint::Quic(addr) => write!(f, "quic://{addr}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| LinkError::InvalidEndpoint {
            endpoint: s.to_owned(),
            reason,
        };
        if let Some(name) = s.strip_prefix("memory:") {
            if name.is_empty() {
                return Err(invalid("memory endpoint needs a name"));
            }
            return Ok(Endpoint::Memory(name.to_owned()));
        }
        if let Some(addr) = s.strip_prefix("quic://") {
            return check_host_port(addr)
                .map(|()| Endpoint::Quic(addr.to_owned()))
                .map_err(invalid);
        }
        let s = s.strip_prefix("tcp://").unwrap_or(s);
        check_host_port(s)
            .map(|()| Endpoint::Tcp(s.to_owned()))
            .map_err(invalid)
    }
}

/// Checks `host:port` (IPv6 hosts in brackets); the error is the reason.
fn check_host_port(s: &str) -> Result<(), &'static str> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected host:port");
    };
    if host.is_empty() {
        return Err("missing host");
    }
    if port.parse::<u16>().is_err() {
        return Err("port must be a number from 0 to 65535");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("IPv6 addresses must be written in brackets, e.g. [::1]:4000");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        let cases = [
            ("127.0.0.1:4000", Endpoint::Tcp("127.0.0.1:4000".into())),
            ("[::1]:0", Endpoint::Tcp("[::1]:0".into())),
            ("localhost:9", Endpoint::Tcp("localhost:9".into())),
            ("tcp://localhost:9", Endpoint::Tcp("localhost:9".into())),
            ("memory:bob", Endpoint::Memory("bob".into())),
            (
                "quic://127.0.0.1:4000",
                Endpoint::Quic("127.0.0.1:4000".into()),
            ),
            ("quic://[::1]:0", Endpoint::Quic("[::1]:0".into())),
            ("quic://localhost:9", Endpoint::Quic("localhost:9".into())),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Endpoint>().ok(), Some(want), "{text}");
        }
        let bad = [
            "",
            "memory:",
            "nohost",
            ":80",
            "host:99999",
            "::1:80",
            "quic://",
            "quic://:80",
            "quic://nohost",
            "quic://::1:80",
        ];
        for bad in bad {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "127.0.0.1:4000",
            "[::1]:0",
            "memory:bob",
            "quic://[::1]:4000",
            "quic://a:1",
        ] {
            let endpoint = text.parse::<Endpoint>().ok();
            assert_eq!(
                endpoint.as_ref().map(ToString::to_string).as_deref(),
                Some(text)
            );
        }
    }
}
