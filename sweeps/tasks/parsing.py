"""Number parsing shared by the tasks, tolerant of what models really emit.

Rules:
- Surrounding words, trailing punctuation, a leading "$"/"€", a trailing "%" are ignored:
  "The answer is 12.5%." -> 12.5.
- Whitespace between two digits is a tokenizer artefact and is removed: a WordLevel decoder joins
  single-digit tokens with spaces, so "2 4" is 24 and "1 2 . 5" is 12.5. Two numbers therefore
  need a separator other than whitespace ("2, 4" or "2 and 4") to stay two numbers. Boxes are the
  exception, see `parse_box`.
- "1,234" is 1234 (a comma followed by exactly three digits is a thousands separator); "1,2" is
  the number 1 followed by the number 2.
- The first number in the text is the answer.
- For counts, the number words "zero".."twenty" are accepted when the text has no digits, and a
  non-integer ("2.5") is not a count (None).
"""

from __future__ import annotations

import re

import numpy as np

_SPACED_DIGITS = re.compile(r"(?<=\d)\s+(?=\d)")
_SPACED_POINT = re.compile(r"(?<=\d) ?\. ?(?=\d)")
# sign? (thousands-grouped | plain | nothing before a ".5") fraction?
_NUMBER = re.compile(
    r"(?<![\w.])([-+\u2212]?)(\d{1,3}(?:,\d{3})+(?!\d)|\d+|(?=\.\d))(\.\d+)?"
)
# For boxes: plain unsigned numbers, not glued to a letter ("x0=12" yields 12, not 0 and 12).
_BOX_NUMBER = re.compile(r"(?<![A-Za-z_\d.])\d+(?:\.\d+)?")

NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


def join_spaced_digits(text: str) -> str:
    """Remove whitespace between digits and around a decimal point between digits."""
    return _SPACED_POINT.sub(".", _SPACED_DIGITS.sub("", text))


def find_number_texts(text: str) -> list[str]:
    """All numbers in `text`, in order, after `join_spaced_digits`, each as written: its digits
    and decimals kept ("0.10" stays "0.10"), thousands separators and a "+" sign dropped, a "\u2212"
    sign written "-", a bare ".5" written "0.5"."""
    out = []
    for m in _NUMBER.finditer(join_spaced_digits(text)):
        sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
        out.append(("-" if sign in ("-", "\u2212") else "") + (whole.replace(",", "") or "0") + frac)
    return out


def find_numbers(text: str) -> list[float]:
    """All numbers in `text`, in order, after `join_spaced_digits` (see `find_number_texts`)."""
    return [float(t) for t in find_number_texts(text)]


def number_text(value: int | float | np.integer | np.floating) -> str:
    """A finite number as answer text, with exactly the precision it carries: an integer as its
    digits; a float (NumPy float16/32/64 too) as the shortest positional decimal that reads back as
    the same value at its own precision (2601.0 -> "2601", 0.1 -> "0.1", float32 0.1 -> "0.1",
    1e-7 -> "0.0000001"; never "2601.0", "0.10000000000000001" or an exponent); "-0" is "0".

    Raises:
        ValueError: `value` is NaN or infinite (callers turn it into a DataError naming the row).
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if not np.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    text = np.format_float_positional(value, trim="-")
    return "0" if text in ("-0", "0") else text


def parse_number(text: str) -> float | None:
    """The first number in `text` (see the module rules), or None."""
    nums = find_numbers(text)
    return nums[0] if nums else None


def parse_count(text: str) -> int | None:
    """The first number in `text` as an integer count, or None.

    Falls back to number words ("three") when the text has no digits; a non-integer is None.
    """
    value = parse_number(text)
    if value is None:
        m = _WORD.search(text)
        return NUMBER_WORDS[m.group(1).lower()] if m else None
    return int(value) if value.is_integer() else None


def parse_box(text: str, coord_max: int | None = None) -> tuple[float, float, float, float] | None:
    """The first four numbers in `text` as a box (x0, y0, x1, y1), or None.

    Whitespace is read two ways: as a tokenizer artefact inside numbers ("[ 1 2 , 4 0 , 3 3 , 6 1 ]"
    -> (12, 40, 33, 61)) and as a separator ("12 40 33 61", "(12 40), (33 61)"); the reading that
    gives exactly four numbers wins. 4k single digits with no other separator are k-digit zero-padded
    coordinates ("1 2 4 0 3 3 6 1" -> (12, 40, 33, 61)). Otherwise the first four numbers of the
    artefact reading, else of the separator reading. When `coord_max` is given and all four numbers
    are fractions in [0, 1] written with a decimal point ("[0.12, 0.4, 0.33, 0.61]"), they are
    scaled to 0..coord_max.
    """
    joined = _BOX_NUMBER.findall(join_spaced_digits(text))
    spaced = _BOX_NUMBER.findall(text)
    if len(joined) == 4:
        nums = joined
    elif len(spaced) == 4:
        nums = spaced
    elif len(spaced) >= 8 and len(spaced) % 4 == 0 and len(joined) < 4 and all(len(n) == 1 for n in spaced):
        w = len(spaced) // 4
        nums = ["".join(spaced[i * w : (i + 1) * w]) for i in range(4)]
    elif len(joined) > 4:
        nums = joined[:4]
    elif len(spaced) > 4:
        nums = spaced[:4]
    else:
        return None
    values = tuple(float(n) for n in nums)
    if coord_max is not None and all("." in n for n in nums) and all(v <= 1.0 for v in values):
        values = tuple(v * coord_max for v in values)
    return values  # type: ignore[return-value]


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace, strip surrounding quotes and trailing punctuation."""
    t = " ".join(text.strip().lower().split())
    return t.strip("\"'`").rstrip(".!?;:,").strip()


def format_number(value: float, decimals: int) -> str:
    """`value` with exactly `decimals` decimals and no thousands separator ("-0" becomes "0")."""
    s = f"{value:.{decimals}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s
