#!/bin/sh
# Regenerates demo-speech.wav, the bundled microphone signal of the demo
# (`audio.microphone = "wav"` without `wav_path`): a nurse's short report read
# by espeak-ng, as 16 kHz mono 16-bit PCM (what the transcriber wants).
# Needs espeak-ng and sox (Debian: apt-get install espeak-ng sox).
# The file must stay under 400 KB: it is embedded in the appliance binary.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-us -s 165 -g 2 -w "$tmp/speech.wav" \
    "Good morning. This is the telecart in room three. \
The patient reports chest pain since yesterday morning. \
Blood pressure is one hundred forty over ninety."
# 16 kHz mono 16-bit, with half a second of silence at the end so the loop breathes.
sox "$tmp/speech.wav" -r 16000 -c 1 -b 16 -e signed-integer demo-speech.wav pad 0 0.5
soxi demo-speech.wav
