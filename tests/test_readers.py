"""Issue 17, items 3.12-3.14: the Python readers of user files (npz, IDX, image folders,
CIFAR batches, space.json, lut.json, the FLASH sample cache) give one-line project errors
naming the file and field, bound sizes before allocating, and check every field."""
import gzip
import io
import json
import pickle
import struct
import zipfile
import zlib

import numpy as np
import pytest

from nasrt.errors import DataError, LutError, ModelError, NasrtError, SpaceError


def npy_bytes(shape, dtype="<u1", data=b""):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def npz_of(path, members, compress=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, data in members.items():
            z.writestr(name + ".npy", data)
    return path


def good_npz(path, y_train=None):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 255, (6, 5, 5), dtype=np.uint8),
             y_train=np.array([0, 1, 0, 1, 0, 1]) if y_train is None else y_train,
             x_test=rng.integers(0, 255, (2, 5, 5), dtype=np.uint8), y_test=np.array([0, 1]))
    return path


# -- 3.12 data loaders ---------------------------------------------------------------

def test_tiny_npz_claiming_a_terabyte_is_refused_before_allocating(tmp_path):
    from nasrt.data.user import load_npz
    p = npz_of(tmp_path / "bomb.npz", {"x_train": npy_bytes((10 ** 6, 10 ** 6), data=b"\0" * 16)})
    assert p.stat().st_size < 400
    with pytest.raises(DataError, match=r"bomb.npz: x_train: header says shape \(1000000, 1000000\)"):
        load_npz(p)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad_crc", "bad_deflate"])
def test_damaged_npz_is_a_data_error(tmp_path, damage):
    from nasrt.data.user import load_npz
    p = good_npz(tmp_path / "d.npz")
    data = bytearray(p.read_bytes())
    if damage == "garbage":
        data = bytearray(b"PK\x03\x04" + b"\x07" * 60)
    elif damage == "truncated":
        data = data[: len(data) // 2]
    if damage in ("bad_crc", "bad_deflate"):
        z = zipfile.ZipFile(io.BytesIO(bytes(data)))
        raw = {i.filename[:-4]: z.read(i) for i in z.infolist()}
        p = npz_of(tmp_path / "d.npz", raw, zipfile.ZIP_DEFLATED)
        data = bytearray(p.read_bytes())
        info = zipfile.ZipFile(p).infolist()[0]
        start = info.header_offset + 30 + len(info.filename)
        data[start + 2: start + 6] = b"\xff\xff\xff\xff" if damage == "bad_deflate" else b"\0\0\0\0"
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"d.npz: (not a readable .npz file|x_train)"):
        load_npz(p)


def test_npz_with_absurd_labels_is_refused(tmp_path):
    from nasrt.data.user import load_npz
    p = good_npz(tmp_path / "l.npz", y_train=np.array([0, 1, 0, 1, 0, 10 ** 9]))
    with pytest.raises(DataError, match=r"l.npz: y_train: label 1000000000: at most 65,536 classes"):
        load_npz(p)


def write_idx(path, arr, kind, gz=True):
    head = struct.pack(f">I{kind}I", 0x0800 + kind, *arr.shape)
    data = head + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def fashion_dir(root, n=4):
    from nasrt.data.builtin import FASHION_FILES
    rng = np.random.default_rng(0)
    root.mkdir(exist_ok=True)
    for name, kind in zip(FASHION_FILES, (3, 1, 3, 1)):
        arr = rng.integers(0, 255, (n, 28, 28)) if kind == 3 else rng.integers(0, 10, n)
        write_idx(root / name, arr, kind)
    return root


