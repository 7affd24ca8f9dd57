//! An agent's connection, served the way pingora's own listeners would serve it, minus the
//! two costs that showed up in the benchmark (bench/README.md, issue 16):
//!
//! * **Write coalescing.** `l4::Stream::from(TcpStream)` has no write buffer (only pingora's
//!   own listeners give it one, through a crate-private setter), so the response header and
//!   a small body went out as two `send`s, each waking the agent's reader. [`AgentStream`]
//!   buffers up to [`WRITE_BUFFER`] bytes; pingora flushes where real-time delivery needs it
//!   (after a header without `Content-Length`, after each chunk of a chunked or
//!   close-delimited body, at the end of a body), so streams such as SSE are not delayed.
//! * **Held flushes for small scrubbed bodies.** A scrubbed body changes length, so the
//!   sidecar sends it chunked, and pingora then flushes the header, each chunk and the last
//!   chunk apart: three wake-ups for a 64-byte answer. When the upstream declared a small
//!   length ([`HOLD_MAX_BODY`]), the sidecar calls [`hold_flushes`]: the response is not
//!   real-time (pingora's own rule for a declared length), so its flushes wait until the last
//!   chunk is written (or, failing that, until [`serve`] gets the connection back) and it goes
//!   out in one piece. A full buffer is still sent at once.
//! * **Idle memory.** pingora's keep-alive loop (`ServerApp::process_new`) waits for the next
//!   request inside `process_new_http`, whose boxed future is ~13 KiB for the floor and more
//!   for the sidecar, held by every idle connection. [`serve`] runs the same loop but waits for
//!   the next request's first byte itself, holding only the socket, and hands the connection
//!   to pingora once there is something to read.
//!
//! HTTP/1.1 only (the sidecar does not offer h2c). Pipelining stays off, as pingora defaults:
//! pipelined bytes make pingora close the connection after the response, so a waiting
//! connection never has a request buffered out of sight of the socket.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// How long a kept-alive connection may sit idle between requests (pingora's default).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Bytes of response coalesced before a `send`; larger writes go straight to the socket.
pub const WRITE_BUFFER: usize = 8 * 1024;

/// The largest declared body whose response [`hold_flushes`] is for: with its header and
/// chunk framing it fits [`WRITE_BUFFER`].
pub const HOLD_MAX_BODY: u64 = 4 * 1024;

/// Write-buffer capacity an idle connection keeps: enough for a typical small answer, so the
/// next one allocates nothing; a buffer grown past it (a larger answer) is freed while idle.
const IDLE_BUFFER: usize = 1024;

/// How a chunked body ends when it has no trailers.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Let the response now being written to `stream` go out in one piece, at its last chunk or
/// when the exchange ends (see the module docs). Does nothing on a stream that is not an
/// [`AgentStream`].
pub fn hold_flushes(stream: &pingora::protocols::Stream) {
    if let Some(ours) = stream.as_any().downcast_ref::<AgentStream>() {
        ours.hold.store(true, Ordering::Relaxed);
    }
}

/// Serve one agent connection until it closes, idles out, or the service shuts down.
pub async fn serve<A>(app: &Arc<A>, tcp: TcpStream, shutdown: &ShutdownWatch)
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let _ = tcp.set_nodelay(true);
    let mut stream = AgentStream::new(tcp);
    let mut persistent: Option<HttpPersistentSettings> = None;
    let mut stopping = shutdown.clone();
    loop {
        if !stream.next_request(&mut stopping).await {
            return;
        }
        let mut session = ServerSession::new_http1(Box::new(stream));
        match persistent.take() {
            Some(settings) => settings.apply_to_session(&mut session),
            None => session.set_keepalive(Some(KEEPALIVE_IDLE.as_secs())),
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        let Some(reused) = app.process_new_http(session, shutdown).await else {
            return;
        };
        let (io, settings) = reused.consume();
        // Always ours: the session was built over an `AgentStream` above.
        let Ok(ours) = io.into_any().downcast::<AgentStream>() else {
            return;
        };
        stream = *ours;
        if stream.release().await.is_err() {
            return;
        }
        persistent = settings;
    }
}

