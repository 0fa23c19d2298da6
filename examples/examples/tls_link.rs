//! Two peers over mutual TLS on loopback: alice listens and requires a client certificate,
//! bob connects with his; each proves its identity with a certificate from the same CA, and
//! each side checks that the other's IDENTIFICATION matches its certificate before any
//! message flows. One message goes each way. The code is in `support/secure_pair.rs`,
//! shared with `quic_link`: only the endpoint differs.
//!
//! Run: `cargo run -p examples --example tls_link`

#[path = "support/secure_pair.rs"]
mod secure_pair;

#[tokio::main]
async fn main() -> secure_pair::Result<()> {
    secure_pair::run("127.0.0.1:0", "TLS over TCP").await
}
