"""Grounding task: synthetic scenes, referring expressions, box conventions, parsing, metrics."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sweeps.tasks import get_task
from sweeps.tasks.base import Example
from sweeps.tasks.grounding import expressions_for, format_box, iou, to_coords
from sweeps.tasks.shapes import COLORS, Shape, stamp

TASK = get_task("grounding")
ALL = ("kind", "color", "color_kind", "relation")


def test_deterministic_and_prefix_stable():
    a, b, short = TASK.synthetic(15, seed=3), TASK.synthetic(15, seed=3), TASK.synthetic(4, seed=3)
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))
        assert (x.prompt, x.answer, x.target) == (y.prompt, y.answer, y.target)
    assert [e.answer for e in short] == [e.answer for e in a[:4]]
    assert [e.answer for e in TASK.synthetic(15, seed=4)] != [e.answer for e in a]


def test_answer_format_and_box_matches_the_drawn_target():
    for ex in TASK.synthetic(200, seed=1):
        assert ex.image.mode == "RGB" and ex.image.size == (48, 48)
        assert ex.prompt.startswith("Where is the ") and ex.prompt.endswith("?")
        assert ex.answer == format_box(ex.target, 99) and len(ex.answer) == 13  # "[12,40,33,61]"
        x0, y0, x1, y1 = ex.meta["pixel_box"]
        assert ex.target == to_coords((x0, y0, x1, y1), 48, 48, 99)
        kind, color, box = next(s for s in ex.meta["shapes"] if s[2] == (x0, y0, x1, y1))
        region = np.asarray(ex.image)[y0:y1, x0:x1]
        painted = np.all(region == np.array(COLORS[color], dtype=np.uint8), axis=-1)
        assert np.array_equal(painted, stamp(kind, x1 - x0))  # the box is tight around the target
        assert kind in ex.prompt or color in ex.prompt


def test_all_expression_types_occur_and_coordinates_spread():
    ex = TASK.synthetic(400, seed=2)
    types = Counter(e.meta["expression_type"] for e in ex)
    assert set(types) == set(ALL) and min(types.values()) > 30, types
    boxes = np.array([e.target for e in ex])
    assert boxes[:, :2].min() <= 5 and boxes[:, 2:].max() >= 94
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    only = TASK.synthetic(30, seed=2, expressions=["relation"], coord_max=999)
    assert {e.meta["expression_type"] for e in only} == {"relation"}
    assert all(len(e.answer) == 17 for e in only)  # four 3-digit numbers


def test_expressions_use_relations_to_tell_twins_apart():
    left = Shape("circle", "blue", 2, 20, 8)
    square = Shape("square", "red", 20, 20, 8)
    right = Shape("circle", "blue", 38, 20, 8)
    found = expressions_for([left, square, right], 0, ALL, margin=3)
    assert set(found) == {"relation"}
    assert "the blue circle left of the square" in found["relation"]
    assert "the circle left of the red shape" in found["relation"]
    assert not any("right of" in e or "above" in e for e in found["relation"])
    # The anchor is unique, so the square can be named directly.
    assert expressions_for([left, square, right], 1, ALL, margin=3)["color_kind"] == ["the red square"]
    # A twin whose centre is too close to the anchor's makes "left of" ambiguous: not used.
    near = Shape("circle", "blue", 18, 2, 8)  # centre x 22 vs the square's 24: within the margin
    found = expressions_for([left, square, near], 0, ALL, margin=3)
    assert not any("left of the square" in e for e in found.get("relation", []))


def test_to_coords_format_box_and_iou_hand_computed():
    assert to_coords((0, 0, 10, 10), 48, 48, 99) == (0, 0, 21, 21)  # 10/48*99 = 20.6
    assert to_coords((47.9, 0, 48, 48), 48, 48, 99) == (98, 0, 99, 99)  # kept 1 unit wide
    assert to_coords((100, 50, 300, 150), 400, 200, 999) == (250, 250, 749, 749)
    assert format_box((6, 40, 33, 61), 99) == "[06,40,33,61]"
    assert format_box((6, 40, 33, 61), 999) == "[006,040,033,061]"
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((5, 5, 5, 9), (0, 0, 10, 10)) == 0.0  # degenerate
    assert iou((10, 10, 0, 0), (0, 0, 10, 10)) == 0.0  # inverted


@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("[12,40,33,61]", (12, 40, 33, 61)),
        ("[12, 40, 33, 61].", (12, 40, 33, 61)),
        ("[ 1 2 , 4 0 , 3 3 , 6 1 ]", (12, 40, 33, 61)),  # WordLevel decoder output
        ("1 2 4 0 3 3 6 1", (12, 40, 33, 61)),  # digits only, fixed width 2
        ("0 1 2 0 4 0 0 3 3 0 6 1", (12, 40, 33, 61)),  # fixed width 3
        ("12 40 33 61", (12, 40, 33, 61)),
        ("(12 40), (33 61)", (12, 40, 33, 61)),
        ("The box is [06,40,33,61] in the image", (6, 40, 33, 61)),
        ("x0=12, y0=40, x1=33, y1=61", (12, 40, 33, 61)),
        ("<box>[12,40,33,61]</box>[1,2,3,4]", (12, 40, 33, 61)),
        ("[0.5, 0.25, 0.75, 1.0]", (49.5, 24.75, 74.25, 99.0)),  # fractions scaled to coord_max
        ("[12,40,33]", None),
        ("the red triangle", None),
        ("", None),
    ],
)
def test_parse_box(text, box):
    parsed = TASK.parse(text, coord_max=99)
    assert parsed == (pytest.approx(box) if box else None)


def test_metrics_hand_computed():
    img = TASK.synthetic(1, seed=0)[0].image
    exs = [Example(img, "p", format_box(b, 99), b, {"coord_max": 99}) for b in [(0, 0, 10, 10)] * 4]
    preds = ["[00,00,10,10]", "[05,00,15,10]", "[00,00,10,08]", "no idea"]
    m = TASK.metrics(preds, exs)
    # IoUs: 1, 1/3, 0.8, unparseable -> 0
    assert m == pytest.approx({"acc_iou50": 0.5, "mean_iou": (1 + 1 / 3 + 0.8) / 4, "unparseable": 0.25})
    assert set(m) == set(TASK.metric_modes)


def test_bad_params_are_named():
    with pytest.raises(ValueError, match="unknown grounding parameter 'n_objects'"):
        TASK.synthetic(1, seed=0, n_objects=3)
    with pytest.raises(ValueError, match="'expressions': unknown value 'size'"):
        TASK.synthetic(1, seed=0, expressions=["size"])
    with pytest.raises(ValueError, match="prompt_template"):
        TASK.synthetic(1, seed=0, prompt_template="Find it")
    # One kind, one colour, two shapes: "the circle" is never unique and relations are off.
    with pytest.raises(ValueError, match="no scene with a unique referring expression"):
        TASK.synthetic(1, seed=0, kinds=["circle"], colors=["red"], min_objects=2, expressions=["kind"])
