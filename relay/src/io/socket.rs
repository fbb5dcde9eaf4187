//! Binding a core's UDP socket and ICE-TCP listener.

use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel buffers of 4 MiB absorb a keyframe burst to many subscribers; the kernel caps the
/// request at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// Bind a non-blocking UDP socket with large buffers.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer only costs drops under bursts.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Bind a core's UDP socket and, with `tcp`, its ICE-TCP listener on the same address and
/// port. Where the OS picks the port (`addr`'s is 0) and TCP finds it taken, both are tried
/// again on another.
pub(crate) fn bind_core(
    addr: SocketAddr,
    tcp: bool,
) -> std::io::Result<(UdpSocket, Option<TcpListener>)> {
    const TRIES: usize = 16;
    let mut tries = 0;
    loop {
        let udp = bind(addr)?;
        if !tcp {
            return Ok((udp, None));
        }
        let at = SocketAddr::new(addr.ip(), udp.local_addr()?.port());
        match listen(at) {
            Ok(listener) => return Ok((udp, Some(listener))),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && addr.port() == 0
                    && tries < TRIES =>
            {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A TCP listener that can be bound again at once after a restart (connections of the last
/// run in TIME_WAIT do not hold the port).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
