"""The Hugging Face drop-in with a real Trainer step on a tiny locally built causal LM (no hub)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Trainer,
    TrainingArguments,
)
from transformers.modeling_outputs import CausalLMOutputWithPast  # noqa: E402

from sl_core import digit_token_ids, make_compute_loss_func, soft_label_cross_entropy  # noqa: E402
from sl_core.hf import shift_labels  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "count", "box", "is", ",", "answer", ":"] + [str(d) for d in range(10)]
TEXTS = ["count is 7", "box : 1 2 , 3 4 , 5 6 , 7 8", "answer : 4 2", "count is 1 9 , box : 0 5"]
PROMPT_WORDS = 2  # the first two words are the prompt (labels -100), the rest is supervised


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A tokenizer with single-digit tokens and a 1-layer Qwen2, both saved and reloaded from disk."""
    root: Path = tmp_path_factory.mktemp("tiny_hf")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(root / "tok")
    tokenizer = AutoTokenizer.from_pretrained(root / "tok")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=False, pad_token_id=0)
    Qwen2ForCausalLM(config).save_pretrained(root / "model")
    return tokenizer, root / "model"


def _dataset(tokenizer) -> list[dict[str, torch.Tensor]]:
    """Right-padded examples of different lengths, so micro-batches hold different numbers of targets."""
    enc = [tokenizer(t)["input_ids"] for t in TEXTS]
    width = max(len(e) for e in enc)
    rows = []
    for ids in enc:
        pad = width - len(ids)
        labels = [-100] * PROMPT_WORDS + ids[PROMPT_WORDS:] + [-100] * pad
        rows.append({"input_ids": torch.tensor(ids + [0] * pad),
                     "attention_mask": torch.tensor([1] * len(ids) + [0] * pad),
                     "labels": torch.tensor(labels)})
    return rows


def _train_one_step(model_dir: Path, data, out: Path, batch: int, accum: int, loss_func) -> tuple[dict, float]:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=batch, gradient_accumulation_steps=accum, max_steps=1,
        learning_rate=1.0, optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, compute_loss_func=loss_func)
    trainer.train()
    # SGD with lr 1: the update is minus the gradient
    grads = {k: before[k] - v.detach() for k, v in trainer.model.named_parameters()}
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return grads, float(logged[0])


def test_trainer_step_and_gradient_accumulation_match_full_batch(tiny, tmp_path: Path) -> None:
    tokenizer, model_dir = tiny
    digits = digit_token_ids(tokenizer)
    loss_func = make_compute_loss_func(digits, "soft_label", eta=0.3, lam=2.0, psi="triangular")
    data = _dataset(tokenizer)

    full_grads, full_loss = _train_one_step(model_dir, data, tmp_path / "full", batch=4, accum=1,
                                            loss_func=loss_func)
    acc_grads, acc_loss = _train_one_step(model_dir, data, tmp_path / "accum", batch=2, accum=2,
                                          loss_func=loss_func)

    # the step's loss equals the loss of the whole batch, computed directly
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    batch = {k: torch.stack([row[k] for row in data]) for k in data[0]}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    direct = soft_label_cross_entropy(logits, shift_labels(batch["labels"]), digits, eta=0.3, lam=2.0).detach()
    assert full_loss == pytest.approx(direct.item(), rel=1e-4)
    assert acc_loss == pytest.approx(full_loss, rel=1e-4)
    assert any(g.abs().max() > 0 for g in full_grads.values())
    for name, g in full_grads.items():
        torch.testing.assert_close(acc_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)

    # the check has teeth: a loss that ignores num_items_in_batch (per-micro-batch means) does not match
    def naive(outputs, labels, num_items_in_batch=None):
        return loss_func(outputs, labels)

    naive_grads, _ = _train_one_step(model_dir, data, tmp_path / "naive", batch=2, accum=2, loss_func=naive)
    assert not all(torch.allclose(naive_grads[k], g, rtol=1e-3, atol=1e-5) for k, g in full_grads.items())


def test_hard_family_equals_the_models_own_loss(tiny) -> None:
    tokenizer, model_dir = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    data = _dataset(tokenizer)
    batch = {k: torch.stack([row[k] for row in data]) for k in data[0]}
    out = model(**batch)
    hard = make_compute_loss_func(digit_token_ids(tokenizer), "hard")
    soft0 = make_compute_loss_func(digit_token_ids(tokenizer), "soft_label", eta=0.0)
    torch.testing.assert_close(hard(out, batch["labels"]), out.loss)
    torch.testing.assert_close(soft0(out, batch["labels"]), out.loss)
    count = int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(hard(out, batch["labels"], num_items_in_batch=torch.tensor(2 * count)), out.loss / 2)


def test_accepts_model_outputs_dicts_and_tuples() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 20, generator=g)
    labels = torch.randint(0, 20, (2, 6), generator=g)
    fn = make_compute_loss_func(list(range(10)), "soft_label", eta=0.1)
    expected = soft_label_cross_entropy(logits, shift_labels(labels), list(range(10)), eta=0.1)
    for outputs in (CausalLMOutputWithPast(logits=logits), {"logits": logits}, (logits,)):
        torch.testing.assert_close(fn(outputs, labels), expected)
    # the logits are never sliced: the last position is simply ignored
    assert shift_labels(labels)[:, -1].eq(-100).all()
    torch.testing.assert_close(shift_labels(labels)[:, :-1], labels[:, 1:])
    with pytest.raises(ValueError, match="labels: compute_loss_func needs"):
        fn(CausalLMOutputWithPast(logits=logits), None)
    with pytest.raises(ValueError, match="labels shape"):
        fn(CausalLMOutputWithPast(logits=logits), labels[:, :-1])
    with pytest.raises(ValueError, match="outputs: expected a model output"):
        fn(object(), labels)
    with pytest.raises(ValueError, match="eta must be in"):
        make_compute_loss_func(list(range(10)), "soft_label", eta=3.0)
