//! Typed RPC with maps and narrow-integer collections, end to end over the in-memory
//! transport: what `#[snakemq::service]` maps onto prost `map` and widened fields arrives
//! intact, and an out-of-range widened value from a peer is a decode error, not a truncation.
#![cfg(feature = "rpc")]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use snakemq::Messaging;
use snakemq::rpc::{RemoteErrorKind, Rpc, RpcError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A user type as a map value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Count.
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

/// The service under test.
#[snakemq::service]
pub trait Inventory {
    /// Sums the values.
    async fn total(&self, stock: HashMap<String, u64>) -> u64;
    /// Inverts a map.
    async fn invert(&self, names: HashMap<i32, String>) -> HashMap<String, i32>;
    /// Maps with bytes and message values, and a BTreeMap.
    async fn describe(
        &self,
        blobs: HashMap<u32, Vec<u8>>,
        items: HashMap<String, Item>,
        flags: BTreeMap<bool, f64>,
    ) -> Vec<String>;
    /// A map as the error.
    async fn check(&self, stock: HashMap<String, u64>) -> Result<u64, HashMap<String, String>>;
    /// Narrow integers in collections.
    async fn narrow(
        &self,
        bytes: Vec<i8>,
        shorts: Vec<u16>,
        maybe_byte: Option<u8>,
        maybe_short: Option<i16>,
    ) -> Vec<i16>;
    /// A widened `Option<u8>` result.
    async fn small(&self, value: u32) -> Option<u8>;
    /// Messages alone, in a Vec and in an Option: the one with the highest count.
    async fn pick(&self, items: Vec<Item>, extra: Option<Item>, fallback: Item) -> Option<Item>;
}

struct Shop;

impl Inventory for Shop {
    async fn total(&self, stock: HashMap<String, u64>) -> u64 {
        stock.values().sum()
    }
    async fn invert(&self, names: HashMap<i32, String>) -> HashMap<String, i32> {
        names.into_iter().map(|(k, v)| (v, k)).collect()
    }
    async fn describe(
        &self,
        blobs: HashMap<u32, Vec<u8>>,
        items: HashMap<String, Item>,
        flags: BTreeMap<bool, f64>,
    ) -> Vec<String> {
        let mut blobs: Vec<_> = blobs.into_iter().collect();
        blobs.sort();
        let mut items: Vec<_> = items
            .into_iter()
            .map(|(k, v)| format!("{k}={}x{}", v.name, v.count))
            .collect();
        items.sort();
        vec![format!("{blobs:?}"), items.join(","), format!("{flags:?}")]
    }
    async fn check(&self, stock: HashMap<String, u64>) -> Result<u64, HashMap<String, String>> {
        let empty: HashMap<String, String> = stock
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(k, _)| (k.clone(), "out of stock".to_owned()))
            .collect();
        if empty.is_empty() {
            Ok(stock.values().sum())
        } else {
            Err(empty)
        }
    }
    async fn narrow(
        &self,
        bytes: Vec<i8>,
        shorts: Vec<u16>,
        maybe_byte: Option<u8>,
        maybe_short: Option<i16>,
    ) -> Vec<i16> {
        let mut out: Vec<i16> = bytes.into_iter().map(i16::from).collect();
        out.extend(shorts.into_iter().map(|s| s as i16));
        out.extend(maybe_byte.map(i16::from));
        out.extend(maybe_short);
        out
    }
    async fn small(&self, value: u32) -> Option<u8> {
        u8::try_from(value).ok()
    }
    async fn pick(&self, items: Vec<Item>, extra: Option<Item>, fallback: Item) -> Option<Item> {
        items
            .into_iter()
            .chain(extra)
            .chain([fallback])
            .max_by_key(|i| i.count)
    }
}

/// What a peer with another idea of `narrow` might send: its first field as plain `int32`s.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WideArgs {
    /// `bytes`, without the 8-bit limit.
    #[prost(int32, repeated, tag = "1")]
    pub bytes: Vec<i32>,
}

/// `pick`'s arguments as a peer using plain protobuf `message` fields would send them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PickArgs {
    /// `items`.
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<Item>,
    /// `extra`.
    #[prost(message, optional, tag = "2")]
    pub extra: Option<Item>,
    /// `fallback`.
    #[prost(message, optional, tag = "3")]
    pub fallback: Option<Item>,
}

/// `pick`'s result as such a peer would read it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PickRet {
    /// The result.
    #[prost(message, optional, tag = "1")]
    pub value: Option<Item>,
}

/// `describe`'s message map as a peer using a plain protobuf `map<string, Item>` sends it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescribeArgs {
    /// `items` (tag 2; `blobs` and `flags` left empty).
    #[prost(map = "string, message", tag = "2")]
    pub items: HashMap<String, Item>,
}

/// `describe`'s result.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescribeRet {
    /// The lines.
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

fn item(name: &str, count: u32) -> Item {
    Item {
        name: name.into(),
        count,
    }
}

struct Peers {
    server: Messaging,
    client: Messaging,
    client_rpc: Rpc,
    shop: InventoryClient,
}

impl Peers {
    async fn shutdown(self) {
        self.client.shutdown().await;
        self.server.shutdown().await;
    }
}

