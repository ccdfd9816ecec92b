//! A publishing connection's socket, read on the ingest tick.
//!
//! An encoder sends each audio and video message as it is made: about 80 small writes a
//! second per stream. Read as they come, every one wakes the arbiter's thread (a context
//! switch, an `epoll_wait`, a runtime turn) to read 2 to 4 KiB; with 30 streams that was
//! most of Kawa's CPU. Once a publish is accepted, the socket leaves the reactor (no
//! wake-ups from it) and is read at a tick every [`TICK`], on a grid shared by every
//! connection, so one wake-up of the thread reads all its publishers. Like SRS's merged
//! read, bounded to [`TICK`] of added latency (a fifth of a part). Until then the socket
//! stays in the reactor: a peer that has shown no key costs nothing while it is quiet.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

/// How often a publisher's socket is read.
pub const TICK: Duration = Duration::from_millis(40);
/// Most bytes read from one socket at one tick (a publisher at 200 Mbit/s), so one
/// connection cannot hold the thread.
pub const MAX_READ_PER_TICK: usize = 1 << 20;
/// Bytes waiting for a peer that does not read (a publisher gets only acknowledgements
/// and command results back).
const MAX_PENDING_OUT: usize = 256 * 1024;

/// The grid's origin: every thread's ticks fall on the same instants.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The time from `now` to the next tick of the grid.
pub fn until_next_tick(now: Instant) -> Duration {
    let since = now.saturating_duration_since(*EPOCH).as_nanos();
    let tick = TICK.as_nanos();
    let next = (since / tick + 1) * tick;
    Duration::from_nanos(u64::try_from(next - since).unwrap_or(u64::MAX))
}

/// What one read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Bytes(usize),
    /// Nothing more for now.
    Nothing,
    /// The peer closed the connection.
    Closed,
}

pub struct TickedSocket {
    stream: TcpStream,
    pending: BytesMut,
}

impl TickedSocket {
    /// `stream` must be in non-blocking mode (as `tokio::net::TcpStream::into_std` leaves
    /// it).
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            pending: BytesMut::new(),
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            return match self.stream.read(buf) {
                Ok(0) => Ok(Received::Closed),
                Ok(n) => Ok(Received::Bytes(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Received::Nothing),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Queues `bytes` and writes what the socket takes now; the rest goes at the next
    /// [`Self::flush`]. `Err` when the peer stopped reading.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.pending.len() + bytes.len() > MAX_PENDING_OUT {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the peer is not reading",
            ));
        }
        self.pending.extend_from_slice(bytes);
        self.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pending.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_one_grid() {
        // The grid starts at its first use.
        until_next_tick(Instant::now());
        let now = Instant::now();
        let a = now + until_next_tick(now);
        let later = now + Duration::from_millis(7);
        let b = later + until_next_tick(later);
        // Both land on a grid instant no further than a tick away.
        assert!(until_next_tick(now) <= TICK && until_next_tick(later) <= TICK);
        let offset = |t: Instant| (t - *EPOCH).as_nanos() % TICK.as_nanos();
        assert_eq!(offset(a), 0);
        assert_eq!(offset(b), 0);
    }

    #[test]
    fn reads_what_arrived_and_sees_the_end() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let mut socket = TickedSocket::new(stream);
        let mut buf = [0u8; 16];
        assert_eq!(socket.read(&mut buf).unwrap(), Received::Nothing);
        socket.send(b"ack").unwrap();
        let mut back = [0u8; 3];
        peer.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ack");
        // Loopback delivers at once, but give the kernel a moment.
        let mut next = |buf: &mut [u8]| {
            for _ in 0..100 {
                let got = socket.read(buf).unwrap();
                if got != Received::Nothing {
                    return got;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Received::Nothing
        };
        peer.write_all(b"hello").unwrap();
        assert_eq!(next(&mut buf), Received::Bytes(5));
        assert_eq!(&buf[..5], b"hello");
        drop(peer);
        assert_eq!(next(&mut buf), Received::Closed);
    }
}
