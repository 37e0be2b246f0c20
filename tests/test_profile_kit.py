"""Issue 20 item 4: the latency table in int8 and the profile kit (docs/FORMATS.md section 7).
Python writes the probes as model files and the manifest, one C++ routine times them and
assembles lut.json: in `nasrt profile` through the binding, on a board through nasrt-profile."""
import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from test_native import native

from nasrt import _core
from nasrt.contract.lut import LatencyTable, load_lut
from nasrt.contract.space import SearchSpace
from nasrt.errors import ModelError
from nasrt.quant.probe import probe_model_bytes
from nasrt.runtime.host import host_info
from nasrt.runtime.profile import build_kit, profile, write_kit
from nasrt.runtime.runtime import Runtime

# Tiny: a stem, a two-conv op (sepconv), two layers, a hidden FC.
SPACE = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3", "sepconv3x3"), stem_kernel=3,
                    stem_out=4, hidden=(8,)).bind((1, 8, 8), 3)
FAST = dict(runs=2, rounds=1, warmup=0, span_s=0)


def structure(lut: LatencyTable) -> tuple:
    """What a table holds, without the times."""
    return (lut.layers, [sorted(r) for r in lut.ops_us], [{k: len(v) for k, v in r.items()} for r in lut.units_us],
            sorted(lut.barrier_us), sorted(lut.stem_us), {m: {t: len(v) for t, v in p.items()}
                                                           for m, p in lut.sync_us.items()},
            sorted(lut.overhead_us), lut.space, lut.threads)


def kit_args(kit):
    return json.dumps(kit.manifest), kit.models


@pytest.fixture(scope="module")
def int8_table():
    return profile(SPACE, threads=1, show_progress=False, precision="int8", int8_model=probe_model_bytes, **FAST)


def test_int8_profile_gives_an_int8_table_of_the_fp32_structure(int8_table, tmp_path):
    fp32 = profile(SPACE, threads=1, show_progress=False, **FAST)
    assert int8_table.precision == "int8" and fp32.precision == "fp32"
    assert structure(int8_table) == structure(fp32)
    assert int8_table.settings["caller"] == "python" and int8_table.settings["runs"] == 2
    assert int8_table.backend in _core.compiled_backends()
    int8_table.save(tmp_path / "lut.json")
    assert load_lut(tmp_path / "lut.json") == int8_table


def test_int8_kit_probes_run_int8_kernels():
    """The models of an int8 kit are int8 nets: every conv the probes time computes in int8,
    except a conv reading a 1-channel net input (kept fp32 as `nasrt quantize` keeps it)."""
    kit = build_kit(SPACE, "int8", threads=1, int8_model=probe_model_bytes, **FAST)
    probes = {p["key"]: p for p in kit.manifest["probes"]}
    for key in ("op/1/conv3x3", "op/1/sepconv3x3", "head", "sync/1/0/conv1x1"):
        rt = Runtime.from_bytes(kit.models[probes[key]["model"]], key, threads=1)
        assert set(rt.precisions.values()) == {"int8"}, (key, rt.precisions)
    rt = Runtime.from_bytes(kit.models[probes["stem/1/with"]["model"]], "stem", threads=1)
    assert rt.precisions["stem"] == "fp32" and rt.precisions["paths.0.blocks.0"] == "int8"
    fp32 = build_kit(SPACE, "fp32", threads=1, **FAST)
    rt = Runtime.from_bytes(fp32.models[probes["op/1/conv3x3"]["model"]], "op", threads=1)
    assert set(rt.precisions.values()) == {"fp32"}