@pytest.mark.parametrize("damage", ["short_header", "truncated_gzip", "bad_deflate", "huge_dims", "labels"])
def test_damaged_idx_is_a_data_error(tmp_path, damage):
    from nasrt.data.builtin import load_fashion_mnist
    root = fashion_dir(tmp_path / "f")
    victim = root / "train-images-idx3-ubyte.gz"
    if damage == "short_header":  # was struct.error
        victim.write_bytes(gzip.compress(struct.pack(">II", 0x0803, 4)))
    elif damage == "truncated_gzip":  # was EOFError / zlib.error
        victim.write_bytes(victim.read_bytes()[:40])
    elif damage == "bad_deflate":
        data = bytearray(victim.read_bytes())
        data[12:20] = b"\xff" * 8
        victim.write_bytes(bytes(data))
    elif damage == "huge_dims":  # 64 bytes of gzip asking for 2^48 bytes
        victim.write_bytes(gzip.compress(struct.pack(">IIII", 0x0803, 1 << 16, 1 << 16, 1 << 16)))
    else:
        write_idx(root / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 200]), 1)
        victim = root / "train-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match=rf"{victim.name}: "):
        load_fashion_mnist(root)


def png_header_only(path, w, h):
    """A PNG whose IHDR claims w x h (a decompression bomb's header)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def image_tree(root):
    from PIL import Image
    for part in ("train", "test"):
        for c in ("a", "b"):
            (root / part / c).mkdir(parents=True)
            for i in range(2):
                Image.new("L", (6, 6), 40 * i).save(root / part / c / f"{i}.png")
    return root


def test_decompression_bomb_image_is_a_data_error(tmp_path):
    from nasrt.data.user import load_folder
    root = image_tree(tmp_path / "t")
    png_header_only(root / "train" / "a" / "bomb.png", 100_000, 100_000)
    with pytest.raises(DataError, match=r"bomb.png: (100000x100000|too many) pixels, more than"):
        load_folder(root, size=(6, 6))


@pytest.mark.parametrize("payload", ["nested_labels", "list_data", "out_of_range"])
def test_hostile_cifar_batch_is_a_data_error(tmp_path, payload):
    from nasrt.data.builtin import _read_cifar_batch
    data = np.zeros((2, 3072), np.uint8)
    labels = [0, 1]
    if payload == "nested_labels":  # 40 levels of shared references: 2^40 elements for np.asarray
        labels = [0]
        for _ in range(40):
            labels = [labels, labels]
    elif payload == "list_data":
        data = [[0] * 3072] * 2
    else:
        labels = [0, 11]
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    with pytest.raises(DataError, match="data_batch_1: (labels|data)"):
        _read_cifar_batch(p)


BAD_CLI_INPUTS = ["npz_garbage", "npz_bomb", "npz_labels", "idx_truncated", "idx_header", "folder_bomb",
                  "folder_fifo_only", "npz_dir", "cifar_garbage"]


@pytest.mark.parametrize("case", BAD_CLI_INPUTS)
def test_bad_data_from_the_cli_is_one_line(tmp_path, capsys, case):
    """`nasrt search` on bad data: exit 2 with one line naming the file, before any training."""
    import os

    from nasrt.cli import main
    from nasrt.data.builtin import CIFAR_FILES
    kind, data = "npz", tmp_path / "d.npz"
    if case == "npz_garbage":
        data.write_bytes(b"PK\x03\x04" + b"\1" * 100)
    elif case == "npz_bomb":
        npz_of(data, {"x_train": npy_bytes((10 ** 6, 10 ** 6))})
    elif case == "npz_labels":
        good_npz(data, y_train=np.array([0, 1, 0, 1, 0, 2 ** 40]))
    elif case == "npz_dir":
        data.mkdir()
    elif case.startswith("idx"):
        kind, data = "fashion-mnist", fashion_dir(tmp_path / "f")
        v = data / "t10k-images-idx3-ubyte.gz"
        v.write_bytes(v.read_bytes()[:30] if case == "idx_truncated" else gzip.compress(b"\0\0\x08\x03\0\0"))
    elif case.startswith("folder"):
        kind, data = "folder", image_tree(tmp_path / "t")
        if case == "folder_bomb":
            png_header_only(data / "test" / "b" / "x.png", 60_000, 60_000)
        else:
            os.mkfifo(data / "train" / "a" / "fifo.png")  # not a regular file: skipped, never opened
            for f in (data / "train" / "a").glob("*.png"):
                if f.is_file():
                    f.unlink()
    else:
        kind, data = "cifar10", tmp_path / "c"
        data.mkdir()
        for f in CIFAR_FILES:
            (data / f).write_bytes(b"\x80\x04garbage")
    code = main(["search", "--dataset", kind, "--data-dir", str(data), "--epochs", "1", "--out",
                 str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("nasrt: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and (str(data) in err), err
    assert not (tmp_path / "out" / "plan.json").exists()


def test_data_error_is_still_importable_from_data_and_a_value_error():
    from nasrt.data import builtin as data
    assert data.DataError is DataError and issubclass(DataError, NasrtError) and issubclass(DataError, ValueError)


# -- 3.13 lut.json / space.json ------------------------------------------------------

def lut_dict():
    """A valid two-layer latency table (what `nasrt profile` writes, by hand)."""
    layers = [{"in_c": 4, "h": 8, "w": 8, "out_c": 8, "oh": 8, "ow": 8, "stride": 1},
              {"in_c": 8, "h": 8, "w": 8, "out_c": 8, "oh": 4, "ow": 4, "stride": 2}]
    return {"format": "nasrt.lut", "version": 1, "layers": layers,
            "ops_us": [{"conv3x3": 10.0, "sepconv3x3": 6.0}, {"conv3x3": 5.0, "sepconv3x3": 3.0}],
            "units_us": [{"sepconv3x3": [2.0, 4.0]}, {"sepconv3x3": [1.0, 2.0]}],
            "stem_us": {"1": 4.0, "2": 2.0}, "barrier_us": {"1": 0.0, "2": 0.5}, "head_us": 1.0,
            "sync_us": {"sum": {"1": [1.0, 0.5], "2": [2.0, 1.0]}}, "overhead_us": {"1": 0.5, "2": 1.5},
            "settings": {"threads": 2}, "machine": {"cpu": "x"}, "backend": "onednn"}


def set_path(d, path, value):
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


@pytest.mark.parametrize("path, value, field", [
    (["ops_us", 0, "conv3x3"], float("inf"), r"ops_us\[0\]\.conv3x3: must be a finite number > 0"),
    (["ops_us", 1, "conv3x3"], 0.0, r"ops_us\[1\]\.conv3x3: must be a finite number > 0"),
    (["head_us"], float("nan"), "head_us: must be a finite number > 0"),
    (["sync_us", "sum", "2", 1], float("inf"), r"sync_us\.sum\.2: must be a finite number >= 0"),
    (["ops_us", 0, "winograd3x3"], 1.0, r"ops_us\[0\]\.winograd3x3: unknown op"),
    (["sync_us", "avg"], {"1": [1.0, 1.0], "2": [1.0, 1.0]}, r"sync_us\.avg: unknown merge"),
    (["layers", 0, "in_c"], 4.7, r"layers\[0\]\.in_c: must be an integer"),
    (["layers", 0, "h"], True, r"layers\[0\]\.h: must be an integer"),
    (["layers", 1, "oh"], 5, r"layers\[1\]: output 5x4 is not the input 8x8 at stride 2"),
    (["stem_us", "\u0663"], 1.0, "stem_us.\u0663: must be a thread count"),
    (["stem_us", "0"], 1.0, r"stem_us\.0: must be a thread count"),
    (["barrier_us"], {"1": 0.0}, r"barrier_us: thread counts \[1\] differ from overhead_us's \[1, 2\]"),
    (["settings", "threads"], 4, r"settings\.threads: must be one of the measured thread counts \[1, 2\]"),
    (["units_us", 0, "sepconv3x3"], "fast", r"units_us\[0\]\.sepconv3x3: must be a list"),
    (["space"], {"channels": [1.5]}, r"space: space\.channels\[0\]: must be an integer"),
    (["extra"], 1, "extra: unknown field"),
    (["precision"], "int4", "precision: must be one of fp32, int8"),
])
def test_lut_fields_are_type_and_range_checked(tmp_path, path, value, field):
    from nasrt.contract.lut import LatencyTable, load_lut
    ok = LatencyTable.from_dict(lut_dict())
    assert ok.head_us == 1.0 and ok.precision == "fp32"  # a table without the field: fp32
    assert LatencyTable.from_dict({**lut_dict(), "precision": "int8"}).to_dict()["precision"] == "int8"
    d = lut_dict()
    set_path(d, path, value)
    p = tmp_path / "lut.json"
    p.write_text(json.dumps(d))  # inf and nan as Infinity / NaN, which Python's json reads
    with pytest.raises(LutError, match=rf"lut.json: {field}") as e:
        load_lut(p)
    assert "\n" not in str(e.value) and isinstance(e.value, ModelError)


@pytest.mark.parametrize("field, value, expect", [
    ("channels", [8, 1.5], r"space\.channels\[1\]: must be an integer in \[1, 65536\]"),
    ("channels", "abc", r"space\.channels: must be a list"),
    ("hidden", [-1], r"space\.hidden\[0\]: must be an integer"),
    ("stem_out", 0, r"space\.stem_out: must be an integer in \[1, 65536\]"),
    ("strides", [1, 2, 2, True], r"space\.strides\[3\]: must be an integer"),
    ("classes", 10 ** 9, r"space\.classes: must be an integer in \[1, 65536\] or null"),
    ("input", [1, 28], r"space\.input: must be \[channels, height, width\]"),
    ("paths", 10 ** 6, r"space\.paths: must be an integer in \[1, 64\]"),
    ("ops", ["conv3x3\n"], r"space\.ops\[0\]: unknown candidate op 'conv3x3\\n'"),
    ("ops", ["conv999x999"], r"space\.ops\[0\]: unknown candidate op"),
    ("merge", ["sum"], r"space\.merge: must be one of"),
])
def test_space_fields_are_type_and_range_checked(tmp_path, field, value, expect):
    from nasrt.contract.space import SearchSpace
    d = SearchSpace().to_dict()
    d[field] = value
    p = tmp_path / "space.json"
    p.write_text(json.dumps(d))
    with pytest.raises(SpaceError, match=rf"space.json: {expect}") as e:
        SearchSpace.load(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["[1, 2]", "{bad", "[" * 100000, '{"paths": 2} trailing'])
def test_space_json_that_is_not_an_object_is_a_space_error(tmp_path, text):
    from nasrt.contract.space import SearchSpace
    p = tmp_path / "space.json"
    p.write_text(text)
    with pytest.raises(SpaceError, match="space.json: "):
        SearchSpace.load(p)


def test_json_readers_refuse_fifos_and_devices(tmp_path):
    """A FIFO would block the reader forever, /dev/zero fill memory: both refused unread."""
    import os

    import nasrt
    from nasrt.contract.lut import load_lut
    from nasrt.contract.space import SearchSpace
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    for reader, error in ((load_lut, LutError), (SearchSpace.load, SpaceError), (nasrt.Plan.load, ModelError)):
        for p in (fifo, zero):
            with pytest.raises(error, match=f"{p.name}: not a regular file"):
                reader(p)


def _json_file_reader(name):
    """(read PATH, error type) of each JSON file nasrt reads; the FLASH cache gives its
    reason instead of raising (a bad sample is trained again), raised here to compare."""
    import nasrt
    from nasrt.contract.lut import load_lut
    from nasrt.contract.space import SearchSpace
    if name == "flash":
        pytest.importorskip("torch")
        from nasrt.search.flash import read_sample

        def read(p):
            acc, why = read_sample(p, None, "", None)
            assert acc is None
            raise DataError(why)
        return read, DataError
    return {"plan": (nasrt.Plan.load, ModelError), "space": (SearchSpace.load, SpaceError),
            "lut": (load_lut, LutError)}[name]


@pytest.mark.parametrize("name", ["plan", "space", "lut", "flash"])
def test_json_file_readers_share_one_reader(tmp_path, name):
    """Invalid JSON, a document deeper than the native loader's 64 levels and a directory:
    one line "FILE: what" in the reader's own error type."""
    read, error = _json_file_reader(name)
    p = tmp_path / "x.json"
    cases = [('{"format": ', f"{p}: not valid JSON (line 1: Expecting value)"),
             ("[" * 65 + "]" * 65, f"{p}: JSON nested deeper than 64"),
             ("[" * 100_000 + "]" * 100_000, f"{p}: JSON nested deeper than 64"),  # past the interpreter's stack
             (b'{"a": "\xff"}', f"{p}: not a UTF-8 text file, expected ")]
    for text, want in cases:
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(error) as e:
            read(p)
        assert str(e.value).startswith(want), (str(e.value), want)
    p.write_text("[" * 64 + "]" * 64)  # at the limit: parsed, refused only by the field checks
    with pytest.raises(error) as e:
        read(p)
    assert "nested" not in str(e.value)
    p.unlink()
    p.mkdir()
    with pytest.raises(error, match=f"^{p}: a directory, expected "):
        read(p)


