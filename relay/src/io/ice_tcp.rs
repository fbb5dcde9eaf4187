//! ICE-TCP (RFC 6544): each core also listens on TCP at its UDP port, as a passive candidate,
//! for participants whose network lets no UDP through.
//!
//! A TCP connection carries the same packets as the UDP socket (STUN, DTLS, SRTP, SRTCP), each
//! preceded by its length (RFC 4571). The worker never learns which transport a packet came
//! by: it sees the connection's remote address as the packet's source, as for a datagram, and
//! the shell sends whatever the worker addresses to a connection's remote address down that
//! connection. The connection is the participant's path only once an ICE check on it
//! succeeds, as for any address.
//!
//! TCP brings head-of-line blocking: a lost segment holds back everything behind it, so media
//! over TCP freezes where UDP would lose a packet. It is the fallback for blocked networks, and
//! Chromium prefers UDP pairs whenever they work (the candidate's priority is lower too).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_uring::net::{TcpListener, TcpStream};

use super::core::Shell;
use crate::sfu::worker::Transmit;

/// Longest packet one frame can carry (the length prefix is 16 bits).
pub const MAX_FRAME: usize = u16::MAX as usize;

/// Connections a core keeps open at once; a connection beyond it is closed as soon as it is
/// accepted (counted), so a flood of connections costs a bounded amount of memory.
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// Connections a core keeps open from one address: a participant needs one, a few behind one
/// NAT a few; one host cannot take all of [`MAX_CONNECTIONS`].
pub(crate) const MAX_PER_ADDRESS: usize = 32;

/// A connection that brings nothing for this long is closed: as long as the ICE consent
/// timeout, so a live participant (which sends consent checks every few seconds) never is.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A new connection must bring a whole packet within this: a browser sends its first ICE
/// check at once, and one that sends nothing (or a length it never fills) only holds a slot.
pub(crate) const FIRST_PACKET_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest packet taken from a connection: what the UDP socket takes too. A longer one
/// would be forwarded to UDP subscribers as datagrams larger than any path carries.
pub(crate) const MAX_PACKET: usize = 4096;

/// Frames waiting for a connection's writer; past it, packets to that participant are dropped
/// (counted) rather than queued without bound, as the kernel does for a full UDP socket.
const SEND_QUEUE: usize = 1024;

/// Bytes read from a connection at once.
const READ_SIZE: usize = 16 * 1024;

/// Frames the writer gathers into one `write` when several are waiting.
const WRITE_COALESCE: usize = 64 * 1024;

/// Splits the byte stream of one ICE-TCP connection into packets (RFC 4571: a 16-bit
/// big-endian length, then that many bytes).
///
/// Sans-IO: [`Deframer::handle_bytes`] takes what the socket read, [`Deframer::poll_frame`]
/// gives the packets that are complete. It holds at most one incomplete frame (under 64 KiB)
/// besides what the last read brought.
#[derive(Debug, Default)]
pub struct Deframer {
    buffer: Vec<u8>,
    /// Where the next frame's length begins in `buffer`.
    start: usize,
}

impl Deframer {
    /// Append bytes read from the stream.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete packet, if there is one. Empty frames (legal, meaningless) are
    /// skipped.
    pub fn poll_frame(&mut self) -> Option<&[u8]> {
        loop {
            let rest = &self.buffer[self.start..];
            let header: [u8; 2] = rest.get(..2)?.try_into().ok()?;
            let len = usize::from(u16::from_be_bytes(header));
            if rest.len() < 2 + len {
                return None;
            }
            let from = self.start + 2;
            self.start = from + len;
            if len > 0 {
                return Some(&self.buffer[from..from + len]);
            }
        }
    }

    /// Bytes held that do not make a complete frame yet.
    pub fn pending(&self) -> usize {
        self.buffer.len() - self.start
    }
}

