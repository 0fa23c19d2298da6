//! The link layer on its own: length-prefixed packets over TCP with a reconnecting
//! connector, for a protocol of a user's own.
//!
//! Run: `cargo run -p examples --example raw_link`

use bytes::Bytes;
use snakemq::link::{Link, LinkConfig, LinkError};

#[tokio::main]
async fn main() -> Result<(), LinkError> {
    let (server, mut accepted) = Link::new(LinkConfig::default().max_packet_size(1024));
    let (_, bound) = server.listen(&"127.0.0.1:0".parse()?).await?;
    let (client, mut connected) = Link::new(LinkConfig::default());
    client.connect(bound.clone())?;

    let (_, _, writer) = connected
        .next()
        .await
        .ok_or(LinkError::Closed)?
        .into_parts();
    for word in ["one", "two", "three"] {
        writer.send_packet(Bytes::from(word)).await?;
    }
    let (info, mut reader, _) = accepted.next().await.ok_or(LinkError::Closed)?.into_parts();
    println!("server accepted {} from {}", info.id, info.remote);
    for _ in 0..3 {
        if let Some(packet) = reader.next().await? {
            println!("packet: {}", String::from_utf8_lossy(&packet));
        }
    }
    writer.finish().await;
    Ok(())
}
