#!/usr/bin/env bash
# Installs what the build and the test suite need on Debian 12, including the
# real peers the interop tests run against (idempotent, quick when done).
#
#   tests/setup.sh            # from anywhere, as root or with sudo; installs under <repo>/.work
#
# Steps (one line printed per step):
#   apt      Debian packages listed in .ci/debian-packages (+ nodejs/npm only if missing)
#   venv     .work/venv from tests/peers/requirements.txt (aiortc 1.16.x, aiohttp, numpy: exact pins)
#   node     playwright-core in .work/node (never downloads a browser: /usr/bin/chromium is used)
#   whip     Debian's simple-whip-server extracted into .work/janus-whip + its npm deps
#   then     every tests/setup.d/*.sh (one per capability: SIP peers, whisper model, cross, ...)
# Environment: TELECART_WORK overrides the .work directory.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/peers" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="${TELECART_WORK:-$ROOT/.work}"
mkdir -p "$WORK"

# Pins. Bump deliberately.
PLAYWRIGHT_CORE_VERSION='1.65.1'
JSSIP_VERSION='3.13.8'
WHIP_NPM_DEPS=(express@4 cors colors@1.4.0 debug async websocket body-parser)

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

step() { printf 'setup: %-6s %s\n' "$1" "$2"; }
t0=$(date +%s)

