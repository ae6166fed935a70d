#!/usr/bin/env python3
"""Check the real peers against each other, each check in its own network namespace.

    sudo tests/peers/selfcheck.py [-k NAME]      (run tests/setup.sh first)

Checks (all on loopback inside namespaces this script creates and deletes):
  aiortc          whip_client_aiortc -> whip_aiortc: 201/Location/ETag, 401 without token,
                  PATCH trickle 204 / ICE restart 422, frames + audio + stamps + data channel,
                  DELETE 200 then 404, session closed
  aiortc_loss     the same under 5 % UDP loss (netns.sh loss): frames flow, loss is seen
  turn            publisher forced through coturn (relay only) -> whip_aiortc
  janus           whip_client_aiortc -> janus_whip (Janus + simple-whip-server): ICE ready,
                  DTLS connected, H.264 and Opus packets counted by janus_stats; SIGTERM stops it
  browser         browser_call.mjs on fixtures/loopback_call.html: frames decoded in Chromium

Prints one line per check with its time, then "N passed, N failed"; exit 1 if any failed.
Stdlib only; needs root for `ip netns`.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORK = os.environ.get("TELECART_WORK", os.path.join(ROOT, ".work"))
VPY = os.path.join(WORK, "venv", "bin", "python")
NETNS = os.path.join(HERE, "netns.sh")
LOGDIR = tempfile.mkdtemp(prefix="telecart-selfcheck-")


class Fail(Exception):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise Fail(what)


class Namespace:
    def __init__(self, tag: str, veth: bool = False) -> None:
        self.name = f"tcsc-{tag}-{os.getpid()}"
        self.veth = veth
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Namespace":
        args = [NETNS, "create", self.name] + (["--veth"] if self.veth else [])
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        subprocess.run([NETNS, "delete", self.name], check=False)

    def cmd(self, *args: str) -> list[str]:
        return [NETNS, "exec", self.name, *args]

    def start(self, name: str, *args: str, stdout_to_log: bool = False
              ) -> tuple[subprocess.Popen, str]:
        log = os.path.join(LOGDIR, f"{self.name}-{name}.log")
        logf = open(log, "w")
        p = subprocess.Popen(self.cmd(*args), stdout=logf if stdout_to_log else subprocess.PIPE,
                             stderr=logf, stdin=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        p.lines = queue.Queue()  # type: ignore[attr-defined]
        if not stdout_to_log:
            def pump() -> None:
                for line in p.stdout:
                    p.lines.put(line)  # type: ignore[attr-defined]
                p.lines.put(None)  # type: ignore[attr-defined]
            threading.Thread(target=pump, daemon=True).start()
        return p, log

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout)

    def http(self, method: str, url: str, data: str = "", headers: dict | None = None
             ) -> tuple[int, dict, str]:
        """curl inside the namespace; returns (status, headers, body)."""
        args = ["curl", "-s", "-S", "-i", "-X", method, "--max-time", "10"]
        for k, v in (headers or {}).items():
            args += ["-H", f"{k}: {v}"]
        if data:
            args += ["--data-binary", data]
        r = self.run(*args, url)
        head, _, body = r.stdout.replace("\r\n", "\n").partition("\n\n")
        lines = head.split("\n")
        m = re.match(r"HTTP/\S+ (\d+)", lines[0] if lines else "")
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return (int(m.group(1)) if m else 0), hdrs, body


def read_line(p: subprocess.Popen, prefix: str, timeout: float) -> tuple[str, float]:
    """Next stdout line of p (started by Namespace.start) that starts with prefix."""
    t0 = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            break
        try:
            line = p.lines.get(timeout=left)  # type: ignore[attr-defined]
        except queue.Empty:
            break
        if line is None:
            break
        if line.startswith(prefix):
            return line[len(prefix):].strip(), time.monotonic() - t0
    raise Fail(f"no '{prefix}' line within {timeout} s (exit {p.poll()})")


def start_endpoint(ns: Namespace, *extra: str) -> tuple[str, float]:
    p, _ = ns.start("whip_aiortc", VPY, os.path.join(HERE, "whip_aiortc.py"), "--port", "0",
                    "--ice-host-address", "127.0.0.1", *extra)
    port, dt = read_line(p, "LISTENING ", 20)
    return f"http://127.0.0.1:{port}", dt


def client(ns: Namespace, url: str, *extra: str, timeout: float = 60) -> dict:
    r = ns.run(VPY, os.path.join(HERE, "whip_client_aiortc.py"), url, *extra, timeout=timeout)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise Fail(f"client printed no JSON (rc {r.returncode}): {r.stderr[-500:]}")


def stats(ns: Namespace, base: str) -> dict:
    code, _, body = ns.http("GET", base + "/stats")
    expect(code == 200, f"/stats gave {code}")
    return json.loads(body)


# --- checks ---------------------------------------------------------------------------
def check_aiortc() -> str:
    with Namespace("a") as ns:
        base, t_start = start_endpoint(
            ns, "--token", "s3cret",
            "--stamp-decoder", os.path.join(HERE, "fixtures", "fake_stamp_decode.py"))
        code, _, _ = ns.http("POST", base + "/whip/cart", "v=0",
                             {"Content-Type": "application/sdp"})
        expect(code == 401, f"POST without token gave {code}, want 401")
        # A publisher that stays up while PATCH is exercised, then DELETEs itself.
        cl = subprocess.Popen(ns.cmd(VPY, os.path.join(HERE, "whip_client_aiortc.py"),
                                     base + "/whip/cart", "--token", "s3cret",
                                     "--ice-host-address", "127.0.0.1", "--seconds", "5",
                                     "--fake-stamp", "--dc-message", "hello",
                                     "--dc-message", '{"caption":"chest pain"}'),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ns.procs.append(cl)
        deadline = time.time() + 15
        sid = None
        while time.time() < deadline and sid is None:
            s = stats(ns, base)
            if s["session_list"]:
                sid = s["session_list"][0]["id"]
            time.sleep(0.2)
        expect(sid is not None, "no session appeared")
        res = base + f"/whip/cart/{sid}"
        auth = {"Authorization": "Bearer s3cret",
                "Content-Type": "application/trickle-ice-sdpfrag"}
        frag = ("a=ice-ufrag:zzzz\r\na=ice-pwd:zzzzzzzzzzzzzzzzzzzzzzzz\r\nm=audio 9 "
                "UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n")
        code, _, _ = ns.http("PATCH", res, frag, dict(auth, **{"If-Match": "*"}))
        expect(code == 422, f"PATCH ICE restart gave {code}, want 422")
        frag = ("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
                "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n")
        code, _, _ = ns.http("PATCH", res, frag, auth)
        expect(code == 204, f"PATCH trickle gave {code}, want 204")
        out, err = cl.communicate(timeout=40)
        c = json.loads(out.strip().splitlines()[-1])
        expect(c.get("post_status") == 201, f"POST gave {c.get('post_status')}")
        expect(bool(c.get("location")) and bool(c.get("etag")), "no Location/ETag")
        expect(c.get("connected") is True, "client never connected")
        expect(c.get("delete_status") == 200, f"DELETE gave {c.get('delete_status')}")
        s = stats(ns, base)
        expect(s["video_frames_decoded"] > 100, f"video frames {s['video_frames_decoded']}")
        expect(s["audio_frames_decoded"] > 100, f"audio frames {s['audio_frames_decoded']}")
        expect(s["video_codec"] == "H264", f"codec {s['video_codec']}")
        expect((s["width"], s["height"]) == (640, 480), f"size {s['width']}x{s['height']}")
        expect(0.15 < s["audio_rms"] < 0.3, f"audio_rms {s['audio_rms']}")
        st = s["stamps"]
        expect(st["decoded"] > 100 and st["failed"] == 0 and st["missing"] == 0,
               f"stamps {st}")
        expect(0 < st["latency_ms"]["p50"] < 500, f"latency {st['latency_ms']}")
        msgs = [m.get("data") for m in s["datachannel_messages"]]
        expect(msgs == ["hello", '{"caption":"chest pain"}'], f"data channel {msgs}")
        expect(s["closed"] is True, "session not closed after DELETE")
        code, _, _ = ns.http("DELETE", res, headers={"Authorization": "Bearer s3cret"})
        expect(code == 404, f"second DELETE gave {code}, want 404")
        return (f"endpoint up in {t_start:.2f} s; {s['video_frames_decoded']} frames, "
                f"stamps p50 {st['latency_ms']['p50']} ms, rms {s['audio_rms']}, "
                f"connect {c.get('connect_ms')} ms")


def check_aiortc_loss() -> str:
    with Namespace("l") as ns:
        subprocess.run([NETNS, "loss", ns.name, "lo", "5"], check=True)
        base, _ = start_endpoint(ns)
        c = client(ns, base + "/whip/cart", "--ice-host-address", "127.0.0.1", "--seconds", "6")
        expect(c.get("connected") is True, f"not connected under loss: {c}")
        s = stats(ns, base)
        v = s["inbound_rtp"].get("video", {})
        expect(s["video_frames_decoded"] > 60, f"frames {s['video_frames_decoded']}")
        expect(v.get("packets_lost", 0) > 0, f"no loss seen: {v}")
        return (f"{s['video_frames_decoded']} frames, video lost {v['packets_lost']}, "
                f"rtx {v['rtx_packets_received']}")


def check_turn() -> str:
    with Namespace("t") as ns:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            tport = s.getsockname()[1]  # any free number: it is a fresh namespace
        db = os.path.join(LOGDIR, "turndb")
        tp, tlog = ns.start("coturn", "turnserver", "-n", "-v", "--no-cli", "--no-tls",
                            "--no-dtls", "-L", "127.0.0.1", "-E", "127.0.0.1", "-p", str(tport),
                            "--allow-loopback-peers", "-a", "-u", "cart:pw", "-r", "telecart",
                            "--min-port", "50000", "--max-port", "50100", "--userdb", db,
                            "--pidfile", os.path.join(LOGDIR, "turn.pid"),
                            "--log-file", "stdout", "--simple-log", stdout_to_log=True)
        time.sleep(0.5)
        base, _ = start_endpoint(ns)
        c = client(ns, base + "/whip/cart", "--ice-host-address", "127.0.0.1", "--seconds",
                   "3", "--relay-only", "--turn", f"turn:127.0.0.1:{tport}",
                   "--turn-username", "cart", "--turn-password", "pw")
        expect(c.get("connected") is True, f"not connected via TURN: {c}")
        s = stats(ns, base)
        expect(s["video_frames_decoded"] > 30, f"frames {s['video_frames_decoded']}")
        tp.terminate()
        tp.wait(5)
        text = open(tlog).read()
        expect("ALLOCATE processed, success" in text, "coturn logged no allocation")
        return f"{s['video_frames_decoded']} frames through coturn"


def check_janus() -> str:
    with Namespace("j", veth=True) as ns:
        t0 = time.monotonic()
        jp, jlog = ns.start("janus_whip", sys.executable, os.path.join(HERE, "janus_whip.py"),
                         "--ice-iface", "veth0")
        whip, _ = read_line(jp, "WHIP_URL ", 30)
        admin, _ = read_line(jp, "ADMIN_URL ", 5)
        t_up = time.monotonic() - t0
        cl = subprocess.Popen(ns.cmd(VPY, os.path.join(HERE, "whip_client_aiortc.py"), whip,
                                     "--ice-host-address", "127.0.0.2", "--seconds", "5"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ns.procs.append(cl)
        time.sleep(4)
        r = ns.run(sys.executable, os.path.join(HERE, "janus_stats.py"), admin)
        expect(r.returncode == 0, f"janus_stats failed: {r.stderr}")
        js = json.loads(r.stdout)
        out, _ = cl.communicate(timeout=40)
        c = json.loads(out.strip().splitlines()[-1])
        expect(c.get("post_status") == 201 and c.get("connected") is True, f"client: {c}")
        expect(c.get("delete_status") == 200, f"DELETE gave {c.get('delete_status')}")
        expect(js["ice_state"] == "ready", f"ICE {js['ice_state']}")
        expect(js["dtls_state"] == "connected", f"DTLS {js['dtls_state']}")
        v, a = js["media"].get("video", {}), js["media"].get("audio", {})
        expect(v.get("packets_in", 0) > 100, f"video packets {v}")
        expect(a.get("packets_in", 0) > 50, f"audio packets {a}")
        jp.send_signal(signal.SIGTERM)
        rc = jp.wait(10)
        expect(rc == 0, f"janus_whip exited {rc} on SIGTERM")
        m = re.search(r"run dir (\S+)", open(jlog).read())
        expect(m is not None, "janus_whip logged no run dir")
        left = subprocess.run(["pgrep", "-f", m.group(1)], capture_output=True, text=True)
        expect(left.stdout.strip() == "", f"janus/whip server left running: {left.stdout}")
        return (f"up in {t_up:.2f} s; ICE ready, DTLS connected, {v['packets_in']} video + "
                f"{a['packets_in']} audio packets")


def check_browser() -> str:
    with Namespace("b") as ns:
        hp, _ = ns.start("http", sys.executable, "-u", "-m", "http.server", "0", "--bind",
                         "127.0.0.1", "--directory", os.path.join(HERE, "fixtures"))
        line, _ = read_line(hp, "Serving HTTP on ", 10)
        port = re.search(r"port (\d+)", line).group(1)
        shot = os.path.join(LOGDIR, "browser.png")
        t0 = time.monotonic()
        r = ns.run("node", os.path.join(HERE, "browser_call.mjs"),
                   f"http://127.0.0.1:{port}/loopback_call.html", "--seconds", "4",
                   "--screenshot", shot, "--quiet", timeout=90)
        dt = time.monotonic() - t0
        expect(r.returncode == 0, f"browser_call exit {r.returncode}: {r.stderr[-400:]}")
        s = json.loads(r.stdout.strip())
        expect(s["framesDecoded"] > 30, f"framesDecoded {s['framesDecoded']}")
        expect(s["audioBytesReceived"] > 0 and s["framesSent"] > 30, f"stats {s}")
        expect(os.path.getsize(shot) > 1000, "no screenshot")
        return f"{s['framesDecoded']} frames decoded ({s.get('videoCodec')}), total {dt:.1f} s"


CHECKS = {"aiortc": check_aiortc, "aiortc_loss": check_aiortc_loss, "turn": check_turn,
          "janus": check_janus, "browser": check_browser}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-k", action="append", default=[], help="run only these checks")
    a = p.parse_args()
    if not os.path.exists(VPY):
        print("selfcheck: .work/venv missing: run tests/setup.sh", file=sys.stderr)
        return 2
    passed = failed = 0
    for name, fn in CHECKS.items():
        if a.k and name not in a.k:
            continue
        t0 = time.monotonic()
        try:
            detail = fn()
            passed += 1
            print(f"ok   {name:12s} {time.monotonic() - t0:5.1f} s  {detail}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print(f"FAIL {name:12s} {time.monotonic() - t0:5.1f} s  {type(e).__name__}: {e}",
                  flush=True)
    if failed:
        print(f"logs in {LOGDIR}", flush=True)
    else:
        shutil.rmtree(LOGDIR, ignore_errors=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
