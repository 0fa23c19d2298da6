//! The synchronous API: no async code in sight.
//!
//! Run: `cargo run -p examples --example blocking`

use std::time::Duration;

use snakemq::blocking::Messaging;
use snakemq::{Event, MessagingBuilder};

fn main() -> Result<(), snakemq::Error> {
    let server = Messaging::start(MessagingBuilder::new_blocking("server").listen("127.0.0.1:0"))?;
    let addr = server
        .handle()
        .local_endpoints()
        .first()
        .map(ToString::to_string)
        .ok_or(snakemq::Error::Shutdown)?;
    let client = Messaging::start(MessagingBuilder::new_blocking("client").connect(&addr))?;

    for i in 0..3 {
        client.send("server", format!("job {i}").into_bytes())?;
    }
    let mut events = server.events();
    let mut got = 0;
    while got < 3 {
        match events.recv_timeout(Duration::from_secs(10)) {
            Some(Event::Received { from, message }) => {
                println!(
                    "server: {from} sent {:?}",
                    String::from_utf8_lossy(message.data())
                );
                got += 1;
            }
            Some(_) => {}
            None => return Err(snakemq::Error::Shutdown),
        }
    }
    client.shutdown();
    server.shutdown();
    Ok(())
}
