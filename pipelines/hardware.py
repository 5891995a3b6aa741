"""Name the hardware a figure was measured on: CPU model and cores, GPU if any."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """e.g. '2 x Intel(R) Xeon(R) ... (2 cores), no GPU' or '..., NVIDIA H200 x1'."""
    text = f"{cpu_name()} ({os.cpu_count()} cores)"
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return f"{text}, {names[0]} x{len(names)}"
    except ImportError:
        pass
    return f"{text}, no GPU"
