"""An aiortc participant that speaks the WebRTC.ai signalling protocol (docs/protocol.md)
and publishes a synthetic video track: a second, independently written WebRTC stack.

    publisher.py ws://127.0.0.1:8080/ws SESSION CID KEY_ID KEY_SECRET

It mints its join token with PyJWT, exactly as docs/accounts.md shows a customer's backend doing.

Prints `PUBLISHED <feed_id>` once the relay receives its feed, then keeps sending until killed.
"""

import asyncio
import fractions
import json
import sys

import time

import aioice.ice
import av
import jwt
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack


def loopback_only(use_ipv4=True, use_ipv6=True):
    # aioice skips 127.0.0.1 by default; the tests run in a loopback-only namespace.
    return ["127.0.0.1"]


aioice.ice.get_host_addresses = loopback_only


class Pattern(VideoStreamTrack):
    """320x240 frames whose brightness sweeps, so every frame differs."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(width=320, height=240, format="yuv420p")
        luma = (self.n * 7) % 200 + 16
        for i, plane in enumerate(frame.planes):
            value = luma if i == 0 else 128 + (self.n % 40) - 20
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base or fractions.Fraction(1, 90000)
        self.n += 1
        return frame


def mint(cid, key_id, secret, sid):
    return jwt.encode(
        {"cid": cid, "sid": sid, "uid": "aiortc", "name": "aiortc",
         "grants": {"publish": True, "subscribe": True},
         "exp": int(time.time()) + 3600},
        secret, algorithm="HS256", headers={"kid": key_id})


async def main(url, sid, token):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = Pattern()
    next_id = 1
    replies = {}

    async with websockets.connect(url) as ws:

        async def request(msg):
            nonlocal next_id
            rid = next_id
            next_id += 1
            fut = asyncio.get_running_loop().create_future()
            replies[rid] = fut
            await ws.send(json.dumps({**msg, "id": rid}))
            return await fut

        feed_id = None

        async def on_offer(msg):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
            for info in msg["transceivers"]:
                for t in pc.getTransceivers():
                    if t.mid == info["mid"] and info["role"] == "publish" and info["kind"] == "video":
                        t.direction = "sendonly"
                        t.sender.replaceTrack(track)
            answer = await pc.createAnswer()
            result = await request({"type": "answer", "offer_id": msg["offer_id"], "sdp": answer.sdp})
            await pc.setLocalDescription(answer)
            if feed_id in result.get("published", []):
                print(f"PUBLISHED {feed_id}", flush=True)

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
        await request({"type": "join", "v": 1, "sid": sid, "name": "aiortc", "token": token})
        published = await request({"type": "publish", "source": "webcam", "video": True, "audio": False})
        feed_id = published["feed_id"]
        await read_task


if __name__ == "__main__":
    url, sid, cid, key_id, secret = sys.argv[1:6]
    asyncio.run(main(url, sid, mint(cid, key_id, secret, sid)))
