"""One device rule for every stage: "auto" is the GPU when there is one, else the CPU."""
from __future__ import annotations

import torch

from .validate import check

ALLOWED = '"auto", "cpu", "cuda" or "cuda:N"'


def check_device(value, name: str = "device") -> str:
    """`value` if it names a device (without needing one to be present), else ValueError."""
    ok = isinstance(value, str) and (value in ("auto", "cpu", "cuda") or
                                     (value.startswith("cuda:") and value[5:].isdigit()))
    check(name, value, ok, ALLOWED)
    return value


def resolve_device(value: str, name: str = "device") -> torch.device:
    """The torch device `value` names; "auto" = cuda if available, else cpu."""
    check_device(value, name)
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{name}={value!r}: CUDA is not available here; use cpu or auto")
    return torch.device(value)
