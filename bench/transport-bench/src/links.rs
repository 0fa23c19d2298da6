//! `tcp-link`, `tls-link` and `quic-link`: 1 MiB packets one way over our `Link`.

use std::time::Instant;

use snakemq_link::{ConnectOptions, Endpoint, Link, LinkConfig, ListenOptions};

use crate::certs::Pki;
use crate::{Args, BoxError, PACKET, WARM_UP, within};

/// Sends `WARM_UP + args.mib` packets from a connecting link to a listening one and times
/// the measured packets at the receiver.
pub(crate) async fn throughput(args: &Args) -> Result<String, BoxError> {
    let (endpoint, listen, connect): (Endpoint, _, _) = match args.mode.as_str() {
        "tcp-link" => (
            "127.0.0.1:0".parse()?,
            ListenOptions::plain(),
            ConnectOptions::plain(),
        ),
        "tls-link" | "quic-link" => {
            let pki = Pki::generate()?;
            let endpoint = if args.mode == "tls-link" {
                "127.0.0.1:0"
            } else {
                "quic://127.0.0.1:0"
            };
            (
                endpoint.parse()?,
                ListenOptions::tls(pki.tls_server()?),
                ConnectOptions::tls(pki.tls_client()?),
            )
        }
        other => return Err(format!("not a link mode: {other}").into()),
    };

    let (server, mut incoming) = Link::new(LinkConfig::default());
    let (_, bound) = server.listen_with(&endpoint, listen).await?;
    let (client, mut connected) = Link::new(LinkConfig::default());
    client.connect_with(bound, connect)?;
    let (_, _client_reader, writer) = within("the client connection", connected.next())
        .await?
        .ok_or("client link closed")?
        .into_parts();

    // The sender starts before the listener's connection is taken: a QUIC listener hands a
    // connection over once the connecting side has sent its first bytes.
    let body = crate::body();
    let total = WARM_UP + args.mib;
    let sender = tokio::spawn(async move {
        for _ in 0..total {
            writer.send_packet(body.clone()).await?;
        }
        writer.finish().await;
        Ok::<(), snakemq_link::LinkError>(())
    });

    let (_, mut reader, _server_writer) = within("the server connection", incoming.next())
        .await?
        .ok_or("server link closed")?
        .into_parts();
    let mut start = Instant::now();
    for index in 0..total {
        if index == WARM_UP {
            start = Instant::now();
        }
        let packet = within("a packet", reader.next())
            .await??
            .ok_or("the connection closed early")?;
        if packet.len() != PACKET {
            return Err(format!("packet {index} has {} bytes", packet.len()).into());
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    within("the sender", sender).await???;
    client.close().await;
    server.close().await;
    crate::throughput_json(args, seconds, &[])
}
