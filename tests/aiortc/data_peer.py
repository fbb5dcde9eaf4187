"""An aiortc participant that joins with data channels (docs/protocol.md) and exchanges
messages through the relay: a second, independently written SCTP and DCEP stack.

    data_peer.py ws://127.0.0.1:8080/ws SESSION CID KEY_ID KEY_SECRET COUNT

It mints its join token (with the publish_data grant) with PyJWT, waits for the relay's two
channels, prints `READY <uid>`, then:
- checks the messages a page sends it: COUNT of them, message i being `text i` for even i and
  i bytes of value i % 256 for odd i, all reliable; prints `RECEIVED <n> <wrong>` once all came;
- sends COUNT messages of its own the same way (to everyone) and prints `SENT <n>`.
Runs until killed.
"""

import asyncio
import json
import struct
import sys
import time

import aioice.ice
import jwt
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription


def loopback_only(use_ipv4=True, use_ipv6=True):
    # aioice skips 127.0.0.1 by default; the tests run in a loopback-only namespace.
    return ["127.0.0.1"]


aioice.ice.get_host_addresses = loopback_only


def mint(cid, key_id, secret, sid):
    return jwt.encode(
        {"cid": cid, "sid": sid, "uid": "aiortc", "name": "aiortc",
         "grants": {"publish": True, "subscribe": True, "publish_data": True},
         "exp": int(time.time()) + 3600},
        secret, algorithm="HS256", headers={"kid": key_id})


def addressed(text, payload, targets=()):
    """The envelope of a message as a participant sends it (docs/protocol.md)."""
    out = bytes([1, 1 if text else 0]) + struct.pack(">H", len(targets))
    for t in targets:
        t = t.encode()
        out += struct.pack(">H", len(t)) + t
    return out + payload


def delivered(data):
    """Sender, whether a string, and the bytes of a delivered message."""
    if len(data) < 4 or data[0] != 1:
        raise ValueError("not an envelope")
    (n,) = struct.unpack(">H", data[2:4])
    return data[4:4 + n].decode(), bool(data[1] & 1), data[4 + n:]


def message(i):
    if i % 2 == 0:
        return True, f"text {i}".encode()
    return False, bytes([i % 256]) * i


async def main(url, sid, token, count):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channels = {}
    ready = asyncio.Event()
    all_in = asyncio.Event()
    received = {"n": 0, "wrong": 0}
    next_id = 1
    replies = {}

    @pc.on("datachannel")
    def on_datachannel(channel):
        channels[channel.label] = channel

        @channel.on("message")
        def on_message(data):
            if channel.label != "reliable":
                return
            try:
                _, text, payload = delivered(data)
            except ValueError:
                received["wrong"] += 1
                return
            want_text, want = message(received["n"])
            if (text, payload) != (want_text, want):
                received["wrong"] += 1
            received["n"] += 1
            if received["n"] == count:
                print(f"RECEIVED {received['n']} {received['wrong']}", flush=True)
                all_in.set()

        if {"reliable", "lossy"} <= channels.keys():
            ready.set()

    async with websockets.connect(url, max_size=None) as ws:

        async def request(msg):
            nonlocal next_id
            rid = next_id
            next_id += 1
            fut = asyncio.get_running_loop().create_future()
            replies[rid] = fut
            await ws.send(json.dumps({**msg, "id": rid}))
            return await fut

        async def on_offer(msg):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
            answer = await pc.createAnswer()
            await request({"type": "answer", "offer_id": msg["offer_id"], "sdp": answer.sdp})
            await pc.setLocalDescription(answer)

        async def reader():
            async for text in ws:
                msg = json.loads(text)
                if msg["type"] == "reply":
                    fut = replies.pop(msg["id"], None)
                    if fut is None:
                        continue
                    if "error" in msg:
                        fut.set_exception(RuntimeError(f"{msg['error']['code']}: {msg['error']['reason']}"))
                    else:
                        fut.set_result(msg["ok"])
                elif msg["type"] == "offer":
                    asyncio.ensure_future(on_offer(msg))

        read_task = asyncio.ensure_future(reader())
        joined = await request({"type": "join", "v": 1, "sid": sid, "name": "aiortc", "token": token, "data": True})
        await asyncio.wait_for(ready.wait(), 20)
        print(f"READY {joined['uid']}", flush=True)

        async def progress():
            # Says how far it got while the page's messages are late (a failing test's log).
            while not all_in.is_set():
                await asyncio.sleep(5)
                if not all_in.is_set():
                    print(f"aiortc: {received['n']} of {count} received so far", file=sys.stderr, flush=True)

        asyncio.ensure_future(progress())
        # The page starts once it sees READY; this side sends its own once it has them all:
        # the page may not have joined yet when this side's channels open, and a message to
        # everyone reaches only who is there (docs/relay.md#data-channels).
        await asyncio.wait_for(all_in.wait(), 60)
        reliable = channels["reliable"]
        for i in range(count):
            text, payload = message(i)
            reliable.send(addressed(text, payload))
            # aiortc buffers without limit: wait while much is queued.
            while reliable.bufferedAmount > 1 << 20:
                await asyncio.sleep(0.01)
        print(f"SENT {count}", flush=True)
        await read_task


if __name__ == "__main__":
    url, sid, cid, key_id, secret, count = sys.argv[1:7]
    asyncio.run(main(url, sid, mint(cid, key_id, secret, sid), int(count)))
