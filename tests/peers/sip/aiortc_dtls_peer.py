"""A SIP phone doing DTLS-SRTP without ICE, on aiortc's RTCDtlsTransport (OpenSSL DTLS,
ECDSA P-256 certificate, libsrtp), for appliance/sip/tests/dtls_srtp.rs.

It sends an INVITE straight to the cart's SIP address (argv[1], host:port) offering PCMU audio
and H.264 (packetization-mode 1) video on UDP/TLS/RTP/SAVPF with its fingerprint and
a=setup:actpass and no ICE, reads the 200 OK, ACKs it, runs one DTLS association per stream
(the role the answer's a=setup leaves it: active answer -> we are the DTLS server) against the
fingerprint in the answer, then for `seconds` (argv[2]) sends a 440 Hz PCMU tone and collects
what the cart sends: PCMU decoded to its dominant frequency, H.264 depacketized and decoded by
FFmpeg (PyAV). Then BYE. Prints one JSON object on stdout.
"""

import asyncio
import audioop
import json
import math
import random
import socket
import struct
import sys
import time

import av
from aiortc.rtcdtlstransport import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
)


class UdpPath(asyncio.DatagramProtocol):
    """What RTCDtlsTransport needs from an ICE transport, on a plain UDP socket (no ICE)."""

    def __init__(self, role):
        self.role = role
        self.queue = asyncio.Queue()
        self.remote = None
        self.udp = None

    def connection_made(self, transport):
        self.udp = transport

    def datagram_received(self, data, addr):
        if addr == self.remote:
            self.queue.put_nowait(data)

    async def _recv(self):
        return await self.queue.get()

    async def _send(self, data):
        self.udp.sendto(data, self.remote)


def sdp_offer(ip, audio_port, video_port, fingerprint):
    return (
        f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=aiortc\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\n"
        f"m=audio {audio_port} UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtcp-mux\r\na=sendrecv\r\n"
        f"m=video {video_port} UDP/TLS/RTP/SAVPF 97\r\na=rtpmap:97 H264/90000\r\n"
        f"a=fmtp:97 packetization-mode=1;profile-level-id=42e01f\r\n"
        f"a=rtcp-fb:97 nack pli\r\na=rtcp-mux\r\na=sendrecv\r\n"
    )


def parse_answer(body):
    """(setup, fingerprint, [(kind, port)]) from the cart's answer."""
    setup, fingerprint, media, conn = None, None, [], None
    for line in body.splitlines():
        if line.startswith("a=setup:"):
            setup = line[8:].strip()
        elif line.startswith("a=fingerprint:"):
            fingerprint = line[14:].strip()
        elif line.startswith("m="):
            kind, port = line[2:].split()[:2]
            media.append((kind, int(port)))
        elif line.startswith("c=") and conn is None:
            conn = line.split()[-1]
    return setup, fingerprint, media, conn


class Sip:
    def __init__(self, cart):
        self.cart = cart
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.call_id = f"aiortc-{random.getrandbits(48):x}"
        self.tag = f"{random.getrandbits(32):x}"
        self.to_tag = None
        self.contact = f"sip:cart1@{cart[0]}:{cart[1]}"

    def request(self, method, cseq, body="", uri=None, to_tag=None):
        to = "<sip:cart1@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        msg = (
            f"{method} {uri or 'sip:cart1@127.0.0.1'} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{random.getrandbits(40):x}\r\n"
            f"From: <sip:doctor@127.0.0.1>;tag={self.tag}\r\nTo: {to}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method.split()[0]}\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:doctor@127.0.0.1:{self.port}>\r\n{ctype}"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.sock.sendto(msg.encode(), self.cart)

    def final_response(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            text = data.decode(errors="replace")
            if text.startswith("SIP/2.0 1"):
                continue
            if text.startswith("SIP/2.0"):
                return text
            if text.startswith("BYE"):
                return text
        return None


def header(msg, name):
    for line in msg.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def depacketize_h264(payload, out):
    """Appends Annex-B NAL units of one RTP payload (single NAL, STAP-A, FU-A) to `out`."""
    nal_type = payload[0] & 0x1F
    if nal_type == 24:  # STAP-A
        i = 1
        while i + 2 <= len(payload):
            n = struct.unpack("!H", payload[i : i + 2])[0]
            out += b"\x00\x00\x00\x01" + payload[i + 2 : i + 2 + n]
            i += 2 + n
    elif nal_type == 28:  # FU-A
        if payload[1] & 0x80:
            out += b"\x00\x00\x00\x01" + bytes([(payload[0] & 0xE0) | (payload[1] & 0x1F)])
        out += payload[2:]
    else:
        out += b"\x00\x00\x00\x01" + payload


def dominant_hz(pcm, rate):
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate) if samples else 0.0