def test_json_text_reader_names_source_and_field():
    from nasrt._io import parse_json
    assert parse_json("[" * 64 + "]" * 64, "m.nasrt", ModelError, "metadata k") == json.loads("[" * 64 + "]" * 64)
    for text, what in (("{", "not valid JSON (line 1: Expecting property name enclosed in double quotes)"),
                       ("[" * 65 + "]" * 65, "JSON nested deeper than 64"),
                       ("1" * 5000, "not valid JSON (an integer of 5000 digits)"),
                       ("[1" + "0" * 400 + "]", "not valid JSON (an integer of 401 digits)"),
                       (None, "must be JSON text, got NoneType")):
        with pytest.raises(ModelError) as e:
            parse_json(text, "m.nasrt", ModelError, "metadata k")
        assert str(e.value).startswith(f"m.nasrt: metadata k: {what}"), str(e.value)


# -- 3.14 FLASH sample cache ---------------------------------------------------------

@pytest.fixture
def flash_env(monkeypatch):
    """Two plans, a tiny setting and a stub for the training (counted, returns 0.25)."""
    from nasrt.contract.space import SearchSpace
    from nasrt.search import flash
    space = SearchSpace(paths=2, channels=(4,), strides=(1,), ops=("conv3x3", "sepconv3x3"), stem_kernel=None,
                        hidden=()).bind((1, 12, 12), 4)
    plans = flash.sample_plans(space, 2, 0)
    trained = []

    def fake_train(plan, ds, s):
        trained.append((plan, ds.name))
        return 0.25

    monkeypatch.setattr(flash, "train_sample", fake_train)
    return flash, plans, flash.SampleSettings(limit=64, test_limit=32), trained


