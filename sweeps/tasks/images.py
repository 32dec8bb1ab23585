"""The one image decoder of every loader: a file, bytes, a Hugging Face `Image` value or a PIL image
becomes the 8-bit RGB picture a person sees when opening the file.

Used by the JSON / folder loaders (`sweeps.tasks.base.open_image`, `ImageCache`), Hugging Face
datasets (`sweeps.tasks.hf`) and plug-in tasks through the task base class (`Task.synthetic`,
`as_rgb`). The rules are those of `datasets` (which applies the EXIF orientation when it decodes an
`Image` feature) and transformers (whose `convert_to_rgb` composites alpha on white):

1. **Frame 0** of an animated or multi-page file (GIF, APNG, WebP, TIFF pages).
2. **EXIF orientation applied** (`PIL.ImageOps.exif_transpose`): the image is the one viewers and
   `datasets` show, and so are the boxes that refer to it (annotation tools draw on the displayed
   image; see docs/data.md). `image.info["slsweep_exif_transposed"]` says whether the file's
   pixels were rotated or flipped.
3. **Transparency composited on white**: modes with alpha (RGBA, LA, PA, La, RGBa) and images with a
   transparent colour or palette index (`info["transparency"]`, e.g. a P image) are laid over a
   white background, so a chart saved with a transparent background stays a chart on white instead
   of turning black.
4. **16-bit and 32-bit integer and float images** (I;16, I;16B, I;16L, I;16N, I, F) are scaled to 8
   bits by their own range: value v becomes round(255 * (v - min) / (max - min)) over the finite
   pixels (a 16-bit microscopy image that uses 0..4000 of 0..65535 is not nearly black, and one
   whose values exceed 255 is not white). A constant image (min == max) has no range: it becomes
   mid-grey (128) everywhere. NaN and -inf pixels of a float image become 0, +inf pixels 255.
   **16-bit colour** (a 48/64-bit RGB/RGBA PNG or TIFF): Pillow has no 16-bit colour mode and
   decodes only the high byte of each sample, so a file that uses 0..4095 of 0..65535 would be
   nearly black. After decoding (and compositing, rule 3) its colour values are stretched by their
   own range, as above, over all three channels together (colour balance kept); one whose high
   bytes span fewer than `MIN_16BIT_COLOUR_LEVELS` levels has its detail in the low byte that Pillow
   drops, and is refused with one line (save it as 8-bit, or as 16-bit greyscale).
5. **Every other mode** (1, L, P without transparency, CMYK, YCbCr, RGBX, ...) by Pillow's own
   conversion to RGB (a grey image becomes three equal channels; CMYK is converted without a colour
   profile, as transformers and `datasets` do).
6. **Decompression-bomb limit kept**: an image of more than `PIL.Image.MAX_IMAGE_PIXELS` pixels
   (Pillow's warning threshold, 89 million by default) is refused rather than decoded.
7. **Fully decoded** here, so a truncated or corrupt file fails now, naming the row, not in a worker.

Every failure is one `DataError` line that starts with the caller's `loc` (file, record, column):
a missing file, a folder, a symlink loop, an unreadable or non-regular file, an unknown format, a
decompression bomb, an undecodable mode.

The result is a new RGB image whose `info` holds `slsweep_source_mode` (the file's own mode, e.g.
"I;16", "RGBA", "P") and `slsweep_exif_transposed` (bool), for `slsweep data` and for tests.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps

from .base import DataError

__all__ = ["SOURCE_MODE", "EXIF_TRANSPOSED", "as_rgb", "check_image_file", "decode_image", "displayed_size"]

SOURCE_MODE = "slsweep_source_mode"
"""`image.info` key: the mode of the source image before conversion (e.g. "I;16", "RGBA")."""
EXIF_TRANSPOSED = "slsweep_exif_transposed"
"""`image.info` key: True when the EXIF orientation rotated or flipped the source's pixels."""

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)
MIN_16BIT_COLOUR_LEVELS = 16
"""Fewest high-byte levels a 16-bit colour image may span (rule 4): below it, it is refused."""


