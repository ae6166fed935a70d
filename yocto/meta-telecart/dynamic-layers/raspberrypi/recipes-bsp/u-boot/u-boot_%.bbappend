# U-Boot counts boots of a slot on trial (see rpi-u-boot-scr's boot.cmd.in).
FILESEXTRAPATHS:prepend:rpi := "${THISDIR}/files:"
SRC_URI:append:rpi = " file://telecart-bootcount.cfg"
