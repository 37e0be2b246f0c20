#!/usr/bin/env python3
"""Structured fuzzing of nasrt's Python readers (issue 17): plan, space, latency table,
model file (Python side), npz, IDX, image folder, CIFAR batch, FLASH sample cache, int8
quantisation parameters, bench report.

Each input is a valid file mutated by a seeded generator: random byte flips, truncations,
insertions, field replacements in the parsed JSON / npy header / IDX header / PNG chunks
(with checksums fixed so the reader gets past them). The same (seed, reader, index) always
gives the same input, so a finding is replayed with --replay READER:INDEX.

Asserted for every input: the reader returns, or raises one of the project's error types
(nasrt.errors.NasrtError) with a one-line message; no other exception (MemoryError included:
each worker runs under RLIMIT_AS), no hang (SIGALRM per input, and a watchdog that kills a
worker stuck in C code), no crash signal. Exit status 1 if anything was found.

    python tools/fuzz_readers.py --n 10000                  # every reader, 10k inputs each
    python tools/fuzz_readers.py --readers npz,idx --n 500 --json out.json
    python tools/fuzz_readers.py --replay npz:1234           # rerun one input, show the traceback
"""
from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import io
import json
import math
import os
import pickle
import random
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from pathlib import Path

READERS = ("plan", "space", "lut", "model", "npz", "idx", "folder", "cifar", "flash", "qparams", "bench")
INTERESTING_INTS = (0, 1, -1, 2, 3, 7, 255, 256, 65535, 65536, 65537, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1,
                    2 ** 32, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 12, -(2 ** 31))
INTERESTING = (None, True, False, 0, -1, 1, 0.5, -0.0, 1e308, -1e308, float("inf"), float("-inf"),
               float("nan"), "", "x", "conv3x3", "sum", "\n", "\u0663", "9" * 50, [], {}, [1], {"a": 1},
               10 ** 40, 10 ** 400, 2 ** 63, 4097, 65537, 8193, [[[[[]]]]])


class Timeout(Exception):
    pass


def _interesting(rng: random.Random):
    return copy.deepcopy(rng.choice(INTERESTING))  # a copy: later mutations must not grow the constants


# -- valid inputs ------------------------------------------------------------------

def _plan():
    from nasrt.contract.plan import Block, Plan, Sync
    paths = tuple(tuple(Block(op, k, s, c) for (op, k), s, c in zip(ops, (1, 2), (4, 8)))
                  for ops in ((("conv", 3), ("sepconv", 5)), (("conv", 5), ("conv", 3))))
    return Plan((1, 8, 8), 3, Block("conv", 3, 1, 4), paths, (Sync(0, "conv1x1"), Sync(1, "sum")), (6,))


def _space():
    from nasrt.contract.space import SearchSpace
    return SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3", "sepconv3x3", "metaconv5x5"),
                       stem_kernel=3, stem_out=4, hidden=(6,)).bind((1, 8, 8), 3)


def _lut_dict():
    sp = _space()
    layers = [s.to_dict() for s in sp.layer_shapes()]
    names = [n for n, _ in sp.plan_ops]
    return {"format": "nasrt.lut", "version": 1, "nasrt_version": "0.2.0", "machine": {"cpu": "x", "cores": 2},
            "backend": "onednn", "settings": {"threads": 2, "runs": 10, "rounds": 2}, "space": sp.to_dict(),
            "layers": layers, "ops_us": [{n: 1.0 + i + l for i, n in enumerate(names)} for l in range(2)],
            "units_us": [{"sepconv3x3": [0.5, 1.0]} for _ in range(2)],
            "barrier_us": {"1": 0.0, "2": 0.4}, "stem_us": {"1": 2.0, "2": 1.0}, "head_us": 0.7,
            "sync_us": {m: {"1": [0.5, 0.6], "2": [1.0, 1.2]} for m in ("sum", "conv1x1")},
            "overhead_us": {"1": 0.3, "2": 0.9}}


def _png(w=6, h=5, mode="RGB", seed=0):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def _image(fmt, seed):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (5, 6, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _npz_members():
    import numpy as np
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (6, 5, 5), dtype=np.uint8), "y_train": np.array([0, 1, 2, 0, 1, 2]),
              "x_test": rng.random((2, 5, 5)).astype(np.float32), "y_test": np.array([1, 2], np.uint8)}
    out = {}
    for k, a in arrays.items():
        buf = io.BytesIO()
        np.save(buf, a)
        out[k] = buf.getvalue()
    return out


