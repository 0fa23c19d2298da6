//! Why the protocol layer closes a connection.

/// A protocol violation or a liveness failure. Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A packet with an empty body (Python peers close on it too).
    #[error("empty packet")]
    EmptyPacket,
    /// A frame whose payload does not have the required shape.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {0}, we speak 1")]
    IncompatibleVersion(u32),
    /// The peer refused our protocol version.
    #[error("peer refused our protocol version")]
    RefusedByPeer,
    /// The remote identity is empty, too long or not UTF-8.
    #[error("invalid peer identity: {0}")]
    InvalidIdentity(&'static str),
    /// A second IDENTIFICATION on the same connection.
    #[error("peer identified twice")]
    DuplicateIdentification,
    /// MESSAGE or ACK before the peer's IDENTIFICATION.
    #[error("{0} before identification")]
    BeforeIdentification(&'static str),
    /// ACK from a peer that did not negotiate acknowledgements.
    #[error("ACK without negotiated acknowledgements")]
    UnexpectedAck,
    /// Too many frames of unknown types.
    #[error("flood of unknown frame types")]
    UnknownFlood,
    /// The peer did not identify in time.
    #[error("handshake not completed within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The peer did not answer a PING in time.
    #[error("keepalive: no answer within {0:?}")]
    KeepaliveTimeout(std::time::Duration),
}
