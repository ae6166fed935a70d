# shellcheck shell=bash
# Cross build and Yocto layer checks (docs/build.md). Sourced by tests/setup.sh with
# ROOT, WORK, SUDO and step() set. Idempotent; quick when everything is present.
#
#   arm64  the arm64 architecture for Debian's multiarch packages: the Rust std for
#          aarch64 (same version as rustc-web) and the cart's C libraries
#   oelint oelint-adv (exact pins in yocto/requirements-lint.txt) in $WORK/oelint

# --- arm64 multiarch packages ---------------------------------------------------
BUILD_ARM64_PKGS=(libstd-rust-web-dev:arm64 libc6:arm64 libasound2-dev:arm64 libv4l-dev:arm64 libopus-dev:arm64)
build_missing=()
for p in "${BUILD_ARM64_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || build_missing+=("$p")
done
if [ "${#build_missing[@]}" -eq 0 ]; then
    step arm64 "aarch64 Rust std $(dpkg-query -W -f='${Version}' libstd-rust-web-dev:arm64) and C libraries present"
else
    step arm64 "installing ${build_missing[*]}"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $SUDO dpkg --add-architecture arm64
    fi
    # The arm64 package lists arrive only with an update after adding the architecture.
    if ! $SUDO apt-get install -y --no-install-recommends "${build_missing[@]}" >"$WORK/apt-arm64.log" 2>&1; then
        $SUDO apt-get update >>"$WORK/apt-arm64.log" 2>&1
        $SUDO apt-get install -y --no-install-recommends "${build_missing[@]}" >>"$WORK/apt-arm64.log" 2>&1 \
            || { tail -20 "$WORK/apt-arm64.log"; echo "setup: arm64 packages failed (log: $WORK/apt-arm64.log)" >&2; exit 1; }
    fi
    step arm64 "installed ${#build_missing[@]} packages"
fi

# --- oelint-adv -------------------------------------------------------------------
OELINT_VENV="$WORK/oelint"
OELINT_REQ="$ROOT/yocto/requirements-lint.txt"
OELINT_SUM="$(sha256sum "$OELINT_REQ" | cut -d' ' -f1)"
if [ -x "$OELINT_VENV/bin/oelint-adv" ] && [ "$(cat "$OELINT_VENV/.telecart-requirements" 2>/dev/null)" = "$OELINT_SUM" ]; then
    step oelint "$("$OELINT_VENV/bin/oelint-adv" --version) present in $OELINT_VENV"
else
    step oelint "installing $OELINT_REQ into $OELINT_VENV"
    [ -x "$OELINT_VENV/bin/python" ] || /usr/bin/python3 -m venv "$OELINT_VENV"
    "$OELINT_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$OELINT_REQ" \
        >"$WORK/pip-oelint.log" 2>&1 || { tail -20 "$WORK/pip-oelint.log"; echo "setup: pip oelint-adv failed" >&2; exit 1; }
    echo "$OELINT_SUM" >"$OELINT_VENV/.telecart-requirements"
    step oelint "installed $("$OELINT_VENV/bin/oelint-adv" --version)"
fi
