//! One outbound connection: plain TCP or TLS over a [`Socket`].

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::ring::{Registration, SocketRing};

/// A connected TCP socket: glommio's stream owns it (connect, writes, close); reads wait
/// on the shard's [`SocketRing`] when there is one (see `ring.rs` for why), else
/// through glommio.
pub(crate) struct Socket {
    // Declared first: dropped (its poll cancelled) before the stream closes the socket.
    registration: Option<Registration>,
    tcp: TcpStream,
    fd: RawFd,
}

impl Socket {
    /// Wraps a connected stream, registering it with `ring` if given; a registration
    /// that fails leaves the socket waiting through glommio.
    pub(crate) fn new(tcp: TcpStream, ring: Option<&Rc<SocketRing>>) -> Socket {
        let fd = tcp.as_raw_fd();
        let registration = ring.and_then(|ring| match ring.register(fd) {
            Ok(registration) => Some(registration),
            Err(error) => {
                tracing::debug!(%error, "socket ring: registering a connection");
                None
            }
        });
        Socket {
            registration,
            tcp,
            fd,
        }
    }

    /// How an idle socket stands as far as the socket ring knows without a system call.
    fn idle_report(&self) -> IdleReport {
        let Some(registration) = self.registration.as_ref() else {
            return IdleReport::NoRing;
        };
        match registration.idle_report() {
            Some(true) => IdleReport::Known(Idleness::Closed),
            Some(false) => IdleReport::Known(Idleness::Quiet),
            None => IdleReport::Arrived,
        }
    }

