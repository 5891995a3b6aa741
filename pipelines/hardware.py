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
    """e.g. 'AMD EPYC (2 cores), no GPU, torch 2.13.0+cpu' or '..., NVIDIA H200 x1, torch ...'."""
    import torch

    text = f"{cpu_name()} ({os.cpu_count()} cores)"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{text}, {names[0]} x{len(names)}, torch {torch.__version__}"
    return f"{text}, no GPU, torch {torch.__version__}"
