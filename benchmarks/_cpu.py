"""The CPU a benchmark's figures were measured on, as ``lscpu`` names it."""

import os
import subprocess

_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")  # the ones that change which kernels run


def cpu_line() -> str:
    """``lscpu``'s model name, family and model, the cores this process may use, and the flags
    that matter here, e.g. "Intel(R) Xeon(R) Processor (family 6, model 207), 2 cores, avx2 avx512f"."""
    fields = {}
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("Flags", "").split())
    shown = " ".join(f for f in _FLAGS if f in flags) or "none of " + "/".join(_FLAGS)
    return (f"{fields.get('Model name', '?')} (family {fields.get('CPU family', '?')}, model "
            f"{fields.get('Model', '?')}), {len(os.sched_getaffinity(0))} cores, {shown}")