def _zip(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for k, v in members.items():
            z.writestr(k + ".npy", v)
    return buf.getvalue()


def _idx(arr, kind: int) -> bytes:
    return struct.pack(f">I{kind}I", 0x0800 + kind, *arr.shape) + arr.astype("u1").tobytes()


# -- mutations -------------------------------------------------------------------

def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5, 10))):
        op = rng.randrange(7)
        if not b:
            b = bytearray(rng.randbytes(rng.randrange(1, 16)))
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.randrange(256)
        elif op == 2:
            del b[rng.randrange(len(b) + 1):]
        elif op == 3:
            b[i:i] = rng.randbytes(rng.randrange(1, 32))
        elif op == 4:  # a 4- or 8-byte field set to an interesting integer
            n = rng.choice((4, 8))
            v = rng.choice(INTERESTING_INTS) % (1 << (8 * n))
            b[i:i + n] = v.to_bytes(n, rng.choice(("little", "big")))
        elif op == 5:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randrange(1, 64)]
        else:
            del b[i:i + rng.randrange(1, 16)]
    return bytes(b)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def mutate_obj(rng: random.Random, obj):
    """A field replaced, deleted, added or duplicated in a parsed JSON object."""
    obj = json.loads(json.dumps(obj))
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        paths = list(_paths(obj))
        path = rng.choice(paths[1:] or paths)
        if not path:
            return _interesting(rng)
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        key, op = path[-1], rng.randrange(8)
        if op <= 3:
            cur = parent[key]
            if isinstance(cur, bool) or not isinstance(cur, (int, float)) or op <= 1:
                parent[key] = _interesting(rng)
            else:
                small = isinstance(cur, float) or abs(cur) < 10 ** 300  # float() of 10**400 overflows
                parent[key] = rng.choice((cur + 1, cur - 1, -cur, cur * 2 ** 20, float(cur) if small else cur,
                                          cur + 0.5 if small else cur,
                                          int(cur) if isinstance(cur, float) and math.isfinite(cur) else 0))
        elif op == 4:
            del parent[key]
        elif op == 5 and isinstance(parent, dict):
            parent[rng.choice(("extra", "x" * rng.randrange(1, 5), str(rng.randrange(10)), "0", "\u0663"))] = \
                _interesting(rng)
        elif op == 6 and isinstance(parent, list):
            parent.insert(key, json.loads(json.dumps(parent[key])))
        else:
            parent[key] = json.loads(json.dumps(rng.choice(paths and [obj])))  # self-similar growth
    return obj


def _dumps(obj) -> bytes:
    return json.dumps(obj).encode()


def mutate_json(rng: random.Random, obj) -> bytes:
    r = rng.random()
    if r < 0.65:
        return _dumps(mutate_obj(rng, obj))
    if r < 0.95:
        return mutate_bytes(rng, _dumps(obj))
    return rng.choice((b"[" * 100000, b"{" * 5000, b'{"format": ' + b"9" * 6000 + b"}", b"\xff\xfe", b"",
                       b'"' + b"a" * 100000 + b'"', b"NaN", b"[1e999]"))


def _png_chunks(data: bytes):
    pos, out = 8, []
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.append([kind, data[pos + 8:pos + 8 + n]])
        pos += 12 + n
    return out


def _png_join(chunks) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(body)) + kind + body
                                         + struct.pack(">I", zlib.crc32(kind + body)) for kind, body in chunks)


def mutate_png(rng: random.Random, data: bytes) -> bytes:
    """Chunk-level mutation with CRCs fixed, so the decoder itself is reached."""
    chunks = _png_chunks(data)
    c = rng.choice(chunks)
    if c[0] == b"IHDR" and rng.random() < 0.7:
        w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", c[1])
        field = rng.randrange(5)
        if field == 0:
            w = rng.choice(INTERESTING_INTS) % (1 << 32)
        elif field == 1:
            h = rng.choice(INTERESTING_INTS) % (1 << 32)
        elif field == 2:
            depth = rng.choice((1, 2, 4, 8, 16, 3, 0, 255))
        elif field == 3:
            ctype = rng.choice((0, 2, 3, 4, 6, 1, 7))
        else:
            inter = rng.choice((0, 1, 2))
        c[1] = struct.pack(">IIBBBBB", w, h, depth, ctype, comp, filt, inter)
    elif c[0] == b"IDAT" and rng.random() < 0.5:
        raw = zlib.decompress(c[1])
        c[1] = zlib.compress(mutate_bytes(rng, raw))
    else:
        c[1] = mutate_bytes(rng, c[1])
    if rng.random() < 0.1:
        chunks.insert(rng.randrange(len(chunks) + 1), [rng.choice((b"PLTE", b"tRNS", b"zTXt", b"iCCP", b"IDAT")),
                                                       rng.randbytes(rng.randrange(40))])
    return _png_join(chunks)


