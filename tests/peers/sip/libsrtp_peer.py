"""libsrtp (via pylibsrtp) as the far end of one SDES-SRTP stream, for appliance/sip/tests/srtp.rs.

Reads JSON on stdin: {"profile": NAME, "cart_key": B64, "peer_key": B64, "rtp": [HEX], "rtcp": [HEX]}
where rtp/rtcp are what the cart protected with cart_key. Writes JSON on stdout: what libsrtp
unprotected from them, and packets libsrtp protected with peer_key (RTP with payload
"libsrtp-N", sequence 1000+N, and one receiver report) for the cart to open.
"""

import base64
import json
import struct
import sys

from pylibsrtp import Error, Policy, Session

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def main():
    req = json.load(sys.stdin)
    profile = PROFILES[req["profile"]]
    rx = Session(
        policy=Policy(
            key=base64.b64decode(req["cart_key"]),
            ssrc_type=Policy.SSRC_ANY_INBOUND,
            srtp_profile=profile,
        )
    )
    tx = Session(
        policy=Policy(
            key=base64.b64decode(req["peer_key"]),
            ssrc_type=Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=profile,
        )
    )
    out = {"rtp": [], "rtcp": [], "rtp_errors": 0, "rtcp_errors": 0, "sent_rtp": [], "sent_rtcp": []}
    for h in req["rtp"]:
        try:
            out["rtp"].append(rx.unprotect(bytes.fromhex(h)).hex())
        except Error:
            out["rtp_errors"] += 1
    for h in req["rtcp"]:
        try:
            out["rtcp"].append(rx.unprotect_rtcp(bytes.fromhex(h)).hex())
        except Error:
            out["rtcp_errors"] += 1
    ssrc = 0x5EED5EED
    for n in range(20):
        header = struct.pack("!BBHII", 0x80, 0, 1000 + n, 160 * n, ssrc)
        out["sent_rtp"].append(tx.protect(header + b"libsrtp-%d" % n).hex())
    receiver_report = struct.pack("!BBHI", 0x80, 201, 1, ssrc)
    out["sent_rtcp"].append(tx.protect_rtcp(receiver_report).hex())
    json.dump(out, sys.stdout)


main()