/// A serving peer and a calling peer over `memory:`, each dispatching its RPC messages.
async fn pair(name: &str) -> Result<Peers, Box<dyn std::error::Error>> {
    let endpoint = format!("memory:rpc-types-{name}");
    let server = Messaging::builder("server")
        .listen(&endpoint)
        .start()
        .await?;
    let client = Messaging::builder("client")
        .connect(&endpoint)
        .start()
        .await?;
    let (server_rpc, client_rpc) = (Rpc::new(&server)?, Rpc::new(&client)?);
    server_rpc.serve("shop", InventoryServer::new(Shop));
    for (messaging, rpc) in [(&server, &server_rpc), (&client, &client_rpc)] {
        let (mut events, rpc) = (messaging.events(), rpc.clone());
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                rpc.dispatch(&event);
            }
        });
    }
    let shop =
        InventoryClient::new(&client_rpc, "server", "shop").with_deadline(Duration::from_secs(10));
    Ok(Peers {
        server,
        client,
        client_rpc,
        shop,
    })
}

#[tokio::test]
async fn hash_maps_travel_both_ways() -> TestResult {
    let peers = pair("maps").await?;
    let shop = &peers.shop;
    let stock = HashMap::from([("apples".to_owned(), 3), ("pears".to_owned(), 4)]);
    assert_eq!(shop.total(stock.clone()).await?, 7);
    assert_eq!(shop.total(HashMap::new()).await?, 0);

    let names = HashMap::from([(1, "one".to_owned()), (-2, "minus two".to_owned())]);
    let inverted = shop.invert(names).await?;
    assert_eq!(
        inverted,
        HashMap::from([("one".to_owned(), 1), ("minus two".to_owned(), -2)])
    );

    let described = shop
        .describe(
            HashMap::from([(7, vec![1, 2]), (0, Vec::new())]),
            HashMap::from([(
                "a".to_owned(),
                Item {
                    name: "apple".into(),
                    count: 3,
                },
            )]),
            BTreeMap::from([(true, 1.5), (false, -0.5)]),
        )
        .await?;
    assert_eq!(
        described,
        vec![
            "[(0, []), (7, [1, 2])]".to_owned(),
            "a=applex3".to_owned(),
            "{false: -0.5, true: 1.5}".to_owned(),
        ]
    );

    assert_eq!(shop.check(stock).await?, Ok(7));
    let with_empty = HashMap::from([("apples".to_owned(), 0), ("pears".to_owned(), 4)]);
    assert_eq!(
        shop.check(with_empty).await?,
        Err(HashMap::from([(
            "apples".to_owned(),
            "out of stock".to_owned()
        )]))
    );
    peers.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn narrow_integers_in_collections() -> TestResult {
    let peers = pair("narrow").await?;
    let shop = &peers.shop;
    assert_eq!(
        shop.narrow(vec![-128, 127], vec![65535], Some(255), Some(-32768))
            .await?,
        vec![-128, 127, -1, 255, -32768]
    );
    assert_eq!(
        shop.narrow(Vec::new(), Vec::new(), None, None).await?,
        Vec::<i16>::new()
    );
    assert_eq!(shop.small(200).await?, Some(200));
    assert_eq!(shop.small(300).await?, None);
    peers.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn out_of_range_narrow_value_is_a_decode_error() -> TestResult {
    let peers = pair("range").await?;
    let raw = peers
        .client_rpc
        .client("server", "shop")
        .with_deadline(Duration::from_secs(10));
    let body = Bytes::from(WideArgs { bytes: vec![1000] }.encode_to_vec());
    match raw.call("narrow", body).await {
        Err(RpcError::Remote(remote)) => assert_eq!(remote.kind, RemoteErrorKind::Decode),
        other => panic!("expected a remote decode error, got {other:?}"),
    }
    // The same field in range is fine.
    let body = Bytes::from(WideArgs { bytes: vec![-5] }.encode_to_vec());
    assert!(matches!(raw.call("narrow", body).await, Ok(Ok(_))));
    peers.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn messages_alone_in_vec_and_in_option() -> TestResult {
    let peers = pair("messages").await?;
    let shop = &peers.shop;
    let picked = shop
        .pick(
            vec![item("a", 1), item("b", 5)],
            Some(item("c", 3)),
            Item::default(),
        )
        .await?;
    assert_eq!(picked, Some(item("b", 5)));
    let picked = shop.pick(Vec::new(), None, item("d", 2)).await?;
    assert_eq!(picked, Some(item("d", 2)));
    peers.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn messages_are_plain_protobuf_message_fields_on_the_wire() -> TestResult {
    let peers = pair("message-wire").await?;
    let raw = peers
        .client_rpc
        .client("server", "shop")
        .with_deadline(Duration::from_secs(10));
    let args = PickArgs {
        items: vec![item("a", 1), item("b", 2)],
        extra: Some(item("c", 9)),
        fallback: None,
    };
    let reply = raw
        .call("pick", Bytes::from(args.encode_to_vec()))
        .await?
        .map_err(|_| "an application error from pick")?;
    assert_eq!(PickRet::decode(reply)?.value, Some(item("c", 9)));

    let args = DescribeArgs {
        items: HashMap::from([("k".to_owned(), item("kiwi", 4))]),
    };
    let reply = raw
        .call("describe", Bytes::from(args.encode_to_vec()))
        .await?
        .map_err(|_| "an application error from describe")?;
    assert_eq!(
        DescribeRet::decode(reply)?.value,
        vec!["[]".to_owned(), "k=kiwix4".to_owned(), "{}".to_owned()]
    );
    peers.shutdown().await;
    Ok(())
}