def test_flash_cache_is_keyed_by_content_not_dataset_name(tmp_path, flash_env):
    from nasrt.data.builtin import make_synthetic
    flash, plans, s, trained = flash_env
    a, b = make_synthetic(seed=0), make_synthetic(seed=1)
    assert a.name == b.name  # two different datasets called the same
    flash.trained_samples(plans, a, s, tmp_path, log=lambda *m: None)
    assert len(trained) == 2
    flash.trained_samples(plans, make_synthetic(seed=0), s, tmp_path, log=lambda *m: None)
    assert len(trained) == 2  # the same content: reused
    flash.trained_samples(plans, b, s, tmp_path, log=lambda *m: None)
    assert len(trained) == 4  # other content under the same name: trained, not shared
    assert len(list(tmp_path.glob("*.json"))) == 4
    entry = json.loads(sorted(tmp_path.glob("*.json"))[0].read_text())
    assert entry["format"] == "nasrt.flash-sample" and len(entry["data_sha256"]) == 64


@pytest.mark.parametrize("acc", [float("nan"), float("inf"), -0.1, 1.5, "0.9", True, None])
def test_flash_cache_entry_with_an_impossible_accuracy_is_trained_again(tmp_path, flash_env, acc):
    from nasrt.data.builtin import make_synthetic
    flash, plans, s, trained = flash_env
    ds = make_synthetic()
    flash.trained_samples(plans, ds, s, tmp_path, log=lambda *m: None)
    victim = sorted(tmp_path.glob("*.json"))[0]
    d = json.loads(victim.read_text())
    d["test_acc"] = acc
    victim.write_text(json.dumps(d))
    notes = []
    accs, _ = flash.trained_samples(plans, ds, s, tmp_path, log=notes.append)
    assert accs == [0.25, 0.25] and len(trained) == 3
    assert any(f"{victim}: test_acc: must be an accuracy in [0, 1]" in n for n in notes), notes
    assert json.loads(victim.read_text())["test_acc"] == 0.25  # rewritten valid