async def main():
    cart = sys.argv[1].rsplit(":", 1)
    cart = (cart[0], int(cart[1]))
    seconds = float(sys.argv[2])
    loop = asyncio.get_running_loop()
    certificate = RTCCertificate.generateCertificate()
    ours = [f for f in certificate.getFingerprints() if f.algorithm == "sha-256"][0].value
    paths = {}
    for kind in ("audio", "video"):
        path = UdpPath("controlled")
        await loop.create_datagram_endpoint(lambda p=path: p, local_addr=("127.0.0.1", 0))
        paths[kind] = path
    sip = Sip(cart)
    offer = sdp_offer(
        "127.0.0.1",
        paths["audio"].udp.get_extra_info("sockname")[1],
        paths["video"].udp.get_extra_info("sockname")[1],
        ours,
    )
    invited = time.monotonic()
    sip.request("INVITE", 1, offer)
    ok = sip.final_response(10)
    answer_ms = (time.monotonic() - invited) * 1000
    result = {"answer_ms": answer_ms, "status": (ok or "").split("\r\n")[0]}
    if not ok or not ok.startswith("SIP/2.0 200"):
        print(json.dumps(result))
        return
    to_tag = header(ok, "To").split("tag=")[-1]
    contact = header(ok, "Contact").strip("<>").split(">")[0]
    sip.request("ACK", 1, uri=contact, to_tag=to_tag)
    body = ok.split("\r\n\r\n", 1)[1]
    setup, fingerprint, media, conn = parse_answer(body)
    result["cart_setup"] = setup
    algorithm, value = fingerprint.split(" ", 1)
    remote = RTCDtlsParameters(fingerprints=[RTCDtlsFingerprint(algorithm.lower(), value)])
    transports = {}
    received = {"audio": [], "video": []}
    for kind, port in media:
        path = paths[kind]
        path.remote = (conn, port)
        dtls = RTCDtlsTransport(path, [certificate])
        dtls._set_role("server" if setup == "active" else "client")

        async def collect(data, arrival_time_ms, kind=kind):
            received[kind].append(data)

        dtls._handle_rtp_data = collect
        transports[kind] = dtls
    started = time.monotonic()
    await asyncio.gather(*(t.start(remote) for t in transports.values()))
    result["dtls_ms"] = (time.monotonic() - started) * 1000
    result["dtls_states"] = {k: t.state for k, t in transports.items()}
    if any(t.state != "connected" for t in transports.values()):
        print(json.dumps(result))
        return
    # 440 Hz PCMU, 20 ms packets.
    ssrc, seq, ts = random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        pcm = struct.pack(
            "<160h",
            *(int(8000 * math.sin(2 * math.pi * 440 * (n * 160 + i) / 8000)) for i in range(160)),
        )
        header_bytes = struct.pack("!BBHII", 0x80, 0, (seq + n) & 0xFFFF, (ts + n * 160) & 0xFFFFFFFF, ssrc)
        await transports["audio"]._send_rtp(header_bytes + audioop.lin2ulaw(pcm, 2))
        n += 1
        await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
    result["audio_sent"] = n
    # What the cart sent, opened by libsrtp: PCMU audio and H.264 video.
    pcm = b"".join(audioop.ulaw2lin(p[12:], 2) for p in received["audio"] if p[1] & 0x7F == 0)
    result["audio_received"] = len(received["audio"])
    result["audio_hz"] = dominant_hz(pcm[-16000:], 8000)
    decoder = av.CodecContext.create("h264", "r")
    frames, unit = 0, bytearray()
    for p in received["video"]:
        cc = p[0] & 0x0F
        start = 12 + 4 * cc
        if p[0] & 0x10:
            ext_len = struct.unpack("!H", p[start + 2 : start + 4])[0]
            start += 4 + 4 * ext_len
        depacketize_h264(p[start:], unit)
        if p[1] & 0x80:
            try:
                frames += len(decoder.decode(av.Packet(bytes(unit))))
            except av.error.FFmpegError:
                pass
            unit = bytearray()
    result["video_received"] = len(received["video"])
    result["video_frames_decoded"] = frames
    sip.request("BYE", 2, uri=contact, to_tag=to_tag)
    bye = sip.final_response(5)
    result["bye"] = (bye or "").split("\r\n")[0]
    for t in transports.values():
        await t.stop()
    print(json.dumps(result))


asyncio.run(main())
