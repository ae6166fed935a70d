SUMMARY = "telecart: telehealth cart daemon (cartd) and field-tech tool (cartctl)"
DESCRIPTION = "cartd captures the camera (V4L2) and microphone (ALSA), encodes \
H.264 and Opus, publishes over WebRTC and SIP, captions offline with whisper.cpp \
and keeps an encrypted session log. cartctl provisions, flashes and diagnoses the cart."
HOMEPAGE = "https://example.invalid/telecart"
BUGTRACKER = "https://example.invalid/telecart/issues"
SECTION = "multimedia"
LICENSE = "Apache-2.0"
# The workspace's licence declaration ([workspace.package] in Cargo.toml);
# tests/run.d/yocto.sh checks that this line and checksum still match.
LIC_FILES_CHKSUM = "file://LICENSE;beginline=1;endline=202;md5=3b83ef96387f14655fc854ddc3c6bd57"

# alsa-sys links alsa-lib; opusic-sys (libopus) and whisper-rs-sys (whisper.cpp)
# build their C/C++ sources with cmake; v4l2-sys-mit runs bindgen on the kernel
# headers, which needs libclang (clang is in openembedded-core since 5.2).
DEPENDS = "alsa-lib clang-native cmake-native"

PV = "0.1.0+git"

# The workspace is built at SRCREV; telecart-crates.inc must be generated from
# the same commit's Cargo.lock (cross/gen-crates-inc). A release bumps both.
SRC_URI = "git://example.invalid/telecart.git;protocol=https;branch=main \
           file://cartd.service \
           file://cart.toml \
           file://70-telecart.rules \
"
SRCREV = "2ad0a505bac68ffcddf3ddeb2b2d9328cd8c66be"

require telecart-crates.inc

inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

# bindgen runs on the build host but parses the target's headers.
export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export BINDGEN_EXTRA_CLANG_ARGS = "--sysroot=${STAGING_DIR_TARGET} ${TUNE_CCARGS}"
# whisper.cpp (ggml) would otherwise tune for the build machine (-march=native).
export GGML_NATIVE = "OFF"

# Only the two programs the cart runs; the workspace also has the benchmark
# and the reference ingest server, which an image does not ship.
CARGO_BUILD_FLAGS:append = " -p cartd -p cartctl"

# The crate list comes from the workspace's top-level Cargo.lock only: fuzz/ is
# a separate workspace that the image never builds.
CARGO_LOCK_SRC_DIR = "${S}"

# The daemon's own user; it reaches devices only through the unit's
# SupplementaryGroups (video audio gpio i2c spi), never as a member here.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/telecart --no-create-home \
                       --shell ${base_sbindir}/nologin --user-group telecart"
GROUPADD_PARAM:${PN} = "--system gpio; --system i2c; --system spi"

SYSTEMD_SERVICE:${PN} = "cartd.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${UNPACKDIR}/cartd.service ${D}${systemd_system_unitdir}/cartd.service

    # Configuration: readable by the daemon's group, never writable by it.
    install -d -m 0750 -g telecart ${D}${sysconfdir}/telecart
    install -m 0640 -g telecart ${UNPACKDIR}/cart.toml ${D}${sysconfdir}/telecart/cart.toml
    # Keys are written on the cart by `cartctl provision` (docs/build.md).
    install -d -m 0750 -g telecart ${D}${sysconfdir}/telecart/keys

    install -d ${D}${nonarch_base_libdir}/udev/rules.d
    install -m 0644 ${UNPACKDIR}/70-telecart.rules ${D}${nonarch_base_libdir}/udev/rules.d/70-telecart.rules
}

CONFFILES:${PN} = "${sysconfdir}/telecart/cart.toml"

FILES:${PN} += "${systemd_system_unitdir}/cartd.service \
                ${nonarch_base_libdir}/udev/rules.d/70-telecart.rules \
"

RDEPENDS:${PN} = "alsa-lib"
# Captions need the speech model; an image may swap in another model package.
RRECOMMENDS:${PN} = "telecart-whisper-model"
