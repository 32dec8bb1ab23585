"""Output any terminal can show: on a stream whose encoding cannot hold "↑", "Δ", "±", "—", ...
(an ASCII locale, `PYTHONIOENCODING=ascii`, a pipe into a latin-1 tool) the CLI writes ASCII stand-ins
(`^`, `d`, `+/-`, `-`) instead of dying with UnicodeEncodeError; streams that can encode them
are untouched.
"""

from __future__ import annotations

import codecs
import sys
import unicodedata
from typing import Any

__all__ = ["ERRORS", "ascii_fallback", "stand_in"]

ERRORS = "slsweep-ascii"  # the codec error handler's name
_STAND_INS = {"↑": "^", "↓": "v", "Δ": "d", "δ": "d", "±": "+/-", "—": "-", "–": "-", "…": "...", "×": "x",
              "≥": ">=", "≤": "<=", "≈": "~", "≠": "!=", "†": "+", "‡": "++", "→": "->", "←": "<-", "✓": "ok",
              "✗": "x", "·": ".", "•": "*", "█": "#", "▏": "|", "│": "|", "─": "-", "σ": "sd", "η": "eta",
              "λ": "lambda", "ψ": "psi", "μ": "mu", "²": "^2", "°": "deg", "▁": "_", "Ġ": "G"}


def stand_in(text: str) -> str:
    """`text` in ASCII: known symbols by their stand-ins, accented letters without their accents,
    anything else as `?`."""
    out = []
    for ch in text:
        if ord(ch) < 128:
            out.append(ch)
            continue
        rep = _STAND_INS.get(ch)
        if rep is None:
            rep = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "?"
        out.append(rep)
    return "".join(out)


def _handler(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    return stand_in(err.object[err.start:err.end]), err.end


codecs.register_error(ERRORS, _handler)


def ascii_fallback(*streams: Any) -> None:
    """Let `streams` (default: stdout and stderr) write ASCII stand-ins for what their encoding
    cannot hold (`TextIOWrapper.reconfigure(errors=...)`; other streams are left alone)."""
    for stream in streams or (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors=ERRORS)
            except (ValueError, OSError):  # a closed or detached stream
                pass
