SUMMARY = "Whisper tiny.en speech model (ggml) for telecart's offline captions"
DESCRIPTION = "OpenAI's Whisper tiny.en weights in whisper.cpp's ggml format, \
installed where cartd looks for its model, so captions work with no network."
HOMEPAGE = "https://github.com/ggml-org/whisper.cpp"
SECTION = "multimedia"
LICENSE = "MIT"
# The weights come without a licence file; OpenAI states MIT for them.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

TELECART_MODEL_FILE = "ggml-tiny.en.bin"

# Pinned by content: a different file under the same name fails do_fetch.
# 77704715 bytes; the sha256 is the Git LFS object id of the upstream file.
SRC_URI = "https://huggingface.co/ggerganov/whisper.cpp/resolve/main/${TELECART_MODEL_FILE};downloadfilename=${BPN}-${PV}-${TELECART_MODEL_FILE};unpack=0"
SRC_URI[sha256sum] = "921e4cf8686fdd993dcd081a5da5b6c365bfde1162e72b08d75ac75289920b1f"

S = "${UNPACKDIR}"

inherit allarch

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${datadir}/telecart/models
    install -m 0644 ${UNPACKDIR}/${BPN}-${PV}-${TELECART_MODEL_FILE} ${D}${datadir}/telecart/models/${TELECART_MODEL_FILE}
}

FILES:${PN} += "${datadir}/telecart/models"
