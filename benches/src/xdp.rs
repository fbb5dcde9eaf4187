//! Egress through an AF_XDP socket: whole frames (Ethernet, IPv4, UDP, payload) written into
//! memory shared with the kernel (the UMEM) and handed to one transmit queue of a device,
//! past the socket layer, routing, netfilter and the queueing discipline that `sendmmsg`
//! goes through for every datagram.
//!
//! It answers one question of the floor: how much of the kernel's send path (1.5–2.5 µs per
//! copy on the machines measured) a forwarder can leave behind. On a veth the socket runs in copy
//! mode (veth has no zero-copy transmit): the kernel still builds one buffer per frame and
//! copies the frame into it, so what is saved is everything above the driver. Reception is
//! not changed: the forwarder's UDP socket still receives, and the kernel still answers ARP.
//!
//! No libbpf: a transmit-only socket needs no XDP program, only the rings, which are a few
//! `setsockopt`s and `mmap`s (the `libc` crate has the kernel's structures). The crates that
//! wrap them either build libxdp from C (xsk-rs) or carry a copyleft licence (xdpilone).
//! Rings the kernel writes into are raw memory, hence the one module of the workspace that
//! allows `unsafe`; each block says what makes it sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes of one frame slot in the UMEM: a 1,500-byte MTU frame fits with room to spare.
const FRAME_SIZE: u32 = 2048;
/// Frame slots: as many as the transmit ring holds twice over.
const FRAMES: u32 = 4096;
/// Descriptors in the transmit ring.
const TX_RING: u32 = 2048;
/// Entries of the completion ring: every frame in flight has room to come back.
const COMPLETION_RING: u32 = FRAMES;
/// The fill ring is for reception, which this socket does not do, but binding needs one.
const FILL_RING: u32 = 64;

const ETH_HEADER: usize = 14;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
/// Bytes in front of a payload.
pub const HEADERS: usize = ETH_HEADER + IPV4_HEADER + UDP_HEADER;

/// One mapping of kernel-shared memory, unmapped when dropped.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: Option<i32>, len: usize, offset: u64) -> io::Result<Mapping> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a fresh mapping the kernel chooses the place of; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A single-producer single-consumer ring shared with the kernel: two free-running indexes
/// and a power-of-two array of entries.
struct Ring {
    /// Held for its `Drop`: the pointers below are into it.
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    entries: *mut u8,
    mask: u32,
}

impl Ring {
    fn new(
        fd: i32,
        offsets: &libc::xdp_ring_offset,
        size: u32,
        entry: usize,
        page: u64,
    ) -> io::Result<Ring> {
        let map = Mapping::new(
            Some(fd),
            offsets.desc as usize + size as usize * entry,
            page,
        )?;
        // SAFETY: the offsets are the kernel's own, inside the mapping it sized.
        let at = |o: u64| unsafe { map.ptr.add(o as usize) };
        Ok(Ring {
            producer: at(offsets.producer).cast(),
            consumer: at(offsets.consumer).cast(),
            entries: at(offsets.desc),
            mask: size - 1,
            _map: map,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: an aligned u32 in a mapping that lives as long as `self`.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }
}

/// What an egress counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct EgressStats {
    /// Frames the kernel took from the transmit ring and completed.
    pub completed: u64,
    /// `sendto` calls that told the kernel to transmit.
    pub kicks: u64,
    /// Kicks the kernel refused because the device dropped a frame (`EBUSY`).
    pub dropped: u64,
    /// Times nothing moved (the device's queue stopped, or completions not back yet) and
    /// the sender slept.
    pub waits: u64,
}

/// A transmit-only AF_XDP socket on one queue of one device, sending UDP from one address.
pub struct Egress {
    // Rings and memory are unmapped before the socket closes (fields drop in order).
    tx: Ring,
    completion: Ring,
    umem: Mapping,
    fd: OwnedFd,
    /// Frame slots not in the kernel's hands, by offset into the UMEM.
    free: Vec<u64>,
    /// The producer index as written; what the kernel sees is the ring's, published by
    /// [`Egress::flush`].
    produced: u32,
    source: SocketAddrV4,
    source_mac: [u8; 6],
    /// The largest payload: what the device's MTU leaves (the receiving end drops longer
    /// frames), within a frame slot.
    max_payload: usize,
    ip_id: u16,
    stats: EgressStats,
}

fn setsockopt<T>(fd: i32, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What a frame sent on a device needs to know of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    /// Its index.
    pub index: u32,
    /// Its link-layer address: the source of every frame.
    pub mac: [u8; 6],
    /// Its MTU: longer frames are dropped by the receiving end.
    pub mtu: usize,
}

/// Look `name` up in the calling thread's network namespace (by `ioctl`, not `/sys`, whose
/// view is the namespace it was mounted in).
pub fn device(name: &str) -> io::Result<Device> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "device name too long",
        ));
    }
    // SAFETY: plain socket creation, checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created and owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let request = |code: libc::c_ulong| -> io::Result<libc::ifreq> {
        // SAFETY: all-zero is a valid value of this plain C structure.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: the request's structure is the one these two ioctls fill.
        let r = unsafe { libc::ioctl(socket.as_raw_fd(), code, &mut req) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(req)
    };
    let hw = request(libc::SIOCGIFHWADDR)?;
    let mtu = request(libc::SIOCGIFMTU)?;
    let index = request(libc::SIOCGIFINDEX)?;
    // SAFETY: each union field read is the one its ioctl wrote.
    let (family, data, mtu, index) = unsafe {
        (
            hw.ifr_ifru.ifru_hwaddr.sa_family,
            hw.ifr_ifru.ifru_hwaddr.sa_data,
            mtu.ifr_ifru.ifru_mtu,
            index.ifr_ifru.ifru_ifindex,
        )
    };
    // The frames written are Ethernet frames.
    if family != libc::ARPHRD_ETHER {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{name} is not an Ethernet device"),
        ));
    }
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok(Device {
        index: index as u32,
        mac,
        mtu: mtu as usize,
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The neighbours on `device` that the kernel has resolved in the calling thread's network
/// namespace (`/proc/thread-self/net/arp`), by address: where a frame to each must go. The
/// kernel fills it as it exchanges ARP with them. Only peers on the device's own subnet are
/// there: a peer behind a router would need the route's gateway, which nothing here looks up.
pub fn neighbours(device: &str) -> io::Result<HashMap<Ipv4Addr, [u8; 6]>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/arp")?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(5) != Some(&device) {
                return None;
            }
            let ip = fields.first()?.parse().ok()?;
            let mac = parse_mac(fields.get(3)?)?;
            (mac != [0; 6]).then_some((ip, mac))
        })
        .collect())
}

