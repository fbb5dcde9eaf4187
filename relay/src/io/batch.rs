//! Batched datagram I/O on a core's socket: `recvmmsg` to drain what queued up while the core
//! was busy, `sendmmsg` to hand a whole fan-out to the kernel in one system call.
//!
//! The core's runtime still waits for the first datagram through io_uring, so an idle core
//! sleeps in the ring; once awake it takes everything that is already queued without another
//! round trip through the ring. At load that amortises one wake-up over many packets. On
//! egress one `sendmmsg` replaces one io_uring operation (and one future) per copy.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders,
    SockaddrStorage,
};
use nix::sys::time::TimeSpec;

use crate::sfu::worker::Transmit;

/// Datagrams per system call. The kernel caps `sendmmsg` at 1024 (UIO_MAXIOV); 64 keeps the
/// headers in cache and is past the point where larger batches stop paying.
pub(crate) const BATCH: usize = 64;

/// Most datagrams one GSO send carries (UDP_MAX_SEGMENTS of older kernels; newer allow 128).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;

/// Most bytes one GSO send carries: one UDP datagram's worth.
pub(crate) const GSO_MAX_BYTES: usize = 65_000;

/// Most datagrams the GSO sends of one `sendmmsg` carry together (their segments' slices are
/// on the stack: 4 KiB).
pub(crate) const GSO_GROUP_SEGMENTS: usize = 256;

/// What happened to a batch handed to [`BatchSocket::send`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SendReport {
    /// Datagrams the kernel took.
    pub(crate) sent: usize,
    /// Datagrams refused for their own reason (unreachable destination, too large); skipped.
    pub(crate) failed: usize,
    /// Index of the first datagram not sent because the socket's send buffer is full; the
    /// caller waits for room and goes on from there.
    pub(crate) blocked_at: Option<usize>,
}

/// `recvmmsg`/`sendmmsg` on a non-blocking socket owned by the core's runtime.
pub(crate) struct BatchSocket {
    fd: RawFd,
    send_headers: MultiHeaders<SockaddrStorage>,
    /// As `send_headers`, with room in each for the segment size of a GSO send.
    gso_headers: MultiHeaders<SockaddrStorage>,
    recv_headers: MultiHeaders<SockaddrStorage>,
    recv_buffers: Vec<Vec<u8>>,
    /// Length, source and kernel receive time (`SO_TIMESTAMPNS`) of each datagram taken.
    received: [(usize, Option<SocketAddr>, Option<SystemTime>); BATCH],
    count: usize,
    addresses: Vec<Option<SockaddrStorage>>,
    /// Whether the socket stamps datagrams (see [`BatchSocket::expect_timestamps`]).
    stamped: bool,
}

