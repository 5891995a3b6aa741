"""Validation shared by every frozen config: one message shape, field = value: what is allowed."""
from __future__ import annotations

from dataclasses import fields

import numpy as np


def check(name: str, value, ok: bool, allowed: str) -> None:
    """Raise ValueError naming the field, the value and what is allowed, unless `ok`."""
    if not ok:
        raise ValueError(f"{name}={value!r}: must be {allowed}")


def is_int(v) -> bool:
    """An integer that is not a bool (True would otherwise pass as 1)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_ray_fields(executor: str, executors: tuple[str, ...], address, gpus_name: str, gpus) -> None:
    """The executor, Ray address and GPU share per Ray task of a stage that runs in this process or
    on Ray (metanets, MLI)."""
    check("executor", executor, executor in executors, f"one of {', '.join(executors)}")
    check("address", address, address is None or (isinstance(address, str) and executor == "ray"),
          "unset with executor local (it runs in this process), else a string")
    ok = isinstance(gpus, (int, float)) and not isinstance(gpus, bool) and 0 <= gpus < float("inf")
    check(gpus_name, gpus, ok and (gpus <= 1 or float(gpus).is_integer()),  # Ray schedules fractions of one GPU, or whole GPUs
          "a number in [0, 1] or a whole number")


def from_dict(cls, d: dict, where: str):
    """cls(**d), refusing keys that are not fields of the dataclass `cls`."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {known}")
    return cls(**d)
