"""The CPU a benchmark ran on, for its report: the same bench on another CPU gives other figures.

What moves the VLM's figures most are the matrix instructions: AMX (Xeon 4th gen+) runs bf16 and
int8 matrix products in tiles, AVX-512 VNNI / AVX-VNNI do int8 dot products, AVX-512 BF16 bf16
ones. A CPU without AMX is slower on the same bundle, and a CPU without bf16 support runs
`precision = "auto"` in f32.
"""

from __future__ import annotations

import os
import platform
import sys

#: /proc/cpuinfo flag -> the report's name for it.
ISA_FLAGS = {
    "amx_tile": "amx",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
    "avx512f": "avx512",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16",
}


def _cpuinfo(path: str) -> tuple[str | None, set[str]]:
    model, flags = None, set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if model is not None and flags:
                    break
    except OSError:
        pass
    return model, flags


def _openvino_capabilities() -> list[str] | None:
    # Only where OpenVINO is loaded already: importing it costs ~100 MB of RSS, which would
    # show in the pipeline benches' own memory figures.
    if "openvino" not in sys.modules:
        return None
    try:
        return list(sys.modules["openvino"].Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # an OpenVINO without a CPU plugin: the flags still say it
        return None


def cpu_facts(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """{"model", "logical_cpus", "isa": {name: bool}, "openvino_capabilities"} for bench JSON."""
    model, flags = _cpuinfo(cpuinfo)
    return {
        "model": model or platform.processor() or platform.machine() or "unknown",
        "logical_cpus": os.cpu_count(),
        "isa": {name: flag in flags for flag, name in ISA_FLAGS.items()},
        "openvino_capabilities": _openvino_capabilities(),
    }


def cpu_line(facts: dict) -> str:
    """One line for the benches' text output, e.g. `CPU: Intel Xeon ... (2 logical CPUs); AMX
    yes, AVX-512 VNNI yes, AVX-VNNI no, AVX-512 BF16 yes`."""
    isa = facts["isa"]

    def yn(key: str) -> str:
        return "yes" if isa.get(key) else "no"

    line = (f"CPU: {facts['model']} ({facts['logical_cpus']} logical CPUs); AMX {yn('amx')}, "
            f"AVX-512 VNNI {yn('avx512_vnni')}, AVX-VNNI {yn('avx_vnni')}, "
            f"AVX-512 BF16 {yn('avx512_bf16')}")
    if facts.get("openvino_capabilities"):
        line += f"; OpenVINO CPU: {' '.join(facts['openvino_capabilities'])}"
    return line