impl BatchSocket {
    /// Wrap `fd`, which must stay open (and non-blocking) as long as this lives; the core's
    /// socket outlives its loop.
    pub(crate) fn new(fd: RawFd, recv_buffer: usize) -> Self {
        BatchSocket {
            fd,
            send_headers: MultiHeaders::preallocate(BATCH, None),
            gso_headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(u16))),
            recv_headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec))),
            recv_buffers: (0..BATCH).map(|_| vec![0u8; recv_buffer]).collect(),
            received: [(0, None, None); BATCH],
            count: 0,
            addresses: Vec::with_capacity(BATCH),
            stamped: false,
        }
    }

    /// Tell the receive side that the socket has `SO_TIMESTAMPNS` on
    /// ([`enable_receive_timestamps`]), so that every datagram should come with a stamp.
    pub(crate) fn expect_timestamps(&mut self) {
        self.stamped = true;
    }

    /// Send `transmits` in order, `BATCH` per system call, without ever blocking.
    pub(crate) fn send(&mut self, transmits: &[Transmit]) -> SendReport {
        let mut report = SendReport::default();
        let mut at = 0;
        while at < transmits.len() {
            let chunk = &transmits[at..transmits.len().min(at + BATCH)];
            self.addresses.clear();
            self.addresses.extend(
                chunk
                    .iter()
                    .map(|t| Some(SockaddrStorage::from(t.destination))),
            );
            // On the stack: no allocation per batch. Entries past the chunk are never read (the
            // call zips them with `addresses`).
            let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
                [IoSlice::new(
                    chunk.get(i).map_or(&[][..], |t| &t.contents[..]),
                )]
            });
            let result = sendmmsg(
                self.fd,
                &mut self.send_headers,
                &slices,
                &self.addresses,
                [],
                MsgFlags::MSG_DONTWAIT,
            )
            .map(|r| r.count());
            match result {
                Ok(n) => {
                    report.sent += n;
                    at += n;
                }
                Err(Errno::EAGAIN) => {
                    report.blocked_at = Some(at);
                    return report;
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // The first datagram of the chunk was refused on its own account.
                    tracing::debug!("sendmmsg to {}: {e}", chunk[0].destination);
                    report.failed += 1;
                    at += 1;
                }
            }
        }
        report
    }

    /// Send runs of `transmits` in one `sendmmsg`, each as a UDP GSO send (`UDP_SEGMENT` of
    /// `size`): the kernel builds each run's datagrams, so a burst to one subscriber costs one
    /// trip through the stack instead of one per packet. `runs` are index ranges, each to one
    /// destination, its datagrams all of `size` bytes but perhaps a shorter last one (a run of
    /// one shorter datagram goes as it is). The size is the caller's, as what is left of a
    /// group after a partial send may start with such a datagram. Returns how many runs, from
    /// the first, the kernel took: at most [`BATCH`] runs and [`GSO_GROUP_SEGMENTS`]
    /// datagrams per call. Allocates nothing: the headers and their room for the segment size
    /// are the socket's own.
    pub(crate) fn send_runs(
        &mut self,
        transmits: &[Transmit],
        runs: &[(usize, usize)],
        size: u16,
    ) -> Result<usize, Errno> {
        if runs.is_empty() {
            return Ok(0);
        }
        let mut iov = [IoSlice::new(&[]); GSO_GROUP_SEGMENTS];
        let mut taken = 0;
        let mut n = 0;
        self.addresses.clear();
        for &(start, end) in runs.iter().take(BATCH) {
            let segments = end - start;
            if segments > GSO_MAX_SEGMENTS || taken + segments > GSO_GROUP_SEGMENTS {
                break;
            }
            for (slot, t) in iov[taken..].iter_mut().zip(&transmits[start..end]) {
                *slot = IoSlice::new(&t.contents);
            }
            taken += segments;
            self.addresses
                .push(Some(SockaddrStorage::from(transmits[start].destination)));
            n += 1;
        }
        let mut messages: [&[IoSlice<'_>]; BATCH] = [&[]; BATCH];
        let mut at = 0;
        for (message, &(start, end)) in messages.iter_mut().zip(&runs[..n]) {
            *message = &iov[at..at + end - start];
            at += end - start;
        }
        sendmmsg(
            self.fd,
            &mut self.gso_headers,
            &messages[..n],
            &self.addresses,
            [ControlMessage::UdpGsoSegments(&size)],
            MsgFlags::MSG_DONTWAIT,
        )
        .map(|r| r.count())
    }

    /// Whether `error`, from a send, is about the destination of the datagram it refused (no
    /// route to it, a firewall, an address of another family, a path whose MTU is smaller
    /// than a GSO send's segments, which the kernel cannot fragment), not about the socket or
    /// the way of sending: the other destinations' datagrams go on as they were sent.
    pub(crate) fn refused_for_destination(error: Errno) -> bool {
        matches!(
            error,
            Errno::EMSGSIZE
                | Errno::ENETUNREACH
                | Errno::EHOSTUNREACH
                | Errno::ENETDOWN
                | Errno::EHOSTDOWN
                | Errno::EACCES
                | Errno::EPERM
                | Errno::EADDRNOTAVAIL
                | Errno::EAFNOSUPPORT
                | Errno::ECONNREFUSED
        )
    }

    /// Take up to [`BATCH`] datagrams that are already queued, without blocking; returns how
    /// many there are, each then available through [`BatchSocket::datagram`] until the next
    /// call.
    pub(crate) fn recv(&mut self) -> usize {
        let mut buffers = self.recv_buffers.iter_mut();
        let slices: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                &mut buffers.next().expect("BATCH receive buffers")[..],
            )]
        });
        let count = match recvmmsg(
            self.fd,
            &mut self.recv_headers,
            &slices,
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(results) => {
                let mut n = 0;
                for (slot, m) in self.received.iter_mut().zip(results) {
                    let stamp = m.cmsgs().find_map(|c| match c {
                        ControlMessageOwned::ScmTimestampns(t) => system_time(t),
                        _ => None,
                    });
                    *slot = (m.bytes, m.address.and_then(socket_addr), stamp);
                    n += 1;
                }
                // nix leaves each header's control length as the kernel last wrote it, so one
                // read without a stamp (before stamps were turned on) leaves no room for the
                // stamps of later ones: start again from fresh headers (allocates, once).
                if self.stamped && self.received[..n].iter().any(|r| r.2.is_none()) {
                    self.recv_headers =
                        MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(TimeSpec)));
                }
                n
            }
            Err(Errno::EAGAIN) => 0,
            Err(e) => {
                // ICMP errors from earlier sends surface here; they concern one peer.
                tracing::debug!("recvmmsg: {e}");
                0
            }
        };
        self.count = count;
        count
    }

    /// The `i`-th datagram of the last [`BatchSocket::recv`], with its source (None for one
    /// without an IP source, which cannot happen on a UDP socket but is not trusted).
    pub(crate) fn datagram(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.count {
            return None;
        }
        let (len, source, _) = self.received[i];
        Some((source?, &self.recv_buffers[i][..len]))
    }

    /// When the kernel received the `i`-th datagram of the last [`BatchSocket::recv`], if the
    /// socket has `SO_TIMESTAMPNS` on ([`enable_receive_timestamps`]).
    pub(crate) fn received_at(&self, i: usize) -> Option<SystemTime> {
        self.received.get(i).filter(|_| i < self.count)?.2
    }
}

