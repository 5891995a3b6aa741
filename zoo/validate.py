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


def from_dict(cls, d: dict, where: str):
    """cls(**d), refusing keys that are not fields of the dataclass `cls`."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {known}")
    return cls(**d)
