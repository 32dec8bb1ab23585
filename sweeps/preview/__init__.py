"""Look at a spec's task data as the model will see it (`slsweep data`), and the one-line-per-split
summary `slsweep run` prints before Ray starts.

- `figures`: rows, answer range and histogram, soft-target coverage of a split (both commands).
- `tokens`: an answer's supervised tokens and which get a soft target.
- `examples`: one example's image facts, prompt, tokens and box.
- `sheet`: the contact sheet PNG (matplotlib).
- `command`: loads the data the way a trial does and renders text or JSON (docs/data.md).
"""

from sweeps.preview.command import SCHEMA, build_preview, preview_command

__all__ = ["SCHEMA", "build_preview", "preview_command"]
