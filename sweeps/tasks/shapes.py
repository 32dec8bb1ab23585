"""Drawing helpers shared by the synthetic counting and grounding tasks (numpy, no anti-aliasing).

A shape is a boolean stamp of `size` x `size` pixels whose tight bounding box is the whole stamp,
pasted with its top-left corner at (x, y); its box in pixel edges is (x, y, x + size, y + size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .base import Rand

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 190, 55),
    "blue": (45, 85, 235),
    "yellow": (240, 220, 35),
    "purple": (160, 60, 225),
    "orange": (250, 135, 20),
    "cyan": (35, 215, 225),
    "white": (245, 245, 245),
}
KINDS: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
PLURALS: dict[str, str] = {k: ("crosses" if k == "cross" else k + "s") for k in KINDS}
BACKGROUND: tuple[int, int, int] = (20, 20, 20)


@dataclass(frozen=True, slots=True)
class Shape:
    """A drawn shape: kind, colour name, top-left corner (x, y) and side `size`, in pixels."""

    kind: str
    color: str
    x: int
    y: int
    size: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Tight box (x0, y0, x1, y1) in pixel edges (x1, y1 exclusive)."""
        return (self.x, self.y, self.x + self.size, self.y + self.size)

    @property
    def center(self) -> tuple[float, float]:
        """Centre (cx, cy) in pixels."""
        return (self.x + self.size / 2, self.y + self.size / 2)


@lru_cache(maxsize=None)
def stamp(kind: str, size: int) -> np.ndarray:
    """Boolean mask [size, size] of `kind`; every row and column edge of the box is touched."""
    if size < 3:
        raise ValueError(f"shape size must be >= 3 pixels, got {size}")
    c = np.arange(size) + 0.5 - size / 2  # pixel-centre offsets from the middle
    dy, dx = c[:, None], c[None, :]
    half = size / 2
    if kind == "circle":
        m = dx**2 + dy**2 <= half**2
    elif kind == "square":
        m = np.ones((size, size), dtype=bool)
    elif kind == "triangle":  # apex up, base on the bottom row
        m = np.abs(dx) <= (dy + half) / 2 + 0.5
    elif kind == "diamond":
        m = np.abs(dx) + np.abs(dy) <= half + 0.5
    elif kind == "cross":
        w = max(1, round(size / 3))
        lo = (size - w) // 2
        m = np.zeros((size, size), dtype=bool)
        m[lo : lo + w, :] = True
        m[:, lo : lo + w] = True
    else:
        raise ValueError(f"unknown shape kind {kind!r} (known: {', '.join(KINDS)})")
    m = np.ascontiguousarray(m)
    m.setflags(write=False)
    return m


def place(
    rand: Rand, sizes: Sequence[int], image_size: int, gap: int = 1, tries: int = 200
) -> list[tuple[int, int]] | None:
    """Top-left corners for squares of `sizes` inside the image, at least `gap` pixels apart.

    Rejection sampling, largest first; None when a shape finds no spot in `tries` attempts.
    Returns positions in the order of `sizes`.
    """
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    placed: list[tuple[int, int, int, int]] = []  # x0, y0, x1, y1 (exclusive)
    out: list[tuple[int, int]] = [(0, 0)] * len(sizes)
    for i in order:
        s = sizes[i]
        hi = image_size - s
        if hi < 0:
            return None
        for _ in range(tries):
            x, y = rand.integer(0, hi), rand.integer(0, hi)
            x1, y1 = x + s, y + s
            for px0, py0, px1, py1 in placed:
                if x < px1 + gap and px0 < x1 + gap and y < py1 + gap and py0 < y1 + gap:
                    break
            else:
                placed.append((x, y, x1, y1))
                out[i] = (x, y)
                break
        else:
            return None
    return out


def render(
    image_size: int,
    shapes: Sequence[Shape],
    rand: Rand,
    clutter: float = 0.0,
    background: tuple[int, int, int] = BACKGROUND,
) -> np.ndarray:
    """An RGB uint8 array [image_size, image_size, 3] with `shapes` on a plain background.

    `clutter` in [0, 1] adds distractors under the shapes: Gaussian pixel noise (std 40 * clutter)
    and about 8 * clutter grey specks of 1-2 pixels.
    """
    img = np.empty((image_size, image_size, 3), dtype=np.uint8)
    img[:] = background
    if clutter > 0:
        for _ in range(round(8 * clutter * 2 * rand.random())):  # mean 8 * clutter
            s = rand.integer(1, 2)
            x, y = rand.integer(0, image_size - s), rand.integer(0, image_size - s)
            img[y : y + s, x : x + s] = rand.integer(90, 160)
    for sh in shapes:
        region = img[sh.y : sh.y + sh.size, sh.x : sh.x + sh.size]
        region[stamp(sh.kind, sh.size)] = COLORS[sh.color]
    if clutter > 0:
        noise = rand.gen.normal(0.0, 40.0 * clutter, size=img.shape)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
    return img
