"""How report numbers are printed: 4 significant digits for values (sampled params, legends)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

DIGITS = 4


def value_text(value: object, digits: int = DIGITS) -> str:
    """A param value or statistic as text: floats with `digits` significant digits, NaN/None as —."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(float(value))):
        return "—"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}g}"
    return str(value)


def distinct_texts(values: Iterable[object], digits: int = DIGITS) -> list[str]:
    """`value_text` of each value, with more digits where 4 would print two different values alike."""
    values = list(values)
    for d in range(digits, 13):
        texts = [value_text(v, d) for v in values]
        seen: dict[str, object] = {}
        clash = False
        for t, v in zip(texts, values):
            if t in seen and not _same(seen[t], v):
                clash = True
                break
            seen[t] = v
        if not clash:
            return texts
    return [value_text(v, 17) for v in values]


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    except (TypeError, ValueError):
        return False
