"""The one image decoder (`sweeps.tasks.images`): for each rule a generated file whose right decoding
is known, read through a JSON loader (counting), a Hugging Face dataset saved with `save_to_disk`
(the file's own bytes in an `Image` feature) and `decode_image` itself."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, Features, Image as HFImage, Value
from PIL import Image

from sweeps.config.trial_config import HFDataConfig
from sweeps.tasks import CountingTask, DataError, Example, get_task
from sweeps.tasks.hf import load_hf
from sweeps.tasks.images import EXIF_TRANSPOSED, SOURCE_MODE, decode_image

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _close(pixel, colour, tol: int = 8) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, colour))


# --------------------------------------------------------------------------- generated files
# Each writer saves one file and returns a check of the decoded RGB array [H, W, 3].


def exif_jpeg(path: Path):
    """40x20 stored, a red marker in the stored top-left corner, EXIF orientation 6 (display turned
    90 degrees clockwise): displayed 20x40 with the marker in the top-right corner."""
    a = np.full((20, 40, 3), 255, np.uint8)
    a[:8, :8] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path.with_suffix(".jpg"), exif=exif, quality=95)

    def check(rgb: np.ndarray) -> None:
        assert rgb.shape == (40, 20, 3)
        assert _close(rgb[2, -3], RED) and _close(rgb[2, 2], WHITE) and _close(rgb[-3, -3], WHITE)
    return path.with_suffix(".jpg"), "RGB", True, check


def exif_tiff(path: Path):
    """The same picture as a TIFF with orientation 6: Pillow's TIFF loader turns it itself while
    loading (and drops the tag), so the decoder reads the tag first to record the turn."""
    a = np.full((20, 40, 3), 255, np.uint8)
    a[:8, :8] = RED
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path.with_suffix(".tiff"), exif=exif)

    def check(rgb: np.ndarray) -> None:
        assert rgb.shape == (40, 20, 3)  # turned once, not twice
        assert _close(rgb[2, -3], RED, 0) and _close(rgb[2, 2], WHITE, 0) and _close(rgb[-3, -3], WHITE, 0)
    return path.with_suffix(".tiff"), "RGB", True, check


def rgba_chart(path: Path):
    """matplotlib's transparent=True: a blue bar on a fully transparent background, one half-
    transparent black pixel."""
    a = np.zeros((16, 16, 4), np.uint8)
    a[4:, 6:10] = (*BLUE, 255)
    a[0, 0] = (0, 0, 0, 128)
    Image.fromarray(a).save(path.with_suffix(".png"))

    def check(rgb: np.ndarray) -> None:
        assert _close(rgb[10, 8], BLUE, 0) and _close(rgb[10, 1], WHITE, 0) and _close(rgb[0, 0], (127,) * 3, 1)
    return path.with_suffix(".png"), "RGBA", False, check


def grey16(path: Path):
    """A 16-bit PNG (microscopy): background 1000, a 'cell' of 3000; both far from 0..255."""
    a = np.full((12, 12), 1000, np.uint16)
    a[3:6, 3:6] = 3000
    Image.fromarray(a).save(path.with_suffix(".png"))

    def check(rgb: np.ndarray) -> None:
        assert (rgb[0, 0] == 0).all() and (rgb[4, 4] == 255).all()
        assert (rgb[..., 0] == rgb[..., 2]).all()
    return path.with_suffix(".png"), "I;16", False, check


def _png16_rgb(path: Path, a: np.ndarray) -> None:
    """A 48-bit (16 bits per sample) RGB PNG written chunk by chunk: Pillow cannot write one."""
    import struct
    import zlib

    h, w, _ = a.shape
    rows = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def colour16(path: Path):
    """A 16-bit colour PNG using 1000..16000 of 0..65535: grey background, a red 'cell'."""
    a = np.full((10, 10, 3), 1000, np.uint16)
    a[2:5, 2:5, 0] = 16000
    _png16_rgb(path.with_suffix(".png"), a)

    def check(rgb: np.ndarray) -> None:
        assert (rgb[0, 0] == 0).all() and _close(rgb[3, 3], RED, 0)
    return path.with_suffix(".png"), "RGB;16", False, check


def palette_transparent(path: Path):
    """A P image whose index 0 (black in the palette) is transparent, index 1 red."""
    p = Image.new("P", (6, 6), 0)
    p.putpalette([0, 0, 0, 255, 0, 0])
    for x in range(3):
        p.putpixel((x, 0), 1)
    p.save(path.with_suffix(".png"), transparency=0)

    def check(rgb: np.ndarray) -> None:
        assert _close(rgb[0, 0], RED, 0) and _close(rgb[3, 3], WHITE, 0)
    return path.with_suffix(".png"), "P", False, check


def cmyk(path: Path):
    """A CMYK JPEG: red (C 0, M 255, Y 255, K 0) left, black (K 255) right."""
    im = Image.new("CMYK", (16, 8), (0, 255, 255, 0))
    im.paste((0, 0, 0, 255), (8, 0, 16, 8))
    im.save(path.with_suffix(".jpg"), quality=95)

    def check(rgb: np.ndarray) -> None:
        assert _close(rgb[4, 2], RED, 12) and _close(rgb[4, 13], (0, 0, 0), 12)
    return path.with_suffix(".jpg"), "CMYK", False, check


def grey_alpha(path: Path):
    """LA: grey 100, transparent on the left half, opaque on the right."""
    alpha = np.zeros((4, 8), np.uint8)
    alpha[:, 4:] = 255
    Image.merge("LA", [Image.new("L", (8, 4), 100), Image.fromarray(alpha)]).save(path.with_suffix(".png"))

    def check(rgb: np.ndarray) -> None:
        assert _close(rgb[1, 1], WHITE, 0) and _close(rgb[1, 6], (100,) * 3, 0)
    return path.with_suffix(".png"), "LA", False, check


def float_tiff(path: Path):
    """A float (F) TIFF from -1.0 to 3.0: scaled by its range, 1.0 is mid-grey."""
    Image.fromarray(np.array([[-1.0, 1.0, 3.0]], np.float32)).save(path.with_suffix(".tif"))

    def check(rgb: np.ndarray) -> None:
        assert rgb[0, :, 0].tolist() == [0, 128, 255]
    return path.with_suffix(".tif"), "F", False, check


def animated_gif(path: Path):
    """Two frames, red then blue: frame 0 (red) is the image."""
    frames = [Image.new("RGB", (6, 6), RED), Image.new("RGB", (6, 6), BLUE)]
    frames[0].save(path.with_suffix(".gif"), save_all=True, append_images=frames[1:])

    def check(rgb: np.ndarray) -> None:
        assert _close(rgb[3, 3], RED, 0)
    return path.with_suffix(".gif"), "P", False, check


def grey_l(path: Path):
    """A plain grey (L) image: three equal channels."""
    Image.new("L", (5, 5), 77).save(path.with_suffix(".png"))

    def check(rgb: np.ndarray) -> None:
        assert (rgb == 77).all()
    return path.with_suffix(".png"), "L", False, check


CASES = {f.__name__: f for f in (exif_jpeg, exif_tiff, rgba_chart, grey16, palette_transparent, cmyk, grey_alpha,
                                  float_tiff, animated_gif, grey_l, colour16)}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("decode")
    return {name: make(tmp / name) for name, make in CASES.items()}


def _check(image: Image.Image, case) -> None:
    _, mode, transposed, check = case
    assert image.mode == "RGB"
    assert image.info[SOURCE_MODE] == mode and image.info[EXIF_TRANSPOSED] is transposed
    check(np.asarray(image))


@pytest.mark.parametrize("name", list(CASES))
def test_decode_image_from_path_bytes_and_pil(files, name) -> None:
    case = files[name]
    path = case[0]
    _check(decode_image(path, "x"), case)
    _check(decode_image(path.read_bytes(), "x"), case)
    _check(decode_image({"bytes": None, "path": path.name}, "x", base=path.parent), case)
    with Image.open(path) as im:
        _check(decode_image(im, "x"), case)


def test_every_rule_through_the_json_loader_and_a_saved_hf_dataset(files, tmp_path) -> None:
    names = list(CASES)
    records = [{"image": str(files[n][0]), "question": f"How many in {n}?", "answer": i}
               for i, n in enumerate(names)]
    (tmp_path / "data.json").write_text(json.dumps(records))
    from_json = get_task("counting").load(tmp_path / "data.json")
    feats = Features({"image": HFImage(), "question": Value("string"), "answer": Value("int64")})
    rows = {"image": [{"bytes": files[n][0].read_bytes(), "path": files[n][0].name} for n in names],
            "question": [r["question"] for r in records], "answer": [r["answer"] for r in records]}
    Dataset.from_dict(rows, features=feats).save_to_disk(tmp_path / "hf")
    from_hf = load_hf(HFDataConfig(hf=str(tmp_path / "hf")), get_task("counting"), split="train")
    for examples in (from_json, from_hf):
        assert [e.answer for e in examples] == [str(i) for i in range(len(names))]
        for ex, name in zip(examples, names):
            _check(ex.image, files[name])


def test_resized_images_keep_the_source_mode(files, tmp_path) -> None:
    path = files["grey16"][0]
    (tmp_path / "d.json").write_text(json.dumps([{"image": str(path), "question": "q", "answer": 1}]))
    ex = get_task("counting").load(tmp_path / "d.json", image_size=24)[0]
    assert ex.image.size == (24, 24) and ex.image.mode == "RGB" and ex.image.info[SOURCE_MODE] == "I;16"


def test_constant_16_bit_image_is_mid_grey() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 4000, np.uint16)).save(buf, "PNG")
    assert (np.asarray(decode_image(buf.getvalue(), "x")) == 128).all()


def test_16_bit_colour_with_its_detail_in_the_low_byte_is_refused(tmp_path) -> None:
    a = np.full((4, 4, 3), 1000, np.uint16)
    a[0, 0] = 3000  # high bytes 3 and 11: 9 levels at 8 bits
    _png16_rgb(tmp_path / "dim.png", a)
    with pytest.raises(DataError, match=r"^x: a 16-bit colour image whose values span only 9 of 256 levels"):
        decode_image(tmp_path / "dim.png", "x")


@pytest.mark.parametrize("value", [0, 1, 9, 65535])
def test_orientation_outside_2_to_8_turns_nothing_and_says_so(value) -> None:
    """Pillow and viewers ignore an orientation other than 2..8: the image is not turned, and the
    decoder does not record a turn (which the grounding size check would blame)."""
    a = np.full((20, 40, 3), 255, np.uint8)
    a[:8, :8] = RED
    exif = Image.Exif()
    exif[0x0112] = value
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", exif=exif)
    image = decode_image(buf.getvalue(), "x")
    assert image.size == (40, 20) and image.info[EXIF_TRANSPOSED] is False
    assert _close(np.asarray(image)[2, 2], RED, 0)


def test_decompression_bomb_is_one_data_error(monkeypatch) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buf, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own setting: 1600 px is over it
    with pytest.raises(DataError, match=r"^row 3: the image is a decompression bomb by Pillow's limit"):
        decode_image(buf.getvalue(), "row 3")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # over twice the limit: Pillow's error
    with pytest.raises(DataError, match="decompression bomb"):
        decode_image(buf.getvalue(), "row 3")


def test_bad_paths_are_one_line(tmp_path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "text.png").write_text("hello")
    cases = {
        "a": "symbolic link loop",
        "folder.png": "image path is a folder, not a file",
        "pipe.png": "image path is not a regular file",
        "gone.png": "image file not found",
        "text.png": "not an image format Pillow can read",
    }
    for name, message in cases.items():
        with pytest.raises(DataError, match=f"^rec 1: .*{message}") as err:
            decode_image(tmp_path / name, "rec 1")
        assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="relative image path 'x.png' but no folder"):
        decode_image("x.png", "rec 1")
    with pytest.raises(DataError, match="neither bytes nor a path"):
        decode_image({"bytes": None, "path": None}, "rec 1")
    records = [{"image": "a", "question": "q", "answer": 1}]
    (tmp_path / "d.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"d\.json: record 0: cannot read image .*: symbolic link loop"):
        get_task("counting").load(tmp_path / "d.json")


class GreyCounting(CountingTask):
    """A plug-in whose generator draws grey and transparent images."""

    name = "grey_counting"

    def example(self, p, seed, index, context=None):
        ex = super().example(p, seed, index, context)
        if index % 2:
            return Example(ex.image.convert("L"), ex.prompt, ex.answer, ex.target, ex.meta)
        rgba = ex.image.convert("RGBA")
        rgba.putalpha(0)
        return Example(rgba, ex.prompt, ex.answer, ex.target, ex.meta)


def test_plug_in_images_get_the_same_rules_through_the_base_class() -> None:
    examples = GreyCounting().synthetic(4, seed=0)
    assert {e.image.mode for e in examples} == {"RGB"}
    assert [e.image.info[SOURCE_MODE] for e in examples] == ["RGBA", "L", "RGBA", "L"]
    assert (np.asarray(examples[0].image) == 255).all()  # fully transparent: white, not black
    grey = np.asarray(examples[1].image)
    assert (grey[..., 0] == grey[..., 1]).all()
    plain = get_task("counting").synthetic(2, seed=0)
    assert all(e.image.info[SOURCE_MODE] == "RGB" for e in plain)