def _npy_header(shape, descr, fortran=False):
    buf = io.BytesIO()
    import numpy as np
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


# -- one input per (reader, index): files under `d`, then the call ----------------

class Target:
    """Builds the valid inputs once, then per index writes a mutated input and reads it."""

    def __init__(self, reader: str, work: Path):
        self.reader, self.work = reader, work
        import numpy as np
        self.np = np
        if reader == "plan":
            self.base = _plan().to_dict()
        elif reader == "space":
            self.base = _space().to_dict()
        elif reader == "lut":
            self.base = _lut_dict()
        elif reader == "model":
            from nasrt.contract.modelfile import KEY_CLASS_NAMES, model_bytes
            from nasrt.runtime.bench import random_tensors
            plan = _plan()
            self.base = model_bytes(plan, random_tensors(plan), {KEY_CLASS_NAMES: '["a", "b", "c"]'})
        elif reader == "npz":
            self.base = _npz_members()
        elif reader == "idx":
            from nasrt.data.builtin import FASHION_FILES
            rng = np.random.default_rng(0)
            self.files = FASHION_FILES
            self.base = [_idx(rng.integers(0, 255, (3, 28, 28)), 3), _idx(np.array([0, 1, 9]), 1),
                         _idx(rng.integers(0, 255, (2, 28, 28)), 3), _idx(np.array([3, 4]), 1)]
        elif reader == "folder":
            self.base = {"png": _png(), "pngL": _png(mode="L"), "jpg": _image("JPEG", 1), "bmp": _image("BMP", 2),
                         "gif": _image("GIF", 3), "webp": _image("WEBP", 4), "tif": _image("TIFF", 5)}
        elif reader == "cifar":
            self.base = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 9]}
        elif reader == "flash":
            from nasrt.data.builtin import make_synthetic
            from nasrt.search import flash
            self.flash = flash
            self.plan = _plan()
            self.settings = flash.SampleSettings(limit=32, test_limit=16)
            self.digest = flash.data_digest(make_synthetic(n_train=32, n_test=16), self.settings)
            self.base = flash._entry(self.plan, self.digest, make_synthetic(n_train=32, n_test=16), self.settings,
                                     0.5, 1.0)
        elif reader == "qparams":
            from nasrt.quant import calibrate
            from nasrt.quant.params import params_to_dict
            from nasrt.runtime.bench import random_tensors
            self.plan = _plan()
            images = np.random.default_rng(0).standard_normal((8, *self.plan.input)).astype(np.float32)
            qp = calibrate(self.plan, random_tensors(self.plan), images, "numpy-minmax")
            self.base = params_to_dict(qp, "0123abcd")
        elif reader == "bench":
            from nasrt.runtime.bench import BenchReport, ConfigResult, Ratios
            rows = {n: ConfigResult(e, t, "fp32", 100.0 + t, 110.0, 120.0, 90.0, 101.0, 10, 0.0, True, [100.0, 101.0])
                    for n, e, t in (("nasrt 1 thread", "nasrt", 1), ("ORT seq 1 thread", "onnxruntime", 1))}
            self.base = BenchReport("m.nasrt", "m.onnx", True, 1e-4, rows, {}, Ratios(), _plan(), {"cpu": "x"},
                                    {"stem.0": "onednn"}).to_dict()
        else:
            raise SystemExit(f"unknown reader {reader!r} (known: {', '.join(READERS)})")

    def run(self, rng: random.Random):
        d = self.work / "in"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        getattr(self, f"_{self.reader}")(rng, d)

    def _plan(self, rng, d):
        from nasrt.contract.plan import Plan
        (d / "plan.json").write_bytes(mutate_json(rng, self.base))
        plan = Plan.load(d / "plan.json")
        plan.cost(), plan.summary()

    def _space(self, rng, d):
        from nasrt.contract.space import SearchSpace
        (d / "space.json").write_bytes(mutate_json(rng, self.base))
        sp = SearchSpace.load(d / "space.json")
        if sp.input is not None:
            sp.layer_shapes(), sp.choice_labels

    def _lut(self, rng, d):
        from nasrt.contract.lut import load_lut
        (d / "lut.json").write_bytes(mutate_json(rng, self.base))
        lut = load_lut(d / "lut.json")
        lut.check_threads(lut.threads)

    def _model(self, rng, d):
        from nasrt.contract.modelfile import KEY_GRAPH, KEY_PLAN, read_model
        data = self.base
        n = struct.unpack("<Q", data[:8])[0]
        if rng.random() < 0.5:
            data = mutate_bytes(rng, data)
        else:  # the header: a JSON field, or one of the JSON strings in the metadata
            header = json.loads(data[8:8 + n])
            meta = header["__metadata__"]
            r = rng.random()
            if r < 0.4:
                key = rng.choice((KEY_PLAN, KEY_GRAPH))
                meta[key] = mutate_json(rng, json.loads(meta[key])).decode("utf-8", "replace")
            elif r < 0.5:
                meta[rng.choice(sorted(meta))] = rng.choice(("", "1", "7", "x", "[" * 3000, "null"))
            else:
                header = mutate_obj(rng, header)
            text = json.dumps(header).encode()
            data = struct.pack("<Q", len(text)) + text + data[8 + n:]
        (d / "m.nasrt").write_bytes(data)
        read_model(d / "m.nasrt")

    def _npz(self, rng, d):
        from nasrt.data.user import load_npz
        members = dict(self.base)
        r = rng.random()
        if r < 0.35:  # the npy header of one member
            k = rng.choice(sorted(members))
            a = self.np.load(io.BytesIO(members[k]))
            shape = list(a.shape)
            choice = rng.randrange(4)
            if choice == 0 and shape:
                shape[rng.randrange(len(shape))] = rng.choice(INTERESTING_INTS[:12] + (10 ** 6, 10 ** 12))
            elif choice == 1:
                shape = rng.choice(([], [0], [10 ** 12], shape + [1], shape[:1], [1, 1, 1, 1, 1]))
            descr = rng.choice(("|u1", "<f4", "<f8", ">f4", "<i8", "<u8", "|b1", "<c8", "|O", "<U3", "|V4",
                                "<f2", a.dtype.str)) if choice == 2 else a.dtype.str
            body = members[k][len(_npy_header(a.shape, a.dtype.str)):]
            if choice == 3:
                body = mutate_bytes(rng, body)
            members[k] = _npy_header(tuple(max(0, s) for s in shape), descr, rng.random() < 0.2) + body
            data = _zip(members, rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)))
        elif r < 0.55:  # a member's bytes, zipped with a valid CRC
            k = rng.choice(sorted(members))
            members[k] = mutate_bytes(rng, members[k])
            if rng.random() < 0.2:
                members.pop(rng.choice(sorted(members)))
            data = _zip(members, rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)))
        else:  # the archive's bytes (local headers, sizes, CRCs, the directory)
            data = mutate_bytes(rng, _zip(members, rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED))))
        (d / "d.npz").write_bytes(data)
        load_npz(d / "d.npz")

    def _idx(self, rng, d):
        from nasrt.data.builtin import load_fashion_mnist
        raw = list(self.base)
        i = rng.randrange(4)
        r = rng.random()
        if r < 0.4:  # the header's dims
            kind = 3 if i % 2 == 0 else 1
            dims = list(struct.unpack(f">{kind}I", raw[i][4:4 + 4 * kind]))
            dims[rng.randrange(kind)] = rng.choice(INTERESTING_INTS) % (1 << 32)
            raw[i] = raw[i][:4] + struct.pack(f">{kind}I", *dims) + raw[i][4 + 4 * kind:]
        elif r < 0.7:
            raw[i] = mutate_bytes(rng, raw[i])
        gz = [rng.random() < 0.8 for _ in raw]
        blobs = [gzip.compress(b, mtime=0) if z else b for b, z in zip(raw, gz)]
        if r >= 0.7:
            blobs[i] = mutate_bytes(rng, blobs[i])
        for name, blob, z in zip(self.files, blobs, gz):
            (d / (name if z else name[:-3])).write_bytes(blob)
        load_fashion_mnist(d)

    def _folder(self, rng, d):
        from nasrt.data.user import load_folder
        names = sorted(self.base)
        layout = rng.random()
        parts = ("train", "test") if layout < 0.8 else ("",)
        victim = (rng.choice(parts), rng.choice(("a", "b")), rng.randrange(2))
        kinds = (rng.choice(names),) * 4 if rng.random() < 0.7 else tuple(rng.choice(names) for _ in range(4))
        for part in parts:
            for c in ("a", "b"):
                (d / part / c).mkdir(parents=True)
                for j in range(2):
                    kind = kinds[j * 2 + (c == "b")]
                    data = self.base[kind]
                    if (part, c, j) == victim:
                        data = mutate_png(rng, data) if kind.startswith("png") and rng.random() < 0.6 \
                            else mutate_bytes(rng, data)
                    (d / part / c / f"{j}.{kind[:3] if kind != 'pngL' else 'png'}").write_bytes(data)
        if rng.random() < 0.05:
            (d / (parts[0]) / "empty").mkdir()
        size = rng.choice((None, None, (5, 6), (4, 4), (1, 1)))
        load_folder(d, size, 0.25 if parts == ("",) else None)

    def _cifar(self, rng, d):
        from nasrt.data.builtin import _read_cifar_batch
        np = self.np
        r = rng.random()
        if r < 0.5:
            obj = dict(self.base)
            k = rng.choice((b"data", b"labels"))
            obj[k] = rng.choice((np.zeros((2, 3072), np.float32), np.zeros((3, 100), np.uint8), np.zeros(3072, np.uint8),
                                 [0, 1, 2], [[0] * 3] * 2, "x", None, 5, np.array([0, 1, 2], np.int64),
                                 np.array([0, 1, 2**40]), [0, -1, 3], [0, 1, 2**70], {b"x": 1}))
            if rng.random() < 0.3:
                obj.pop(k)
            data = pickle.dumps(obj, protocol=rng.choice((2, 3, 4, 5)))
        else:
            data = mutate_bytes(rng, pickle.dumps(self.base, protocol=rng.choice((2, 4))))
        (d / "data_batch_1").write_bytes(data)
        _read_cifar_batch(d / "data_batch_1")

    def _flash(self, rng, d):
        f = d / "sample.json"
        f.write_bytes(mutate_json(rng, self.base))
        acc, why = self.flash.read_sample(f, self.plan, self.digest, self.settings)
        if acc is not None and not (isinstance(acc, float) and 0.0 <= acc <= 1.0):
            raise AssertionError(f"accepted accuracy {acc!r}")
        if acc is None and (not why or len(why.splitlines()) != 1):
            raise AssertionError(f"note not one line: {why!r}")
        self.flash._note_old_entries(d, lambda *a: None)

    def _qparams(self, rng, d):
        from nasrt.quant.params import read_params
        f = d / "q.json"
        f.write_bytes(mutate_json(rng, self.base))
        read_params(f, self.plan, "0123abcd")

    def _bench(self, rng, d):
        from nasrt.runtime.bench import BenchReport
        BenchReport.from_json(mutate_json(rng, self.base).decode("utf-8", "replace"), "bench.json")


