//! The per-call handler path as a [`tower::Service`], so that `tower::ServiceBuilder`
//! layers (timeout, concurrency limit, load shed, ...) can wrap a served object.

use std::any::Any;
use std::cell::RefCell;
use std::error::Error as StdError;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tower::BoxError;

use super::error::RemoteErrorKind;
use super::server::{DispatchError, Handled, HandlerFuture, Serve};

/// One call or signal as a served object's [`tower::Service`] sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RpcRequest {
    /// The calling peer.
    pub peer: Arc<str>,
    /// The object name the call was addressed to.
    pub object: String,
    /// The method name.
    pub method: String,
    /// The encoded argument message.
    pub body: Bytes,
    /// How long the caller waits (`None`: no deadline given, or a signal).
    pub deadline: Option<Duration>,
    /// Whether it is a one-way signal (its reply is not sent).
    pub signal: bool,
}

/// The future of an [`ObjectService`] call.
pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<Handled, BoxError>> + Send + 'static>>;

/// The innermost service of a served object: decodes the arguments with the object's
/// [`Serve`] adaptor and runs the handler in a task of its own, so that a panic ends that
/// task only and comes back as a [`HandlerPanic`] error. Dropping the future (a timeout
/// layer giving up) aborts the handler.
#[derive(Clone)]
pub struct ObjectService {
    server: Arc<dyn Serve>,
}

impl std::fmt::Debug for ObjectService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectService").finish_non_exhaustive()
    }
}

impl ObjectService {
    /// The service for a generated `<Trait>Server` (or any [`Serve`]).
    pub fn new(server: impl Serve) -> Self {
        ObjectService {
            server: Arc::new(server),
        }
    }
}

impl tower::Service<RpcRequest> for ObjectService {
    type Response = Handled;
    type Error = BoxError;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RpcRequest) -> ServiceFuture {
        Box::pin(self.run(&request.method, request.body))
    }
}

impl ObjectService {
    /// Runs `method` as [`tower::Service::call`] does, without boxing the future (the
    /// direct path of an object served without layers).
    pub(super) fn run(
        &self,
        method: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<Handled, BoxError>> + Send + 'static + use<> {
        let started = self.start(method, body);
        async move { started?.await }
    }

    /// Starts `method`: decodes the arguments and returns the handler's future, which
    /// the caller polls (in the connection's task first, see `server::incoming`).
    ///
    /// The handler runs inside that future, not in a task of its own: a second task per
    /// call cost a spawn, a wake-up and a join. Dropping the future (a timeout layer, a
    /// shutdown) drops the handler with it. Catching a panic there, on the thread where
    /// it happened, lets the panic's location (see `capture_panic_locations`) come with
    /// it.
    pub(super) fn start(&self, method: &str, body: Bytes) -> Result<Started, BoxError> {
        Ok(Started(CatchUnwind(self.server.call(method, body)?)))
    }
}

/// A handler panicked (or was cancelled); the text is the panic message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HandlerPanic(pub String);

thread_local! {
    /// Where the last panic on this thread happened, when the hook of
    /// [`capture_panic_locations`] is installed.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Makes handler panics that come back to callers say where they happened
/// (`panicked at src/calc.rs:12:9: ...`). It installs a process-wide panic hook that
/// records the location and then runs the previous hook, so it is the application's
/// choice: a library does not install hooks by itself. Calling it again does nothing.
pub fn capture_panic_locations() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(location) = info.location() {
                PANIC_LOCATION.with(|l| *l.borrow_mut() = Some(location.to_string()));
            }
            previous(info);
        }));
    });
}

/// A started handler (`ObjectService::start`): its panic comes out as a [`HandlerPanic`]
/// error.
pub(super) struct Started(CatchUnwind);

impl Future for Started {
    type Output = Result<Handled, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|done| done.map_err(|panic| Box::new(HandlerPanic(panic)) as BoxError))
    }
}

/// Polls a handler, turning a panic into its text.
struct CatchUnwind(HandlerFuture);

impl Future for CatchUnwind {
    type Output = Result<Handled, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The handler is not polled again after a panic (this future is then done), so
        // whatever state the panic left behind is never observed.
        let future = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(handled)) => Poll::Ready(Ok(handled)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_text(payload.as_ref()))),
        }
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
        *s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "a panic without a message"
    };
    match PANIC_LOCATION.with(|l| l.borrow_mut().take()) {
        Some(location) => format!("panicked at {location}: {message}"),
        None => format!("panicked: {message}"),
    }
}

/// An error and its `source()` chain as text, one cause a line: what a caller sees as
/// the remote traceback.
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str("\ncaused by: ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The remote error kind a service error is sent back as, and its details.
pub(super) fn classify(error: &BoxError) -> (RemoteErrorKind, String) {
    let kind = if let Some(dispatch) = error.downcast_ref::<DispatchError>() {
        match dispatch {
            DispatchError::UnknownMethod => RemoteErrorKind::UnknownMethod,
            DispatchError::Decode(_) => RemoteErrorKind::Decode,
        }
    } else if error.is::<HandlerPanic>() {
        RemoteErrorKind::Panic
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        RemoteErrorKind::Busy
    } else if error.is::<tower::timeout::error::Elapsed>() {
        RemoteErrorKind::Deadline
    } else {
        RemoteErrorKind::Failed
    };
    (kind, error_chain(error.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_lists_every_cause() {
        let error: BoxError = Box::new(Outer(std::io::Error::other("inner")));
        let (kind, text) = classify(&error);
        assert_eq!(kind, RemoteErrorKind::Failed);
        assert_eq!(text, "outer\ncaused by: inner");
        let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        assert_eq!(classify(&shed).0, RemoteErrorKind::Busy);
    }
}