def decode_image(source: Any, loc: str, *, base: Path | None = None) -> Image.Image:
    """The picture in `source` as a new 8-bit RGB image, decoded by the module's rules.

    Args:
        source: a path (str or Path), the file's bytes, a Hugging Face `Image` value
            {"bytes": bytes or None, "path": str or None} (bytes first, as `datasets` does), or a
            PIL image.
        loc: where the image comes from ("file: record 3: field 'image'"), the start of every
            DataError message.
        base: the folder a relative path is relative to (None: a relative path is refused, since
            the process's current folder is no place a dataset names).

    Returns:
        An RGB `PIL.Image.Image` (size = the displayed size, after the EXIF orientation), with
        `info["slsweep_source_mode"]` and `info["slsweep_exif_transposed"]` set.

    Raises:
        DataError: the source is no image or cannot be read or decoded (one line, starting `loc`).
    """
    fp, what = _source(source, loc, base)
    return _open_and_convert(fp, loc, what)


def displayed_size(source: Any, loc: str, *, base: Path | None = None) -> tuple[int, int]:
    """(width, height) `decode_image(source, ...)` would return, read from the file's header only
    (no pixel is decoded: fast enough for every row of a large dataset).

    Same `source`, `loc` and `base` as `decode_image`. The EXIF orientation is read where the header
    holds it (JPEG, TIFF, WebP; a PNG's eXIf chunk before its pixels); a PNG whose eXIf chunk follows
    its pixels is taken as unturned (reading it would decode the file).

    Raises:
        DataError: as `decode_image` for a missing, unreadable or unidentifiable file (one line,
            starting `loc`); a truncated or corrupt body is not noticed here.
    """
    fp, what = _source(source, loc, base)
    if isinstance(fp, Image.Image):
        return fp.size if not _orientation(fp, loc) else _displayed(fp)
    if isinstance(fp, Path):
        check_image_file(fp, loc)
    with _reading(loc, what), Image.open(fp) as im:
        if im.format == "PNG" and "exif" not in im.info:  # getexif() would decode the whole file
            return im.size
        return _displayed(im)


def _displayed(image: Image.Image) -> tuple[int, int]:
    w, h = image.size
    turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)  # the ones that swap axes
    return (h, w) if turned else (w, h)


def _source(source: Any, loc: str, base: Path | None) -> tuple[Path | io.BytesIO | Image.Image, str]:
    """What `decode_image` opens for `source`, and how its messages name it."""
    if isinstance(source, Image.Image):
        return source, "the image"
    if isinstance(source, dict):
        if source.get("bytes"):
            source = source["bytes"]
        elif isinstance(source.get("path"), str) and source["path"]:
            source = source["path"]
        else:
            raise DataError(f"{loc}: the image value has neither bytes nor a path")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), "the image"
    if isinstance(source, (str, Path)) and str(source).strip():
        path = _resolve(source, base, loc)
        return path, f"image {path}"
    raise DataError(f"{loc}: not an image (expected a path, bytes, an Image value or a PIL image), "
                    f"got {type(source).__name__}")


def as_rgb(image: Image.Image, loc: str) -> Image.Image:
    """`image` when it is already a plain RGB picture (no transparency, no EXIF orientation), with
    the `info` keys set; else `decode_image(image, loc)`. For images a task made in memory."""
    if not isinstance(image, Image.Image):
        raise DataError(f"{loc}: the example's image is a {type(image).__name__}, not a PIL image")
    if image.mode == "RGB" and not _has_transparency(image) and not _orientation(image, loc):
        image.info.setdefault(SOURCE_MODE, "RGB")
        image.info.setdefault(EXIF_TRANSPOSED, False)
        return image
    return decode_image(image, loc)


# --------------------------------------------------------------------------- reading


def _resolve(source: str | Path, base: Path | None, loc: str) -> Path:
    path = Path(os.path.expanduser(str(source)))
    if not path.is_absolute():
        if base is None:
            raise DataError(f"{loc}: relative image path {str(source)!r} but no folder it is relative to "
                            "(give an absolute path)")
        path = base / path
    return path


def _open_and_convert(fp: Path | io.BytesIO | Image.Image, loc: str, what: str) -> Image.Image:
    if isinstance(fp, Path):
        check_image_file(fp, loc)
    with _reading(loc, what):
        if isinstance(fp, Image.Image):
            return _convert(fp, loc)
        with Image.open(fp) as im:
            im.seek(0)
            return _convert(im, loc)
    raise AssertionError("unreachable")  # _reading re-raises every exception as a DataError


