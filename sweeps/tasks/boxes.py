"""Box conventions of grounding data: declared by the data's owner, checked, never guessed.

A dataset writes a box in one `box_format` and one `box_units` (task params `box_format`,
`box_units`; see docs/data.md for the defaults of each loader):

| box_format | the four numbers                                  |
|------------|---------------------------------------------------|
| xyxy       | left, top, right, bottom edges                    |
| xywh       | left, top edges, width, height (COCO)             |
| cxcywh     | centre x, centre y, width, height (DETR, YOLO)    |

| box_units  | range of a coordinate                                           |
|------------|-----------------------------------------------------------------|
| pixels     | 0..width / 0..height of the displayed image (pixel edges)       |
| normalized | 0..1 of the width / height                                      |
| per_mille  | 0..1000 of the width / height (Qwen2-VL's grid)                 |

Coordinates refer to the image as displayed, i.e. after its EXIF orientation
(`sweeps.tasks.images`), the frame annotation tools draw on. `box_fractions` turns a box into
(x0, y0, x1, y1) fractions of the width and height, which follow any later resize of the image.

Refused, with one DataError line naming the row and the likely fix: a box that is not four finite
numbers; a degenerate box (zero or negative width or height); a box outside its image by more than
`TOLERANCE` of a side (one pixel for pixel boxes on images under 100 px); a box that looks like
another convention: all coordinates <= 1 while the units are pixels or per_mille, a coordinate
above 1 while they are normalized, above 1000 while per_mille.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import DataError

__all__ = ["BOX_FORMATS", "BOX_UNITS", "TOLERANCE", "box_fractions", "check_box_convention"]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
BOX_UNITS = ("pixels", "normalized", "per_mille")
TOLERANCE = 0.01
"""How far (a fraction of the side) a box may reach outside its image before it is refused; a box
within the tolerance is clipped to the image."""

_SCALE = {"normalized": 1.0, "per_mille": 1000.0}
_FIX = "set task.params.box_units: {}"


def check_box_convention(box_format: Any, box_units: Any) -> None:
    """ValueError naming the parameter unless each is None (the loader's default) or a known name."""
    for name, value, known in (("box_format", box_format, BOX_FORMATS), ("box_units", box_units, BOX_UNITS)):
        if value is not None and value not in known:
            raise ValueError(f"parameter {name!r}: unknown value {value!r} (known: {', '.join(known)})")


def box_fractions(values: Any, *, box_format: str, box_units: str, width: int, height: int,
                  loc: str) -> tuple[float, float, float, float]:
    """A stored box as (x0, y0, x1, y1) fractions of the displayed image's width and height, in [0, 1].

    Args:
        values: the four stored numbers (a list, tuple or NumPy array).
        box_format: "xyxy", "xywh" or "cxcywh".
        box_units: "pixels", "normalized" or "per_mille".
        width, height: the displayed image's size in pixels (after its EXIF orientation).
        loc: the dataset, row and column, the start of every DataError message.

    Raises:
        DataError: the box is not four finite numbers, is degenerate, lies outside the image or looks
            like another convention (the message names the fix).
    """
    nums = _four_numbers(values, loc)
    shown = "[" + ", ".join(f"{v:g}" for v in nums) + "]"
    here = f"{loc}: box {shown} (box_format {box_format}, box_units {box_units})"
    _check_units(nums, box_units, width, height, here)
    a, b, c, d = nums
    if box_format == "xyxy":
        x0, y0, x1, y1 = a, b, c, d
    elif box_format == "xywh":
        x0, y0, x1, y1 = a, b, a + c, b + d
    else:  # cxcywh
        x0, y0, x1, y1 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    if not (x1 > x0 and y1 > y0):
        hint = ""
        if box_format == "xyxy" and c > 0 and d > 0:
            hint = "; if the numbers are [x, y, width, height], set task.params.box_format: xywh"
        raise DataError(f"{here} has zero or negative width or height{hint}")
    sx, sy = (float(width), float(height)) if box_units == "pixels" else (_SCALE[box_units],) * 2
    frac = (x0 / sx, y0 / sy, x1 / sx, y1 / sy)
    tol_x = max(TOLERANCE, 1 / width) if box_units == "pixels" else TOLERANCE
    tol_y = max(TOLERANCE, 1 / height) if box_units == "pixels" else TOLERANCE
    if frac[0] < -tol_x or frac[1] < -tol_y or frac[2] > 1 + tol_x or frac[3] > 1 + tol_y:
        hint = _outside_hint(nums, box_format, box_units, width, height)
        raise DataError(f"{here} lies outside the {width}x{height} image{hint}")
    return (min(max(frac[0], 0.0), 1.0), min(max(frac[1], 0.0), 1.0),
            min(max(frac[2], 0.0), 1.0), min(max(frac[3], 0.0), 1.0))


def _four_numbers(values: Any, loc: str) -> tuple[float, float, float, float]:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 4:
        raise DataError(f"{loc}: a box must be 4 numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise DataError(f"{loc}: a box must be 4 numbers, got {values!r}")
        if not math.isfinite(float(v)):
            raise DataError(f"{loc}: box {list(values)!r} holds NaN or inf (a missing value; fill or drop the row)")
        out.append(float(v))
    return out[0], out[1], out[2], out[3]


def _check_units(nums: Sequence[float], units: str, width: int, height: int, here: str) -> None:
    """Refuse a box whose numbers belong to another unit (module docstring)."""
    top = max(abs(v) for v in nums)
    if units in ("pixels", "per_mille") and top <= 1 and max(width, height) > 2:
        raise DataError(f"{here}: every coordinate is <= 1, which reads as a fraction of the image, "
                        f"not {units}; {_FIX.format('normalized')}")
    if units == "normalized" and top > 1 + TOLERANCE:
        fix = "per_mille" if top <= 1000 else "pixels"
        raise DataError(f"{here}: a coordinate above 1 is not a fraction of the image; {_FIX.format(fix)}"
                        + (" (or pixels)" if fix == "per_mille" else ""))
    if units == "per_mille" and top > 1000 * (1 + TOLERANCE):
        raise DataError(f"{here}: a coordinate above 1000 is not on the 0-1000 grid; {_FIX.format('pixels')}")


def _outside_hint(nums: Sequence[float], box_format: str, units: str, width: int, height: int) -> str:
    """The likely fix for a box outside its image."""
    if units == "pixels" and max(nums) <= 1000 and max(nums) > max(width, height):
        return f"; if it is on Qwen2-VL's 0-1000 grid, {_FIX.format('per_mille')}"
    a, b, c, d = nums
    limit_x, limit_y = (width, height) if units == "pixels" else (_SCALE[units],) * 2
    if box_format != "xyxy" and a < c <= limit_x and b < d <= limit_y:
        return "; if the numbers are [x0, y0, x1, y1], set task.params.box_format: xyxy"
    return " (another box_format or box_units, or a box of another image?)"