def test_recipe_arithmetic_on_planted_timings():
    """Each entry from the probes' fastest rounds by the recipe, against hand-computed values."""
    kit = build_kit(SPACE, "fp32", threads=2, **FAST)
    keys = [p["key"] for p in kit.manifest["probes"]]
    base = {k: 10.0 + i for i, k in enumerate(keys)}
    # Rounds [b + 2, b, b + 1]: the minimum is b; the median round is 1 us slower.
    rounds = {k: [b + 2, b, b + 1] for k, b in base.items()}
    rounds["stem/2/with"] = [50.0, 40.0]
    rounds["stem/2/without"] = [31.0, 30.0]
    rounds["stem1x1"] = [3.0, 4.0]
    rounds["barrier/1/with"] = [5.0]
    rounds["barrier/1/without"] = [7.0]  # a negative difference is 0
    rounds.update({"barrier/2/with": [9.0, 8.0], "barrier/2/without": [6.5], "sync/2/1/sum": [20.0, 12.0],
                   "sync/2/1/without": [11.0, 10.25], "stem/1/with": [25.0], "stem/1/without": [21.0]})
    d = json.loads(_core.assemble_lut(*kit_args(kit), rounds, "python"))
    lut = LatencyTable.from_dict(d, "planted")
    assert lut.ops_us[1]["conv3x3"] == base["op/1/conv3x3"]
    assert lut.units_us[0]["sepconv3x3"] == (base["unit/0/sepconv3x3/0"], base["unit/0/sepconv3x3/1"])
    assert "conv3x3" not in lut.units_us[0]
    assert lut.stem_us[2] == pytest.approx(40.0 - 30.0 + 3.0 / 2)
    assert lut.stem_us[1] == pytest.approx(25.0 - 21.0 + 3.0)
    assert lut.barrier_us[1] == 0.0
    assert lut.barrier_us[2] == 1.5
    assert lut.sync_us["sum"][2][1] == 1.75
    assert lut.sync_us["sum"][2][0] == 2.0  # planted in key order: without, conv1x1, sum
    assert lut.head_us == base["head"] and lut.overhead_us[2] == base["call/2"]
    # The spread: the median over the single-thread probes of median round / fastest - 1.
    single = [b for k, b in base.items() if k.split("/")[0] in ("op", "unit", "head")]
    spread = [1.0 / b for b in single] + [0.5 / 3.0]  # stem1x1: rounds 3, 4
    assert d["settings"]["round_spread"] == pytest.approx(float(np.median(spread)))
    assert d["settings"]["caller"] == "python" and d["precision"] == "fp32"
    with pytest.raises(ValueError, match="no timings of probe head"):
        _core.assemble_lut(*kit_args(kit), {k: v for k, v in rounds.items() if k != "head"}, "python")


def test_an_int8_kit_needs_the_int8_writer():
    with pytest.raises(ValueError, match="int8_model: an int8 kit needs it"):
        build_kit(SPACE, "int8", threads=1, **FAST)
    with pytest.raises(ValueError, match="precision: must be one of fp32, int8"):
        build_kit(SPACE, "int4", threads=1, **FAST)


def test_native_machine_info_matches_python():
    native_info = json.loads(_core.machine_info())
    py = host_info()
    assert set(py) - {"mhz"} <= set(native_info)
    for k in set(py) - {"mhz"}:
        assert native_info[k] == py[k], k
    assert isinstance(native_info["features"], list)


def bad_kit(mutate, precision="fp32"):
    kit = build_kit(SPACE, precision, threads=1, int8_model=probe_model_bytes if precision == "int8" else None, **FAST)
    m = copy.deepcopy(kit.manifest)
    models = dict(kit.models)
    mutate(m, models)
    return json.dumps(m), models


def _set(path, value):
    def f(m, models):
        *parents, last = path
        for p in parents:
            m = m[p]
        m[last] = value
    return f


def _int8_model_into_fp32_kit(m, models):
    int8 = build_kit(SPACE, "int8", threads=1, int8_model=probe_model_bytes, **FAST)
    models[m["probes"][0]["model"]] = int8.models[int8.manifest["probes"][0]["model"]]


