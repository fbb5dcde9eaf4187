#!/usr/bin/env python3
"""linkem: a user-space link emulator between two network namespaces, for the test harness.

Why it exists: the kernel the tests run on has no ``netem`` qdisc (nor fq, fq_codel, red or
cake), so "40 ms, 1 % loss, 1 Mbit/s" on one participant's path cannot be had from ``tc``.
Instead this program opens one TUN device in each of two network namespaces, A (the server's
side) and B (the participant's side), and moves every IP packet between them itself, applying
per direction:

  loss      -> random drop with probability ``loss`` (seeded RNG, so a run is repeatable)
  rate      -> token bucket at ``rate_kbit`` with a bounded FIFO queue and tail drop, as tbf
  delay     -> ``delay_ms`` plus ``jitter_ms`` (uniform or normal); delivery stays FIFO unless
               ``reorder`` is set, because a real path's jitter comes with in-order delivery

"up" is B -> A (participant to server), "down" is A -> B. Parameters can be changed while it
runs, so a test can set up a call on a clean link and impair it afterwards.

Control: JSON lines on stdin, one reply line on stdout for each (with the request's ``id``
echoed when it has one):

  {"cmd": "set", "up": {"loss": 0.05}, "down": {"delay_ms": 40}}  -> {"ok": true, "params": ...}
  {"cmd": "stats"}                                                -> {"ok": true, "stats": ...}
  {"cmd": "quit"}

Once both devices exist (and are addressed, when --a-addr/--b-addr are given) it prints
``{"ready": true, ...}``. It exits on stdin EOF, on "quit", on SIGTERM/SIGINT/SIGHUP and when its
parent dies (PR_SET_PDEATHSIG). The TUN devices are not persistent: the kernel removes them,
with their addresses and routes, as soon as this process's descriptors close, however it ends.
Namespaces are the caller's to create and delete.

Standard library only (Python 3.11: os.setns is 3.12+, so setns goes through ctypes).
"""

import argparse
import ctypes
import errno
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, fields

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
PR_SET_PDEATHSIG = 1
MTU = 1500
# Packets read from one device per wake-up, so that one busy direction cannot starve the other
# or the control channel.
READ_BATCH = 64

_libc = ctypes.CDLL(None, use_errno=True)


def setns(path):
    """Move this (single-threaded) process into the network namespace at `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def open_tun(name):
    """Create TUN device `name` in the current namespace; it lives as long as the fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def configure(dev, addr, peer, routes):
    """Address `dev` point-to-point in the current namespace and bring it up.

    IPv6 is switched off on the device first: otherwise the kernel sends router solicitations
    and MLD reports through it, which would show up in the counters the tests check.
    """
    try:
        with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
            f.write("1")
    except FileNotFoundError:
        pass  # no IPv6 in this kernel or namespace
    cmds = []
    if addr:
        cmds.append(["ip", "addr", "add", addr, "peer", peer, "dev", dev])
    cmds.append(["ip", "link", "set", dev, "up"])
    cmds += [["ip", "route", "add", r, "dev", dev] for r in routes]
    for cmd in cmds:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")


