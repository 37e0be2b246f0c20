"""Timing for the per-conv precision choice (`nasrt quantize --fp32-layers auto`) and the
per-conv table (benchmarks/experiments/int8_convs.py), by the runtime's own tuning machinery:
every conv in fp32 and in int8 on every backend (`nasrt tune`'s per-conv timing), and two
whole models side by side (`nasrt tune`'s whole-net check). Models go in as the bytes of a
model file, so a choice is timed before any file is written."""
from __future__ import annotations

from nasrt import _core
from nasrt.runtime.runtime import available_cores


def host() -> str:
    """The host the timings hold for (CPU model | ISA | compiled backends)."""
    return str(_core.cpu_signature())


def conv_us(fp32_model: bytes, int8_model: bytes, reference: bool = False) -> dict[str, dict[str, dict[str, float]]]:
    """conv -> {"fp32": {backend: us}, "int8": {backend: us}}: each conv of the float model and
    of the same net quantised with every conv in int8, timed on the calling thread on every
    backend that has kernels of that precision and passes the self-check (min over 5 rounds of
    the median of 60 calls, as `nasrt tune`; the reference kernels only where no other has
    kernels, or always with ``reference``)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for prec, data in (("fp32", fp32_model), ("int8", int8_model)):
        for t in _core.tune_convs(_core.load_model_bytes(data, f"{prec} model"), reference=reference):
            if t["precision"] != prec:
                raise ValueError(f"{prec} model: conv {t['name']} is {t['precision']}")
            out.setdefault(t["name"], {})[prec] = {b: float(us) for b, us in t["us"].items()}
    return out


def whole_net_us(a: bytes, b: bytes, paths: int) -> list[dict[str, float]]:
    """[{threads, a_us, b_us}] on 1 thread and on min(paths, cores): two models of one input
    run under the built-in kernel rule, interleaved rounds, min of round medians (batch 1)."""
    threads = max(1, min(paths, len(available_cores())))
    runs = _core.compare_nets(_core.load_model_bytes(a, "model a"), _core.load_model_bytes(b, "model b"), threads)
    return [{"threads": int(r["threads"]), "a_us": float(r["a_us"]), "b_us": float(r["b_us"])} for r in runs]
