"""The contact sheet of `slsweep data --sheet out.png`: each example's image as the model gets it,
its box drawn in `BOX_COLOR`, and its split, index, question and answer under it.

Layout (pixels, fixed so a script can find an example on the sheet): `COLUMNS` cells per row; cell
k's image fills the `CELL` x `CELL` square at `SheetLayout.image_rect(k)` (a non-square image is
stretched to it, as the trials' square `image_size` resize does), with a `TEXT` pixel band under
it; `PAD` pixels around and between cells. A box (x0, y0, x1, y1) on the task's 0..coord_max grid
is drawn at x = left + x0 / coord_max * CELL (likewise y), a `BOX_WIDTH`-pixel outline without
anti-aliasing, so its pixels are exactly `BOX_COLOR`.
"""

from __future__ import annotations

import math
import os
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.errors import SlsweepError

__all__ = ["BOX_COLOR", "BOX_RGB", "SheetLayout", "write_sheet"]

BOX_COLOR = "#ff00ff"  # magenta: no synthetic shape has it, and it stands out on photographs
BOX_RGB = (255, 0, 255)
BOX_WIDTH = 2  # pixels
CELL = 192
TEXT = 64
PAD = 8
COLUMNS = 4
DPI = 100
TEXT_WIDTH = 34  # characters per line under a cell


@dataclass(frozen=True)
class SheetLayout:
    """Where each of `count` examples goes on the sheet (pixels, origin top-left)."""

    count: int
    columns: int = COLUMNS

    @property
    def grid(self) -> tuple[int, int]:
        """(columns, rows) actually used."""
        cols = max(1, min(self.columns, self.count))
        return cols, max(1, math.ceil(self.count / cols))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the PNG."""
        cols, rows = self.grid
        return PAD + cols * (CELL + PAD), PAD + rows * (CELL + TEXT + PAD)

    def image_rect(self, k: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of example k's image square."""
        cols, _ = self.grid
        left = PAD + (k % cols) * (CELL + PAD)
        top = PAD + (k // cols) * (CELL + TEXT + PAD)
        return left, top, left + CELL, top + CELL

    def box_rect(self, k: int, box: Sequence[float], coord_max: int) -> tuple[float, float, float, float]:
        """Where a box on the 0..coord_max grid of example k lands on the sheet (pixels)."""
        left, top, _, _ = self.image_rect(k)
        x0, y0, x1, y1 = (float(v) / coord_max * CELL for v in box)
        return left + x0, top + y0, left + x1, top + y1


def write_sheet(path: str | Path, views: Sequence[Any], images: Sequence[Any]) -> Path:
    """Draw `views` (`ExampleView`) with their `images` (PIL) and write the PNG to `path`.

    The file is written to a temporary name next to `path` and renamed into place, so a failed
    draw leaves nothing half-written.

    Raises:
        SlsweepError: `--sheet`: no examples, or the folder of `path` does not exist / is not writable
            (a file cannot be created in it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    target = Path(path).expanduser()
    if not views:
        raise SlsweepError(f"--sheet: {target}: no examples to draw (-n 0)")
    if not target.parent.is_dir():
        raise SlsweepError(f"--sheet: {target}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise SlsweepError(f"--sheet: {target}: folder {target.parent} is not writable")
    layout = SheetLayout(len(views))
    width, height = layout.size
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    try:
        for k, (view, image) in enumerate(zip(views, images)):
            left, top, right, bottom = layout.image_rect(k)
            ax = fig.add_axes((left / width, 1 - bottom / height, CELL / width, CELL / height))
            w, h = image.size
            ax.imshow(np.asarray(image.convert("RGB")), extent=(0, w, h, 0), aspect="auto",
                      interpolation="nearest")
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_axis_off()
            if view.box is not None:
                (x0, y0, x1, y1), coord_max = view.box
                sx, sy = w / coord_max, h / coord_max
                ax.add_patch(Rectangle((x0 * sx, y0 * sy), (x1 - x0) * sx, (y1 - y0) * sy, fill=False,
                                       edgecolor=BOX_COLOR, linewidth=BOX_WIDTH * 72 / DPI,
                                       antialiased=False, clip_on=False))
            caption = "\n".join([
                *textwrap.wrap(f"{view.split} #{view.index}: {view.prompt}", TEXT_WIDTH)[:3],
                *textwrap.wrap(f"-> {view.answer}", TEXT_WIDTH)[:1]])
            fig.text(left / width, 1 - (bottom + 2) / height, caption, fontsize=7, va="top", ha="left",
                     family="monospace")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".png", dir=target.parent)
        except OSError as exc:  # os.access passes for root on a read-only mount or /proc
            raise SlsweepError(f"--sheet: {target}: cannot write in folder {target.parent}: "
                               f"{exc.strerror or exc}") from None
        os.close(fd)
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> the mode an ordinary new file gets
            fig.savefig(tmp, dpi=DPI, format="png", facecolor="white")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        plt.close(fig)
    return target