BAD = [
    (_set(["format"], "nasrt.lut"), "kit: format: not a nasrt profile kit"),
    (_set(["extra"], 1), "kit: extra: unknown field"),
    (_set(["precision"], "int4"), "kit: precision: must be fp32 or int8, got \"int4\""),
    (_set(["settings", "runs"], 0), r"kit: settings.runs: must be an integer in \[1, "),
    (_set(["settings", "span_s"], -1), r"kit: settings.span_s: must be a number of seconds"),
    (_set(["settings", "cores"], 2), "kit: settings.cores: unknown field"),
    (_set(["probes", 0, "time"], "gpu"), r"kit: probes\[0\].time: must be convs, head, executor or call"),
    (_set(["probes", 0, "model"], "../x.nasrt"), r"kit: probes\[0\].model: must be a file name in the kit"),
    (_set(["probes", 0, "model"], "none.nasrt"), "kit: models: no model none.nasrt in the kit"),
    (_set(["probes", 0, "convs"], [0, 2]), r"kit: probes\[0\].convs: must be consecutive ascending"),
    (_set(["probes", 0, "convs"], [7]), r"kit: probes\[0\].convs: conv 7 of a path of 1 convs"),
    (_set(["probes", 0, "threads"], 2), r"kit: probes\[0\].threads: only executor and call probes"),
    (_set(["probes", 1, "key"], "op/0/conv3x3"), r"kit: probes\[1\].key: a second probe"),
    (_set(["recipe", "head_us"], {"probe": "nope"}), "kit: recipe.head_us.probe: not a probe of the kit"),
    (_set(["recipe", "ops_us", 0, "conv3x3"], {"probe": "head", "coef": 2}),
     r"kit: recipe.ops_us\[0\].conv3x3.coef: must be a finite number, with plus"),
    (_set(["recipe", "stem_us", "1"], -1.0), r"kit: recipe.stem_us.1: a constant must be a finite number >= 0"),
    (_set(["recipe", "extra_us"], 1.0), "kit: recipe.extra_us: unknown field"),
    (lambda m, models: m["recipe"].pop("sync_us"), "kit: recipe.sync_us: missing"),
    (_int8_model_into_fp32_kit, r"kit: probes\[0\].model: op.0.conv3x3.nasrt is an int8 model \(format 3\), "
                                "the kit's precision is fp32"),
    (lambda m, models: models.update({m["probes"][0]["model"]: b"\0" * 16}), "op.0.conv3x3.nasrt: "),
]


