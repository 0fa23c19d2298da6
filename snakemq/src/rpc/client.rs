//! The caller's side: [`Client`] sends calls and signals and matches replies by request id.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::envelope::{APPLICATION_ERROR, Envelope, Kind};
use super::error::{RemoteError, RemoteErrorKind, RpcError};
use super::{Inner, PendingCall};
use crate::Message;

/// An untyped client of one object on one peer; generated `<Trait>Client`s wrap it.
/// Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(super) inner: Arc<Inner>,
    pub(super) peer: Arc<str>,
    pub(super) object: Arc<str>,
    pub(super) deadline: Duration,
    pub(super) signal_ttl: Option<Duration>,
    pub(super) persistent_signals: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("object", &self.object)
            .field("deadline", &self.deadline)
            .field("signal_ttl", &self.signal_ttl)
            .field("persistent_signals", &self.persistent_signals)
            .finish()
    }
}

/// Removes a pending call however the caller stops waiting (reply, deadline, or the
/// caller's future dropped).
struct Pending<'a> {
    inner: &'a Inner,
    id: u64,
    /// False once the reply arrived: whoever delivered it removed the call already, and
    /// the lock and lookup of a second removal are saved.
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.lock_calls().pending.remove(&self.id);
        }
    }
}

impl Client {
    /// The same client with another deadline for calls (a per-call override:
    /// `client.with_deadline(d).method(..)`).
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        Client {
            deadline,
            ..self.clone()
        }
    }

    /// The same client with another default TTL for signals (`None`: no expiry).
    pub fn with_signal_ttl(&self, ttl: Option<Duration>) -> Self {
        Client {
            signal_ttl: ttl,
            ..self.clone()
        }
    }

    /// The same client sending signals as persistent messages
    /// ([`Message::persistent`]): with a durable store on this side's messaging they
    /// survive a restart of this process until delivered or expired.
    pub fn with_persistent_signals(&self, persistent: bool) -> Self {
        Client {
            persistent_signals: persistent,
            ..self.clone()
        }
    }

    /// The peer called.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The object called.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// The deadline of calls.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Calls `method` with an encoded argument message and waits for the reply: `Ok(Ok)`
    /// carries the result message, `Ok(Err)` the method's application error message.
    ///
    /// # Errors
    /// The deadline passed, too many calls are in flight, the server reported a failure,
    /// or the call could not be queued.
    pub async fn call(&self, method: &str, body: Bytes) -> Result<Result<Bytes, Bytes>, RpcError> {
        let (id, deadline_ms) = self.next_call();
        let data = Envelope::request_data(Kind::Call, id, &self.object, method, &body, deadline_ms);
        drop(body);
        self.send_call(id, data).await
    }

    /// The message data of a call with the arguments as a message, encoded straight into
    /// the call's envelope, and its request id (generated clients send it with
    /// [`Client::send_call`]).
    pub(super) fn call_data<M: prost::Message>(&self, method: &str, args: &M) -> (u64, Bytes) {
        let (id, deadline_ms) = self.next_call();
        let data =
            Envelope::request_data_with(Kind::Call, id, &self.object, method, args, deadline_ms);
        (id, data)
    }

    /// A new call's request id and its deadline on the wire.
    fn next_call(&self) -> (u64, u32) {
        let deadline_ms = u32::try_from(self.deadline.as_millis()).unwrap_or(u32::MAX);
        (self.next_id(), deadline_ms)
    }

    /// A new request id (calls and signals share the sequence).
    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends call `id` with message `data` and waits for its reply.
    pub(super) async fn send_call(
        &self,
        id: u64,
        data: Bytes,
    ) -> Result<Result<Bytes, Bytes>, RpcError> {
        let inner = &*self.inner;
        let (tx, rx) = oneshot::channel();
        let expires = tokio::time::Instant::now() + self.deadline;
        let (on_link, wake_deadlines) = {
            let mut calls = inner.lock_calls();
            if calls.pending.len() >= inner.config.max_calling {
                return Err(RpcError::Busy);
            }
            let on_link = calls.connected.contains(&self.peer);
            calls.pending.insert(
                id,
                PendingCall {
                    peer: self.peer.clone(),
                    reply: tx,
                    data: data.clone(),
                    expires,
                    on_link,
                },
            );
            (on_link, super::deadlines::arm(&mut calls, expires))
        };
        if wake_deadlines {
            inner.deadline_wake.notify_one();
        }
        let mut pending = Pending {
            inner,
            id,
            armed: true,
        };
        // The call expires from the queue with its deadline: a call nobody waits for must
        // not run later. Messaging's TTL has whole seconds on the wire, so at least one.
        let ttl = self.deadline.max(Duration::from_secs(1));
        // A call to a connected peer whose queue has nothing waiting goes to the
        // connection's driver without entering the queue: if the connection drops, the
        // call is sent again after the reconnect (it counts as on the link) like one that
        // left from the queue.
        let queued = if on_link {
            inner.messaging.send_unqueued(&self.peer, data, ttl).err()
        } else {
            Some(data)
        };
        // The deadline comes from the deadline task (`deadlines.rs`) through `rx`, also
        // while the send still waits for room in the queue.
        let mut rx = rx;
        let early = match queued {
            None => None,
            Some(data) => {
                let send = inner
                    .messaging
                    .send(&self.peer, Message::new(data).ttl(ttl));
                tokio::select! {
                    biased;
                    reply = &mut rx => Some(reply),
                    sent = send => {
                        sent?;
                        None
                    }
                }
            }
        };
        let reply = match early {
            Some(reply) => reply,
            None => rx.await,
        };
        let reply = reply.map_err(|_| RpcError::Shutdown)??;
        // (`Rpc::handle` removed the call before it sent the reply.)
        pending.armed = false;
        match reply.kind() {
            Some(Kind::ReplyOk) => Ok(Ok(reply.body())),
            Some(Kind::ReplyErr) if reply.error() == APPLICATION_ERROR => Ok(Err(reply.body())),
            Some(Kind::ReplyErr) => Err(RpcError::Remote(RemoteError {
                kind: RemoteErrorKind::from_code(reply.error()),
                detail: reply.detail().to_owned(),
            })),
            _ => Err(RpcError::Unexpected("a reply of an unknown kind")),
        }
    }

    /// Sends a one-way `method` with an encoded argument message; returns once it is
    /// queued. `ttl` overrides the client's signal TTL: a signal that cannot be delivered
    /// within it is dropped and reported by messaging as [`crate::Event::Dropped`].
    /// `persistent` (or [`with_persistent_signals`](Self::with_persistent_signals)) sends it
    /// as a persistent message: committed to this side's durable store before this returns.
    ///
    /// # Errors
    /// The signal could not be queued.
    pub async fn signal(
        &self,
        method: &str,
        body: Bytes,
        ttl: Option<Duration>,
        persistent: bool,
    ) -> Result<(), RpcError> {
        let data =
            Envelope::request_data(Kind::Signal, self.next_id(), &self.object, method, &body, 0);
        drop(body);
        self.send_signal(data, ttl, persistent).await
    }

    /// The message data of a signal with the arguments as a message, encoded straight
    /// into the signal's envelope (generated clients send it with [`Client::send_signal`]).
    pub(super) fn signal_data<M: prost::Message>(&self, method: &str, args: &M) -> Bytes {
        Envelope::request_data_with(Kind::Signal, self.next_id(), &self.object, method, args, 0)
    }

    /// Queues signal `data`.
    pub(super) async fn send_signal(
        &self,
        data: Bytes,
        ttl: Option<Duration>,
        persistent: bool,
    ) -> Result<(), RpcError> {
        let mut message = Message::new(data);
        if let Some(ttl) = ttl.or(self.signal_ttl) {
            message = message.ttl(ttl);
        }
        if persistent || self.persistent_signals {
            message = message.persistent();
        }
        self.inner.messaging.send(&self.peer, message).await?;
        Ok(())
    }
}