/// Ask the kernel to stamp every datagram the socket receives with its arrival time (wall
/// clock), read back by [`BatchSocket::received_at`].
pub(crate) fn enable_receive_timestamps(socket: &std::net::UdpSocket) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    nix::sys::socket::setsockopt(
        socket.as_raw_fd(),
        nix::sys::socket::sockopt::ReceiveTimestampns,
        &true,
    )
}

fn system_time(t: TimeSpec) -> Option<SystemTime> {
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let nanos = u32::try_from(t.tv_nsec()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn socket_addr(s: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn socket() -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    #[test]
    fn a_fan_out_goes_out_in_batches_and_comes_back_in_order() {
        let tx = socket();
        let rx_a = socket();
        let rx_b = socket();
        let (a, b) = (rx_a.local_addr().unwrap(), rx_b.local_addr().unwrap());
        let transmits: Vec<Transmit> = (0..150u8)
            .map(|i| Transmit {
                destination: if i % 2 == 0 { a } else { b },
                contents: vec![i; 100 + i as usize],
            })
            .collect();
        let mut sender = BatchSocket::new(tx.as_raw_fd(), 2048);
        let report = sender.send(&transmits);
        assert_eq!(
            report,
            SendReport {
                sent: 150,
                failed: 0,
                blocked_at: None
            }
        );

        let mut got = Vec::new();
        let mut receiver = BatchSocket::new(rx_a.as_raw_fd(), 2048);
        while receiver.recv() > 0 {
            for i in 0..receiver.count {
                let (src, d) = receiver.datagram(i).unwrap();
                assert_eq!(src, tx.local_addr().unwrap());
                got.push(d.to_vec());
            }
        }
        assert_eq!(got.len(), 75);
        for (k, d) in got.iter().enumerate() {
            let i = (2 * k) as u8;
            assert_eq!(d, &vec![i; 100 + i as usize]);
        }
        // Nothing queued: returns at once.
        assert_eq!(receiver.recv(), 0);
        assert!(receiver.datagram(0).is_none());
    }

    #[test]
    fn received_datagrams_carry_the_kernel_arrival_time() {
        let tx = socket();
        let rx = socket();
        let mut receiver = BatchSocket::new(rx.as_raw_fd(), 2048);
        // Off: no stamp.
        tx.send_to(&[1], rx.local_addr().unwrap()).unwrap();
        assert_eq!(receiver.recv(), 1);
        assert_eq!(receiver.received_at(0), None);
        enable_receive_timestamps(&rx).unwrap();
        receiver.expect_timestamps();
        // The first batch after turning stamps on finds no room for them (the headers keep the
        // control length of the unstamped read before); the receiver then renews its headers.
        tx.send_to(&[1], rx.local_addr().unwrap()).unwrap();
        assert_eq!(receiver.recv(), 1);
        assert_eq!(receiver.received_at(0), None);
        let before = SystemTime::now();
        tx.send_to(&[2], rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[3], rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(receiver.recv(), 2);
        // Not `before the sleep`: the kernel turns on stamping at arrival a little after the
        // first socket asks for it (a deferred static key), and stamps at the read until then.
        let after = SystemTime::now();
        for i in 0..2 {
            let at = receiver.received_at(i).expect("stamped");
            assert!(
                at >= before && at <= after,
                "{at:?} outside {before:?}..{after:?}"
            );
        }
        assert!(receiver.received_at(2).is_none());
        assert!(receiver.received_at(BATCH).is_none());
    }

    /// Everything queued on `socket`.
    fn drain(socket: &std::net::UdpSocket) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut receiver = BatchSocket::new(socket.as_raw_fd(), 2048);
        while receiver.recv() > 0 {
            got.extend((0..receiver.count).map(|i| receiver.datagram(i).unwrap().1.to_vec()));
        }
        got
    }

    #[test]
    fn bursts_to_several_destinations_go_as_gso_sends_in_one_call() {
        let tx = socket();
        let receivers: Vec<std::net::UdpSocket> = (0..3).map(|_| socket()).collect();
        // Ten packets to each, the last one shorter, as a keyframe's copies are.
        let mut transmits = Vec::new();
        let mut runs = Vec::new();
        for (r, rx) in receivers.iter().enumerate() {
            let start = transmits.len();
            for i in 0..10u8 {
                transmits.push(Transmit {
                    destination: rx.local_addr().unwrap(),
                    contents: vec![r as u8 * 16 + i; if i == 9 { 300 } else { 1200 }],
                });
            }
            runs.push((start, transmits.len()));
        }
        // And one datagram, smaller than the segment size, after the first receiver's run: a
        // message of its own, which the kernel sends as it is.
        transmits.push(Transmit {
            destination: receivers[0].local_addr().unwrap(),
            contents: vec![99; 120],
        });
        runs.push((30, 31));
        let sent = BatchSocket::new(tx.as_raw_fd(), 2048)
            .send_runs(&transmits, &runs, 1200)
            .unwrap();
        assert_eq!(sent, 4, "all four messages in one call");
        // Without GRO on the receiving sockets, the kernel delivers each run as 10 datagrams,
        // in order.
        for (r, rx) in receivers.iter().enumerate() {
            let mut expected: Vec<Vec<u8>> = transmits[r * 10..r * 10 + 10]
                .iter()
                .map(|t| t.contents.clone())
                .collect();
            if r == 0 {
                expected.push(vec![99; 120]);
            }
            assert_eq!(drain(rx), expected);
        }
    }

    #[test]
    fn a_call_that_starts_with_a_smaller_datagram_keeps_the_groups_segment_size() {
        // What is left of a group after a partial send may start with a one-datagram message
        // (audio that follows a subscriber's video): the runs after it keep their size.
        let tx = socket();
        let (rx_a, rx_b) = (socket(), socket());
        let mut transmits = vec![Transmit {
            destination: rx_a.local_addr().unwrap(),
            contents: vec![7; 120],
        }];
        transmits.extend((0..3u8).map(|i| Transmit {
            destination: rx_b.local_addr().unwrap(),
            contents: vec![i; 1200],
        }));
        let sent = BatchSocket::new(tx.as_raw_fd(), 2048)
            .send_runs(&transmits, &[(0, 1), (1, 4)], 1200)
            .unwrap();
        assert_eq!(sent, 2);
        assert_eq!(drain(&rx_a), [vec![7u8; 120]]);
        assert_eq!(
            drain(&rx_b),
            [vec![0u8; 1200], vec![1; 1200], vec![2; 1200]]
        );
    }

    #[test]
    fn a_call_takes_no_more_runs_than_its_room_for_segments() {
        let tx = socket();
        let rx = socket();
        let to = rx.local_addr().unwrap();
        // Five runs of 60: four fill 240 of the 256 slices, the fifth waits for the next call.
        let transmits: Vec<Transmit> = (0..300)
            .map(|i| Transmit {
                destination: to,
                contents: vec![(i / 60) as u8; 100],
            })
            .collect();
        let runs: Vec<(usize, usize)> = (0..5).map(|r| (r * 60, r * 60 + 60)).collect();
        let mut batch = BatchSocket::new(tx.as_raw_fd(), 2048);
        assert_eq!(batch.send_runs(&transmits, &runs, 100).unwrap(), 4);
        // Read in between: 300 datagrams at once would overflow the receiving socket.
        let mut got = drain(&rx);
        assert_eq!(batch.send_runs(&transmits, &runs[4..], 100).unwrap(), 1);
        assert_eq!(batch.send_runs(&transmits, &[], 100).unwrap(), 0);
        got.extend(drain(&rx));
        assert_eq!(got.len(), 300);
        assert!(got.iter().zip(&transmits).all(|(g, t)| *g == t.contents));
    }

    #[test]
    fn a_gso_send_refused_for_its_destination_says_so() {
        // An IPv6 destination on an IPv4 socket, as a destination that has no route: the
        // error is the destination's, and the core keeps sending with GSO to the others.
        let tx = socket();
        let transmits: Vec<Transmit> = (0..3)
            .map(|_| Transmit {
                destination: "[::1]:9".parse().unwrap(),
                contents: vec![7; 1200],
            })
            .collect();
        let error = BatchSocket::new(tx.as_raw_fd(), 2048)
            .send_runs(&transmits, &[(0, 3)], 1200)
            .unwrap_err();
        assert!(BatchSocket::refused_for_destination(error), "{error}");
        assert!(!BatchSocket::refused_for_destination(Errno::EINVAL));
    }

    #[test]
    fn a_gso_send_too_large_for_its_path_is_the_destinations() {
        // Loopback with a 1,300-byte MTU, in a network namespace of this test's thread: a GSO
        // segment cannot be fragmented, so a run of 1,400-byte datagrams is refused
        // (EMSGSIZE), for that path only. The same datagrams sent one by one go, fragmented.
        // Needs root, as the suite's other network tests do.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare (needs root)");
            for args in [
                &["link", "set", "lo", "mtu", "1300"][..],
                &["link", "set", "lo", "up"],
            ] {
                let status = std::process::Command::new("ip").args(args).status();
                assert!(status.is_ok_and(|s| s.success()), "ip {args:?}");
            }
            let tx = socket();
            let rx = socket();
            let transmits: Vec<Transmit> = (0..3)
                .map(|_| Transmit {
                    destination: rx.local_addr().unwrap(),
                    contents: vec![7; 1400],
                })
                .collect();
            let mut batch = BatchSocket::new(tx.as_raw_fd(), 2048);
            let error = batch.send_runs(&transmits, &[(0, 3)], 1400).unwrap_err();
            assert_eq!(error, Errno::EMSGSIZE);
            assert!(BatchSocket::refused_for_destination(error));
            assert_eq!(batch.send(&transmits).sent, 3);
            std::thread::sleep(std::time::Duration::from_millis(50));
            let got = drain(&rx);
            assert_eq!(got.len(), 3);
            assert!(got.iter().all(|d| d.len() == 1400));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_refused_datagram_is_skipped_and_the_rest_go() {
        let tx = socket();
        let rx = socket();
        let to = rx.local_addr().unwrap();
        let transmits = vec![
            Transmit {
                destination: to,
                contents: vec![1],
            },
            // IPv6 destination on an IPv4 socket: refused for this datagram only.
            Transmit {
                destination: "[::1]:9".parse().unwrap(),
                contents: vec![2],
            },
            Transmit {
                destination: to,
                contents: vec![3],
            },
        ];
        let report = BatchSocket::new(tx.as_raw_fd(), 2048).send(&transmits);
        assert_eq!(report.sent, 2);
        assert_eq!(report.failed, 1);
        let mut receiver = BatchSocket::new(rx.as_raw_fd(), 2048);
        let n = receiver.recv();
        let got: Vec<u8> = (0..n).map(|i| receiver.datagram(i).unwrap().1[0]).collect();
        assert_eq!(got, vec![1, 3]);
    }
}
