//! Helpers for the code `#[snakemq::service]` generates (reached as
//! `::snakemq::__private`); not a public API.

use bytes::Bytes;
use prost::Message;

use super::error::RpcError;
pub use super::error::WireError;

/// Encodes a generated message.
pub fn encode<M: Message>(message: &M) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Decodes a generated message.
///
/// # Errors
/// The bytes are not the message.
pub fn decode<M: Message + Default>(body: Bytes) -> Result<M, WireError> {
    M::decode(body).map_err(|e| WireError(e.to_string()))
}

/// Narrows a widened integer back, refusing a value out of range.
///
/// # Errors
/// The peer sent a value that does not fit.
pub fn narrow<T: TryFrom<W>, W: std::fmt::Display + Copy>(
    value: W,
    field: &str,
) -> Result<T, WireError> {
    T::try_from(value).map_err(|_| WireError(format!("{field}: {value} is out of range")))
}

/// The error for an application error reply to a method without an error type.
pub fn unexpected_application_error() -> RpcError {
    RpcError::Unexpected("an application error for a method without an error type")
}
