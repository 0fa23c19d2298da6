//! Helpers for the code `#[snakemq::service]` generates (reached as
//! `::snakemq::__private`); not a public API.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use super::client::Client;
use super::error::RpcError;
pub use super::error::WireError;

/// Encodes a generated message.
pub fn encode<M: Message>(message: &M) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Calls `method` through `client` with `args` (a generated arguments message), encoded
/// straight into the call's envelope.
///
/// # Errors
/// As [`Client::call`].
pub async fn call<M: Message>(
    client: &Client,
    method: &str,
    args: M,
) -> Result<Result<Bytes, Bytes>, RpcError> {
    let (id, data) = client.call_data(method, &args);
    drop(args);
    client.send_call(id, data).await
}

/// Sends signal `method` through `client` with `args` (a generated arguments message),
/// encoded straight into the signal's envelope.
///
/// # Errors
/// As [`Client::signal`].
pub async fn signal<M: Message>(
    client: &Client,
    method: &str,
    args: M,
    ttl: Option<Duration>,
    persistent: bool,
) -> Result<(), RpcError> {
    let data = client.signal_data(method, &args);
    drop(args);
    client.send_signal(data, ttl, persistent).await
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
