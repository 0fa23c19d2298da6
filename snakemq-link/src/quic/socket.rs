//! The UDP socket of a QUIC listener, closable on demand.
//!
//! quinn's endpoint driver and every connection of an endpoint share one socket, and they
//! run in tasks of their own that outlive the listener: left to them, the port would be
//! freed only once the last connection has drained. [`ClosableUdpSocket::close`] drops the
//! file descriptor at once, so removing a listener frees its port before
//! [`Link::remove_listener`](crate::Link::remove_listener) returns, as with TCP. After
//! that the socket behaves like a link that lost everything: sends vanish and nothing
//! arrives, so quinn's closing connections drain quietly and its tasks end by themselves.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll, Waker, ready};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;

/// A tokio UDP socket for quinn that [`close`](Self::close) can shut for good.
pub(crate) struct ClosableUdpSocket {
    /// `None` once closed. Operations hold the read lock only for one non-blocking call,
    /// so `close` waits at most for that call and then really drops the descriptor.
    io: RwLock<Option<Arc<tokio::net::UdpSocket>>>,
    state: UdpSocketState,
    local_addr: SocketAddr,
    /// The endpoint driver's waker, woken on close so that it looks again.
    recv_waker: Mutex<Option<Waker>>,
}

impl ClosableUdpSocket {
    /// Binds the first of `addrs` that can be bound.
    pub(crate) fn bind(addrs: &[SocketAddr]) -> io::Result<Self> {
        let socket = std::net::UdpSocket::bind(addrs)?;
        socket.set_nonblocking(true)?;
        let local_addr = socket.local_addr()?;
        let state = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        Ok(ClosableUdpSocket {
            io: RwLock::new(Some(Arc::new(io))),
            state,
            local_addr,
            recv_waker: Mutex::new(None),
        })
    }

    /// Closes the descriptor now (the port is free when this returns, unless a sender is
    /// parked on a full send buffer: then when that buffer drains).
    pub(crate) fn close(&self) {
        let io = self
            .io
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(io);
        let waker = self
            .recv_waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn io(&self) -> Option<Arc<tokio::net::UdpSocket>> {
        self.io
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for ClosableUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClosableUdpSocket")
            .field("local_addr", &self.local_addr)
            .field("open", &self.io().is_some())
            .finish()
    }
}

impl AsyncUdpSocket for ClosableUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller {
            socket: self,
            writable: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let io = self.io.read().unwrap_or_else(PoisonError::into_inner);
        match io.as_ref() {
            Some(io) => io.try_io(Interest::WRITABLE, || {
                self.state.send((&**io).into(), transmit)
            }),
            // Closed: the datagram is lost, as on a network that went away.
            None => Ok(()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        {
            let mut waker = self
                .recv_waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        let io = self.io.read().unwrap_or_else(PoisonError::into_inner);
        // Closed: nothing ever arrives again (an error would end quinn's driver with an
        // error log; pending lets it end quietly once its connections have drained).
        let Some(io) = io.as_ref() else {
            return Poll::Pending;
        };
        loop {
            ready!(io.poll_recv_ready(cx))?;
            if let Ok(received) = io.try_io(Interest::READABLE, || {
                self.state.recv((&**io).into(), bufs, meta)
            }) {
                return Poll::Ready(Ok(received));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

type Writable = Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>;

/// Waits for the socket to become writable; one per quinn task, each with its own waker.
struct Poller {
    socket: Arc<ClosableUdpSocket>,
    /// The pending wait; it holds the socket open while it lasts (see `close`).
    writable: Option<Writable>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller").finish_non_exhaustive()
    }
}

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.writable.is_none() {
            let Some(io) = this.socket.io() else {
                // Closed: sends are dropped, so "writable" is always true.
                return Poll::Ready(Ok(()));
            };
            this.writable = Some(Box::pin(async move { io.writable().await }));
        }
        let Some(writable) = this.writable.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let result = ready!(writable.as_mut().poll(cx));
        this.writable = None;
        Poll::Ready(result)
    }
}
