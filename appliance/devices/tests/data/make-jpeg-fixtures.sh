#!/bin/sh
# Regenerates the MJPEG fixtures of the conversion tests with GStreamer
# (Debian: gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good).
#
# For each chroma layout a webcam may send (4:2:0 and 4:2:2), it writes one
# 320x240 JPEG of the SMPTE bars and, beside it, the I420 that GStreamer's own
# decoder (libjpeg) makes of that JPEG: the reference the tests compare with.
set -eu
cd "$(dirname "$0")"
for layout in 420:I420 422:Y42B; do
    name=${layout%%:*}
    raw=${layout##*:}
    gst-launch-1.0 -q videotestsrc pattern=smpte num-buffers=1 \
        ! "video/x-raw,format=$raw,width=320,height=240" \
        ! jpegenc quality=90 ! filesink location="testsrc-320x240-$name.jpg"
    gst-launch-1.0 -q filesrc location="testsrc-320x240-$name.jpg" ! jpegdec \
        ! videoconvert ! "video/x-raw,format=I420" \
        ! filesink location="testsrc-320x240-$name.i420"
done
# A webcam-sized MJPEG frame (4:2:2, like UVC cameras send) for the
# conversion benchmark and the 720p decode test.
gst-launch-1.0 -q videotestsrc pattern=smpte num-buffers=1 \
    ! "video/x-raw,format=Y42B,width=1280,height=720" \
    ! jpegenc quality=85 ! filesink location="testsrc-1280x720-422.jpg"
