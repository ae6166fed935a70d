# nooelint: oelint.var.mandatoryvar.SRC_URI
SUMMARY = "Keeps telecart's state (/var/lib/telecart) on the data partition"
DESCRIPTION = "The root file systems are read-only A/B slots that an update \
replaces whole; the session log, update state and other state of cartd live on \
the data partition, overlaid on /var/lib/telecart so they survive updates."
HOMEPAGE = "https://example.invalid/telecart"
SECTION = "base"
LICENSE = "Apache-2.0"
# Files of this layer, under the project's licence.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

inherit allarch overlayfs

# OVERLAYFS_MOUNT_POINT[data] (/data) is set in meta-telecart's layer.conf.
OVERLAYFS_WRITABLE_PATHS[data] = "/var/lib/telecart"
# The upper directory gets the lower one's owner and mode instead of root 0755.
OVERLAYFS_INHERIT_LOWER_PERMISSIONS[data] = "1"

do_install() {
    install -d -m 0750 ${D}${localstatedir}/lib/telecart
}

FILES:${PN} += "${localstatedir}/lib/telecart"