    /// The socket, borrowed for as long as `self` is.
    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` is the socket of `self.tcp`, which `self` owns and which closes
        // it only on drop, so the descriptor is open for the whole borrow of `self`
        // (glommio's stream does not offer `AsFd` itself).
        #[allow(unsafe_code)]
        unsafe {
            BorrowedFd::borrow_raw(self.fd)
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(registration) = &this.registration else {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        };
        loop {
            // A read is tried only when the ring says there may be something to read: a
            // response is rarely there the moment its request is written, and each read
            // that would block was a system call for nothing (~2.4 per response before).
            match registration.poll_readable(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
            match rustix::net::recv(this.fd(), &mut *buf, rustix::net::RecvFlags::DONTWAIT) {
                Ok((n, _)) => {
                    // Less than asked for: the socket was drained by this read. (0 is the
                    // peer's close, which stays readable.)
                    if n > 0 && n < buf.len() {
                        registration.drained(false);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => registration.drained(true),
                Err(errno) => return Poll::Ready(Err(errno.into())),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_close(cx)
    }
}

/// The byte stream of a connection.
pub(crate) enum Stream {
    Plain(Socket),
    // Boxed: the rustls state is large and most connections in a test or a sink are
    // plain; keeps `Conn` small to move through the pool.
    Tls(Box<futures_rustls::client::TlsStream<Socket>>),
}

/// A pooled connection.
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    /// Requests completed on this connection (0 = fresh).
    pub(crate) requests: u64,
    /// Kept with the connection so its head buffer is reused.
    pub(crate) parser: herald_http::ResponseParser,
}

/// What the socket ring knows of an idle socket, without a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdleReport {
    /// The ring's reports tell how it stands.
    Known(Idleness),
    /// The ring saw something arrive (bytes or a close): only a peek tells which.
    Arrived,
    /// The socket is not on a ring.
    NoRing,
}

/// What a non-blocking peek says about an idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idleness {
    /// Nothing to read: still open as far as we can tell.
    Quiet,
    /// The peer closed (FIN) or the socket has an error.
    Closed,
    /// Bytes arrived although no request is outstanding.
    Unsolicited,
}

impl Conn {
    pub(crate) fn plain(stream: Socket, parser: herald_http::ResponseParser) -> Conn {
        Conn {
            stream: Stream::Plain(stream),
            requests: 0,
            parser,
        }
    }

    pub(crate) fn tls(
        stream: futures_rustls::client::TlsStream<Socket>,
        parser: herald_http::ResponseParser,
    ) -> Conn {
        Conn {
            stream: Stream::Tls(Box::new(stream)),
            requests: 0,
            parser,
        }
    }

    /// Whether an idle connection can carry another request.
    ///
    /// A receiver closes idle keep-alive connections on its own schedule; catching the
    /// FIN here avoids sending a request into a dead socket in the common case (the
    /// stale-connection retry in the client covers the race that remains). Bytes that
    /// arrived while no request was outstanding mean the connection can no longer be
    /// trusted to pair a response with its request: a receiver that answered twice would
    /// have its second answer read as the next request's, and every later one shifted by
    /// one. So such a connection is never reused, over TLS as well (a record there could
    /// be a late session ticket, but also application data; telling them apart would
    /// mean reading it, and a ticket lost costs one new connection).
    ///
    /// On the socket ring the ring's reports answer without a system call, unless it saw
    /// something arrive (then a peek tells bytes from a close): that is asked at every
    /// reuse. Off the ring only a peek (a system call) tells, made when `look` is set.
    /// Returns whether the connection can be used and whether a peek was made.
    pub(crate) fn reusable(&self, look: bool) -> (bool, bool) {
        let (idleness, peeked) = match self.plain_socket().idle_report() {
            IdleReport::Known(idleness) => (idleness, false),
            IdleReport::Arrived => (peek_idle(self.socket()), true),
            IdleReport::NoRing if look => (peek_idle(self.socket()), true),
            IdleReport::NoRing => (Idleness::Quiet, false),
        };
        (idleness == Idleness::Quiet, peeked)
    }

    /// Whether TLS holds bytes of the peer's that were read off the socket but not by
    /// us: plaintext decrypted past the end of the last read (a second answer that came
    /// in the same records as the first), or a `close_notify`. The socket's own checks
    /// ([`Conn::reusable`]) cannot see them.
    pub(crate) fn holds_unread(&self) -> bool {
        match &self.stream {
            Stream::Plain(_) => false,
            // rustls wants to read exactly when it holds no plaintext and has not been
            // told the peer closed.
            Stream::Tls(tls) => !tls.get_ref().1.wants_read(),
        }
    }

    /// The TCP socket under the connection.
    fn plain_socket(&self) -> &Socket {
        match &self.stream {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// The connection's socket, borrowed for as long as the connection is.
    fn socket(&self) -> BorrowedFd<'_> {
        self.plain_socket().fd()
    }
}

/// Peeks one byte without blocking and without taking it from the socket.
fn peek_idle(socket: BorrowedFd<'_>) -> Idleness {
    let mut byte = [0u8; 1];
    match rustix::net::recv(
        socket,
        &mut byte,
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    ) {
        Ok((0, _)) => Idleness::Closed,
        Ok(_) => Idleness::Unsolicited,
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Idleness::Quiet,
        Err(_) => Idleness::Closed,
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn peek_distinguishes_quiet_closed_and_unsolicited() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(peek_idle(client.as_fd()), Idleness::Quiet);
        server.write_all(b"x").unwrap();
        server.flush().unwrap();
        // Wait (bounded) for the byte to arrive on loopback.
        let mut seen = Idleness::Quiet;
        for _ in 0..1000 {
            seen = peek_idle(client.as_fd());
            if seen != Idleness::Quiet {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(seen, Idleness::Unsolicited);
        let (mut server2, client2) = {
            let c = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            (listener.accept().unwrap().0, c)
        };
        server2.flush().unwrap();
        drop(server2);
        let mut seen = Idleness::Quiet;
        for _ in 0..1000 {
            seen = peek_idle(client2.as_fd());
            if seen != Idleness::Quiet {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(seen, Idleness::Closed);
        drop(server);
    }
}
