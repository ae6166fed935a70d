#!/bin/sh
# Runs the real V4L2 and ALSA code paths of telecart-devices against the
# kernel's virtual drivers (vivid camera, snd-aloop loopback sound card) in a
# throwaway QEMU VM booted from Debian's stock kernel: no camera or sound card
# needed on the host. About a minute; prints the probe's output and exits
# non-zero if any step failed.
#
#   appliance/devices/tests/vm/vivid-smoke.sh
#
# Needs: qemu-system-x86 kmod cpio busybox-static (apt-get install -y
# --no-install-recommends ...), and apt access to download the kernel package.
# Checks: mode choice and capture in NV12, YUYV and YU12 (the three must
# convert vivid's colour bars to the same I420); controls; a
# ReconnectingCamera across an unbind/bind of the vivid driver (sequence
# numbers continuous); ALSA playback to hw:Loopback,0,0 captured on
# hw:Loopback,1,0, with a forced capture overrun recovered without reopening.
set -eu
repo=$(cd "$(dirname "$0")/../../../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-shared}"

(cd "$repo" && cargo build -q -p telecart-devices --example devices-probe)
probe="$CARGO_TARGET_DIR/debug/examples/devices-probe"

kpkg=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -n1)
kver=${kpkg#linux-image-}
(cd "$work" && apt-get download -q "$kpkg" >/dev/null)
dpkg -x "$work"/linux-image-*.deb "$work/kernel"
depmod -b "$work/kernel" "$kver"

root="$work/rootfs"
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/usr/share"
cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
for module in vivid snd-aloop; do
    for ko in $(modprobe -d "$work/kernel" -S "$kver" --show-depends "$module" | awk '{print $2}'); do
        dest="$root/${ko#"$work"/kernel/}"
        mkdir -p "$(dirname "$dest")"
        cp "$ko" "$dest"
    done
done
depmod -b "$root" "$kver"
cp "$probe" "$root/bin/devices-probe"
for lib in $(ldd "$probe" | grep -o '/[^ ]*\.so[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp -r /usr/share/alsa "$root/usr/share/"

cat > "$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
modprobe vivid n_devs=1 node_types=0x1
modprobe snd-aloop
sleep 1
fail=0
for f in NV12 YUYV YU12; do
    echo "=== camera $f"
    /bin/devices-probe camera /dev/video0 640x480@25 25 $f > /tmp/$f.out || fail=1
    grep -vE "^ |^/dev" /tmp/$f.out
    grep digest /tmp/$f.out >> /tmp/digests
done
# vivid's colour bars are the same in every format: the I420 must be too.
echo "distinct lower-half digests: $(sort -u /tmp/digests | wc -l)"
[ "$(sort -u /tmp/digests | wc -l)" = 1 ] || fail=1
echo "=== reconnect"
( sleep 3; echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind; echo "--- vivid unbound"
  sleep 3; echo vivid.0 > /sys/bus/platform/drivers/vivid/bind; echo "--- vivid bound" ) &
/bin/devices-probe reconnect /dev/video0 10 || fail=1
echo "=== audio"
/bin/devices-probe audio hw:Loopback,1,0 hw:Loopback,0,0 || fail=1
echo "=== result $fail"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initramfs.gz")

timeout 600 qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -nographic -no-reboot \
    -kernel "$work/kernel/boot/vmlinuz-$kver" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 panic=-1 quiet" > "$work/console.log" 2>&1 || true
sed -n '/=== camera NV12/,/=== result/p' "$work/console.log"
grep -q "=== result 0" "$work/console.log"
