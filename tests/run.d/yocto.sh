#!/usr/bin/env bash
# The Yocto layer (yocto/meta-telecart) is what an integrator builds images from:
#   1. oelint-adv (pinned, wrynose rules) finds nothing in its recipes, appends and config;
#   2. telecart-crates.inc lists exactly Cargo.lock's crates (stale fails: regenerate with
#      cross/gen-crates-inc);
#   3. the recipe's LIC_FILES_CHKSUM still points at the licence line it names;
#   4. systemd accepts cartd.service as written (systemd-analyze verify prints nothing).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${TELECART_WORK:-$ROOT/.work}"
LAYER="$ROOT/yocto/meta-telecart"
RECIPE="$LAYER/recipes-telecart/telecart/telecart_git.bb"
status=0

# 1. oelint-adv. homepageping needs the network; the crates.inc carries its own
#    inline suppression for the leading-space shape the OE class writes.
OELINT="$WORK/oelint/bin/oelint-adv"
[ -x "$OELINT" ] || { echo "yocto: $OELINT missing: run tests/setup.sh" >&2; exit 1; }
mapfile -t files < <(cd "$ROOT/yocto" && find meta-telecart -type f \
    \( -name '*.bb' -o -name '*.bbappend' -o -name '*.inc' -o -name '*.conf' -o -name '*.bbclass' \) | sort)
if (cd "$ROOT/yocto" && "$OELINT" --quiet --release wrynose --relpaths --hide info \
        --constantmods +oelint-constants.json --suppress oelint.vars.homepageping "${files[@]}"); then
    echo "yocto: oelint-adv $("$OELINT" --version | cut -d' ' -f2): ${#files[@]} files clean"
else
    echo "yocto: oelint-adv found problems (above)" >&2
    status=1
fi

# 2. crates.inc against Cargo.lock.
python3 "$ROOT/cross/gen-crates-inc" --check || status=1

# 3. LIC_FILES_CHKSUM = "file://FILE;beginline=N;endline=M;md5=SUM"
lic="$(sed -n 's/^LIC_FILES_CHKSUM = "file:\/\/\([^"]*\)"/\1/p' "$RECIPE")"
lic_file="${lic%%;*}"
begin="$(echo "$lic" | sed -n 's/.*beginline=\([0-9]*\).*/\1/p')"
end="$(echo "$lic" | sed -n 's/.*endline=\([0-9]*\).*/\1/p')"
want="$(echo "$lic" | sed -n 's/.*md5=\([0-9a-f]*\).*/\1/p')"
have="$(sed -n "${begin},${end}p" "$ROOT/$lic_file" | md5sum | cut -d' ' -f1)"
if [ -n "$want" ] && [ "$have" = "$want" ]; then
    echo "yocto: LIC_FILES_CHKSUM matches $lic_file lines $begin-$end ($(sed -n "${begin}p" "$ROOT/$lic_file"))"
else
    echo "yocto: LIC_FILES_CHKSUM names $lic_file lines $begin-$end md5 $want, which now hash to $have" >&2
    status=1
fi

# 4. The unit, with the binaries it starts replaced by ones that exist here.
unit_dir="$(mktemp -d)"
trap 'rm -rf "$unit_dir"' EXIT
sed 's|/usr/bin/cartd|/bin/true|g' "$LAYER/recipes-telecart/telecart/files/cartd.service" >"$unit_dir/cartd.service"
verify="$(systemd-analyze verify "$unit_dir/cartd.service" 2>&1 || true)"
if [ -z "$verify" ]; then
    echo "yocto: systemd-analyze verify: cartd.service accepted by $(systemd-analyze --version | head -1)"
else
    echo "$verify" >&2
    echo "yocto: systemd-analyze verify complained about cartd.service" >&2
    status=1
fi
exit "$status"
