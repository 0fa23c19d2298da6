//! Two peers over TCP on loopback: alice listens, bob connects, they exchange messages,
//! and alice's delivery events confirm bob's acknowledgements.
//!
//! Run: `cargo run -p examples --example two_peers`

use std::time::Duration;

use snakemq::{Event, Message, Messaging};

#[tokio::main]
async fn main() -> Result<(), snakemq::Error> {
    let alice = Messaging::builder("alice")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let addr = alice
        .local_endpoints()
        .first()
        .map(ToString::to_string)
        .ok_or(snakemq::Error::Shutdown)?;
    println!("alice listens on {addr}");
    let bob = Messaging::builder("bob").connect(&addr).start().await?;

    let mut alice_events = alice.events();
    let mut bob_events = bob.events();
    // Sent before bob is even connected: it waits in alice's queue for him.
    let id = alice
        .send(
            "bob",
            Message::new("hello bob").ttl(Duration::from_secs(60)),
        )
        .await?;

    let step = async {
        while let Some(event) = bob_events.next().await {
            if let Event::Received { from, message } = event {
                println!("bob got {:?} from {from}", message.data());
                bob.send(&from, "hi alice").await?;
                // Done with it: acknowledged now (otherwise when bob asks for his next
                // event), so alice sees it delivered.
                bob_events.confirm();
                break;
            }
        }
        let (mut delivered, mut replied) = (false, false);
        while !(delivered && replied) {
            match alice_events.next().await {
                Some(Event::Delivered { uuid, .. }) if uuid == id => {
                    println!("alice: bob acknowledged {}", snakemq::uuid_hex(&uuid));
                    delivered = true;
                }
                Some(Event::Received { message, .. }) => {
                    println!("alice got {:?}", message.data());
                    replied = true;
                }
                Some(_) => {}
                None => break,
            }
        }
        Ok::<_, snakemq::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(10), step)
        .await
        .map_err(|_| snakemq::Error::Shutdown)??;
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}
