"""Counting task: synthetic generator, parsing, metrics, registry."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from sweeps.tasks import TASKS, get_task
from sweeps.tasks.counting import CountingTask
from sweeps.tasks.shapes import BACKGROUND, KINDS, stamp

TASK = CountingTask()


def pixels(ex) -> np.ndarray:
    return np.asarray(ex.image)


def test_registry_and_contract():
    assert {"counting", "grounding", "chart", "numeric_vqa"} <= set(TASKS)
    assert get_task("counting") is TASKS["counting"]
    for task in TASKS.values():
        assert task.primary_metric in task.metric_modes
        assert set(task.metric_modes.values()) <= {"max", "min"}
    with pytest.raises(ValueError, match=r"unknown task 'count'.*chart, counting, grounding"):
        get_task("count")


def test_same_seed_same_data_and_prefix_stable():
    a = TASK.synthetic(20, seed=7)
    b = TASK.synthetic(20, seed=7)
    short = TASK.synthetic(5, seed=7)
    for x, y in zip(a, b):
        assert np.array_equal(pixels(x), pixels(y))
        assert (x.prompt, x.answer, x.target) == (y.prompt, y.answer, y.target)
    for x, y in zip(a, short):  # example i does not depend on n
        assert np.array_equal(pixels(x), pixels(y))
    c = TASK.synthetic(20, seed=8)
    assert sum(np.array_equal(pixels(x), pixels(y)) for x, y in zip(a, c)) <= 1  # empty images may match


def test_image_mode_size_and_default_prompt():
    ex = TASK.synthetic(3, seed=0)
    assert all(e.image.mode == "RGB" and e.image.size == (48, 48) for e in ex)
    assert all(e.prompt == "How many shapes are there?" for e in ex)
    big = TASK.synthetic(20, seed=0, image_size=96)
    assert big[0].image.size == (96, 96)
    sides = {box[2] - box[0] for e in big for _, _, box in e.meta["shapes"]}
    assert min(sides) >= 10 and max(sides) <= 16  # default 5..8 px at 48 px, scaled with the image
    assert {e.target for e in big} <= set(range(10))


def test_answers_uniform_over_range_and_match_target():
    ex = TASK.synthetic(2000, seed=1)
    counts = Counter(e.target for e in ex)
    assert set(counts) == set(range(10))
    assert all(140 <= c <= 260 for c in counts.values()), counts  # 200 expected each
    assert all(e.answer == str(e.target) and isinstance(e.target, int) for e in ex)


def test_image_shows_exactly_the_answer_many_shapes():
    # Shapes are at least one pixel apart, so 8-connected components of non-background pixels
    # are the shapes: the picture really holds `target` shapes.
    for ex in TASK.synthetic(150, seed=2):
        fg = np.any(pixels(ex) != np.array(BACKGROUND, dtype=np.uint8), axis=-1)
        _, n_components = ndimage.label(fg, structure=np.ones((3, 3)))
        assert n_components == ex.target, ex.meta
        assert len(ex.meta["shapes"]) == ex.target


def test_attribute_queries_count_only_matching_shapes():
    ex = TASK.synthetic(200, seed=3, query="color_kind", max_distractors=3)
    assert any(len(e.meta["shapes"]) > e.target for e in ex)  # distractors present
    for e in ex:
        words = e.prompt.split()  # "How many red circles are there?"
        color, plural = words[2], words[3]
        matching = [s for s in e.meta["shapes"] if s[1] == color and plural.startswith(s[0][:4])]
        assert len(matching) == e.target
    kind = TASK.synthetic(50, seed=3, query="kind")
    assert all(e.prompt.endswith("are there?") and e.prompt.split()[2] != "shapes" for e in kind)


def test_clutter_adds_noise_but_stays_deterministic():
    clean = TASK.synthetic(5, seed=4)
    noisy = TASK.synthetic(5, seed=4, clutter=0.5)
    again = TASK.synthetic(5, seed=4, clutter=0.5)
    assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(noisy, again))
    assert [e.target for e in clean] == [e.target for e in noisy]
    for c, z in zip(clean, noisy):
        background = ~np.any(pixels(c) != np.array(BACKGROUND, dtype=np.uint8), axis=-1)
        assert pixels(c)[background].std() == 0
        assert pixels(z)[background].astype(float).std() > 5  # noise std 20 at clutter 0.5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [3, 4, 5, 8, 9, 16])
def test_stamps_touch_every_edge_of_their_box(kind, size):
    m = stamp(kind, size)
    assert m.shape == (size, size) and m.dtype == bool
    assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()


def test_bad_params_are_named():
    with pytest.raises(ValueError, match="unknown counting parameter 'colour'"):
        TASK.synthetic(2, seed=0, colour="red")
    with pytest.raises(ValueError, match="'kinds': unknown value 'hexagon'"):
        TASK.synthetic(2, seed=0, kinds=["circle", "hexagon"])
    with pytest.raises(ValueError, match="do not fit"):
        TASK.synthetic(2, seed=0, max_count=40)
    with pytest.raises(ValueError, match="'clutter'"):
        TASK.synthetic(2, seed=0, clutter=2)
    with pytest.raises(ValueError, match="'seed'"):
        TASK.synthetic(2, seed=-1)


def test_default_params_are_the_generator_defaults():
    d = TASK.default_params()
    assert d["max_count"] == 9 and d["image_size"] == 48 and d["query"] == "all"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7", 7),
        (" 7 ", 7),
        ("7.", 7),
        ("There are 5 shapes.", 5),
        ("Answer: 3", 3),
        ("2 4", 24),  # WordLevel decoders join digit tokens with spaces
        ("1 0", 10),
        ("1,234", 1234),
        ("3.0", 3),
        ("three", 3),
        ("There are twelve circles", 12),
        ("3 circles and 2 squares", 3),
        ("4</s>", 4),
        ("2.5", None),
        ("", None),
        ("none", None),
        ("many", None),
    ],
)
def test_parse(text, value):
    assert TASK.parse(text) == value


def test_metrics_hand_computed():
    ex = TASK.synthetic(4, seed=0)
    targets = [3, 4, 2, 7]
    ex = [type(e)(e.image, e.prompt, str(t), t, e.meta) for e, t in zip(ex, targets)]
    m = TASK.metrics(["3", "There are 5.", "abc", "10"], ex)
    # errors: 0, 1, unparseable (counts max(2, 1) = 2), 3
    assert m == pytest.approx({"exact_match": 0.25, "mae": 1.5, "off_by_one": 0.5, "unparseable": 0.25})
    assert set(m) == set(TASK.metric_modes)
    zero = [type(e)(e.image, e.prompt, "0", 0, e.meta) for e in ex[:1]]
    assert TASK.metrics(["?"], zero)["mae"] == 1.0  # unparseable is never better than off by one
    with pytest.raises(ValueError, match="3 predictions for 4 examples"):
        TASK.metrics(["1", "2", "3"], ex)
