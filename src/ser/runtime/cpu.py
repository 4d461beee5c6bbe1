"""The CPU as far as INT8 answers go: which kernels ONNX Runtime's u8s8 (uint8 activations × int8
weights) quantized MatMul and Conv dispatch to, and whether their numerics match another CPU's.

With AVX-512 VNNI or AVX-VNNI (and AMX), products of uint8 × int8 pairs are summed exactly in int32.
With AVX2 or AVX-512 BW alone, `vpmaddubsw` adds each pair in int16 first and saturates when both
products are large (255 × 127 × 2 > 32767), so the same graph answers differently. 7-bit weights
(ONNX Runtime's `reduce_range`) keep every pair within int16 (255 × 64 × 2 < 32767): exact on both,
the same answers everywhere. That is the `portable` INT8 target; `vnni` uses full 8-bit weights
(more accurate, as fast) and is exact only on VNNI CPUs. Sources: ONNX Runtime's quantization guide
("when to use reduce-range": "on x86-64 machines without VNNI, U8S8 may saturate; reduce_range or
U8U8"), and the instruction semantics of VPMADDUBSW (saturating int16) and VPDPBUSD (int32).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

INT8_FLAGS = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")  # what ONNX Runtime's INT8 kernels key on
TARGETS = ("portable", "vnni")


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    flags: frozenset[str]

    @property
    def int8(self) -> dict[str, bool]:
        return {flag: flag in self.flags for flag in INT8_FLAGS}

    @property
    def numerics(self) -> str:
        """`exact-int32` (VNNI, AMX), `saturating-int16` (AVX2 / AVX-512 BW without VNNI), or `other`."""
        if self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
            return "exact-int32"
        if self.flags & {"avx2", "avx512bw"}:
            return "saturating-int16"
        return "other"

    def to_dict(self) -> dict:
        return {"model": self.model, "int8_features": self.int8, "numerics": self.numerics}


def cpu_features(cpuinfo: Path | None = None) -> CpuFeatures:
    """This machine's CPU model and flags (Linux's /proc/cpuinfo; elsewhere, no flags known). SER_CPUINFO
    names another file in that format: how the tests, and a check before deploying, see another CPU."""
    cpuinfo = cpuinfo or Path(os.environ.get("SER_CPUINFO", "/proc/cpuinfo"))
    model, flags = platform.processor() or platform.machine(), frozenset()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = frozenset(value.split())
                break
    return CpuFeatures(model, flags)


def int8_mismatch(quantization: dict, here: CpuFeatures) -> str | None:
    """Why an INT8 bundle's answers here may differ from what its accuracy gate checked, or None.

    Portable bundles (7-bit weights) compute the same everywhere; others only on a CPU of the numerics
    class the gate ran on. Bundles from before this was recorded say nothing: None.
    """
    recorded = quantization.get("cpu")
    if not recorded or quantization.get("target") == "portable":
        return None
    if recorded.get("numerics") == here.numerics:
        return None
    return (
        f"INT8 target {quantization.get('target', 'vnni')!r}: its accuracy gate ran on {recorded.get('model')} "
        f"({recorded.get('numerics')} u8s8 dot products); this CPU ({here.model}) computes them "
        f"{here.numerics}, so its answers can differ from what the gate checked. Re-export on this kind "
        "of CPU, or with --int8-target portable"
    )
