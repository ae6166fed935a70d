SUMMARY = "autoboot.txt for Raspberry Pi tryboot A/B (telecart's tryboot layout)"
DESCRIPTION = "The firmware reads autoboot.txt from the first partition and \
boots boot_partition; after `reboot \"0 tryboot\"` it boots the [tryboot] \
partition once. cartctl rewrites it to commit or roll back a slot."
HOMEPAGE = "https://example.invalid/telecart"
SECTION = "bsp"
LICENSE = "Apache-2.0"
# Files of this layer, under the project's licence.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://autoboot.txt"
S = "${UNPACKDIR}"

inherit deploy nopackages

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_deploy() {
    install -m 0644 ${UNPACKDIR}/autoboot.txt ${DEPLOYDIR}/autoboot.txt
}
addtask deploy after do_install before do_build
