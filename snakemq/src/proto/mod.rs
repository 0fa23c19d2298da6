//! The protocol core: frames and the per-connection state machine.
//!
//! Sans-IO in the style of quinn-proto: no sockets, no tasks, no clock. Packet bodies go in
//! through [`Connection::handle_packet`], bytes to send come out of
//! [`Connection::take_transmit`], events come out of [`Connection::poll_event`], and time is
//! an argument (`now`) of every call that needs it. That makes the state machine
//! deterministic to test and to fuzz; the async shell in `messaging` only moves bytes.

mod connection;
mod error;
mod frame;

pub use connection::{Connection, ConnectionConfig, Event, Keepalive, MAX_REMOTE_IDENTITY};
pub use error::ProtoError;
pub use frame::{
    CAP_ACKS, CAP_UNACKED, Frame, MESSAGE_HEADER_LEN, MessageFrame, PROTOCOL_VERSION, TTL_INFINITE,
    Uuid, encode_ack, encode_message, encode_message_header, encode_message_header_of_kind, kind,
    message_fits,
};