# -- worker and parent -------------------------------------------------------------

def input_rng(seed: int, reader: str, i: int) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}:{reader}:{i}".encode()).digest()[:8], "little"))


def worker(reader: str, seed: int, start: int, n: int, time_limit: float, mem_mb: int) -> None:
    from nasrt.errors import NasrtError
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{reader}-") as tmp:
        target = Target(reader, Path(tmp))
        # Memory bound from here on: what is mapped now plus mem_mb for the reader.
        vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + (mem_mb << 20),) * 2)

        def alarm(*_):
            raise Timeout()

        signal.signal(signal.SIGALRM, alarm)
        out = sys.stdout
        for i in range(start, start + n):
            print(f"START {i}", file=out, flush=True)
            t0 = time.perf_counter()
            status, detail = "OK", ""
            signal.setitimer(signal.ITIMER_REAL, time_limit)
            try:
                target.run(input_rng(seed, reader, i))
            except Timeout:
                status, detail = "HANG", f"over {time_limit} s"
            except NasrtError as e:
                msg = str(e)
                status = "ERR" if msg and len(msg.splitlines()) == 1 else "BAD"
                detail = f"{type(e).__name__}: {msg!r}"[:300]
            except BaseException as e:  # every other exception is a finding
                status, detail = "BAD", f"{type(e).__name__}: {str(e)!r}"[:300]
                if os.environ.get("FUZZ_TRACE"):
                    traceback.print_exc(limit=-8, file=sys.stderr)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            print(f"{status} {i} {time.perf_counter() - t0:.4f} {detail}", file=out, flush=True)


