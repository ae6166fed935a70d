SUMMARY = "telecart cart image: cartd and cartctl on a read-only A/B root file system"
DESCRIPTION = "A minimal systemd image for a telehealth cart (raspberrypi4-64, \
raspberrypi5): two root file system slots that updates replace whole, a data \
partition for the session log, keys and configuration, and cartd started at boot."
LICENSE = "MIT"

inherit core-image features_check

REQUIRED_DISTRO_FEATURES = "systemd overlayfs"

IMAGE_INSTALL = "\
    packagegroup-core-boot \
    ${CORE_IMAGE_EXTRA_INSTALL} \
    telecart \
    telecart-state \
    telecart-whisper-model \
    alsa-utils \
    v4l-utils \
    libubootenv-bin \
    kernel-image \
    kernel-devicetree \
"

# Field techs reach the cart over SSH (keys only, provisioned per site); the
# console page is bound to 127.0.0.1 and reached through an SSH tunnel.
IMAGE_FEATURES += "read-only-rootfs ssh-server-openssh overlayfs-etc"

# /etc (configuration, keys, SSH host keys) is an overlay whose upper layer
# is on the data partition, mounted before systemd starts.
OVERLAYFS_ETC_MOUNT_POINT = "/data"
OVERLAYFS_ETC_FSTYPE = "ext4"
OVERLAYFS_ETC_DEVICE ?= "${@'/dev/mmcblk0p7' if d.getVar('TELECART_BOOT_FLAVOUR') == 'tryboot' else '/dev/mmcblk0p4'}"

# The root file system is the update payload (ext4 for `cartctl image sign`);
# wic is the factory image with both slots and the data partition.
IMAGE_FSTYPES = "ext4 wic.bz2 wic.bmap"

# Slot and data sizes for the kickstart files in wic/ (the slot must hold
# IMAGE_ROOTFS_SIZE plus IMAGE_OVERHEAD_FACTOR's headroom).
TELECART_SLOT_SIZE ?= "1536M"
TELECART_DATA_SIZE ?= "1024M"
WICVARS:append = " TELECART_SLOT_SIZE TELECART_DATA_SIZE"

# U-Boot flavour by default; the tryboot flavour boots without U-Boot and
# keeps autoboot.txt alone on its first partition (docs/build.md).
TELECART_BOOT_FLAVOUR ?= "uboot"
WKS_FILE = "telecart-ab-${TELECART_BOOT_FLAVOUR}.wks.in"
IMAGE_BOOT_FILES_label-autoboot = "autoboot.txt"
# autoboot.txt comes from telecart-autoboot's deploy (meta-raspberrypi builds only).
do_image_wic[depends] += "${@'telecart-autoboot:do_deploy' if d.getVar('TELECART_BOOT_FLAVOUR') == 'tryboot' else ''}"
