#!/usr/bin/env python3
"""WHIP endpoint (RFC 9725) on aiortc: the receiving peer for cartd's WHIP client.

Run with the venv made by tests/peers/setup.sh:

    .work/venv/bin/python tests/peers/whip_aiortc.py --port 0 [--token T] [--stamp-decoder PATH]

Prints ``LISTENING <port>`` on stdout once the HTTP server accepts connections, and nothing
else on stdout; logs go to stderr. SIGTERM/SIGINT close every session and exit 0.
See tests/peers/README.md for the full contract (routes, status codes, /stats JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import logging
import math
import os
import signal
import sys
import time
import uuid
from typing import Any, Optional

from aiohttp import web

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.sdp import candidate_from_sdp

log = logging.getLogger("whip_aiortc")

MAX_DC_MESSAGES = 1000
AUDIO_RMS_WINDOW_S = 1.0


def now_us() -> int:
    """Wall clock (CLOCK_REALTIME) in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


def percentile(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return 0.0
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = math.floor(k)
    hi = math.ceil(k)
    if lo == hi:
        return sorted_vals[int(k)]
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


class StampStats:
    """Aggregates the stamp decoder's JSON lines (all sessions together)."""

    def __init__(self) -> None:
        self.fed = 0
        self.decoded = 0
        self.failed = 0
        self.first_sequence: Optional[int] = None
        self.last_sequence: Optional[int] = None
        self.min_sequence: Optional[int] = None
        self.max_sequence: Optional[int] = None
        self.seen: set[int] = set()
        self.duplicates = 0
        self.out_of_order = 0
        self.latencies_ms: list[float] = []
        self.decoder_latencies_ms: list[float] = []
        self.decoder_errors: list[str] = []
        self.last_error: Optional[str] = None

    def record(self, obj: dict, arrival_us: Optional[int]) -> None:
        if "error" in obj or "sequence" not in obj:
            self.failed += 1
            self.last_error = str(obj.get("error", "no sequence"))
            return
        seq = int(obj["sequence"])
        self.decoded += 1
        if self.first_sequence is None:
            self.first_sequence = seq
        if self.last_sequence is not None and seq < self.last_sequence:
            self.out_of_order += 1
        self.last_sequence = seq
        self.min_sequence = seq if self.min_sequence is None else min(self.min_sequence, seq)
        self.max_sequence = seq if self.max_sequence is None else max(self.max_sequence, seq)
        if seq in self.seen:
            self.duplicates += 1
        self.seen.add(seq)
        if arrival_us is not None and "capture_time_us" in obj:
            self.latencies_ms.append((arrival_us - int(obj["capture_time_us"])) / 1000.0)
        if "latency_us" in obj:
            self.decoder_latencies_ms.append(int(obj["latency_us"]) / 1000.0)

    def to_json(self) -> dict:
        missing = 0
        if self.min_sequence is not None:
            missing = (self.max_sequence - self.min_sequence + 1) - len(self.seen)
        lat = sorted(self.latencies_ms)
        dlat = sorted(self.decoder_latencies_ms)
        return {
            "frames_fed": self.fed,
            "decoded": self.decoded,
            "failed": self.failed,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "missing": missing,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "latency_ms": {
                "p50": round(percentile(lat, 50), 3),
                "p95": round(percentile(lat, 95), 3),
                "max": round(lat[-1], 3) if lat else 0.0,
            },
            "decoder_latency_ms": {
                "p50": round(percentile(dlat, 50), 3),
                "p95": round(percentile(dlat, 95), 3),
                "max": round(dlat[-1], 3) if dlat else 0.0,
            },
            "last_error": self.last_error,
            "decoder_errors": self.decoder_errors[-10:],
        }


class StampDecoder:
    """One `stamp-decode --width W --height H` process; raw I420 in, one JSON line per frame out."""

    def __init__(self, path: str, width: int, height: int, stats: StampStats) -> None:
        self.path = path
        self.width = width
        self.height = height
        self.stats = stats
        self.arrivals: collections.deque[int] = collections.deque()
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.reader: Optional[asyncio.Task] = None
        self.broken = False

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.path, "--width", str(self.width), "--height", str(self.height),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.reader = asyncio.create_task(self._read())
        asyncio.create_task(self._read_stderr())
        log.info("stamp decoder started: %s %dx%d (pid %d)", self.path, self.width,
                 self.height, self.proc.pid)

    async def _read_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        async for line in self.proc.stderr:
            text = line.decode(errors="replace").rstrip()
            if text:
                log.info("stamp-decode: %s", text)

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        async for line in self.proc.stdout:
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            arrival = self.arrivals.popleft() if self.arrivals else None
            try:
                obj = json.loads(text)
            except ValueError:
                self.stats.failed += 1
                self.stats.last_error = "unparsable decoder output: " + text[:200]
                continue
            self.stats.record(obj, arrival)
        rc = await self.proc.wait()
        if rc != 0:
            self.stats.decoder_errors.append(f"stamp decoder exited with {rc}")

    async def feed(self, frame: Any, arrival_us: int) -> None:
        if self.broken or not self.proc or not self.proc.stdin:
            return
        data = frame.to_ndarray(format="yuv420p").tobytes()
        self.arrivals.append(arrival_us)
        self.stats.fed += 1
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            self.broken = True
            self.stats.decoder_errors.append(f"stamp decoder pipe closed: {e}")

    async def close(self) -> None:
        if self.proc and self.proc.stdin and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        if self.reader:
            try:
                await asyncio.wait_for(self.reader, 5)
            except asyncio.TimeoutError:
                self.proc.kill()


class Session:
    def __init__(self, endpoint: "Endpoint", name: str) -> None:
        self.endpoint = endpoint
        self.name = name
        self.id = uuid.uuid4().hex
        self.etag = '"' + uuid.uuid4().hex[:16] + '"'
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=endpoint.ice_servers))
        self.remote_ufrag: Optional[str] = None
        self.tasks: list[asyncio.Task] = []
        self.closed = False
        self.created = time.time()
        self.video_frames = 0
        self.audio_frames = 0
        self.stamp_decoder: Optional[StampDecoder] = None
        self.final_inbound: dict[str, dict] = {}
        self.deleted = False

        @self.pc.on("track")
        def on_track(track) -> None:
            log.info("[%s] track %s", self.id[:8], track.kind)
            if track.kind == "video":
                self.tasks.append(asyncio.create_task(self._video(track)))
            elif track.kind == "audio":
                self.tasks.append(asyncio.create_task(self._audio(track)))

        @self.pc.on("datachannel")
        def on_datachannel(channel) -> None:
            log.info("[%s] data channel %r", self.id[:8], channel.label)

            @channel.on("message")
            def on_message(message) -> None:
                msgs = self.endpoint.dc_messages
                entry: dict[str, Any] = {"label": channel.label, "t_us": now_us()}
                if isinstance(message, str):
                    entry["data"] = message
                else:
                    entry["binary"] = base64.b64encode(message).decode()
                if len(msgs) < MAX_DC_MESSAGES:
                    msgs.append(entry)
                if self.endpoint.args.dc_echo:
                    channel.send(message)

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("[%s] connection state %s", self.id[:8], self.pc.connectionState)
            if self.pc.connectionState in ("failed", "closed"):
                await self.close()

    async def _video(self, track) -> None:
        ep = self.endpoint
        try:
            while True:
                frame = await track.recv()
                arrival = now_us()
                self.video_frames += 1
                ep.video_frames += 1
                ep.width, ep.height = frame.width, frame.height
                if ep.args.stamp_decoder:
                    dec = self.stamp_decoder
                    if dec is None or (dec.width, dec.height) != (frame.width, frame.height):
                        if dec is not None:
                            await dec.close()
                        dec = StampDecoder(ep.args.stamp_decoder, frame.width, frame.height,
                                           ep.stamps)
                        await dec.start()
                        self.stamp_decoder = dec
                    await dec.feed(frame, arrival)
        except Exception as e:  # MediaStreamError when the track ends
            log.info("[%s] video track ended: %r", self.id[:8], e)

    async def _audio(self, track) -> None:
        import numpy as np

        ep = self.endpoint
        try:
            while True:
                frame = await track.recv()
                self.audio_frames += 1
                ep.audio_frames += 1
                samples = frame.to_ndarray().astype(np.float64)
                if frame.format.name in ("s16", "s16p"):
                    samples /= 32768.0
                elif frame.format.name in ("s32", "s32p"):
                    samples /= 2147483648.0
                sq = float(np.sum(samples * samples))
                n = int(samples.size)
                dur = frame.samples / float(frame.sample_rate or 48000)
                ep.audio_window.append((sq, n, dur))
                ep.audio_window_dur += dur
                while ep.audio_window_dur > AUDIO_RMS_WINDOW_S and len(ep.audio_window) > 1:
                    _, _, d = ep.audio_window.popleft()
                    ep.audio_window_dur -= d
                ep.audio_sum_sq += sq
                ep.audio_samples += n
        except Exception as e:
            log.info("[%s] audio track ended: %r", self.id[:8], e)

    async def inbound(self) -> dict[str, dict]:
        """Received-RTP counters per kind (live while open, frozen at close).

        Read from aiortc's receivers directly: its getStats() gives every SSRC of a receiver
        the same id, so the RTX stream's entry overwrites the media stream's. packets_lost is
        counted on the wire (before NACK/RTX recovery): RTX repairs show up in
        rtx_packets_received, not as a smaller loss.
        """
        if self.closed:
            return self.final_inbound
        out: dict[str, dict] = {}
        for r in self.pc.getReceivers():
            streams = getattr(r, "_RTCRtpReceiver__remote_streams", {})
            rtx = getattr(r, "_RTCRtpReceiver__rtx_ssrc", {})
            kind = r.track.kind if r.track else "unknown"
            agg = out.setdefault(kind, {"packets_received": 0, "packets_lost": 0,
                                        "jitter_ms": 0.0, "rtx_packets_received": 0})
            for ssrc, st in list(streams.items()):
                if ssrc in rtx:
                    agg["rtx_packets_received"] += st.packets_received
                    continue
                agg["packets_received"] += st.packets_received
                agg["packets_lost"] += max(0, st.packets_lost)
                clock = getattr(st, "_clockrate", 0) or 90000
                agg["jitter_ms"] = max(agg["jitter_ms"], round(st.jitter * 1000.0 / clock, 3))
        self.final_inbound = out
        return out

    async def close(self) -> None:
        if self.closed:
            return
        await self.inbound()
        self.closed = True
        log.info("[%s] closing", self.id[:8])
        await self.pc.close()
        for t in self.tasks:
            t.cancel()
        if self.stamp_decoder:
            await self.stamp_decoder.close()

    def summary(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "closed": self.closed,
            "deleted": self.deleted,
            "connection_state": self.pc.connectionState,
            "ice_connection_state": self.pc.iceConnectionState,
            "video_frames_decoded": self.video_frames,
            "audio_frames_decoded": self.audio_frames,
        }