def run_reader(reader: str, args) -> dict:
    counts = {"OK": 0, "ERR": 0, "BAD": 0, "HANG": 0, "CRASH": 0}
    findings, slowest = [], 0.0
    i, end = 0, args.n
    t_start = time.time()
    while i < end:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", reader, "--seed", str(args.seed),
               "--start", str(i), "--n", str(end - i), "--time-limit", str(args.time_limit),
               "--mem-mb", str(args.mem_mb)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        current = None
        while True:
            ready, _, _ = select.select([p.stdout], [], [], args.time_limit * 5 + 30 if current is None
                                        else args.time_limit * 5 + 5)
            if not ready:  # stuck where SIGALRM cannot reach (C code holding the GIL)
                p.kill()
                p.wait()
                counts["HANG"] += 1
                findings.append({"reader": reader, "index": current, "kind": "HANG", "detail": "watchdog"})
                i = (current if current is not None else i) + 1
                break
            line = p.stdout.readline()
            if not line:
                p.wait()
                if current is not None:  # died on an input: a crash signal or the memory limit
                    counts["CRASH"] += 1
                    findings.append({"reader": reader, "index": current, "kind": "CRASH",
                                     "detail": f"exit {p.returncode}: {p.stderr.read()[-300:]!r}"})
                    i = current + 1
                else:
                    i = end if p.returncode == 0 else i + 1
                    if p.returncode:
                        findings.append({"reader": reader, "index": None, "kind": "CRASH",
                                         "detail": f"worker start: {p.stderr.read()[-500:]}"})
                        counts["CRASH"] += 1
                break
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "START":
                current = int(rest)
                continue
            idx, secs, detail = (rest.split(" ", 2) + [""])[:3]
            counts[kind] += 1
            slowest = max(slowest, float(secs))
            current = None
            if kind in ("BAD", "HANG"):
                findings.append({"reader": reader, "index": int(idx), "kind": kind, "detail": detail})
            i = int(idx) + 1
        if p.poll() is None:
            p.kill()
            p.wait()
    done = sum(counts.values())
    return {"reader": reader, "inputs": done, **{k.lower(): v for k, v in counts.items()},
            "slowest_s": round(slowest, 4), "seconds": round(time.time() - t_start, 1), "findings": findings}