@contextmanager
def _reading(loc: str, what: str) -> Iterator[None]:
    """Pillow's exceptions while reading `what` as one DataError line starting `loc`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except DataError:
        raise
    except _BOMB as exc:
        raise DataError(f"{loc}: {what} is a decompression bomb by Pillow's limit "
                        f"(Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels): {exc}") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{loc}: cannot read {what}: not an image format Pillow can read") from None
    except OSError as exc:
        raise DataError(f"{loc}: cannot read {what}: {_os_reason(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises SyntaxError, ValueError, ... for corrupt files
        raise DataError(f"{loc}: cannot read {what}: {type(exc).__name__}: {exc}") from None


def check_image_file(path: Path, loc: str) -> None:
    """DataError (one line starting `loc`) unless `path` is an existing regular file (a stat, no
    read: before PIL blocks on a FIFO, say, and cheap enough for every row of a dataset)."""
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise DataError(f"{loc}: image file not found: {path}") from None
        raise DataError(f"{loc}: cannot read image {path}: {_os_reason(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{loc}: image path is a folder, not a file: {path}")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{loc}: image path is not a regular file: {path}")


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


# --------------------------------------------------------------------------- converting


def _orientation(image: Image.Image, loc: str) -> bool:
    """True when `image` carries an EXIF orientation that turns or flips it (2..8; 1 is normal, and
    `ImageOps.exif_transpose` and viewers ignore any other value)."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation)
    except OSError:  # a truncated file (PNG's getexif() decodes it): the caller's "cannot read image" line
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed EXIF block
        raise DataError(f"{loc}: cannot read the image's EXIF data: {type(exc).__name__}: {exc}") from None
    return value in range(2, 9)


def _convert(image: Image.Image, loc: str) -> Image.Image:
    source_mode = image.mode
    # Read before load(): Pillow's TIFF loader applies the orientation itself and drops the tag (the
    # exif_transpose below then finds none and leaves the turned pixels as they are).
    # Tiles are gone after load() (PNG's getexif() loads, too).
    colour16 = image.mode in ("RGB", "RGBA") and _sixteen_bit_samples(image)
    transposed = _orientation(image, loc)
    image.load()  # decode every pixel now: truncated files fail here (OSError: the caller's one line)
    try:
        if transposed:
            image = ImageOps.exif_transpose(image)
        if image.mode in _HIGH_DEPTH_MODES:
            out = _scale_to_8bit(image)
        elif _has_transparency(image):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            out = Image.alpha_composite(white, rgba).convert("RGB")
        elif image.mode == "RGB":
            out = image.copy()
        else:
            out = image.convert("RGB")
    except DataError:
        raise
    except _BOMB:
        raise
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's conversions raise ValueError for odd modes
        raise DataError(f"{loc}: cannot convert image mode {source_mode} to RGB: {type(exc).__name__}: {exc}"
                        ) from None
    if colour16:
        out = _stretch_16bit_colour(out, loc)
        source_mode = f"{source_mode};16"
    out.info = {SOURCE_MODE: source_mode, EXIF_TRANSPOSED: transposed}
    return out


def _sixteen_bit_samples(image: Image.Image) -> bool:
    """True when the file stores 16 bits per colour sample (a decoder raw mode such as "RGB;16B")."""
    for tile in getattr(image, "tile", None) or ():
        raw = tile.args[0] if isinstance(tile.args, tuple) and tile.args else tile.args
        if isinstance(raw, str) and raw.split(";")[-1] in ("16", "16B", "16L", "16N"):
            return True
    return False


def _stretch_16bit_colour(image: Image.Image, loc: str) -> Image.Image:
    """Rule 4 for 16-bit colour: the high bytes Pillow kept, stretched by their range (all channels)."""
    a = np.asarray(image).astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo + 1 < MIN_16BIT_COLOUR_LEVELS:
        raise DataError(f"{loc}: a 16-bit colour image whose values span only {int(hi - lo) + 1} of 256 levels "
                        "at 8 bits (Pillow decodes 16-bit colour at 8 bits; the detail is in the dropped low "
                        "byte): save it as 8-bit or as 16-bit greyscale")
    if lo == 0 and hi == 255:
        return image
    return Image.fromarray(np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8))


def _has_transparency(image: Image.Image) -> bool:
    """An alpha channel, a transparent colour / palette index, or a palette with alpha (rule 3)."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """A grey RGB image from a 16/32-bit integer or float image, by its finite min..max (rule 4)."""
    a = np.asarray(image).astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        grey = np.full(a.shape, 128, dtype=np.uint8)
    else:
        lo, hi = float(a[finite].min()), float(a[finite].max())
        if hi == lo:
            grey = np.full(a.shape, 128, dtype=np.uint8)
        else:
            a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
            grey = np.rint((a - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
