"""The CPU facts every benchmark report carries: figures from one CPU say little about another."""

from __future__ import annotations

from pathlib import Path

from edge_gesture.machine import cpu_facts, cpu_line

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8
"""

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16 vaes
"""


def test_an_amx_xeon_and_an_epyc_without_amx_are_told_apart(tmp_path: Path) -> None:
    (tmp_path / "xeon").write_text(XEON)
    (tmp_path / "epyc").write_text(EPYC)
    xeon, epyc = cpu_facts(str(tmp_path / "xeon")), cpu_facts(str(tmp_path / "epyc"))
    assert xeon["model"] == "Intel(R) Xeon(R) Platinum 8488C"
    assert xeon["isa"] == {"amx": True, "amx_int8": True, "amx_bf16": True, "avx512": True,
                           "avx512_vnni": True, "avx_vnni": True, "avx512_bf16": True}
    assert epyc["model"] == "AMD EPYC 9R14"
    assert epyc["isa"] == {"amx": False, "amx_int8": False, "amx_bf16": False, "avx512": True,
                           "avx512_vnni": True, "avx_vnni": False, "avx512_bf16": True}
    line = cpu_line(epyc)
    assert line.startswith("CPU: AMD EPYC 9R14 (") and "AMX no, AVX-512 VNNI yes, AVX-VNNI no" in line
    assert "AVX-512 BF16 yes" in line
    assert "AMX yes" in cpu_line(xeon)


def test_no_cpuinfo_still_gives_a_report(tmp_path: Path) -> None:
    facts = cpu_facts(str(tmp_path / "absent"))
    assert facts["model"] and not any(facts["isa"].values())
    assert cpu_line(facts).startswith("CPU: ")
