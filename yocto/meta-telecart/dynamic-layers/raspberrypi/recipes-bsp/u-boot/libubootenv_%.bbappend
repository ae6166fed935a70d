# fw_printenv/fw_setenv (and cartctl's U-Boot boot control) find the
# environment U-Boot keeps in uboot.env on the boot partition (mounted at /boot).
FILESEXTRAPATHS:prepend:rpi := "${THISDIR}/files:"
SRC_URI:append:rpi = " file://fw_env.config"

do_install:append:rpi() {
    install -d ${D}${sysconfdir}
    install -m 0644 ${UNPACKDIR}/fw_env.config ${D}${sysconfdir}/fw_env.config
}
