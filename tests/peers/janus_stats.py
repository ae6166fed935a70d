#!/usr/bin/env python3
"""Print one JSON object describing the WebRTC handles of a Janus instance (Admin API).

    tests/peers/janus_stats.py ADMIN_URL [--secret telecart-admin]

Walks list_sessions -> list_handles -> handle_info and prints (one line):

    {"sessions": N, "handles": [ {"session_id":..., "handle_id":..., "plugin":...,
        "ice_state": "ready", "dtls_state": "connected", "selected_pair": "...",
        "srtp_profile": "...",
        "media": {"video": {"codec":"h264","packets_in":N,"bytes_in":N,"nacks_in":N,
                            "retransmissions_in":N,"lost":N,"jitter_local":N},
                  "audio": {...}}}, ...],
     "ice_state": <of the last handle with WebRTC state, or null>,
     "dtls_state": <same>,
     "media": {"video": {"packets_in": N, "bytes_in": N, ...}, "audio": {...}}   # summed
    }

ICE states are libnice's as Janus names them ("ready" = connected and selected pair nominated);
DTLS states are Janus's ("connected" once the handshake is done). Stdlib only.
Exit 0 on success, 1 if the Admin API cannot be reached or answers with an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request


def call(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = json.loads(r.read().decode())
    if out.get("janus") != "success":
        raise RuntimeError(f"{body.get('janus')}: {json.dumps(out.get('error', out))}")
    return out


def media_entry(m: dict) -> dict:
    stats_in = (m.get("stats") or {}).get("in") or {}
    rtcp = ((m.get("rtcp") or {}).get("main")) or {}
    return {
        "codec": (m.get("codecs") or {}).get("codec"),
        "packets_in": int(stats_in.get("packets", 0)),
        "bytes_in": int(stats_in.get("bytes", 0)),
        "nacks_in": int(stats_in.get("nacks", 0)),
        "retransmissions_in": int(stats_in.get("retransmissions", 0)),
        "lost": int(rtcp.get("lost", 0)),
        "jitter_local": rtcp.get("jitter-local"),
        "in_link_quality": rtcp.get("in-link-quality"),
    }


def collect(admin_url: str, secret: str, timeout: float) -> dict:
    base = admin_url.rstrip("/")
    t = {"transaction": "telecart", "admin_secret": secret}
    sessions = call(base, {"janus": "list_sessions", **t}, timeout).get("sessions", [])
    handles = []
    for sid in sessions:
        try:
            hids = call(f"{base}/{sid}", {"janus": "list_handles", **t}, timeout).get("handles", [])
        except RuntimeError:
            continue  # session went away meanwhile
        for hid in hids:
            try:
                info = call(f"{base}/{sid}/{hid}", {"janus": "handle_info", **t},
                            timeout).get("info", {})
            except RuntimeError:
                continue
            webrtc = info.get("webrtc") or {}
            ice = webrtc.get("ice") or {}
            dtls = webrtc.get("dtls") or {}
            media: dict[str, dict] = {}
            for m in (webrtc.get("media") or {}).values():
                kind = m.get("type", "unknown")
                e = media_entry(m)
                if kind in media:  # several m-lines of one kind: sum the counters
                    for k in ("packets_in", "bytes_in", "nacks_in", "retransmissions_in", "lost"):
                        media[kind][k] += e[k]
                else:
                    media[kind] = e
            handles.append({
                "session_id": sid,
                "handle_id": hid,
                "plugin": info.get("plugin"),
                "ice_state": ice.get("state"),
                "dtls_state": dtls.get("dtls-state"),
                "selected_pair": ice.get("selected-pair"),
                "srtp_profile": dtls.get("srtp-profile"),
                "media": media,
            })
    total: dict[str, dict] = {}
    for h in handles:
        for kind, e in h["media"].items():
            agg = total.setdefault(kind, {"packets_in": 0, "bytes_in": 0, "nacks_in": 0,
                                          "retransmissions_in": 0, "lost": 0})
            for k in agg:
                agg[k] += e[k]
    with_webrtc = [h for h in handles if h["ice_state"] is not None or h["dtls_state"]]
    last = with_webrtc[-1] if with_webrtc else None
    return {
        "sessions": len(sessions),
        "handles": handles,
        "ice_state": last["ice_state"] if last else None,
        "dtls_state": last["dtls_state"] if last else None,
        "media": total,
    }


def main() -> int:
    p = argparse.ArgumentParser(description="Janus Admin API summary as JSON")
    p.add_argument("admin_url")
    p.add_argument("--secret", default="telecart-admin")
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--pretty", action="store_true")
    a = p.parse_args()
    try:
        out = collect(a.admin_url, a.secret, a.timeout)
    except (OSError, urllib.error.URLError, RuntimeError, ValueError) as e:
        print(f"janus_stats: {a.admin_url}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2 if a.pretty else None), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