def test_flash_old_name_keyed_cache_is_never_trusted(tmp_path, flash_env):
    """nasrt <= 0.2 named entries by sha256({plan, dataset name, settings}): ignored with a note."""
    import hashlib

    from nasrt.data.builtin import make_synthetic
    flash, plans, s, trained = flash_env
    ds = make_synthetic()
    for plan in plans:
        text = json.dumps({"plan": plan.to_dict(), "dataset": ds.name, "settings": s.__dict__}, sort_keys=True)
        old = tmp_path / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
        old.write_text(json.dumps({"plan": plan.to_dict(), "dataset": ds.name, "settings": s.__dict__,
                                   "test_acc": 0.99, "seconds": 1.0}))
    notes = []
    accs, _ = flash.trained_samples(plans, ds, s, tmp_path, log=notes.append)
    assert accs == [0.25, 0.25] and len(trained) == 2
    assert any("2 sample(s) of an older cache format" in n for n in notes), notes


def test_flash_cache_entry_copied_under_another_key_is_not_trusted(tmp_path, flash_env):
    from nasrt.data.builtin import make_synthetic
    flash, plans, s, trained = flash_env
    ds = make_synthetic()
    flash.trained_samples(plans, ds, s, tmp_path, log=lambda *m: None)
    a, b = sorted(tmp_path.glob("*.json"))
    b.write_text(a.read_text())  # another plan's entry under this plan's name
    notes = []
    flash.trained_samples(plans, ds, s, tmp_path, log=notes.append)
    assert len(trained) == 3 and any("plan: not this sample's" in n for n in notes), notes


