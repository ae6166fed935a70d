#!/usr/bin/env python3
"""Janus 1.1 (VideoRoom) behind Meetecho's simple-whip-server: a real SFU as WHIP endpoint.

    tests/peers/janus_whip.py [--ice-iface veth0] [--id cart] [--room 1234] [--token T]

Inside a namespace made with `netns.sh create NAME --veth`, run it with `--ice-iface veth0`
(Janus skips loopback interfaces, so its ICE candidates come from veth0 = 127.0.0.2):

    tests/peers/netns.sh exec NAME tests/peers/janus_whip.py --ice-iface veth0

Picks free ports, writes a minimal Janus configuration into a temporary directory, starts
`janus` and `node server.js` (simple-whip-server from .work/janus-whip), creates the endpoint
(POST /whip/create {"id":ID,"room":ROOM[,"token":T]}) and then prints on stdout, in this order:

    WHIP_URL http://127.0.0.1:<port>/whip/endpoint/<id>
    ADMIN_URL http://127.0.0.1:<port>/admin
    ADMIN_SECRET <secret>
    READY

Stdlib only: runs with /usr/bin/python3 or the venv. SIGTERM/SIGINT stop both servers and
exit 0. Exit 1 if a server fails to start or dies on its own (message on stderr), 2 on a
usage error. Logs: Janus and simple-whip-server output go to stderr prefixed, or to
--log-dir (files janus.log, whip.log) if given.
"""

from __future__ import annotations

import argparse
import json
import os
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
DEFAULT_WORK = os.environ.get("TELECART_WORK", os.path.join(ROOT, ".work"))
LIBDIR = "/usr/lib/x86_64-linux-gnu/janus"

ALL_PLUGINS = ["audiobridge", "duktape", "echotest", "lua", "nosip", "recordplay", "sip",
               "streaming", "textroom", "videocall", "voicemail"]  # all but videoroom
OFF_TRANSPORTS = ["mqtt", "nanomsg", "pfunix", "rabbitmq"]


