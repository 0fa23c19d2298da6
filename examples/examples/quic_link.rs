//! Two peers over QUIC on loopback: alice listens on `quic://127.0.0.1:0` and requires a
//! client certificate, bob connects with his. QUIC always runs TLS 1.3, so both sides get
//! the same TLS settings as over TCP, and identity binding holds as over TLS. One message
//! goes each way over the connection's single bidirectional stream. The code is in
//! `support/secure_pair.rs`, shared with `tls_link`: only the endpoint differs.
//!
//! Run: `cargo run -p examples --example quic_link`

#[path = "support/secure_pair.rs"]
mod secure_pair;

#[tokio::main]
async fn main() -> secure_pair::Result<()> {
    secure_pair::run("quic://127.0.0.1:0", "QUIC").await
}
