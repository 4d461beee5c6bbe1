"""What a benchmark ran on, recorded with every result: numbers mean nothing without the machine."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import time

from ser.runtime.cpu import cpu_features

# CPU features that change which kernels ONNX Runtime and PyTorch pick (VNNI/AMX for INT8, AVX-512 for FP32).
CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_int8")  # fmt: skip
LIBRARIES = ("ser", "numpy", "onnxruntime", "onnxruntime-gpu", "torch", "transformers", "onnx", "tensorrt", "openvino",
             "nncf", "ray")  # fmt: skip


def cpu_info() -> dict:
    cpu = cpu_features()
    return {
        "model": cpu.model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": [flag for flag in CPU_FLAGS if flag in cpu.flags],
        "int8_numerics": cpu.numerics,  # what ONNX Runtime's u8s8 kernels compute with (ser.runtime.cpu)
    }


def gpu_info() -> list[dict]:
    """Each NVIDIA GPU's name, memory and driver, from nvidia-smi; empty without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader"]
    try:
        lines = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
    except (subprocess.SubprocessError, OSError):
        return []
    keys = ("name", "memory", "driver", "compute_capability")
    return [dict(zip(keys, (part.strip() for part in line.split(",")), strict=False)) for line in lines if line]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def environment() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": platform.node(),
        "os": platform.platform(),
        "cpu": cpu_info(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpus": gpu_info(),
        "versions": library_versions(),
    }
