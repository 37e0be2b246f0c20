"""The host a measurement ran on: CPU model, cores, ISA and compiled backends, as
latency tables, bench reports and benchmarks record it."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from nasrt import _core


def machine_info() -> dict:
    """CPU model, cores and frequency, as far as the OS tells."""
    info: dict[str, object] = {"machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "cores": os.cpu_count(), "cores_available": len(os.sched_getaffinity(0))}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key == "model name" and "cpu" not in info:
                info["cpu"] = val.strip()
            elif key == "cpu MHz" and "mhz" not in info:
                info["mhz"] = float(val)
    except OSError:
        pass
    return info


def host_info() -> dict:
    """machine_info() plus the ISA nasrt's kernels target and the compiled backends."""
    return {**machine_info(), "isa": _core.host_isa(), "backends": _core.compiled_backends()}


def cpu_signature() -> str:
    """CPU model | ISA | compiled backends: what a tuning file is keyed by."""
    return _core.cpu_signature()
