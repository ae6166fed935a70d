# The A/B boot script (boot.cmd.in) replaces meta-raspberrypi's single-slot one.
FILESEXTRAPATHS:prepend:rpi := "${THISDIR}/files:"
