//! The AF_XDP egress against the kernel's own receive path: frames it builds on one end of a
//! veth pair, in a network namespace of the test's own, arrive at a plain UDP socket on the
//! other end as the datagrams that were pushed, from the address it sends as.
#![allow(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::Duration;

use std::os::fd::AsRawFd;

use webrtcai_benches::xdp::{neighbours, Egress, Push};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace, deleted when dropped.
struct Namespace(String);

impl Namespace {
    /// `name` and this process's id: runs at once do not meet.
    fn create(name: &str) -> Namespace {
        let name = format!("{name}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        Namespace(name)
    }

    /// A UDP socket bound to `addr` inside it (a socket stays in the namespace it was made
    /// in, whichever thread uses it).
    fn bind(&self, addr: &'static str) -> UdpSocket {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).unwrap();
            // SAFETY: moves only this short-lived thread into the namespace.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            let socket = UdpSocket::bind(addr).unwrap();
            // Room for every datagram the test sends before it reads any.
            socket2::SockRef::from(&socket)
                .set_recv_buffer_size(1 << 20)
                .unwrap();
            socket
        })
        .join()
        .unwrap()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn frames_sent_through_af_xdp_arrive_as_udp_datagrams() {
    // The sending end is in a namespace of this thread's own (the `ip` commands it runs
    // inherit it), the receiving end in a named one: nothing of the machine's network is
    // touched, and the datagrams cross the veth instead of being delivered locally.
    // Needs root, as the suite's other network tests do (`./scripts/test` runs as root).
    std::thread::spawn(|| {
        // SAFETY: changes only this thread's network namespace.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare (needs root): {}",
            std::io::Error::last_os_error()
        );
        let far = Namespace::create("wai-xdp-test");
        ip(&[
            "link", "add", "xa", "type", "veth", "peer", "name", "xb", "netns", &far.0,
        ]);
        ip(&["addr", "add", "10.9.0.1/24", "dev", "xa"]);
        ip(&["link", "set", "xa", "up"]);
        ip(&["-n", &far.0, "addr", "add", "10.9.0.2/24", "dev", "xb"]);
        ip(&["-n", &far.0, "link", "set", "xb", "up"]);

        let receiver = far.bind("10.9.0.2:0");
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        // The kernel learns the receiver's link-layer address as it would for any peer: by
        // an exchange over its own UDP path.
        let sender = UdpSocket::bind("10.9.0.1:5004").unwrap();
        sender
            .send_to(b"x", receiver.local_addr().unwrap())
            .unwrap();
        let mut buf = [0u8; 2048];
        assert_eq!(receiver.recv_from(&mut buf).unwrap().0, 1);
        let to = Ipv4Addr::new(10, 9, 0, 2);
        let mac = neighbours("xa").unwrap()[&to];
        assert!(neighbours("lo").unwrap().is_empty());

        let source = SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 5004);
        let mut egress = Egress::open("xa", 0, source).unwrap();
        let to = SocketAddrV4::new(to, receiver.local_addr().unwrap().port());
        // A veth's MTU, 1,500 bytes, less the IPv4 and UDP headers.
        let max = egress.max_payload();
        assert_eq!(max, 1472);
        // More than the kernel sends per wake-up (32), of every size up to the largest.
        let payloads: Vec<Vec<u8>> = (0..100)
            .map(|i| {
                let len = 1 + i * (max - 1) / 99;
                (0..len).map(|j| (i + j) as u8).collect()
            })
            .collect();
        for p in &payloads {
            assert_eq!(egress.push(to, mac, p), Push::Queued);
        }
        assert_eq!(egress.push(to, mac, &vec![0; max + 1]), Push::TooLarge);
        egress.flush().unwrap();
        // Each payload's length is its own: they are told apart by it, whatever order the
        // receiving end took them in.
        let mut got = Vec::new();
        for _ in &payloads {
            let (n, from) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(from, std::net::SocketAddr::V4(source));
            got.push(buf[..n].to_vec());
        }
        got.sort_by_key(Vec::len);
        assert!(got == payloads, "the datagrams are the payloads pushed");
        // Every frame comes back to the sender once the receiving end is done with it.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        assert!(egress.settle(deadline).unwrap());
        assert_eq!(egress.stats().completed, 100);
        assert_eq!(egress.stats().dropped, 0);
    })
    .join()
    .unwrap();
}