def log(msg: str) -> None:
    print(f"janus_whip: {msg}", file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_janus_config(d: str, a: argparse.Namespace, ws_port: int, admin_port: int) -> str:
    libdir = a.janus_lib_dir
    nat = []
    if a.ice_iface:
        nat.append(f'ice_enforce_list = "{a.ice_iface}"')
    else:
        nat.append('ice_ignore_list = "vmnet"')
    if a.nat_1_1:
        nat.append(f'nat_1_1_mapping = "{a.nat_1_1}"')
    with open(os.path.join(d, "janus.jcfg"), "w") as f:
        f.write(f"""general: {{
    configs_folder = "{d}"
    plugins_folder = "{libdir}/plugins"
    transports_folder = "{libdir}/transports"
    events_folder = "{libdir}/events"
    loggers_folder = "{libdir}/loggers"
    debug_level = {a.debug_level}
    admin_secret = "{a.admin_secret}"
    server_name = "telecart-test-janus"
    session_timeout = 60
    protected_folders = ["/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys", "/usr"]
}}
certificates: {{
}}
media: {{
    rtp_port_range = "{a.rtp_port_range}"
}}
nat: {{
    nice_debug = false
    {chr(10).join(nat)}
}}
plugins: {{
    disable = "{','.join('libjanus_' + p + '.so' for p in ALL_PLUGINS)}"
}}
transports: {{
    disable = "{','.join('libjanus_' + t + '.so' for t in OFF_TRANSPORTS)}"
}}
loggers: {{
    disable = "libjanus_jsonlog.so"
}}
events: {{
    broadcast = false
}}
""")
    with open(os.path.join(d, "janus.transport.http.jcfg"), "w") as f:
        f.write(f"""general: {{
    json = "compact"
    http = false
    https = false
}}
admin: {{
    admin_base_path = "/admin"
    admin_http = true
    admin_ip = "127.0.0.1"
    admin_port = {admin_port}
    admin_https = false
}}
""")
    with open(os.path.join(d, "janus.transport.websockets.jcfg"), "w") as f:
        f.write(f"""general: {{
    json = "compact"
    ws = true
    ws_ip = "127.0.0.1"
    ws_port = {ws_port}
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
""")
    with open(os.path.join(d, "janus.plugin.videoroom.jcfg"), "w") as f:
        f.write(f"""general: {{
}}
room-{a.room}: {{
    description = "telecart test room"
    publishers = 6
    bitrate = {a.bitrate}
    fir_freq = 10
    audiocodec = "{a.audiocodec}"
    videocodec = "{a.videocodec}"
    record = false
}}
""")
    return os.path.join(d, "janus.jcfg")


def pump(stream, prefix: str, logfile) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if logfile:
            logfile.write(line + "\n")
            logfile.flush()
        else:
            print(f"{prefix}{line}", file=sys.stderr, flush=True)


def http(method: str, url: str, body: dict | None = None, timeout: float = 2.0) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def main() -> int:
    p = argparse.ArgumentParser(description="Janus + simple-whip-server WHIP endpoint")
    p.add_argument("--id", default="cart", help="WHIP endpoint id (default cart)")
    p.add_argument("--room", type=int, default=1234)
    p.add_argument("--token", help="Bearer token the WHIP endpoint requires (403 otherwise)")
    p.add_argument("--ice-iface", help="Janus ice_enforce_list, e.g. veth0 (see netns.sh)")
    p.add_argument("--nat-1-1", help="Janus nat_1_1_mapping (advertised host address)")
    p.add_argument("--videocodec", default="h264", help="VideoRoom videocodec (default h264)")
    p.add_argument("--audiocodec", default="opus")
    p.add_argument("--bitrate", type=int, default=2_000_000,
                   help="VideoRoom REMB cap in bit/s (default 2000000)")
    p.add_argument("--admin-secret", default="telecart-admin")
    p.add_argument("--rtp-port-range", default="20000-40000")
    p.add_argument("--debug-level", type=int, default=4)
    p.add_argument("--log-dir", help="write janus.log and whip.log here instead of stderr")
    p.add_argument("--keep-config", action="store_true", help="do not delete the run directory")
    p.add_argument("--work", default=DEFAULT_WORK, help="the .work directory setup.sh filled")
    p.add_argument("--janus", default=shutil.which("janus") or "/usr/bin/janus")
    p.add_argument("--janus-lib-dir", default=LIBDIR)
    p.add_argument("--startup-timeout", type=float, default=20.0)
    a = p.parse_args()

    server_js = os.path.join(a.work, "janus-whip", "server.js")
    if not os.path.exists(server_js):
        log(f"{server_js} missing: run tests/setup.sh")
        return 2
    server_js = os.path.realpath(server_js)
    app_dir = os.path.dirname(os.path.dirname(server_js))
    if not os.access(a.janus, os.X_OK):
        log(f"janus binary {a.janus} missing: run tests/setup.sh")
        return 2

    run_dir = tempfile.mkdtemp(prefix="telecart-janus-")
    ws_port, admin_port, whip_port = free_port(), free_port(), free_port()
    while len({ws_port, admin_port, whip_port}) < 3:
        whip_port = free_port()
    cfg = write_janus_config(run_dir, a, ws_port, admin_port)
    whip_cfg = os.path.join(run_dir, "whip-config.json")
    with open(whip_cfg, "w") as f:
        json.dump({"janus": {"address": f"ws://127.0.0.1:{ws_port}"}, "port": whip_port,
                   "rest": "/whip", "allowTrickle": True, "strictETags": False,
                   "iceServers": []}, f)

    logs = {}
    if a.log_dir:
        os.makedirs(a.log_dir, exist_ok=True)
        logs = {n: open(os.path.join(a.log_dir, n + ".log"), "a") for n in ("janus", "whip")}

    procs: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def stop_all() -> None:
        for name in ("whip", "janus"):
            pr = procs.get(name)
            if pr and pr.poll() is None:
                pr.terminate()
        deadline = time.time() + 5
        for name in ("whip", "janus"):
            pr = procs.get(name)
            if pr:
                try:
                    pr.wait(max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    pr.kill()
                    pr.wait()
        if not a.keep_config:
            shutil.rmtree(run_dir, ignore_errors=True)

    def on_signal(signum, frame) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t0 = time.monotonic()
    try:
        procs["janus"] = subprocess.Popen(
            [a.janus, "-C", cfg, "-F", run_dir, "-o", "-D"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=run_dir)
        threading.Thread(target=pump, args=(procs["janus"].stdout, "[janus] ", logs.get("janus")),
                         daemon=True).start()
        # Wait for the Admin API (Janus has loaded transports and plugins by then).
        admin_url = f"http://127.0.0.1:{admin_port}/admin"
        deadline = time.time() + a.startup_timeout
        while True:
            if procs["janus"].poll() is not None:
                log(f"janus exited with {procs['janus'].returncode} during start-up")
                return 1
            try:
                code, _ = http("POST", admin_url, {"janus": "ping", "transaction": "t",
                                                  "admin_secret": a.admin_secret}, 1)
                if code == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or stopping.is_set():
                log("janus admin API did not come up")
                return 1
            time.sleep(0.1)
        t_janus = time.monotonic() - t0

        env = dict(os.environ, SIMPLE_WHIP_CONFIG=whip_cfg)
        env.setdefault("DEBUG", "whip:*")
        env["DEBUG_COLORS"] = "no"
        procs["whip"] = subprocess.Popen(
            ["node", server_js], cwd=app_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=pump, args=(procs["whip"].stdout, "[whip] ", logs.get("whip")),
                         daemon=True).start()
        base = f"http://127.0.0.1:{whip_port}/whip"
        while True:
            if procs["whip"].poll() is not None:
                log(f"simple-whip-server exited with {procs['whip'].returncode} during start-up")
                return 1
            try:
                code, _ = http("GET", base + "/healthcheck", None, 1)
                if code == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or stopping.is_set():
                log("simple-whip-server did not come up")
                return 1
            time.sleep(0.1)
        body = {"id": a.id, "room": a.room}
        if a.token:
            body["token"] = a.token
        code, text = http("POST", base + "/create", body)
        if code != 200:
            log(f"POST /whip/create gave {code}: {text.strip()}")
            return 1
        log(f"up in {time.monotonic() - t0:.2f} s (janus {t_janus:.2f} s); run dir {run_dir}")
        print(f"WHIP_URL {base}/endpoint/{a.id}", flush=True)
        print(f"ADMIN_URL {admin_url}", flush=True)
        print(f"ADMIN_SECRET {a.admin_secret}", flush=True)
        print("READY", flush=True)

        while not stopping.is_set():
            for name, pr in procs.items():
                if pr.poll() is not None:
                    log(f"{name} exited unexpectedly with {pr.returncode}")
                    return 1
            stopping.wait(0.2)
        return 0
    finally:
        stop_all()
        for f in logs.values():
            f.close()


if __name__ == "__main__":
    sys.exit(main())
