#!/usr/bin/env python3
"""Reference WHIP publisher (RFC 9725) on aiortc: H.264 test pattern + Opus 440 Hz tone.

    .work/venv/bin/python tests/peers/whip_client_aiortc.py URL [--token T] [--seconds 5]

POSTs an offer to URL, waits for the connection, publishes for --seconds, optionally sends
data-channel messages, then DELETEs the resource. Prints one JSON line on stdout:
{"post_status":201,"location":...,"etag":...,"connected":true,"connection_state":...,
 "frames_sent":N,"delete_status":200,...}. Exit 0 if POST gave 201, the connection came up
and (unless --no-delete) DELETE gave 200; 1 otherwise.

--fake-stamp draws tests/peers/fixtures/fake_stamp.py's block code (sequence + capture time)
into each frame so whip_aiortc.py's --stamp-decoder path can be checked with
fixtures/fake_stamp_decode.py before the project's stamp-decode exists.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import logging
import math
import os
import sys
import time
from typing import Optional
from urllib.parse import urljoin

import aiohttp
import aioice.ice
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from av import AudioFrame, VideoFrame

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import fake_stamp  # noqa: E402

log = logging.getLogger("whip_client")


class PatternTrack(VideoStreamTrack):
    """Moving bars in I420, optionally stamped with fake_stamp's block code."""

    def __init__(self, width: int, height: int, stamp: bool) -> None:
        super().__init__()
        self.width, self.height, self.stamp = width, height, stamp
        self.seq = 0
        self.sent = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        w, h = self.width, self.height
        y = np.empty((h, w), dtype=np.uint8)
        xs = (np.arange(w) + self.seq * 4) % 256
        y[:, :] = xs.astype(np.uint8)[None, :]
        u = np.full((h // 2, w // 2), 128, dtype=np.uint8)
        v = np.full((h // 2, w // 2), (self.seq * 2) % 256, dtype=np.uint8)
        if self.stamp:
            fake_stamp.draw(y, self.seq, time.time_ns() // 1000)
        buf = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)])
        frame = VideoFrame.from_ndarray(buf.reshape(h * 3 // 2, w), format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        self.seq += 1
        self.sent += 1
        return frame


class ToneTrack(AudioStreamTrack):
    """48 kHz sine (same on both channels), 20 ms frames, peak 0.316 (RMS ~0.224)."""

    def __init__(self, freq: float = 440.0, amplitude: float = 0.316) -> None:
        super().__init__()
        self.freq, self.amplitude = freq, amplitude

    async def recv(self) -> AudioFrame:
        rate, samples = 48000, 960
        if hasattr(self, "_timestamp"):
            self._timestamp += samples
            wait = self._start + (self._timestamp / rate) - time.time()
            await asyncio.sleep(wait)
        else:
            self._start = time.time()
            self._timestamp = 0
        t = (np.arange(samples) + self._timestamp) / rate
        mono = (np.sin(2 * math.pi * self.freq * t) * self.amplitude * 32767).astype(np.int16)
        data = np.repeat(mono, 2)  # interleaved stereo: no mono->stereo upmix (-3 dB) in aiortc
        frame = AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="stereo")
        frame.pts = self._timestamp
        frame.sample_rate = rate
        frame.time_base = fractions.Fraction(1, rate)
        return frame


def force_codec(pc: RTCPeerConnection, kind: str, mime: str) -> None:
    caps = RTCRtpSender.getCapabilities(kind)
    prefs = [c for c in caps.codecs if c.mimeType.lower() == mime.lower()]
    # keep RTX so NACK retransmissions still work
    prefs += [c for c in caps.codecs if c.mimeType.lower().endswith("/rtx")]
    for t in pc.getTransceivers():
        if t.kind == kind:
            t.setCodecPreferences(prefs)


async def run(args: argparse.Namespace) -> dict:
    if args.ice_host_address:
        addrs = list(args.ice_host_address)
        aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: addrs  # type: ignore
    servers = [RTCIceServer(urls=u) for u in args.stun]
    servers += [RTCIceServer(urls=u, username=args.turn_username, credential=args.turn_password)
                for u in args.turn]
    cfg = RTCConfiguration(
        iceServers=servers,
        # RFC 9725: WHIP clients use max-bundle.
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        iceTransportPolicy=(RTCIceTransportPolicy.RELAY if args.relay_only
                            else RTCIceTransportPolicy.ALL),
    )
    pc = RTCPeerConnection(cfg)
    video = PatternTrack(args.width, args.height, args.fake_stamp) if not args.no_video else None
    result: dict = {"url": args.url}
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    async def _state() -> None:
        log.info("connection state %s", pc.connectionState)
        if pc.connectionState == "connected":
            connected.set()

    if video:
        pc.addTransceiver(video, direction="sendonly")
        force_codec(pc, "video", "video/" + args.video_codec)
    if not args.no_audio:
        pc.addTransceiver(ToneTrack(), direction="sendonly")
        force_codec(pc, "audio", "audio/opus")
    channel = pc.createDataChannel("telecart") if args.dc_message else None

    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if args.token:
        headers["Authorization"] = "Bearer " + args.token
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http:
        async with http.post(args.url, data=pc.localDescription.sdp, headers=headers) as r:
            result["post_status"] = r.status
            body = await r.text()
            result["location"] = r.headers.get("Location")
            result["etag"] = r.headers.get("ETag")
            result["link"] = r.headers.getall("Link", [])
        if r.status != 201:
            result["error"] = body.strip()[:500]
            await pc.close()
            return result
        resource = urljoin(args.url, result["location"]) if result["location"] else None
        result["resource_url"] = resource
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        try:
            await asyncio.wait_for(connected.wait(), args.connect_timeout)
            result["connected"] = True
            result["connect_ms"] = round((time.monotonic() - t0) * 1000, 1)
        except asyncio.TimeoutError:
            result["connected"] = False
        if result["connected"]:
            if channel is not None:
                opened = asyncio.Event()
                if channel.readyState == "open":
                    opened.set()
                channel.on("open", opened.set)
                try:
                    await asyncio.wait_for(opened.wait(), 5)
                    for m in args.dc_message:
                        channel.send(m)
                except asyncio.TimeoutError:
                    result["datachannel_error"] = "data channel did not open"
            await asyncio.sleep(args.seconds)
        result["connection_state"] = pc.connectionState
        result["ice_connection_state"] = pc.iceConnectionState
        result["frames_sent"] = video.sent if video else 0
        try:
            stats = await pc.getStats()
            result["outbound_rtp"] = {
                s.kind: {"packets_sent": s.packetsSent, "bytes_sent": s.bytesSent}
                for s in stats.values() if getattr(s, "type", None) == "outbound-rtp"
            }
        except Exception as e:  # pragma: no cover
            result["stats_error"] = repr(e)
        if resource and not args.no_delete:
            dheaders = {"Authorization": "Bearer " + args.token} if args.token else {}
            async with http.delete(resource, headers=dheaders) as r:
                result["delete_status"] = r.status
    await pc.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description="aiortc WHIP publisher (reference client)")
    p.add_argument("url")
    p.add_argument("--token")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connect-timeout", type=float, default=15.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--video-codec", default="H264")
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--fake-stamp", action="store_true")
    p.add_argument("--dc-message", action="append", default=[],
                   help="send this text on a data channel 'telecart' once open (repeatable)")
    p.add_argument("--no-delete", action="store_true")
    p.add_argument("--ice-host-address", action="append", default=[])
    p.add_argument("--stun", action="append", default=[])
    p.add_argument("--turn", action="append", default=[])
    p.add_argument("--turn-username")
    p.add_argument("--turn-password")
    p.add_argument("--relay-only", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr)
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    ok = result.get("post_status") == 201 and result.get("connected")
    if not args.no_delete:
        ok = ok and result.get("delete_status") == 200
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