class Endpoint:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sessions: dict[str, Session] = {}
        self.ice_servers: list[RTCIceServer] = []
        for url in args.stun:
            self.ice_servers.append(RTCIceServer(urls=url))
        for url in args.turn:
            self.ice_servers.append(RTCIceServer(urls=url, username=args.turn_username,
                                                 credential=args.turn_password))
        self.video_frames = 0
        self.audio_frames = 0
        self.width = 0
        self.height = 0
        self.video_codec: Optional[str] = None
        self.audio_codec: Optional[str] = None
        self.audio_window: collections.deque = collections.deque()
        self.audio_window_dur = 0.0
        self.audio_sum_sq = 0.0
        self.audio_samples = 0
        self.dc_messages: list[dict] = []
        self.stamps = StampStats()

    # --- helpers ---------------------------------------------------------
    def check_auth(self, request: web.Request) -> Optional[web.Response]:
        if not self.args.token:
            return None
        auth = request.headers.get("Authorization", "")
        if auth != "Bearer " + self.args.token:
            return web.Response(status=401, text="unauthorized\n",
                                headers={"WWW-Authenticate": 'Bearer realm="whip"'})
        return None

    def link_headers(self) -> list[tuple[str, str]]:
        out = []
        for url in self.args.link_ice_server:
            link = f'<{url}>; rel="ice-server"'
            if url.startswith("turn") and self.args.link_username is not None:
                link += (f'; username="{self.args.link_username}"'
                         f'; credential="{self.args.link_credential or ""}"'
                         '; credential-type="password"')
            out.append(("Link", link))
        return out

    # --- routes ----------------------------------------------------------
    async def options(self, request: web.Request) -> web.Response:
        headers = [("Accept-Post", "application/sdp"),
                   ("Access-Control-Allow-Methods", "OPTIONS, POST, PATCH, DELETE")]
        return web.Response(status=204, headers=headers + self.link_headers())

    async def post(self, request: web.Request) -> web.Response:
        denied = self.check_auth(request)
        if denied:
            return denied
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            return web.Response(status=415, text="Content-Type must be application/sdp\n")
        sdp = await request.text()
        if "v=0" not in sdp or "\nm=" not in sdp:
            return web.Response(status=400, text="body is not an SDP offer\n")
        name = request.match_info["name"]
        session = Session(self, name)
        try:
            await session.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            self._prefer_codecs(session.pc)
            answer = await session.pc.createAnswer()
            await session.pc.setLocalDescription(answer)
        except Exception as e:
            log.warning("bad offer: %r", e)
            await session.pc.close()
            return web.Response(status=400, text=f"cannot answer offer: {e}\n")
        session.remote_ufrag = _ufrag(sdp)
        self.sessions[session.id] = session
        self._note_codecs(session.pc)
        log.info("[%s] session created for %r (%d total)", session.id[:8], name,
                 len(self.sessions))
        headers = [
            ("Location", f"/whip/{name}/{session.id}"),
            ("ETag", session.etag),
            ("Content-Type", "application/sdp"),
            ("Accept-Patch", "application/trickle-ice-sdpfrag"),
            ("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Patch"),
        ] + self.link_headers()
        return web.Response(status=201, body=session.pc.localDescription.sdp.encode(),
                            headers=headers)

    async def patch(self, request: web.Request) -> web.Response:
        denied = self.check_auth(request)
        if denied:
            return denied
        session = self.sessions.get(request.match_info["id"])
        if session is None or session.name != request.match_info["name"] or session.deleted:
            return web.Response(status=404, text="no such session\n")
        if session.closed:
            return web.Response(status=409, text="session closed\n")
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/trickle-ice-sdpfrag":
            return web.Response(status=415,
                                text="Content-Type must be application/trickle-ice-sdpfrag\n")
        if_match = request.headers.get("If-Match")
        frag = await request.text()
        ufrag = _ufrag(frag)
        if ufrag is not None and ufrag != session.remote_ufrag:
            # ICE restart: aiortc cannot restart ICE. RFC 9725 4.3.1: trickle supported but
            # not restarts -> 422 for the restart request.
            return web.Response(status=422, text="ICE restart not supported by this endpoint\n",
                                headers={"ETag": session.etag})
        if if_match and if_match != "*" and if_match != session.etag:
            return web.Response(status=412, text="ETag mismatch\n", headers={"ETag": session.etag})
        mids = [t.mid for t in session.pc.getTransceivers()]
        if session.pc.sctp is not None:
            mids.append(session.pc.sctp.mid)
        current_mid: Optional[str] = None
        added = 0
        for raw in frag.splitlines():
            line = raw.strip()
            if line.startswith("a=mid:"):
                current_mid = line[6:]
            elif line.startswith("a=candidate:"):
                try:
                    cand = candidate_from_sdp(line[len("a="):].split(":", 1)[1])
                except Exception:
                    return web.Response(status=400, text=f"bad candidate line: {line}\n")
                cand.sdpMid = current_mid if current_mid is not None else (mids[0] if mids else None)
                try:
                    await session.pc.addIceCandidate(cand)
                    added += 1
                except Exception as e:
                    log.warning("addIceCandidate failed: %r", e)
        log.info("[%s] PATCH: %d trickled candidates", session.id[:8], added)
        return web.Response(status=204, headers={"ETag": session.etag})

    async def delete(self, request: web.Request) -> web.Response:
        denied = self.check_auth(request)
        if denied:
            return denied
        session = self.sessions.get(request.match_info["id"])
        if session is None or session.name != request.match_info["name"] or session.deleted:
            return web.Response(status=404, text="no such session\n")
        # 200 even when the transport already closed (the client may close its
        # PeerConnection first): the resource exists until it is DELETEd.
        session.deleted = True
        await session.close()
        return web.Response(status=200, text="")

    async def method_not_allowed(self, request: web.Request) -> web.Response:
        return web.Response(status=405, headers={"Allow": "POST, OPTIONS"})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(await self.stats_json(), dumps=lambda o: json.dumps(o))

    async def stats_json(self) -> dict:
        win_sq = sum(sq for sq, _, _ in self.audio_window)
        win_n = sum(n for _, n, _ in self.audio_window)
        active = [s for s in self.sessions.values() if not s.closed]
        inbound: dict[str, dict] = {}
        for s in list(self.sessions.values()):
            for kind, st in (await s.inbound()).items():
                agg = inbound.setdefault(kind, {"packets_received": 0, "packets_lost": 0,
                                                "jitter_ms": 0.0, "rtx_packets_received": 0})
                for k in ("packets_received", "packets_lost", "rtx_packets_received"):
                    agg[k] += st[k]
                agg["jitter_ms"] = max(agg["jitter_ms"], st["jitter_ms"])
        out: dict[str, Any] = {
            "sessions": len(self.sessions),
            "active_sessions": len(active),
            "video_frames_decoded": self.video_frames,
            "audio_frames_decoded": self.audio_frames,
            "audio_rms": round(math.sqrt(win_sq / win_n), 6) if win_n else 0.0,
            "audio_rms_total": (round(math.sqrt(self.audio_sum_sq / self.audio_samples), 6)
                                if self.audio_samples else 0.0),
            "video_codec": self.video_codec,
            "audio_codec": self.audio_codec,
            "width": self.width,
            "height": self.height,
            "datachannel_messages": self.dc_messages,
            "closed": bool(self.sessions) and not active,
            "inbound_rtp": inbound,
            "session_list": [s.summary() for s in self.sessions.values()],
        }
        if self.args.stamp_decoder:
            out["stamps"] = self.stamps.to_json()
        return out

    # --- codecs ----------------------------------------------------------
    def _prefer_codecs(self, pc: RTCPeerConnection) -> None:
        """Order codec preferences so H.264 (video) and Opus (audio) win when offered."""
        for t in pc.getTransceivers():
            caps = RTCRtpSender.getCapabilities(t.kind)
            if caps is None:
                continue
            want = self.args.video_codec.upper() if t.kind == "video" else "OPUS"
            pref = [c for c in caps.codecs if c.mimeType.split("/")[1].upper() == want]
            rest = [c for c in caps.codecs if c not in pref]
            try:
                t.setCodecPreferences(pref + rest)
            except Exception as e:
                log.warning("setCodecPreferences: %r", e)

    def _note_codecs(self, pc: RTCPeerConnection) -> None:
        for t in pc.getTransceivers():
            codecs = getattr(t, "_codecs", None) or []
            media = [c for c in codecs if c.mimeType.split("/")[1].lower() not in ("rtx", "red",
                                                                                  "ulpfec")]
            if media:
                name = media[0].mimeType.split("/")[1]
                if t.kind == "video":
                    self.video_codec = name.upper() if name.upper() == "H264" else name
                elif t.kind == "audio":
                    self.audio_codec = name.lower() if name.lower() == "opus" else name

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions.values()),
                             return_exceptions=True)


