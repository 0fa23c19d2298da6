//! The committed seed corpus (`fuzz/seeds/<target>/`), and its replay.
//!
//! `cargo test` checks that the files match what is generated here and runs every file in
//! `seeds/` through the harnesses. `SNAKEMQ_WRITE_SEEDS=1 cargo test` rewrites them.
//!
//! The `connection` target takes `arbitrary`-encoded input, so its seeds are produced by
//! [`encode_input`], an inverse of the `arbitrary` 1.x derive format that the tests check
//! by decoding again.

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use snakemq::proto::{CAP_ACKS, Frame, MessageFrame, PROTOCOL_VERSION};

use crate::connection::{ConnectionInput, FuzzFrame, Op};
use crate::stream::StreamInput;

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for frame in frames {
        frame.encode(&mut out);
    }
    out.to_vec()
}

fn rust_handshake(name: &'static [u8]) -> Vec<Frame> {
    vec![
        Frame::ProtocolVersion(PROTOCOL_VERSION),
        Frame::Capabilities(CAP_ACKS),
        Frame::Identification(Bytes::from_static(name)),
    ]
}

fn stream_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let python = vec![
        Frame::ProtocolVersion(PROTOCOL_VERSION),
        Frame::Identification(Bytes::from_static(b"py-peer")),
        Frame::Message(MessageFrame {
            uuid: [0x55; 16],
            ttl: 60,
            flags: 0,
            data: Bytes::from_static(b"hello"),
        }),
        Frame::Ping,
        Frame::Pong,
    ];
    let mut rust = rust_handshake(b"rust-peer");
    rust.push(Frame::Message(MessageFrame {
        uuid: [7; 16],
        ttl: 0xFFFF_FFFF,
        flags: 5,
        data: Bytes::from_static(b"payload"),
    }));
    rust.push(Frame::Ack(vec![[7; 16], [8; 16]]));
    rust.push(Frame::Unknown { kind: 200, len: 3 });
    let mut oversized = wire(&rust_handshake(b"a"));
    oversized.extend([0, 0, 0x10, 0, 3]);
    vec![
        (
            "python_handshake",
            StreamInput::to_bytes(16, false, &[], &wire(&python)),
        ),
        (
            "rust_handshake_chunked",
            StreamInput::to_bytes(16, false, &[1, 3, 7], &wire(&rust)),
        ),
        (
            "rust_handshake_reader",
            StreamInput::to_bytes(16, true, &[5], &wire(&rust)),
        ),
        (
            "oversized_prefix",
            StreamInput::to_bytes(0, true, &[2], &oversized),
        ),
        (
            "empty_and_bad_frames",
            StreamInput::to_bytes(4, false, &[], b"\0\0\0\0\0\0\0\x01\x07\0\0\0\x02\x06\0"),
        ),
    ]
}

fn frame(f: FuzzFrame) -> Op {
    Op::Frame(f)
}

fn rust_peer_ops() -> Vec<Op> {
    vec![
        Op::Take,
        frame(FuzzFrame::Version),
        frame(FuzzFrame::CapAcks),
        frame(FuzzFrame::Ident(1)),
    ]
}

fn message_op(byte: u8) -> Op {
    frame(FuzzFrame::Message {
        uuid: [byte; 16],
        ttl: 30,
        flags: 0,
        data: b"hi".to_vec(),
    })
}

fn connection_seeds() -> Vec<(&'static str, ConnectionInput)> {
    let mut rust = rust_peer_ops();
    rust.extend([
        message_op(1),
        message_op(2),
        Op::AckReceived,
        Op::AckReceived,
        Op::Send {
            uuid: [9; 16],
            ttl: 10,
            flags: 0,
            data: b"out".to_vec(),
        },
        Op::Take,
        frame(FuzzFrame::Ack(vec![[9; 16]])),
        frame(FuzzFrame::Ping),
        Op::Take,
    ]);
    let python = vec![
        frame(FuzzFrame::Version),
        frame(FuzzFrame::Ident(2)),
        message_op(3),
        Op::AckReceived,
        Op::Take,
        frame(FuzzFrame::Ack(vec![[3; 16]])),
        Op::Take,
    ];
    let mut keepalive = rust_peer_ops();
    keepalive.extend([Op::RunDeadline, Op::Take, Op::RunDeadline, message_op(4)]);
    let violation = vec![
        message_op(5),
        frame(FuzzFrame::Ident(3)),
        Op::Take,
        frame(FuzzFrame::Unknown(200, 1)),
    ];
    let silent = vec![Op::AdvanceSecs(1), Op::Timeout, Op::RunDeadline, Op::Take];
    let input = |acks, keepalive, ops| ConnectionInput {
        acks,
        keepalive,
        handshake_ms: 5000,
        ops,
    };
    vec![
        ("rust_peer", input(true, Some((2000, 3000)), rust)),
        ("python_peer", input(true, None, python)),
        ("keepalive", input(true, Some((100, 50)), keepalive)),
        ("violation", input(false, Some((2000, 3000)), violation)),
        ("silent_peer", input(true, Some((2000, 3000)), silent)),
    ]
}

