#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<target>/: small valid inputs (and a few
near-misses) in each fuzz target's input layout, so fuzzing starts from the real formats.
Run from anywhere; the files are committed, rerun only to change them."""
import gzip
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "corpus"


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def idx(magic_dims, dims, payload):
    return struct.pack(">I", 0x800 | magic_dims) + b"".join(struct.pack(">I", d) for d in dims) + payload


def idx_input(flags, labels, images):
    return bytes([flags]) + struct.pack("<I", len(labels)) + labels + images


def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    for name, (shape, values) in tensors.items():
        data = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + blob


def main():
    # Config: the shipped configs, a few hand-made ones, and overrides after NUL bytes.
    for f in sorted((ROOT / "configs").glob("*.toml")):
        put("fuzz_config", f.name, f.read_text())
    put("fuzz_config", "minimal.toml", '[[strategy]]\nname = "serial"\n')
    put("fuzz_config", "overrides.toml",
        '[train]\nlr = 0.3\n[[strategy]]\nname = "mpi-data"\nlabel = "dp"\nmode = "sync"\nthreads = 4\n'
        '\0train.lr=0.5\0strategy.dp.period=2.5\0model.layers=[784,16,26]\0data.dir=${HOME}/x')
    put("fuzz_config", "everything.toml",
        '[data]\ndir = "d"\nformat = "csv"\ntrain_csv = "a.csv"\ntest_csv = "b.csv"\ntranspose = true\n'
        'label_offset = 0\nnormalize = false\nlimit = 10\ntest_limit = 5\nclasses = 10\n'
        '[model]\nlayers = [4, 3, 10]\ninit = "normal"\ninit_std = 0.5\nseed = 7\ninit_checkpoint = "w.safetensors"\n'
        '[train]\nepochs = 2\nbatch_size = 8\nlr = 1\nmomentum = 0.9\nweight_decay = 1e-4\nseed = 3\n'
        'shuffle = false\ndrop_last = true\neval_every = 0\n'
        '[output]\ndir = "out"\nsave_checkpoint = "c.safetensors"\nwrite_results = false\n'
        '[parity]\nreference = "a"\nweight_rtol = 0.01\nweight_atol = 0\naccuracy_pp = 1\napprox_accuracy_pp = 2\n'
        '[plugins]\npaths = ["p"]\n[mpi]\nlauncher = "mpiexec"\nlauncher_args = ["-x", "A"]\n'
        '[[strategy]]\nname = "serial"\nlabel = "a"\n[[strategy]]\nname = "openmp"\nlabel = "b"\nranks = 2\n'
        'overlap = false\nname_any = "z"\n')

    # IDX: 3 images of 4x4 with labels 1..3, raw and gzip'd, with each option flag.
    labels = idx(1, [3], bytes([1, 2, 3]))
    images = idx(3, [3, 4, 4], bytes(range(48)))
    put("fuzz_idx", "raw", idx_input(0, labels, images))
    put("fuzz_idx", "gzip", idx_input(2, gzip.compress(labels), gzip.compress(images)))
    put("fuzz_idx", "transposed_limit2", idx_input(1 | (2 << 2), labels, images))
    put("fuzz_idx", "two_gzip_members", idx_input(0, labels, gzip.compress(images[:20]) + gzip.compress(images[20:])))
    put("fuzz_idx", "swapped_files", idx_input(0, images, labels))
    put("fuzz_idx", "truncated", idx_input(0, labels, images[:-5]))

    # CSV: 2x2 images (rows byte 1, cols byte 1), with and without a header line.
    put("fuzz_csv", "plain", bytes([1, 1, 0]) + b"1,0,255,7,8\n2,1,2,3,4\n26,9,9,9,9\n")
    put("fuzz_csv", "header_crlf", bytes([1, 1, 0]) + b"label,p0,p1,p2,p3\r\n3, 0 ,1,2,3\r\n\r\n")
    put("fuzz_csv", "gzip_transposed", bytes([1, 2, 1]) + gzip.compress(b"1,1,2,3,4,5,6\n4,6,5,4,3,2,1\n"))

    # safetensors: an nnpar MLP [4, 3, 2], with metadata, and a bare single tensor.
    mlp = {"layers.0.weight": ([3, 4], [0.5] * 12), "layers.0.bias": ([3], [0.0] * 3),
           "layers.1.weight": ([2, 3], [-0.25] * 6), "layers.1.bias": ([2], [1.0, 2.0])}
    put("fuzz_safetensors", "mlp", safetensors(mlp))
    put("fuzz_safetensors", "mlp_metadata", safetensors(mlp, {"strategy": "serial", "epoch": "3"}))
    put("fuzz_safetensors", "scalar", safetensors({"x": ([], [1.5])}))
    put("fuzz_safetensors", "empty_tensor", safetensors({"layers.0.weight": ([0, 4], [])}))


if __name__ == "__main__":
    main()