@dataclass
class Params:
    """One direction's impairments. All default to a perfect link."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_dist: str = "uniform"  # or "normal" (jitter_ms is then the standard deviation)
    reorder: bool = False  # let jitter reorder packets (a real path rarely does)
    loss: float = 0.0  # probability that a packet is dropped
    rate_kbit: float = 0.0  # 0 = no cap (1 kbit = 1000 bit, counted on whole IP packets)
    queue_ms: float = 100.0  # queue limit as time at the rate (tbf "latency")
    queue_bytes: int = 0  # queue limit in bytes; overrides queue_ms when > 0
    burst_bytes: int = MTU  # token bucket depth (at least one MTU)

    def update(self, changes):
        if not isinstance(changes, dict):
            raise ValueError("parameters must be an object")
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise ValueError(f"unknown parameter {key!r}")
        merged = Params(**{**asdict(self), **changes})
        merged.check()
        for key in changes:
            setattr(self, key, getattr(merged, key))

    def check(self):
        for f in fields(self):
            value = getattr(self, f.name)
            ok = isinstance(value, bool) if f.type is bool else (
                isinstance(value, str) if f.type is str else
                isinstance(value, (int, float)) and not isinstance(value, bool))
            if not ok:
                raise ValueError(f"{f.name} must be of type {f.type.__name__}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError("loss must be within [0, 1]")
        if self.jitter_dist not in ("uniform", "normal"):
            raise ValueError("jitter_dist must be 'uniform' or 'normal'")
        for key in ("delay_ms", "jitter_ms", "rate_kbit", "queue_ms", "queue_bytes", "burst_bytes"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must not be negative")


class Direction:
    """The path one way: loss, then a rate-limited queue, then delay, then the other device."""

    COUNTERS = (
        "packets_in", "bytes_in",
        "packets_forwarded", "bytes_forwarded",
        "packets_dropped_loss", "bytes_dropped_loss",
        "packets_dropped_queue", "bytes_dropped_queue",
        "write_errors",
    )

    def __init__(self, name, out_fd, seed, heap, now):
        self.name = name
        self.out_fd = out_fd
        self.params = Params()
        # Separate streams, so that changing the jitter does not change which packets are lost.
        self.loss_rng = random.Random(f"{seed}-{name}-loss")
        self.jitter_rng = random.Random(f"{seed}-{name}-jitter")
        self.heap = heap
        self.counters = dict.fromkeys(self.COUNTERS, 0)
        self.queue = deque()  # packets waiting for tokens
        self.backlog = 0  # bytes in self.queue
        self.tokens = float(self.params.burst_bytes)
        self.tokens_at = now
        self.last_due = 0.0  # latest delivery time handed out, to keep delivery FIFO
        self.in_flight = 0  # packets in the delay stage

    # Rate stage (token bucket, as tbf): a packet leaves when the bucket holds its size; the
    # bucket fills at the rate up to its depth; a packet that finds the queue full is dropped.

    def _bytes_per_s(self):
        return self.params.rate_kbit * 1000.0 / 8.0

    def _depth(self):
        return max(self.params.burst_bytes, MTU)

    def _limit(self):
        p = self.params
        if p.queue_bytes > 0:
            return p.queue_bytes
        return max(MTU, self._bytes_per_s() * p.queue_ms / 1000.0)

    def _refill(self, now):
        self.tokens = min(self._depth(), self.tokens + (now - self.tokens_at) * self._bytes_per_s())
        self.tokens_at = now

    def arrive(self, pkt, now):
        c = self.counters
        size = len(pkt)
        c["packets_in"] += 1
        c["bytes_in"] += size
        p = self.params
        if p.loss > 0 and self.loss_rng.random() < p.loss:
            c["packets_dropped_loss"] += 1
            c["bytes_dropped_loss"] += size
            return
        if p.rate_kbit <= 0 and not self.queue:
            self._release(pkt, now)
            return
        if self.backlog + size > self._limit() and self.queue:
            c["packets_dropped_queue"] += 1
            c["bytes_dropped_queue"] += size
            return
        self.queue.append(pkt)
        self.backlog += size
        self.pump(now)

    def pump(self, now):
        """Release what the bucket allows; return when the next packet may go, or None."""
        if not self.queue:
            return None
        if self.params.rate_kbit <= 0:  # the cap was lifted: everything waiting goes on
            while self.queue:
                self._release(self._pop(), now)
            return None
        self._refill(now)
        while self.queue:
            need = min(len(self.queue[0]), self._depth())
            if self.tokens < need:
                return now + (need - self.tokens) / self._bytes_per_s()
            pkt = self._pop()
            self.tokens -= len(pkt)
            self._release(pkt, now)
        return None

    def _pop(self):
        pkt = self.queue.popleft()
        self.backlog -= len(pkt)
        return pkt

    # Delay stage: every packet gets delay + jitter; without `reorder` it never overtakes the
    # one before it, so jitter bunches packets up the way a queue on a real path does.

    def _release(self, pkt, now):
        p = self.params
        delay = p.delay_ms
        if p.jitter_ms > 0:
            if p.jitter_dist == "normal":
                delay += self.jitter_rng.gauss(0.0, p.jitter_ms)
            else:
                delay += self.jitter_rng.uniform(-p.jitter_ms, p.jitter_ms)
        due = now + max(0.0, delay) / 1000.0
        if not p.reorder:
            due = max(due, self.last_due)
        self.last_due = max(self.last_due, due)
        self.in_flight += 1
        heapq.heappush(self.heap, (due, next(_SEQ), self, pkt))

    def deliver(self, pkt):
        self.in_flight -= 1
        try:
            os.write(self.out_fd, pkt)
        except OSError:  # device down, or the other side cannot take it: the packet is lost
            self.counters["write_errors"] += 1
            return
        self.counters["packets_forwarded"] += 1
        self.counters["bytes_forwarded"] += len(pkt)

    def stats(self):
        return {
            **self.counters,
            "queued_packets": len(self.queue),
            "queued_bytes": self.backlog,
            "in_flight": self.in_flight,
        }


def _counter():
    n = 0
    while True:
        n += 1
        yield n


_SEQ = _counter()  # tie-breaker in the heap: equal due times keep arrival order


class Emulator:
    def __init__(self, a_fd, b_fd, seed):
        self.a_fd, self.b_fd = a_fd, b_fd
        self.heap = []
        now = time.monotonic()
        self.up = Direction("up", a_fd, seed, self.heap, now)  # read from B, written to A
        self.down = Direction("down", b_fd, seed, self.heap, now)  # read from A, written to B
        self.inbuf = b""
        self.running = True

    def set(self, msg):
        # Check both directions before changing either, so a bad request changes nothing.
        for name in ("up", "down"):
            trial = Params(**asdict(getattr(self, name).params))
            trial.update(msg.get(name, {}))
        now = time.monotonic()
        for name in ("up", "down"):
            d = getattr(self, name)
            if d.params.rate_kbit > 0:
                d._refill(now)  # tokens earned at the old rate stay earned
            else:
                d.tokens, d.tokens_at = float(d._depth()), now  # a new cap starts with a full bucket
            d.params.update(msg.get(name, {}))
        return {"params": {"up": asdict(self.up.params), "down": asdict(self.down.params)}}

    def command(self, line):
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as e:
            return {"ok": False, "error": f"not JSON: {e}"}
        reply = {"id": msg["id"]} if isinstance(msg, dict) and "id" in msg else {}
        cmd = msg.get("cmd") if isinstance(msg, dict) else None
        try:
            if cmd == "set":
                reply.update(self.set(msg))
            elif cmd == "stats":
                reply["stats"] = {"up": self.up.stats(), "down": self.down.stats()}
                reply["params"] = {"up": asdict(self.up.params), "down": asdict(self.down.params)}
            elif cmd == "quit":
                self.running = False
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except (ValueError, TypeError) as e:
            return {**reply, "ok": False, "error": str(e)}
        return {**reply, "ok": True}

    def read_control(self):
        data = os.read(0, 65536)
        if not data:  # the test (or the person at the terminal) is gone
            self.running = False
            return
        self.inbuf += data
        *lines, self.inbuf = self.inbuf.split(b"\n")
        for line in lines:
            if line.strip():
                emit(self.command(line))
            if not self.running:
                return

    def read_packets(self, fd, direction, now):
        for _ in range(READ_BATCH):
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    return
                raise
            direction.arrive(pkt, now)

    def run(self):
        ep = select.epoll()
        ep.register(self.a_fd, select.EPOLLIN)
        ep.register(self.b_fd, select.EPOLLIN)
        try:
            ep.register(0, select.EPOLLIN)
        except PermissionError:
            raise SystemExit("linkem: stdin must be a pipe or a terminal (it is the control channel)")
        while self.running:
            now = time.monotonic()
            wakes = [w for w in (self.up.pump(now), self.down.pump(now)) if w is not None]
            while self.heap and self.heap[0][0] <= now:
                _, _, d, pkt = heapq.heappop(self.heap)
                d.deliver(pkt)
            if self.heap:
                wakes.append(self.heap[0][0])
            timeout = max(0.0, min(wakes) - now) if wakes else -1
            for fd, _ in ep.poll(timeout):
                now = time.monotonic()
                if fd == 0:
                    self.read_control()
                elif fd == self.a_fd:
                    self.read_packets(fd, self.down, now)
                else:
                    self.read_packets(fd, self.up, now)


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a-netns", help="namespace A (server side): /run/netns/NAME or /proc/PID/ns/net; default: this one")
    ap.add_argument("--b-netns", required=True, help="namespace B (participant side)")
    ap.add_argument("--a-dev", default="lka0", help="TUN device name in A")
    ap.add_argument("--b-dev", default="lkb0", help="TUN device name in B")
    ap.add_argument("--a-addr", help="A's address on the point-to-point link (needs --b-addr)")
    ap.add_argument("--b-addr", help="B's address on the point-to-point link (needs --a-addr)")
    ap.add_argument("--a-route", action="append", default=[], help="prefix routed from A into the link")
    ap.add_argument("--b-route", action="append", default=[], help="prefix routed from B into the link (e.g. the server's address)")
    ap.add_argument("--seed", default="1", help="seed for loss and jitter")
    ap.add_argument("--up", default="{}", help="initial parameters B->A, as JSON")
    ap.add_argument("--down", default="{}", help="initial parameters A->B, as JSON")
    args = ap.parse_args()
    if bool(args.a_addr) != bool(args.b_addr):
        ap.error("--a-addr and --b-addr go together")

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _exit_on_signal)
    parent = os.getppid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 1

    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fds = []
    try:
        for ns, dev, addr, peer, routes in (
            (args.a_netns, args.a_dev, args.a_addr, args.b_addr, args.a_route),
            (args.b_netns, args.b_dev, args.b_addr, args.a_addr, args.b_route),
        ):
            setns(ns or f"/proc/self/fd/{home}")
            fds.append(open_tun(dev))
            configure(dev, addr, peer, routes)
        setns(f"/proc/self/fd/{home}")
        emu = Emulator(fds[0], fds[1], args.seed)
        emu.set({"up": json.loads(args.up), "down": json.loads(args.down)})
        emit({"ready": True, "a_dev": args.a_dev, "b_dev": args.b_dev, "pid": os.getpid()})
        emu.run()
    except (OSError, RuntimeError, ValueError) as e:
        print(f"linkem: {e}", file=sys.stderr)
        return 1
    finally:
        for fd in fds:  # closing the fds removes the devices
            os.close(fd)
        os.close(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