def test_read_model_names_a_directory_or_fifo(tmp_path):
    import os

    from nasrt.contract.modelfile import read_model
    fifo = tmp_path / "m.nasrt"
    os.mkfifo(fifo)
    with pytest.raises(ModelError, match="m.nasrt: not a regular file, expected a model.nasrt file"):
        read_model(fifo)
    with pytest.raises(ModelError, match=f"{tmp_path.name}: a directory, expected a model.nasrt file"):
        read_model(tmp_path)


def test_error_messages_stay_one_line_whatever_the_file_quotes(tmp_path):
    import nasrt
    d = {"format": "nasrt.plan", "version": 1, "input": [1, 8, 8], "classes": 2, "stem": None,
         "paths": [[{"op": "conv", "kernel": 3, "stride": 1, "out": "\n4\u2028"}]]}
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ModelError) as e:
        nasrt.Plan.load(p)
    assert len(str(e.value).splitlines()) == 1 and "paths[0][0].out" in str(e.value)
    d["paths"][0][0] = {"op": "conv", "kernel": 3, "stride": 1, "out": 4, "x\ny": 1}
    p.write_text(json.dumps(d))
    with pytest.raises(ModelError) as e:
        nasrt.Plan.load(p)
    assert len(str(e.value).splitlines()) == 1 and "x\\ny: unknown field" in str(e.value)


