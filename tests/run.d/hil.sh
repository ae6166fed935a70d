#!/usr/bin/env bash
# The virtual cart (hil/, docs/hil.md): the hardware-in-the-loop plan against QEMU
# booting Debian's kernel with the real vivid camera and snd-aloop sound card.
# Two runs, one check:
#   1. the whole plan must pass (steps whose feature is not on main are SKIPs);
#   2. the negative run, camera driver left out, must fail, at the camera step,
#      with a report that names the missing driver.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${TELECART_WORK:-$PWD/.work}
for tool in qemu-system-x86_64 busybox cpio espeak-ng sox aplay; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "!!! SKIPPING the virtual cart: $tool is not installed (run tests/setup.sh) !!!"
        exit 0
    fi
done
if [ ! -e "$work/hil/kernel/vmlinux" ] || [ ! -x "$work/venv/bin/python" ]; then
    echo "!!! SKIPPING the virtual cart: no kernel in $work/hil or no peers' venv (run tests/setup.sh) !!!"
    exit 0
fi
cargo build -q -p telecart-hil
hil="${CARGO_TARGET_DIR:-$PWD/target}/debug/telecart-hil"
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT

echo "== positive run: the whole plan on the virtual cart"
"$hil" virtual --out "$runs/positive"

echo "== negative run: camera driver left out (must fail)"
status=0
"$hil" virtual --no-build --without-camera-driver --only camera --out "$runs/negative" \
    | tee "$runs/negative.txt" || status=$?
if [ "$status" != 1 ]; then
    echo "negative run: exit status $status, expected 1 (a failed step)"
    exit 1
fi
grep -q '^  FAIL  camera' "$runs/negative.txt" \
    || { echo "negative run: the camera step did not fail"; exit 1; }
grep -q 'camera driver (vivid) not loaded' "$runs/negative.txt" \
    || { echo "negative run: the report does not name the missing driver"; exit 1; }
echo "negative run failed as it must"
