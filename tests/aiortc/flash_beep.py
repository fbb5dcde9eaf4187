"""An aiortc participant that publishes a video that flashes white and an audio that beeps at
the same instants, once a second, and records itself: what a recording's audio/video
synchronisation is measured with.

    flash_beep.py ws://HOST:PORT/ws SESSION CID KEY_ID KEY_SECRET SECONDS

Both tracks decide from the wall clock, not from their own start (each aiortc track starts its
timestamps when it is first read): a flash and a beep start at every whole second after the
script started, and last 100 ms. The video is dark otherwise, the audio silent.

Prints `PUBLISHED <feed_id>` once the relay has the feed, `RECORDING` once the session's
recording started (2 s later, so that the sender reports have begun), `RECORDED` once it was
stopped SECONDS later; then exits. Set AIORTC_HOST to the address to gather (default
127.0.0.1).
"""

import asyncio
import fractions
import json
import math
import os
import sys
import time

import aioice.ice
import av
import jwt
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

HOST = os.environ.get("AIORTC_HOST", "127.0.0.1")


def host_only(use_ipv4=True, use_ipv6=True):
    # aioice skips 127.0.0.1 by default; the tests run in namespaces of their own.
    return [HOST]


aioice.ice.get_host_addresses = host_only

EPOCH = time.time()
FLASH = 0.1  # seconds


def lit(at):
    """Whether wall-clock time `at` is in a flash (and a beep)."""
    return (at - EPOCH) % 1.0 < FLASH


class Flashes(VideoStreamTrack):
    """320x240 at 30 fps: white for 100 ms from each whole second, dark otherwise."""

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        # next_timestamp() waits until the frame's time: the capture instant is now.
        bright = lit(time.time())
        frame = av.VideoFrame(width=320, height=240, format="yuv420p")
        for i, plane in enumerate(frame.planes):
            value = (235 if bright else 16) if i == 0 else 128
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        return frame


class Beeps(AudioStreamTrack):
    """48 kHz mono, 20 ms frames: a 1 kHz tone for 100 ms from each whole second, silence
    otherwise."""

    RATE = 48000
    SAMPLES = 960

    def __init__(self):
        super().__init__()
        self.next_pts = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        at = self.start + self.next_pts / self.RATE
        wait = at - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = bytearray()
        for n in range(self.SAMPLES):
            t = at + n / self.RATE
            value = int(16000 * math.sin(2 * math.pi * 1000 * t)) if lit(t) else 0
            samples += value.to_bytes(2, "little", signed=True)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(bytes(samples))
        frame.sample_rate = self.RATE
        frame.pts = self.next_pts
        frame.time_base = fractions.Fraction(1, self.RATE)
        self.next_pts += self.SAMPLES
        return frame


def mint(cid, key_id, secret, sid):
    return jwt.encode(
        {"cid": cid, "sid": sid, "uid": "flasher", "name": "flasher",
         "grants": {"publish": True, "subscribe": True, "record": True},
         "exp": int(time.time()) + 3600},
        secret, algorithm="HS256", headers={"kid": key_id})


async def main(url, sid, token, seconds):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks = {"video": Flashes(), "audio": Beeps()}
    next_id = 1
    replies = {}
    published = asyncio.get_running_loop().create_future()

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
                    if t.mid == info["mid"] and info["role"] == "publish":
                        t.direction = "sendonly"
                        t.sender.replaceTrack(tracks[info["kind"]])
            answer = await pc.createAnswer()
            result = await request({"type": "answer", "offer_id": msg["offer_id"], "sdp": answer.sdp})
            await pc.setLocalDescription(answer)
            if feed_id in result.get("published", []) and not published.done():
                published.set_result(feed_id)

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
        await request({"type": "join", "v": 1, "sid": sid, "name": "flasher", "token": token})
        reply = await request({"type": "publish", "source": "webcam", "video": True, "audio": True})
        feed_id = reply["feed_id"]
        print(f"PUBLISHED {await published}", flush=True)
        await asyncio.sleep(2)
        await request({"type": "record", "enable": True})
        print("RECORDING", flush=True)
        await asyncio.sleep(seconds)
        await request({"type": "record", "enable": False})
        print("RECORDED", flush=True)
        await request({"type": "leave"})
        read_task.cancel()
        await pc.close()


if __name__ == "__main__":
    url, sid, cid, key_id, secret, seconds = sys.argv[1:7]
    asyncio.run(main(url, sid, mint(cid, key_id, secret, sid), float(seconds)))