@pytest.mark.parametrize("mutate,message", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_kit_is_one_line_naming_the_field(mutate, message):
    with pytest.raises(ModelError, match=message) as e:
        _core.assemble_lut(*bad_kit(mutate), {}, "python")
    assert "\n" not in str(e.value)


def test_bad_kit_json_is_refused():
    kit = build_kit(SPACE, "fp32", threads=1, **FAST)
    for text, msg in (("{", "not valid JSON"), ("[" * 100 + "]" * 100, r"not valid JSON \(nested deeper than 64\)"),
                      ("[]", "not a nasrt profile kit")):
        with pytest.raises(ModelError, match=f"kit: format: {msg}"):
            _core.assemble_lut(text, kit.models, {}, "python")


def nasrt_profile(*args, timeout=300):
    return subprocess.run([native("nasrt-profile"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_native_tool_writes_the_table_python_writes(tmp_path, precision, int8_table):
    """nasrt profile --kit DIR, then nasrt-profile DIR: the same table (keys, layers, ops) as
    `nasrt profile`, measured by a C caller."""
    r = subprocess.run([sys.executable, "-m", "nasrt.cli", "profile", "--kit", tmp_path / "kit", "--threads", "1",
                        "--precision", precision, "--runs", "2", "--rounds", "1", "--warmup", "0", "--span", "0",
                        "--input", "1,8,8", "--classes", "3", "--space", _space_file(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd="/")
    assert r.returncode == 0, r.stderr
    assert "nasrt-profile" in r.stdout and (tmp_path / "kit" / "kit.json").is_file()
    r = nasrt_profile(tmp_path / "kit", "--out", tmp_path / "lut.json", "--quiet")
    assert r.returncode == 0, r.stderr
    lut = load_lut(tmp_path / "lut.json")
    py = int8_table if precision == "int8" else profile(SPACE, threads=1, show_progress=False, **FAST)
    assert lut.precision == precision and lut.settings["caller"] == "c"
    assert structure(lut) == structure(py)
    assert lut.machine["isa"] == py.machine["isa"] and lut.backend == py.backend


def _space_file(tmp_path):
    p = tmp_path / "space.json"
    p.write_text(json.dumps(SPACE.to_dict()))
    return p


def test_native_tool_help_and_errors(tmp_path):
    r = nasrt_profile("--help")
    assert r.returncode == 0 and "profile kit" in r.stdout and "--out" in r.stdout
    r = nasrt_profile()
    assert r.returncode == 2 and "usage: nasrt-profile" in r.stderr
    r = nasrt_profile(tmp_path, "--bogus")
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
    r = nasrt_profile(tmp_path / "none")
    assert r.returncode == 1 and f"{tmp_path / 'none'}: not a directory" in r.stderr
    r = nasrt_profile(tmp_path)
    assert r.returncode == 1 and f"{tmp_path}/kit.json: missing" in r.stderr
    kit = write_kit(SPACE, tmp_path / "kit", threads=1, **FAST)
    m = kit.manifest
    m["settings"]["threads"] = 9999
    (tmp_path / "kit" / "kit.json").write_text(json.dumps(m))
    r = nasrt_profile(tmp_path / "kit", "--out", tmp_path / "lut.json")
    assert r.returncode == 1 and f"{tmp_path}/kit/kit.json: settings.threads: 9999 threads" in r.stderr
    m["probes"][0]["time"] = 3
    (tmp_path / "kit" / "kit.json").write_text(json.dumps(m))
    r = nasrt_profile(tmp_path / "kit")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert f"{tmp_path}/kit/kit.json: probes[0].time: must be convs, head, executor or call, got 3" in r.stderr
    assert not (tmp_path / "lut.json").exists()


def test_kit_settings_reach_the_table():
    kit = build_kit(SPACE, "int8", threads=2, runs=6, rounds=3, warmup=1, span_s=0.0, core=None,
                    int8_model=probe_model_bytes)
    s = kit.manifest["settings"]
    assert s == {"threads": 2, "runs": 6, "rounds": 3, "warmup": 1, "span_s": 0.0, "single_thread_core": None}
    rounds = {p["key"]: [1.0] for p in kit.manifest["probes"]}
    d = json.loads(_core.assemble_lut(*kit_args(kit), rounds, "c"))
    assert {k: d["settings"][k] for k in s if k != "single_thread_core"} == {k: v for k, v in s.items()
                                                                          if k != "single_thread_core"}
    assert d["settings"]["single_thread_core"] == _core.available_cores()[0]
    assert d["precision"] == "int8" and d["settings"]["caller"] == "c" and math.isclose(d["head_us"], 1.0)


def test_fuzz_seed_is_a_current_kit():
    """tests/data/fuzz/kit.json (tools/make_fixtures.py), the kit fuzzer's seed: the kit that
    build_kit writes today for its space and settings, valid up to its (absent) models."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "fuzz" / "kit.json"
    seed = json.loads(path.read_text())
    space = SearchSpace.from_dict(seed["table"]["space"])
    s = seed["settings"]
    kit = build_kit(space, seed["precision"], s["threads"], s["runs"], s["rounds"], s["warmup"], s["span_s"])
    assert {**kit.manifest, "table": {**kit.manifest["table"], "nasrt_version": ""}} == \
        {**seed, "table": {**seed["table"], "nasrt_version": ""}}
    with pytest.raises(ModelError, match=f"^kit: models: no model {seed['probes'][0]['model']} in the kit$"):
        _core.assemble_lut(path.read_text(), {}, {}, "c")
    json.loads(_core.assemble_lut(path.read_text(), kit.models, {p["key"]: [1.0] for p in seed["probes"]}, "c"))


def test_search_side_reads_an_int8_table(int8_table):
    """The predictors and the search's latency terms take an int8 table like an fp32 one."""
    pytest.importorskip("torch")
    from nasrt.contract.latency import predict_latency
    from nasrt.contract.plan import Block, Plan
    from nasrt.search.cost import latency_table

    terms = latency_table(SPACE, int8_table)
    assert terms.op_us.shape == (2, 1, 1, 2) and terms.fixed_us > 0  # (L, W_in, W_out, ops), one width
    plan = Plan(SPACE.input, 3, SPACE.stem_block, tuple((Block("conv", 3, 1, 4), Block("sepconv", 3, 2, 8))
                                                        for _ in range(2)), (), (8,))
    assert predict_latency(plan, int8_table, 1) > 0