def _ufrag(sdp: str) -> Optional[str]:
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.split(":", 1)[1].strip()
    return None


async def main_async(args: argparse.Namespace) -> int:
    if args.ice_host_address:
        addrs = list(args.ice_host_address)
        aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: addrs  # type: ignore
        log.info("ICE host candidates restricted to %s", addrs)
    if args.stamp_decoder and not os.access(args.stamp_decoder, os.X_OK):
        print(f"whip_aiortc: stamp decoder {args.stamp_decoder!r} is not executable",
              file=sys.stderr)
        return 2

    ep = Endpoint(args)
    app = web.Application(client_max_size=1 << 20)
    app.router.add_route("OPTIONS", "/whip/{name}", ep.options)
    app.router.add_post("/whip/{name}", ep.post)
    app.router.add_route("PATCH", "/whip/{name}/{id}", ep.patch)
    app.router.add_delete("/whip/{name}/{id}", ep.delete)
    app.router.add_get("/whip/{name}", ep.method_not_allowed)
    app.router.add_get("/stats", ep.stats)
    runner = web.AppRunner(app, access_log=log if args.verbose else None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"LISTENING {port}", flush=True)
    log.info("WHIP endpoint on http://%s:%d/whip/<name>", args.host, port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    if args.final_stats:
        print("STATS " + json.dumps(await ep.stats_json()), flush=True)
    await ep.close_all()
    await runner.cleanup()
    return 0


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (401 otherwise)")
    p.add_argument("--stamp-decoder", metavar="PATH",
                   help="stamp-decode binary; enables the 'stamps' section of /stats")
    p.add_argument("--ice-host-address", action="append", default=[], metavar="ADDR",
                   help="use only this address for host candidates (repeatable), "
                        "e.g. 127.0.0.1 inside a network namespace")
    p.add_argument("--stun", action="append", default=[], metavar="URL",
                   help="stun:host:port used by the endpoint's own ICE agent (repeatable)")
    p.add_argument("--turn", action="append", default=[], metavar="URL",
                   help="turn:host:port?transport=udp|tcp used by the endpoint (repeatable)")
    p.add_argument("--turn-username", default=None)
    p.add_argument("--turn-password", default=None)
    p.add_argument("--link-ice-server", action="append", default=[], metavar="URL",
                   help='advertise as Link: <URL>; rel="ice-server" in 201/OPTIONS')
    p.add_argument("--link-username", default=None,
                   help="username (and --link-credential) on the turn(s): Link headers")
    p.add_argument("--link-credential", default=None)
    p.add_argument("--video-codec", default="H264", help="preferred video codec (default H264)")
    p.add_argument("--dc-echo", action="store_true", help="echo data-channel messages back")
    p.add_argument("--final-stats", action="store_true",
                   help="print 'STATS <json>' on stdout when stopped by a signal")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.verbose:
        logging.getLogger("whip_aiortc").setLevel(logging.INFO)
    else:
        logging.getLogger("whip_aiortc").setLevel(logging.INFO)
        logging.getLogger("aiortc").setLevel(logging.WARNING)
        logging.getLogger("aioice").setLevel(logging.WARNING)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