/// Encoder for the subset of the `arbitrary` format our input types use: integers little
/// endian, bool as one byte, `Option` as a bool then the value, enum variants as a `u32`
/// scaled onto the variant count, collections as "another element?" bools ending in false.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn variant(&mut self, index: u64, count: u64) {
        // The derive picks `(u64::from(x) * count) >> 32`; the smallest x giving `index`.
        let x = (index << 32).div_ceil(count);
        self.0.extend((x as u32).to_le_bytes());
    }
    fn bytes(&mut self, data: &[u8]) {
        for b in data {
            self.0.extend([1, *b]);
        }
        self.0.push(0);
    }
    fn op(&mut self, op: &Op) {
        const OPS: u64 = 10;
        match op {
            Op::Raw(body) => {
                self.variant(0, OPS);
                self.bytes(body);
            }
            Op::Frame(f) => {
                self.variant(1, OPS);
                self.frame(f);
            }
            Op::AdvanceMs(ms) => {
                self.variant(2, OPS);
                self.0.extend(ms.to_le_bytes());
            }
            Op::AdvanceSecs(s) => {
                self.variant(3, OPS);
                self.0.push(*s);
            }
            Op::Timeout => self.variant(4, OPS),
            Op::RunDeadline => self.variant(5, OPS),
            Op::Send {
                uuid,
                ttl,
                flags,
                data,
            } => {
                self.variant(6, OPS);
                self.0.extend(uuid);
                self.0.extend(ttl.to_le_bytes());
                self.0.extend(flags.to_le_bytes());
                self.bytes(data);
            }
            Op::Ack(uuid) => {
                self.variant(7, OPS);
                self.0.extend(uuid);
            }
            Op::AckReceived => self.variant(8, OPS),
            Op::Take => self.variant(9, OPS),
        }
    }
    fn frame(&mut self, f: &FuzzFrame) {
        const FRAMES: u64 = 12;
        match f {
            FuzzFrame::Version => self.variant(0, FRAMES),
            FuzzFrame::OtherVersion(v) => {
                self.variant(1, FRAMES);
                self.0.extend(v.to_le_bytes());
            }
            FuzzFrame::Incompatible => self.variant(2, FRAMES),
            FuzzFrame::Ident(n) => {
                self.variant(3, FRAMES);
                self.0.push(*n);
            }
            FuzzFrame::IdentRaw(raw) => {
                self.variant(4, FRAMES);
                self.bytes(raw);
            }
            FuzzFrame::Message {
                uuid,
                ttl,
                flags,
                data,
            } => {
                self.variant(5, FRAMES);
                self.0.extend(uuid);
                self.0.extend(ttl.to_le_bytes());
                self.0.extend(flags.to_le_bytes());
                self.bytes(data);
            }
            FuzzFrame::Ping => self.variant(6, FRAMES),
            FuzzFrame::Pong => self.variant(7, FRAMES),
            FuzzFrame::Capabilities(bits) => {
                self.variant(8, FRAMES);
                self.0.extend(bits.to_le_bytes());
            }
            FuzzFrame::CapAcks => self.variant(9, FRAMES),
            FuzzFrame::Ack(ids) => {
                self.variant(10, FRAMES);
                for id in ids {
                    self.0.push(1);
                    self.0.extend(id);
                }
                self.0.push(0);
            }
            FuzzFrame::Unknown(kind, len) => {
                self.variant(11, FRAMES);
                self.0.extend([*kind, *len]);
            }
        }
    }
}

fn encode_input(input: &ConnectionInput) -> Vec<u8> {
    let mut enc = Enc::default();
    enc.0.push(u8::from(input.acks));
    match input.keepalive {
        Some((interval, wait)) => {
            enc.0.push(1);
            enc.0.extend(interval.to_le_bytes());
            enc.0.extend(wait.to_le_bytes());
        }
        None => enc.0.push(0),
    }
    enc.0.extend(input.handshake_ms.to_le_bytes());
    // `ops` is the last field: decoded with `arbitrary_take_rest`, same continuation bools.
    for op in &input.ops {
        enc.0.push(1);
        enc.op(op);
    }
    enc.0.push(0);
    enc.0
}

/// Decodes like `fuzz_target!(|input: ConnectionInput| ...)` does.
fn decode_input(data: &[u8]) -> arbitrary::Result<ConnectionInput> {
    ConnectionInput::arbitrary_take_rest(Unstructured::new(data))
}

fn sync(target: &str, seeds: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
    let dir = seeds_dir(target);
    let write = std::env::var_os("SNAKEMQ_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir)?;
    }
    for (name, bytes) in seeds {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, bytes)?;
        } else {
            let on_disk = std::fs::read(&path)?;
            assert_eq!(
                &on_disk,
                bytes,
                "{} is stale: rerun with SNAKEMQ_WRITE_SEEDS=1",
                path.display()
            );
        }
    }
    Ok(())
}

fn files(target: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(seeds_dir(target))? {
        out.push(entry?.path());
    }
    out.sort();
    Ok(out)
}

#[test]
fn connection_seed_encoding_round_trips() -> arbitrary::Result<()> {
    for (name, input) in connection_seeds() {
        let decoded = decode_input(&encode_input(&input))?;
        assert_eq!(format!("{decoded:?}"), format!("{input:?}"), "{name}");
    }
    Ok(())
}

#[test]
fn stream_seeds_are_current_and_pass() -> std::io::Result<()> {
    sync("stream_decoder", &stream_seeds())?;
    for path in files("stream_decoder")? {
        crate::stream::run(&std::fs::read(&path)?);
    }
    Ok(())
}

#[test]
fn connection_seeds_are_current_and_pass() -> Result<(), Box<dyn std::error::Error>> {
    let seeds: Vec<(&str, Vec<u8>)> = connection_seeds()
        .iter()
        .map(|(name, input)| (*name, encode_input(input)))
        .collect();
    sync("connection", &seeds)?;
    for path in files("connection")? {
        crate::connection::run(decode_input(&std::fs::read(&path)?)?);
    }
    Ok(())
}