# --- apt -------------------------------------------------------------------
# .ci/debian-packages.d/<capability> lists what one capability's peers add.
mapfile -t pkgs < <(cat "$ROOT/.ci/debian-packages" "$ROOT"/.ci/debian-packages.d/* 2>/dev/null \
    | grep -v '^\s*#' | sed '/^\s*$/d' | sort -u)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    pkgs+=(nodejs npm)
fi
missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    step apt "all ${#pkgs[@]} packages present"
else
    step apt "installing: ${missing[*]}"
    # apt-get update only when the lists are missing or we fail to find a package.
    if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >"$WORK/apt.log" 2>&1; then
        $SUDO apt-get update >>"$WORK/apt.log" 2>&1
        $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1 \
            || { tail -20 "$WORK/apt.log"; echo "setup: apt install failed (log: $WORK/apt.log)" >&2; exit 1; }
    fi
    step apt "installed ${#missing[@]} packages"
fi

# --- python venv -----------------------------------------------------------
VENV="$WORK/venv"
PY=/usr/bin/python3   # Debian's python (3.11), not whatever a shim puts first in PATH
REQ="$HERE/requirements.txt"
REQ_SUM="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.telecart-requirements" 2>/dev/null)" = "$REQ_SUM" ]; then
    step venv "aiortc $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("aiortc"))') present in $VENV"
else
    step venv "installing $REQ into $VENV"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" \
        >"$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log"; echo "setup: pip failed" >&2; exit 1; }
    "$VENV/bin/python" -c 'import aiortc, aiohttp, numpy, av' \
        || { echo "setup: venv imports fail" >&2; exit 1; }
    echo "$REQ_SUM" >"$VENV/.telecart-requirements"
    step venv "installed aiortc $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("aiortc"))')"
fi

# --- playwright-core -------------------------------------------------------
NODEDIR="$WORK/node"
if [ -f "$NODEDIR/node_modules/playwright-core/package.json" ]; then
    step node "playwright-core $(node -p "require('$NODEDIR/node_modules/playwright-core/package.json').version") present in $NODEDIR"
else
    step node "installing playwright-core@$PLAYWRIGHT_CORE_VERSION into $NODEDIR"
    mkdir -p "$NODEDIR"
    [ -f "$NODEDIR/package.json" ] || echo '{"name":"telecart-peers-node","private":true}' >"$NODEDIR/package.json"
    # playwright-core has no install script that downloads browsers; --ignore-scripts makes sure.
    (cd "$NODEDIR" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error \
        "playwright-core@$PLAYWRIGHT_CORE_VERSION") >"$WORK/npm-node.log" 2>&1 \
        || { tail -20 "$WORK/npm-node.log"; echo "setup: npm playwright-core failed" >&2; exit 1; }
    step node "installed playwright-core"
fi
# JsSIP: the browser softphone (SIP over WebSocket) that calls the cart in Chromium
# (appliance/runtime/tests/sip_softphone.rs, tests/peers/sip_softphone.mjs).
if [ "$(node -p "try{require('$NODEDIR/node_modules/jssip/package.json').version}catch(e){''}" 2>/dev/null)" = "$JSSIP_VERSION" ]; then
    step node "jssip $JSSIP_VERSION present in $NODEDIR"
else
    step node "installing jssip@$JSSIP_VERSION into $NODEDIR"
    (cd "$NODEDIR" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error \
        --save-exact "jssip@$JSSIP_VERSION") >>"$WORK/npm-node.log" 2>&1 \
        || { tail -20 "$WORK/npm-node.log"; echo "setup: npm jssip failed" >&2; exit 1; }
    step node "installed jssip $JSSIP_VERSION"
fi

# --- simple-whip-server ----------------------------------------------------
# The .deb depends on Debian's nodejs, which clashes with the image's Node.js, so it is
# downloaded and extracted rather than installed.
WHIPDIR="$WORK/janus-whip"
find_server_js() { find "$WHIPDIR/root" -path '*simple-whip-server*/src/server.js' 2>/dev/null | head -1; }
SERVER_JS="$(find_server_js || true)"
if [ -n "$SERVER_JS" ] && [ -d "$(dirname "$(dirname "$SERVER_JS")")/node_modules/express" ]; then
    step whip "simple-whip-server present: $SERVER_JS"
else
    step whip "fetching simple-whip-server .deb into $WHIPDIR"
    mkdir -p "$WHIPDIR"
    (cd "$WHIPDIR" && rm -f simple-whip-server_*.deb && apt-get download simple-whip-server) \
        >"$WORK/whip.log" 2>&1 || {
            $SUDO apt-get update >>"$WORK/whip.log" 2>&1
            (cd "$WHIPDIR" && apt-get download simple-whip-server) >>"$WORK/whip.log" 2>&1 \
                || { tail -20 "$WORK/whip.log"; echo "setup: apt-get download failed" >&2; exit 1; }
        }
    rm -rf "$WHIPDIR/root"
    dpkg -x "$WHIPDIR"/simple-whip-server_*.deb "$WHIPDIR/root"
    SERVER_JS="$(find_server_js)"
    [ -n "$SERVER_JS" ] || { echo "setup: server.js not found in the .deb" >&2; exit 1; }
    APPDIR="$(dirname "$(dirname "$SERVER_JS")")"
    # The .deb may ship a package.json; install beside it so require() resolves.
    (cd "$APPDIR" && npm install --no-audit --no-fund --ignore-scripts --no-save --loglevel=error \
        --no-package-lock "${WHIP_NPM_DEPS[@]}") >>"$WORK/whip.log" 2>&1 \
        || { tail -20 "$WORK/whip.log"; echo "setup: npm deps for simple-whip-server failed" >&2; exit 1; }
    step whip "installed: $SERVER_JS"
fi
# The .deb's src/config.js is a symlink to /etc/simple-whip-server/config.js (not installed).
# Replace it with a shim that loads the file named by $SIMPLE_WHIP_CONFIG (janus_whip.sh
# writes one per run with its own ports).
CONFIG_JS="$(dirname "$SERVER_JS")/config.js"
if [ -L "$CONFIG_JS" ] || ! grep -q SIMPLE_WHIP_CONFIG "$CONFIG_JS" 2>/dev/null; then
    rm -f "$CONFIG_JS"
    cat >"$CONFIG_JS" <<'EOF'
// Written by telecart tests/peers/setup.sh: per-run configuration from $SIMPLE_WHIP_CONFIG.
module.exports = require(process.env.SIMPLE_WHIP_CONFIG || '/etc/simple-whip-server/config.js');
EOF
    step whip "config.js shim written"
fi
ln -sfn "$SERVER_JS" "$WHIPDIR/server.js"

# --- per-capability peers ---------------------------------------------------
# Each tests/setup.d/<capability>.sh installs one capability's peers (idempotent).
# They run in this shell: ROOT, WORK, SUDO and step() are theirs to use.
for extra in "$HERE"/../setup.d/*.sh; do
    [ -e "$extra" ] || continue
    # shellcheck source=/dev/null
    source "$extra"
done

step done "in $(( $(date +%s) - t0 )) s"