@pytest.mark.parametrize("blob, why", [
    (b"\x80\x02}r" + struct.pack("<I", 1 << 24) + b".", "pickle memo index 16,777,216"),  # a 256 MiB memo table
    (b"\x80\x04\x95" + struct.pack("<Q", 1 << 40) + b"}.", "a pickle frame of 1,099,511,627,776 bytes"),
])
def test_cifar_pickle_claiming_huge_memory_is_refused_by_the_bound(tmp_path, blob, why):
    """Refused by checking the opcodes first, not by a failed (or succeeded) huge allocation."""
    from nasrt.data.builtin import _read_cifar_batch
    p = tmp_path / "data_batch_1"
    p.write_bytes(blob)
    with pytest.raises(DataError, match=f"data_batch_1: not a CIFAR-10 python batch \\({why}"):
        _read_cifar_batch(p)


def test_png_chunk_claiming_2gib_is_not_allocated(tmp_path):
    """Pillow reads the rest of an IDAT chunk with read(declared length): from a file that
    allocates the 2 GiB up front (MemoryError under a memory limit); the loader hands Pillow
    the bytes in memory instead."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent(f"""
        import io, resource, struct
        from pathlib import Path
        from PIL import Image
        from nasrt.data.user import load_folder
        buf = io.BytesIO()
        Image.new("L", (6, 6), 7).save(buf, "PNG")
        data = buf.getvalue()
        pos = data.index(b"IDAT") - 4
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        bomb = data[:pos] + struct.pack(">I", 0x7fffffff) + b"IDAT" + data[pos + 8:pos + 8 + n] + data[pos + 12 + n:]
        root = Path({str(tmp_path)!r})
        for part in ("train", "test"):
            for c in "ab":
                (root / part / c).mkdir(parents=True)
                for i in range(2):
                    (root / part / c / f"{{i}}.png").write_bytes(bomb if (part, c, i) == ("train", "a", 0) else data)
        vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 20),) * 2)
        print("shape", load_folder(root).x_train.shape)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "shape (4, 1, 6, 6)" in r.stdout, r.stderr[-500:]


def test_npz_with_an_unparseable_npy_header_is_a_data_error(tmp_path):
    """numpy tokenizes the header: an unterminated one raised tokenize.TokenError."""
    from nasrt.data.user import load_npz
    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (3,"
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0\0\0"
    p = npz_of(tmp_path / "t.npz", {"x_train": blob})
    with pytest.raises(DataError, match=r"t.npz: not a readable .npz file \((TokenError|SyntaxError|ValueError)"):
        load_npz(p)


def test_small_cifar_batch_reads_under_a_memory_limit(tmp_path):
    """A bounded read allocates the file's size, not the 1 GiB bound (read(limit + 1) did)."""
    import subprocess
    import sys
    import textwrap
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 4]}))
    code = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from nasrt.data.builtin import _read_cifar_batch
        vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20),) * 2)
        print("labels", _read_cifar_batch(Path({str(p)!r}))[1].tolist())
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "labels [3, 4]" in r.stdout, r.stderr[-500:]


def test_a_huge_integer_in_model_metadata_is_a_one_line_error():
    """A 401-digit integer parsed as JSON made float() raise OverflowError (not a ValueError):
    `nasrt run` and the quantisation-parameter reader ended in a traceback."""
    from nasrt.contract.modelfile import KEY_INPUT_MEAN, KEY_INPUT_STD, input_normalisation
    big = "[1" + "0" * 400 + "]"
    with pytest.raises(ModelError, match=r"^m.nasrt: metadata nasrt.input_mean: not valid JSON \(an integer of 401"):
        input_normalisation({KEY_INPUT_MEAN: big, KEY_INPUT_STD: "[1]"}, 1, "m.nasrt")
