"""What the model sees of one example: image facts, prompt, answer tokens, box.

`image_size` and `image_mean_rgb` describe the image as the trial hands it to the processor (after
the loader's decoding and square resize); `image_mode` is the mode of the file before decoding to
RGB when the decoder recorded it (`image.info["slsweep_source_mode"]`, `sweeps.tasks.images`), else
the image's own mode; `source_size` is the displayed size of the example's image file (EXIF
orientation applied, before the resize), decoded again by `sweeps.tasks.images.decode_image` for
examples read from a file (`meta["image_path"]`), else None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweeps.preview.tokens import AnswerTokens, TokenMarker

__all__ = ["ExampleView", "example_box", "source_mode", "view_example"]

SOURCE_MODE_KEY = "slsweep_source_mode"


def source_mode(image: Any) -> str:
    """The decoded file's original PIL mode (e.g. "RGBA", "I;16", "P"), else the image's mode."""
    return str(image.info.get(SOURCE_MODE_KEY, image.mode))


def example_box(example: Any) -> tuple[tuple[float, ...], int] | None:
    """(box, coord_max) of an example that has a box: its `target` is four numbers
    (x0, y0, x1, y1) on the task's 0..coord_max grid and its `meta` names `coord_max`
    (the grounding task's convention); None otherwise."""
    coord_max = example.meta.get("coord_max")
    target = example.target
    if coord_max is None or not isinstance(target, (tuple, list)) or len(target) != 4:
        return None
    try:
        return tuple(float(v) for v in target), int(coord_max)
    except (TypeError, ValueError):
        return None


def _numbers(values: tuple[float, ...]) -> list[float | int]:
    """Whole numbers as ints (a box on an integer grid prints as it is written in the answer)."""
    return [int(v) if float(v).is_integer() else v for v in values]


@dataclass(frozen=True)
class ExampleView:
    """One example as the preview shows it (see `as_json` for the schema)."""

    split: str
    index: int
    image_size: tuple[int, int]
    image_mode: str
    image_mean_rgb: tuple[float, float, float]
    prompt: str
    prompt_text: str
    answer: str
    tokens: AnswerTokens
    box: tuple[tuple[float, ...], int] | None
    source: str | None
    source_size: tuple[int, int] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "split": self.split, "index": self.index, "image_size": list(self.image_size),
            "image_mode": self.image_mode, "image_mean_rgb": list(self.image_mean_rgb),
            "source_size": None if self.source_size is None else list(self.source_size),
            "prompt": self.prompt, "prompt_text": self.prompt_text, "answer": self.answer,
            "answer_tokens": list(self.tokens.pieces), "answer_token_ids": list(self.tokens.ids),
            "eos_token": self.tokens.eos,
            "soft_target_tokens": self.tokens.positions_json(self.tokens.soft),
            "numeric_tokens_without_soft_target": self.tokens.positions_json(self.tokens.uncovered),
        }
        if self.box is not None:
            out["box"] = _numbers(self.box[0])
            out["box_coord_max"] = self.box[1]
        out["source"] = self.source
        return out

    def text(self) -> str:
        """A few indented lines for the terminal."""
        w, h = self.image_size
        r, g, b = self.image_mean_rgb
        size = f"{w}x{h}"
        if self.source_size not in (None, (w, h)):
            size += f" (file {self.source_size[0]}x{self.source_size[1]})"
        lines = [f"{self.split} #{self.index}  image {size} {self.image_mode}  mean rgb ({r:.0f}, {g:.0f}, {b:.0f})"
                 + (f"  {self.source}" if self.source else ""),
                 f"  prompt: {self.prompt}",
                 f"  answer: {self.answer}",
                 f"  tokens: {self.tokens.marked()}"]
        if self.box is not None:
            lines.append(f"  box:    {_numbers(self.box[0])} on 0..{self.box[1]}")
        return "\n".join(lines)


def source_size(example: Any) -> tuple[int, int] | None:
    """The displayed (EXIF-oriented) size of the example's image file, or None without a file."""
    path = example.meta.get("image_path")
    if not path:
        return None
    from sweeps.tasks.images import decode_image

    return tuple(decode_image(Path(path), f"{path}").size)  # type: ignore[return-value]


def view_example(split: str, index: int, example: Any, marker: TokenMarker) -> ExampleView:
    """The view of `example` (`sweeps.tasks.Example`) in `split` at `index`.

    Raises:
        DataError: the example's image file cannot be decoded again (moved since it was loaded).
    """
    image = example.image
    mean = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    source = example.meta.get("image_path") or example.meta.get("source")
    return ExampleView(split=split, index=index, image_size=tuple(image.size), image_mode=source_mode(image),
                       image_mean_rgb=tuple(round(float(v), 1) for v in mean),  # type: ignore[arg-type]
                       prompt=example.prompt, prompt_text=marker.batcher.prompt_text(example.prompt),
                       answer=example.answer, tokens=marker(example.answer), box=example_box(example),
                       source=None if source is None else str(source), source_size=source_size(example))
