//! What the TLS and QUIC messaging tests share: event helpers with a guard time, and a CA
//! with certificates for alice and bob (`tls_certs`, made at test time).
//!
//! Included by `#[path = "common/secure.rs"] mod secure;` next to `mod tls_certs;`; each
//! test file uses a part.
#![allow(dead_code)]

use std::time::Duration;

use snakemq::link::tls::{TlsClient, TlsServer, certificate_names};
use snakemq::link::{ConnInfo, ConnectOptions, LinkError, ListenOptions};
use snakemq::{Event, Events, Messaging};

use crate::tls_certs::{Ca, Leaf};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) const GUARD: Duration = Duration::from_secs(20);

/// The first event `f` picks, within the guard time.
pub(crate) async fn wait_for<T>(
    events: &mut Events,
    what: &str,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> Result<T, String> {
    let search = async {
        let mut seen = Vec::new();
        while let Some(event) = events.next().await {
            if let Some(found) = f(&event) {
                return Ok(found);
            }
            seen.push(event.to_string());
        }
        Err(format!(
            "event stream ended waiting for {what}; saw {seen:?}"
        ))
    };
    tokio::time::timeout(GUARD, search)
        .await
        .map_err(|_| format!("timed out waiting for {what}"))?
}

/// Every event already queued, without waiting.
pub(crate) fn drain(events: &mut Events) -> Vec<Event> {
    std::iter::from_fn(|| events.try_next()).collect()
}

pub(crate) fn connected_to(peer: &str) -> impl FnMut(&Event) -> Option<ConnInfo> + '_ {
    move |e| match e {
        Event::Connected { peer: p, info, .. } if &**p == peer => Some(info.clone()),
        _ => None,
    }
}

pub(crate) fn received_data(e: &Event) -> Option<(String, Vec<u8>)> {
    match e {
        Event::Received { from, message } => Some((from.to_string(), message.data().to_vec())),
        _ => None,
    }
}

pub(crate) fn delivered_to(peer: &str) -> impl FnMut(&Event) -> Option<()> + '_ {
    move |e| matches!(e, Event::Delivered { to, .. } if &**to == peer).then_some(())
}

/// A CA and a certificate each for alice (also naming 127.0.0.1, the address bob dials)
/// and bob.
pub(crate) struct Pki {
    pub(crate) ca: Ca,
    pub(crate) alice: Leaf,
    pub(crate) bob: Leaf,
}

pub(crate) fn pki() -> Result<Pki, BoxError> {
    let ca = Ca::new("test CA")?;
    Ok(Pki {
        alice: ca.leaf(&["alice", "127.0.0.1"])?,
        bob: ca.leaf(&["bob"])?,
        ca,
    })
}

/// Mutual TLS: the listener presents `leaf` and requires a certificate of `ca`.
pub(crate) fn mutual_server(leaf: &Leaf, ca: &Ca) -> Result<ListenOptions, LinkError> {
    Ok(ListenOptions::tls(
        TlsServer::builder(leaf.cert.as_bytes(), leaf.key.as_bytes())?
            .require_client_certificates(ca.pem.as_bytes())?
            .build()?,
    ))
}

/// A connector trusting `ca`, presenting `leaf` if given.
pub(crate) fn client(leaf: Option<&Leaf>, ca: &Ca) -> Result<ConnectOptions, LinkError> {
    let mut builder = TlsClient::builder().trust_roots(ca.pem.as_bytes())?;
    if let Some(leaf) = leaf {
        builder = builder.client_certificate(leaf.cert.as_bytes(), leaf.key.as_bytes())?;
    }
    Ok(ConnectOptions::tls(builder.build()?))
}

/// A peer listening with mutual TLS on `endpoint` (`127.0.0.1:0`, `quic://127.0.0.1:0`);
/// returns it and the bound endpoint to dial.
pub(crate) async fn listening(
    ident: &str,
    endpoint: &str,
    leaf: &Leaf,
    ca: &Ca,
) -> Result<(Messaging, String), BoxError> {
    let peer = Messaging::builder(ident).start().await?;
    let bound = peer
        .listen_with(endpoint, mutual_server(leaf, ca)?)
        .await?
        .to_string();
    Ok((peer, bound))
}

/// The DNS names of the peer's leaf certificate.
pub(crate) fn leaf_names(info: &ConnInfo) -> Result<Vec<String>, BoxError> {
    let leaf = info
        .peer_certificates
        .first()
        .ok_or("no peer certificate")?;
    Ok(certificate_names(leaf)?.dns_names)
}
