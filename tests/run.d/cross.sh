#!/usr/bin/env bash
# The cart's build: cartd and cartctl cross-compiled for aarch64 with Debian's Rust,
# each running `--version` under qemu-aarch64, the shipped Yocto config accepted by the
# aarch64 cartd, and the CI set of unit tests passing under qemu-user (cross/build).
# TELECART_CROSS_FULL=1 runs every library's unit tests instead.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
exec "$ROOT/cross/build" --target aarch64