/// Append `packet` to `out` as one frame; false (and nothing appended) if it is too long.
pub fn frame(packet: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(len) = u16::try_from(packet.len()) else {
        return false;
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    true
}

/// The open connections of one core, by remote address.
#[derive(Default)]
pub(crate) struct Connections {
    queues: RefCell<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
}

impl Connections {
    /// Take the transmits addressed to a connection out of `sends` (keeping the others in
    /// order), queue them as frames for its writer, and return their buffers through
    /// `recycle`. Returns how many were dropped on a full queue or a packet too long.
    pub(crate) fn divert(
        &self,
        sends: &mut Vec<Transmit>,
        mut recycle: impl FnMut(Vec<u8>),
    ) -> u64 {
        let queues = self.queues.borrow();
        if queues.is_empty() {
            return 0;
        }
        let mut dropped = 0;
        sends.retain_mut(|t| {
            let Some(queue) = queues.get(&t.destination) else {
                return true;
            };
            let mut framed = Vec::with_capacity(t.contents.len() + 2);
            if !frame(&t.contents, &mut framed) || queue.try_send(framed).is_err() {
                dropped += 1;
            }
            recycle(std::mem::take(&mut t.contents));
            false
        });
        dropped
    }

    pub(crate) fn len(&self) -> usize {
        self.queues.borrow().len()
    }
}

/// Accept connections until the core stops.
pub(super) async fn accept_loop(shell: Rc<Shell>, listener: TcpListener) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or memory: wait a moment rather than spin.
                tracing::debug!("ICE-TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let connections = &shell.tcp;
        let from_address = connections
            .queues
            .borrow()
            .keys()
            .filter(|a| a.ip() == remote.ip())
            .count();
        if connections.len() >= MAX_CONNECTIONS
            || from_address >= MAX_PER_ADDRESS
            || connections.queues.borrow().contains_key(&remote)
        {
            shell
                .worker
                .borrow_mut()
                .ice_tcp_stats()
                .connections_refused += 1;
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (queue, frames) = mpsc::channel(SEND_QUEUE);
        connections.queues.borrow_mut().insert(remote, queue);
        {
            let mut worker = shell.worker.borrow_mut();
            let stats = worker.ice_tcp_stats();
            stats.connections_accepted += 1;
            stats.connections_open += 1;
        }
        tokio_uring::spawn(serve(shell.clone(), Rc::new(stream), remote, frames));
    }
}

/// One connection: read frames into the worker until the peer closes, errs or goes quiet,
/// while a writer beside it sends what the worker addresses to it.
async fn serve(
    shell: Rc<Shell>,
    stream: Rc<TcpStream>,
    remote: SocketAddr,
    frames: mpsc::Receiver<Vec<u8>>,
) {
    let writer = tokio_uring::spawn(write_loop(stream.clone(), frames));
    let mut deframer = Deframer::default();
    let mut buf = vec![0u8; READ_SIZE];
    let mut waiting = Vec::new();
    let mut first = true;
    loop {
        let wait = if first {
            FIRST_PACKET_TIMEOUT
        } else {
            IDLE_TIMEOUT
        };
        let read = tokio::time::timeout(wait, stream.read(buf)).await;
        let Ok((result, b)) = read else {
            break;
        };
        buf = b;
        let n = match result {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        deframer.handle_bytes(&buf[..n]);
        let now = Instant::now();
        let (mut frames, mut too_long) = (0, 0);
        while let Some(packet) = deframer.poll_frame() {
            if packet.len() > MAX_PACKET {
                too_long += 1;
                continue;
            }
            // No kernel receive stamp on a stream: its delay is not measured.
            shell.receive(now, None, remote, packet, &mut waiting);
            frames += 1;
        }
        // Until a whole packet came, bytes alone do not keep the connection.
        if frames > 0 {
            first = false;
        }
        {
            let mut worker = shell.worker.borrow_mut();
            let stats = worker.ice_tcp_stats();
            stats.frames_in += frames;
            stats.frames_too_long += too_long;
        }
        waiting.clear();
        shell.flush().await;
    }
    shell.tcp.queues.borrow_mut().remove(&remote);
    writer.abort();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    shell.worker.borrow_mut().ice_tcp_stats().connections_open -= 1;
}

/// Send queued frames, several at once when several wait, until the queue closes or the
/// connection fails.
async fn write_loop(stream: Rc<TcpStream>, mut frames: mpsc::Receiver<Vec<u8>>) {
    while let Some(mut first) = frames.recv().await {
        while first.len() < WRITE_COALESCE {
            match frames.try_recv() {
                Ok(more) => first.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let (result, _) = stream.write_all(first).await;
        if result.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(packets: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            assert!(frame(p, &mut out));
        }
        out
    }

    fn drain(d: &mut Deframer) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| d.poll_frame().map(<[u8]>::to_vec)).collect()
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let packets: [&[u8]; 3] = [b"stun binding", &[0x80; 1200], b"x"];
        let stream = framed(&packets);
        for cut in 0..stream.len() {
            let mut d = Deframer::default();
            d.handle_bytes(&stream[..cut]);
            let mut got = drain(&mut d);
            d.handle_bytes(&stream[cut..]);
            got.extend(drain(&mut d));
            assert_eq!(got, packets.map(<[u8]>::to_vec), "cut at {cut}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn a_byte_at_a_time_and_empty_frames() {
        let stream = framed(&[b"", b"ab", b"", b"cde"]);
        let mut d = Deframer::default();
        let mut got = Vec::new();
        for b in &stream {
            d.handle_bytes(std::slice::from_ref(b));
            got.extend(drain(&mut d));
        }
        assert_eq!(got, [b"ab".to_vec(), b"cde".to_vec()]);
    }

    #[test]
    fn the_largest_frame_fits_and_a_longer_packet_is_refused() {
        let mut out = Vec::new();
        assert!(!frame(&vec![0; MAX_FRAME + 1], &mut out));
        assert!(out.is_empty());
        assert!(frame(&vec![7; MAX_FRAME], &mut out));
        assert_eq!(&out[..2], &[0xff, 0xff]);
        let mut d = Deframer::default();
        d.handle_bytes(&out[..out.len() - 1]);
        assert!(d.poll_frame().is_none());
        assert_eq!(d.pending(), MAX_FRAME + 1);
        d.handle_bytes(&out[out.len() - 1..]);
        assert_eq!(d.poll_frame().map(<[u8]>::len), Some(MAX_FRAME));
    }

    #[test]
    fn only_transmits_to_a_connection_are_diverted() {
        let tcp: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let udp: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let connections = Connections::default();
        let (queue, mut frames) = mpsc::channel(2);
        connections.queues.borrow_mut().insert(tcp, queue);
        let t = |destination, byte| Transmit {
            destination,
            contents: vec![byte; 3],
        };
        let mut sends = vec![t(udp, 1), t(tcp, 2), t(udp, 3), t(tcp, 4), t(tcp, 5)];
        let mut recycled = 0;
        let dropped = connections.divert(&mut sends, |_| recycled += 1);
        // Two fit the queue, the third is dropped; every buffer is returned.
        assert_eq!(dropped, 1);
        assert_eq!(recycled, 3);
        let left: Vec<u8> = sends.iter().map(|t| t.contents[0]).collect();
        assert_eq!(left, [1, 3]);
        assert_eq!(frames.try_recv().unwrap(), [0, 3, 2, 2, 2]);
        assert_eq!(frames.try_recv().unwrap(), [0, 3, 4, 4, 4]);
    }
}
