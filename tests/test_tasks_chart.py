"""Chart task: matplotlib charts that encode their answers, answer format, parsing, metrics."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from sweeps.tasks import get_task
from sweeps.tasks.base import Example
from sweeps.tasks.chart import AXES_RECT, LABELS, Y_HEADROOM, label_target

TASK = get_task("chart")


def test_deterministic_prefix_stable_and_sized():
    a, b, short = TASK.synthetic(12, seed=1), TASK.synthetic(12, seed=1), TASK.synthetic(3, seed=1)
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))
        assert (x.prompt, x.answer, x.target) == (y.prompt, y.answer, y.target)
    for x, y in zip(a, short):
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))
    assert all(e.image.mode == "RGB" and e.image.size == (64, 64) for e in a)
    assert TASK.synthetic(1, seed=1, image_size=96)[0].image.size == (96, 96)


def test_answers_are_consistent_with_values_and_formatted_by_decimals():
    ex = TASK.synthetic(300, seed=2, questions=["value", "max", "min", "diff", "sum", "argmax", "argmin"])
    assert set(Counter(e.meta["question"] for e in ex)) == {"value", "max", "min", "diff", "sum", "argmax", "argmin"}
    assert set(Counter(e.meta["decimals"] for e in ex)) == {0, 1}
    for e in ex:
        vals = [float(v) for v in e.meta["values"]]
        d = e.meta["decimals"]
        labels = re.findall(r"\b([A-L])\b", e.prompt)
        idx = [LABELS.index(l) for l in labels]
        q = e.meta["question"]
        expected = {
            "value": lambda: vals[idx[0]],
            "max": lambda: max(vals),
            "min": lambda: min(vals),
            "diff": lambda: abs(vals[idx[0]] - vals[idx[1]]),
            "sum": lambda: vals[idx[0]] + vals[idx[1]],
            "argmax": lambda: LABELS[vals.index(max(vals))],
            "argmin": lambda: LABELS[vals.index(min(vals))],
        }[q]()
        if isinstance(expected, str):
            assert e.answer == e.target == expected
            continue
        assert e.target == pytest.approx(expected, abs=1e-9)
        assert re.fullmatch(r"\d+" if d == 0 else r"\d+\.\d", e.answer), e.answer
        assert float(e.answer) == e.target


def test_bar_heights_in_pixels_encode_the_values():
    size = 96
    left, bottom, width, height = AXES_RECT
    for e in TASK.synthetic(20, seed=3, kinds=["bar"], image_size=size):
        px = np.asarray(e.image).astype(int)
        vals = [float(v) for v in e.meta["values"]]
        n = len(vals)
        colored = np.abs(px - px[..., :1]).max(axis=-1) > 40  # bar colours are far from grey
        for k, v in enumerate(vals):
            col = round((left + width * (k + 0.5) / n) * size)
            bar_px = colored[:, col].sum()
            expected = v / (100 * Y_HEADROOM) * height * size
            assert abs(bar_px - expected) <= 2.0, (k, v, bar_px, expected)


def test_value_labels_are_drawn_only_when_asked():
    plain = TASK.synthetic(5, seed=4)
    labelled = TASK.synthetic(5, seed=4, show_values=True)
    for p, l in zip(plain, labelled):
        assert p.answer == l.answer
        assert not np.array_equal(np.asarray(p.image), np.asarray(l.image))


@pytest.mark.parametrize(
    ("label", "target"),
    [("17", 17.0), ("0.57", 0.57), ("1,234", 1234.0), ("45%", 45.0), ("-0.5", -0.5), ("$12", 12.0),
     ("Yes", "Yes"), ("2015-2016", "2015-2016"), (" Democrats ", "Democrats"), ("[1, 2]", "[1, 2]")],
)
def test_label_target(label, target):
    assert label_target(label) == target


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("42.5", 42.5), ("The answer is 42.5.", 42.5), ("4 2 . 5", 42.5), ("1,234", 1234.0), ("12%", 12.0),
     ("-3", -3.0), ("Yes.", "yes"), ("  ", None)],
)
def test_parse(text, parsed):
    assert TASK.parse(text) == parsed


def test_metrics_hand_computed():
    img = TASK.synthetic(1, seed=0)[0].image
    targets = [100.0, 100.0, 100.0, 0.0, "Yes", "Yes", 20.0]
    exs = [Example(img, "q", str(t), t, {}) for t in targets]
    preds = ["100", "104.9", "106", "0", "yes.", "No", "no number"]
    m = TASK.metrics(preds, exs)
    # relaxed: 100 ok, 104.9 ok (4.9%), 106 no, 0 == 0 ok, "yes." ok, "No" no, unparseable no
    # exact: 100, 0, yes
    assert m == pytest.approx({"relaxed_accuracy": 4 / 7, "exact_match": 3 / 7, "unparseable": 1 / 7})
    assert set(m) == set(TASK.metric_modes)
    zero = [Example(img, "q", "0", 0.0, {})]
    assert TASK.metrics(["0.01"], zero)["relaxed_accuracy"] == 0.0  # no 5% slack around zero
    assert TASK.metrics([""], [Example(img, "q", "Yes", "Yes", {})])["unparseable"] == 1.0


def test_bad_params_are_named():
    with pytest.raises(ValueError, match="unknown chart parameter 'bars'"):
        TASK.synthetic(1, seed=0, bars=4)
    with pytest.raises(ValueError, match="'questions': unknown value 'mean'"):
        TASK.synthetic(1, seed=0, questions=["mean"])
    with pytest.raises(ValueError, match="'max_categories' must be <= 12"):
        TASK.synthetic(1, seed=0, max_categories=20)
