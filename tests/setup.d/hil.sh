# The virtual cart's inputs (sourced by tests/setup.sh: ROOT, WORK, SUDO, step).
# Debian's stock kernel (the version linux-image-amd64 depends on; downloaded,
# extracted, never installed), its uncompressed vmlinux (boots ~3 s faster
# under TCG than the bzImage), and a module tree holding only what the cart
# needs: vivid, snd-aloop, 9p over virtio, virtio-net. The runner
# (hil/, `cargo run -p telecart-hil -- virtual`) adds busybox, the cart's
# binaries and their libraries when it builds the initramfs.
hil_setup() {
    local dir="$WORK/hil" kpkg kver
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*\)/\1/p' | head -n1)
    if [ -z "$kpkg" ]; then
        $SUDO apt-get update >/dev/null 2>&1 || true
        kpkg=$(apt-cache depends linux-image-amd64 \
            | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*\)/\1/p' | head -n1)
    fi
    [ -n "$kpkg" ] || { echo "setup: hil: cannot resolve linux-image-amd64" >&2; return 1; }
    kver=${kpkg#linux-image-}
    if [ -f "$dir/kernel/ready" ] && [ "$(cat "$dir/kernel/ready")" = "$kver" ]; then
        step hil "kernel $kver present in $dir/kernel"
        return 0
    fi
    step hil "fetching $kpkg into $dir/kernel"
    rm -rf "$dir/kernel" "$dir/download"
    mkdir -p "$dir/download" "$dir/kernel"
    (cd "$dir/download" && apt-get download -q "$kpkg") >"$dir/download.log" 2>&1 \
        || { tail -5 "$dir/download.log"; echo "setup: hil: apt-get download $kpkg failed" >&2; return 1; }
    local pkgroot="$dir/download/root"
    dpkg -x "$dir"/download/linux-image-*.deb "$pkgroot"
    depmod -b "$pkgroot" "$kver"
    # Only the modules the cart needs (and what they depend on), so the
    # initramfs stays small and loads fast under TCG.
    local ko module
    for module in vivid snd-aloop virtio_pci virtio_net 9pnet_virtio 9p; do
        for ko in $(modprobe -d "$pkgroot" -S "$kver" --show-depends "$module" \
                | awk '$1 == "insmod" {print $2}'); do
            mkdir -p "$dir/kernel/$(dirname "${ko#"$pkgroot"/}")"
            cp "$ko" "$dir/kernel/${ko#"$pkgroot"/}"
        done
    done
    cp "$pkgroot/lib/modules/$kver/modules.order" "$pkgroot/lib/modules/$kver/modules.builtin"* \
        "$dir/kernel/lib/modules/$kver/"
    depmod -b "$dir/kernel" "$kver"
    # The uncompressed ELF inside the bzImage (the kernel has CONFIG_PVH).
    python3 - "$pkgroot/boot/vmlinuz-$kver" "$dir/kernel/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
if start < 0:
    sys.exit("no xz stream in the bzImage")
elf = lzma.LZMADecompressor().decompress(data[start:])
if elf[:4] != b"\x7fELF":
    sys.exit("the xz stream is not an ELF kernel")
open(sys.argv[2], "wb").write(elf)
PY
    rm -rf "$dir/download"
    echo "$kver" >"$dir/kernel/ready"
    step hil "kernel $kver ready ($(du -sh "$dir/kernel" | cut -f1))"
}
hil_setup