/// A plaintext agent connection with a small write buffer (see the module docs).
#[derive(Debug)]
pub struct AgentStream {
    tcp: TcpStream,
    /// Bytes written but not yet sent; allocated on first use, kept while idle up to
    /// [`IDLE_BUFFER`].
    pending: Vec<u8>,
    /// Set by [`hold_flushes`] for one response: flushes wait for its last chunk or for
    /// [`AgentStream::release`].
    hold: AtomicBool,
    established: SystemTime,
    socket: Option<Arc<SocketDigest>>,
}

impl AgentStream {
    pub fn new(tcp: TcpStream) -> AgentStream {
        let socket = Some(Arc::new(SocketDigest::from_raw_fd(tcp.as_raw_fd())));
        AgentStream {
            tcp,
            pending: Vec::new(),
            hold: AtomicBool::new(false),
            established: SystemTime::now(),
            socket,
        }
    }

    /// Wait, holding nothing but the socket, until the agent sends something (`true`), or
    /// the connection idles out or the service shuts down (`false`). A closed connection is
    /// readable too: pingora then reads its end and returns.
    async fn next_request(&mut self, shutdown: &mut ShutdownWatch) -> bool {
        if *shutdown.borrow() {
            return false;
        }
        if self.pending.capacity() > IDLE_BUFFER {
            self.pending = Vec::new();
        }
        tokio::select! {
            ready = self.tcp.readable() => ready.is_ok(),
            () = tokio::time::sleep(KEEPALIVE_IDLE) => false,
            _ = shutdown.changed() => false,
        }
    }

    /// End a held response: send what waited.
    async fn release(&mut self) -> io::Result<()> {
        self.hold.store(false, Ordering::Relaxed);
        self.flush().await
    }

    /// Send what is pending.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.pending.len() {
                break Ok(());
            }
            match Pin::new(&mut self.tcp).poll_write(cx, &self.pending[sent..]) {
                Poll::Ready(Ok(0)) => break Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Pending => {
                    self.pending.drain(..sent);
                    return Poll::Pending;
                }
            }
        };
        self.pending.drain(..sent);
        Poll::Ready(result)
    }
}

impl AsyncRead for AgentStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() + buf.len() > WRITE_BUFFER {
            ready!(self.poll_send_pending(cx))?;
        }
        if buf.len() >= WRITE_BUFFER {
            return Pin::new(&mut self.tcp).poll_write(cx, buf);
        }
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.pending.len() + total > WRITE_BUFFER {
            ready!(self.poll_send_pending(cx))?;
        }
        if total >= WRITE_BUFFER {
            return Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            self.pending.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Held, but for the flush after the last chunk (`0\r\n\r\n`): the response is whole
        // and waiting for `serve` would only add pingora's bookkeeping to its latency. (A chunk
        // whose data ends like that is sent a little early, which is harmless; one with
        // trailers waits for `serve`.)
        if self.hold.load(Ordering::Relaxed) && !self.pending.ends_with(LAST_CHUNK) {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for AgentStream {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(self).await {
            tracing::debug!(error = %e, "shutting down an agent connection");
        }
    }
}

impl UniqueID for AgentStream {
    fn id(&self) -> UniqueIDType {
        self.tcp.as_raw_fd()
    }
}

/// Plaintext: no TLS digest.
impl Ssl for AgentStream {}

/// Peeking is not offered (pingora peeks only to detect h2c, which is off).
#[async_trait]
impl Peek for AgentStream {}

impl GetTimingDigest for AgentStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            establishment_duration: None,
            offload_wait_duration: None,
        })]
    }
}

impl GetProxyDigest for AgentStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for AgentStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.socket.clone()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.socket = Some(Arc::new(socket_digest));
    }
}

/// pingora drops a stream it will not reuse, mostly after shutting it down (which sends what
/// is pending) but not always (bytes past the request's end, say): a held response still
/// goes out, best effort and without waiting, rather than being lost.
impl Drop for AgentStream {
    fn drop(&mut self) {
        let mut rest = &self.pending[..];
        while !rest.is_empty() {
            match self.tcp.try_write(rest) {
                Ok(n) if n > 0 => rest = &rest[n..],
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests;
