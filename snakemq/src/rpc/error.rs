//! Errors of typed RPC: local failures and the typed errors a server sends back.

use std::fmt;

/// Why a call failed (an application error travels separately, typed, as the `E` of a
/// method returning `Result<T, E>`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// No reply arrived before the deadline. The call may still run (or have run) on the
    /// server.
    #[error("no reply before the deadline")]
    Deadline,
    /// This side already has as many calls in flight as it allows.
    #[error("too many calls in flight on this side")]
    Busy,
    /// The server refused or failed the call.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The reply could not be decoded.
    #[error("cannot decode the reply: {0}")]
    Decode(String),
    /// A reply that does not fit the call (for example an application error for a method
    /// without an error type): the peers disagree about the service.
    #[error("unexpected reply: {0}")]
    Unexpected(&'static str),
    /// Queuing the call failed.
    #[error("cannot send the call: {0}")]
    Messaging(#[from] crate::Error),
    /// The RPC handle was shut down while the call waited.
    #[error("rpc is shut down")]
    Shutdown,
    /// `Rpc::new` was called outside a tokio runtime.
    #[error("rpc needs a tokio runtime")]
    NoRuntime,
}

/// What kind of failure a server reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// No object is registered under the name.
    UnknownObject,
    /// The object has no such method.
    UnknownMethod,
    /// The server could not decode the arguments (or the envelope).
    Decode,
    /// The handler panicked.
    Panic,
    /// The handler did not finish before the call's deadline.
    Deadline,
    /// The server had as many calls in flight as it allows (overall, for this peer, or
    /// a load-shed layer refused the call).
    Busy,
    /// A layer or service around the object failed (the details carry its error chain).
    Failed,
    /// A code this version does not know (a newer peer).
    Other(u32),
}

impl RemoteErrorKind {
    /// The wire code (the envelope's `error` field).
    pub fn code(self) -> u32 {
        match self {
            RemoteErrorKind::UnknownObject => 1,
            RemoteErrorKind::UnknownMethod => 2,
            RemoteErrorKind::Decode => 3,
            RemoteErrorKind::Panic => 4,
            RemoteErrorKind::Deadline => 5,
            RemoteErrorKind::Busy => 6,
            RemoteErrorKind::Failed => 8,
            RemoteErrorKind::Other(code) => code,
        }
    }

    /// The kind for a wire code (7, the application error, is not a kind: it carries the
    /// method's own error type).
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => RemoteErrorKind::UnknownObject,
            2 => RemoteErrorKind::UnknownMethod,
            3 => RemoteErrorKind::Decode,
            4 => RemoteErrorKind::Panic,
            5 => RemoteErrorKind::Deadline,
            6 => RemoteErrorKind::Busy,
            8 => RemoteErrorKind::Failed,
            other => RemoteErrorKind::Other(other),
        }
    }
}

impl fmt::Display for RemoteErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteErrorKind::UnknownObject => f.write_str("unknown object"),
            RemoteErrorKind::UnknownMethod => f.write_str("unknown method"),
            RemoteErrorKind::Decode => f.write_str("cannot decode the call"),
            RemoteErrorKind::Panic => f.write_str("the handler panicked"),
            RemoteErrorKind::Deadline => f.write_str("the handler missed the deadline"),
            RemoteErrorKind::Busy => f.write_str("the server is busy"),
            RemoteErrorKind::Failed => f.write_str("the service failed"),
            RemoteErrorKind::Other(code) => write!(f, "remote error {code}"),
        }
    }
}

/// A failure reported by the server, with its details as text (empty when the server
/// does not send details).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remote: {kind}{}{detail}", if detail.is_empty() { "" } else { ": " })]
pub struct RemoteError {
    /// What kind of failure.
    pub kind: RemoteErrorKind,
    /// The remote error chain (`caused by:` lines) or panic message, if the server sends
    /// details.
    pub detail: String,
}

/// A value from a peer that does not fit the generated message (used by generated code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub(crate) String);

impl From<WireError> for RpcError {
    fn from(e: WireError) -> Self {
        RpcError::Decode(e.0)
    }
}
