//! A read-ahead buffer under TLS that exists only while data is streaming in.
//!
//! rustls pulls ciphertext from the socket in reads of at most about one record (16 KiB),
//! so a TLS receiver makes one `recv` system call per record where a plain link makes one
//! per 64 KiB or more: at high rates the system calls and their wake-ups take a large share
//! of the receiving thread (68 `recvfrom` per MiB against about 1 for plain TCP).
//! [`ReadAhead`] reads up to 64 KiB at a time and serves rustls's small reads from memory.
//!
//! A permanent 64 KiB buffer would cost every idle connection 64 KiB. The buffer is
//! therefore allocated on the first read and released as soon as the socket has nothing
//! more to give while the buffer is empty: an idle connection holds no buffer, and a
//! streaming one keeps reusing the same allocation.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

/// How much one read from the socket may take in.
const READ_AHEAD: usize = 64 * 1024;

/// Buffers reads of `R` in chunks of up to 64 KiB; see the module documentation.
#[derive(Debug)]
pub(crate) struct ReadAhead<R> {
    inner: R,
    /// Bytes read from `inner` and not yet handed out. Empty with no capacity while idle.
    buf: BytesMut,
}

impl<R> ReadAhead<R> {
    pub(crate) fn new(inner: R) -> Self {
        ReadAhead {
            inner,
            buf: BytesMut::new(),
        }
    }

    /// Hands out as much of the buffer as `out` takes.
    fn drain_into(&mut self, out: &mut ReadBuf<'_>) {
        let n = self.buf.len().min(out.remaining());
        if let Some(bytes) = self.buf.get(..n) {
            out.put_slice(bytes);
        }
        self.buf.advance(n);
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ReadAhead<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            this.drain_into(out);
            return Poll::Ready(Ok(()));
        }
        // A caller that offers at least as much room as the buffer gains nothing from it.
        if out.remaining() >= READ_AHEAD {
            this.buf = BytesMut::new();
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        if this.buf.capacity() < READ_AHEAD {
            // `advance` moved the start to the end of the last allocation: reserving on
            // an empty buffer reuses it from the start when it is the only owner.
            this.buf.reserve(READ_AHEAD);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf) {
            Poll::Pending => {
                // Nothing more to read and nothing buffered: the peer paused, so the
                // connection gives its buffer back until data flows again.
                this.buf = BytesMut::new();
                Poll::Pending
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            // Zero bytes read (the end of the stream) leave `out` empty, which tells the
            // caller the same.
            Poll::Ready(Ok(_)) => {
                this.drain_into(out);
                Poll::Ready(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_get_every_byte_in_order_and_the_end() -> io::Result<()> {
        let (mut tx, rx) = tokio::io::duplex(256 * 1024);
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                tx.write_all(&sent).await?;
                tx.shutdown().await
            })
        };
        let mut reader = ReadAhead::new(rx);
        let mut got = Vec::new();
        let mut piece = [0u8; 4096];
        loop {
            let n = reader.read(&mut piece).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(piece.get(..n).unwrap_or_default());
        }
        writer.await??;
        assert_eq!(got, sent);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_holds_no_buffer() -> io::Result<()> {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = ReadAhead::new(rx);
        tx.write_all(b"hello").await?;
        let mut piece = [0u8; 16];
        let n = reader.read(&mut piece).await?;
        assert_eq!(piece.get(..n), Some(&b"hello"[..]));
        // The next read finds nothing (paused time lets the timeout fire at once): the
        // buffer is released while it waits.
        let pending =
            tokio::time::timeout(std::time::Duration::from_secs(1), reader.read(&mut piece)).await;
        assert!(pending.is_err(), "nothing was sent, so the read must wait");
        assert_eq!(reader.buf.capacity(), 0);
        Ok(())
    }
}