def replay(spec: str, seed: int) -> None:
    reader, _, idx = spec.partition(":")
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        target = Target(reader, Path(tmp))
        try:
            target.run(input_rng(seed, reader, int(idx)))
            print("returned normally")
        except Exception:
            traceback.print_exc()
        keep = Path(f"fuzz-{reader}-{idx}")
        shutil.copytree(Path(tmp) / "in", keep, dirs_exist_ok=True)
        print(f"input kept in {keep}/")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readers", default=",".join(READERS), help=f"comma-separated from {', '.join(READERS)}")
    ap.add_argument("--n", type=int, default=1000, help="inputs per reader (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=5.0, help="seconds per input before it is a hang")
    ap.add_argument("--mem-mb", type=int, default=1024, help="address space a reader may add (RLIMIT_AS)")
    ap.add_argument("--json", type=Path, help="write the counts and findings here")
    ap.add_argument("--replay", help="READER:INDEX: rerun one input in this process and keep it")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.seed, args.start, args.n, args.time_limit, args.mem_mb)
        return 0
    if args.replay:
        replay(args.replay, args.seed)
        return 0
    results = []
    for reader in [r for r in args.readers.split(",") if r]:
        if reader not in READERS:
            ap.error(f"unknown reader {reader!r}")
        res = run_reader(reader, args)
        results.append(res)
        print(f"{reader:<7} inputs {res['inputs']:>6}  ok {res['ok']:>6}  project errors {res['err']:>6}  "
              f"unexpected {res['bad']}  hangs {res['hang']}  crashes {res['crash']}  slowest {res['slowest_s']} s  "
              f"({res['seconds']} s)", flush=True)
        for f in res["findings"][:10]:
            print(f"  {f['kind']} {reader}:{f['index']} {f['detail']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "n": args.n, "results": results}, indent=1))
    return 1 if any(r["findings"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
