# shellcheck shell=bash
# libsrtp (Cisco's reference SRTP, through pylibsrtp) as a peer for the cart's SDES-SRTP
# (appliance/sip/tests/srtp.rs: the GCM suites that baresip 1.0 never offers). Sourced by
# tests/setup.sh with ROOT, WORK, SUDO and step() set. Idempotent; quick when present.

LIBSRTP_VENV="$WORK/libsrtp"
LIBSRTP_PIN="pylibsrtp==1.0.0"
if [ -x "$LIBSRTP_VENV/bin/python" ] && [ "$(cat "$LIBSRTP_VENV/.telecart-pin" 2>/dev/null)" = "$LIBSRTP_PIN" ]; then
    step libsrtp "$LIBSRTP_PIN present in $LIBSRTP_VENV"
else
    step libsrtp "installing $LIBSRTP_PIN into $LIBSRTP_VENV"
    [ -x "$LIBSRTP_VENV/bin/python" ] || /usr/bin/python3 -m venv "$LIBSRTP_VENV"
    "$LIBSRTP_VENV/bin/pip" install -q "$LIBSRTP_PIN" \
        || { echo "setup: $LIBSRTP_PIN failed" >&2; exit 1; }
    echo "$LIBSRTP_PIN" >"$LIBSRTP_VENV/.telecart-pin"
    step libsrtp "installed"
fi