/// The RFC 1071 checksum of an IPv4 header.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Egress {
    /// Open a socket on `queue` of `device`, sending from `source` (an address of that
    /// device's, so that replies come back to the program's UDP socket).
    pub fn open(device: &str, queue: u32, source: SocketAddrV4) -> io::Result<Egress> {
        let Device { index, mac, mtu } = self::device(device)?;
        let max_payload =
            (mtu.saturating_sub(IPV4_HEADER + UDP_HEADER)).min(FRAME_SIZE as usize - HEADERS);
        // SAFETY: plain socket creation, checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Mapping::new(None, (FRAMES * FRAME_SIZE) as usize, 0)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem.len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
        setsockopt(raw, libc::XDP_UMEM_FILL_RING, &FILL_RING)?;
        setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &COMPLETION_RING)?;
        setsockopt(raw, libc::XDP_TX_RING, &TX_RING)?;
        // SAFETY: all-zero is a valid value of this plain C structure.
        let mut offsets: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `offsets`.
        let r = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut offsets as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let tx = Ring::new(
            raw,
            &offsets.tx,
            TX_RING,
            std::mem::size_of::<libc::xdp_desc>(),
            libc::XDP_PGOFF_TX_RING as u64,
        )?;
        let completion = Ring::new(
            raw,
            &offsets.cr,
            COMPLETION_RING,
            8,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        let address = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_COPY,
            sxdp_ifindex: index,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: a live address structure of the size passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&address as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let produced = tx.producer().load(Ordering::Relaxed);
        Ok(Egress {
            tx,
            completion,
            umem,
            fd,
            free: (0..FRAMES)
                .rev()
                .map(|i| u64::from(i * FRAME_SIZE))
                .collect(),
            produced,
            source,
            source_mac: mac,
            max_payload,
            ip_id: 0,
            stats: EgressStats::default(),
        })
    }

    /// The largest payload [`Egress::push`] takes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// What it counted so far.
    pub fn stats(&self) -> EgressStats {
        self.stats
    }

    /// Take back the frame slots the kernel has finished with.
    fn reclaim(&mut self) {
        let ring = &self.completion;
        let produced = ring.producer().load(Ordering::Acquire);
        let mut consumed = ring.consumer().load(Ordering::Relaxed);
        while consumed != produced {
            // SAFETY: an entry the kernel published (between consumer and producer).
            let addr = unsafe {
                ring.entries
                    .cast::<u64>()
                    .add((consumed & ring.mask) as usize)
                    .read()
            };
            self.free.push(addr);
            consumed = consumed.wrapping_add(1);
            self.stats.completed += 1;
        }
        ring.consumer().store(consumed, Ordering::Release);
    }

    /// Write one datagram to `to` (whose link-layer address is `mac`) into the transmit
    /// ring. Where there is no room (no frame slot or no descriptor free until the kernel
    /// sends and completes: [`Egress::make_room`]) nothing is written.
    pub fn push(&mut self, to: SocketAddrV4, mac: [u8; 6], payload: &[u8]) -> Push {
        if payload.len() > self.max_payload {
            return Push::TooLarge;
        }
        let in_ring = self
            .produced
            .wrapping_sub(self.tx.consumer().load(Ordering::Acquire));
        if in_ring >= TX_RING {
            return Push::Full;
        }
        if self.free.is_empty() {
            self.reclaim();
        }
        let Some(addr) = self.free.pop() else {
            return Push::Full;
        };
        // SAFETY: a frame slot inside the UMEM that the kernel does not hold.
        let frame = unsafe {
            std::slice::from_raw_parts_mut(
                self.umem.ptr.add(addr as usize),
                HEADERS + payload.len(),
            )
        };
        let (eth, rest) = frame.split_at_mut(ETH_HEADER);
        eth[..6].copy_from_slice(&mac);
        eth[6..12].copy_from_slice(&self.source_mac);
        eth[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let (ip, rest) = rest.split_at_mut(IPV4_HEADER);
        let ip_len = (IPV4_HEADER + UDP_HEADER + payload.len()) as u16;
        self.ip_id = self.ip_id.wrapping_add(1);
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        // Don't fragment, as the kernel sets it on UDP with path MTU discovery.
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = libc::IPPROTO_UDP as u8;
        ip[10..12].fill(0);
        ip[12..16].copy_from_slice(&self.source.ip().octets());
        ip[16..20].copy_from_slice(&to.ip().octets());
        let checksum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        let (udp, body) = rest.split_at_mut(UDP_HEADER);
        udp[0..2].copy_from_slice(&self.source.port().to_be_bytes());
        udp[2..4].copy_from_slice(&to.port().to_be_bytes());
        udp[4..6].copy_from_slice(&((UDP_HEADER + payload.len()) as u16).to_be_bytes());
        // No UDP checksum: optional over IPv4 (RFC 768), as many media servers send.
        udp[6..8].fill(0);
        body.copy_from_slice(payload);
        let desc = libc::xdp_desc {
            addr,
            len: frame.len() as u32,
            options: 0,
        };
        // SAFETY: the slot at the producer index is ours until the index is published.
        unsafe {
            self.tx
                .entries
                .cast::<libc::xdp_desc>()
                .add((self.produced & self.tx.mask) as usize)
                .write(desc);
        }
        self.produced = self.produced.wrapping_add(1);
        Push::Queued
    }

    /// Publish what was pushed and have the kernel send all of it, sleeping while the
    /// device's queue is stopped, as a blocking `sendmmsg` sleeps while its socket's buffer
    /// is full. (`sendmmsg` instead leaves what the device cannot take in the queueing
    /// discipline, which the kernel runs again when the device makes room.)
    pub fn flush(&mut self) -> io::Result<()> {
        // Only this side writes the producer index: what it holds is what was published.
        if self.tx.producer().load(Ordering::Relaxed) != self.produced {
            self.tx.producer().store(self.produced, Ordering::Release);
        }
        // The kernel sends a bounded batch per call (32 frames) and says EAGAIN while more
        // are left, or while the completion ring has no room.
        while self.tx.consumer().load(Ordering::Acquire) != self.produced {
            let before = self.tx.consumer().load(Ordering::Relaxed);
            self.stats.kicks += 1;
            // SAFETY: a send of nothing, the AF_XDP wake-up.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {}
                    Some(libc::EBUSY) => self.stats.dropped += 1,
                    _ => return Err(e),
                }
            }
            self.reclaim();
            if self.tx.consumer().load(Ordering::Acquire) == before {
                self.wait();
            }
        }
        self.reclaim();
        Ok(())
    }

    /// Send what is in the ring and wait until a frame slot is free again: the kernel
    /// completes a frame when the buffer it copied it into is done with, which on a veth
    /// is when the receiving end has taken it, perhaps a moment after the send.
    pub fn make_room(&mut self) -> io::Result<()> {
        self.flush()?;
        while self.free.is_empty() {
            self.wait();
            self.reclaim();
        }
        Ok(())
    }

    /// Wait until every frame sent has completed, or until `deadline`; returns whether all
    /// did.
    pub fn settle(&mut self, deadline: std::time::Instant) -> io::Result<bool> {
        self.flush()?;
        while self.free.len() < FRAMES as usize {
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            self.wait();
            self.reclaim();
        }
        Ok(true)
    }

    /// Nothing moved: sleep a little rather than spin (a stopped queue or a late completion
    /// wakes no one; there is nothing to wait on but time).
    fn wait(&mut self) {
        self.stats.waits += 1;
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
}

/// What [`Egress::push`] did with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Push {
    /// Written into the transmit ring, to go at the next [`Egress::flush`].
    Queued,
    /// No room until the kernel sends and completes what it has ([`Egress::make_room`]).
    Full,
    /// Longer than [`Egress::max_payload`]: never sent.
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_rfc1071_example_header() {
        // A header whose checksum is known (the usual worked example).
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&header), 0xb861);
        header[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(ipv4_checksum(&header), 0);
    }

    #[test]
    fn macs_are_read_as_the_kernel_prints_them() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:ff"),
            Some([2, 0, 0x5e, 0x10, 0, 0xff])
        );
        assert_eq!(parse_mac("02:00:5e:10:00"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:ff:01"), None);
    }
}
