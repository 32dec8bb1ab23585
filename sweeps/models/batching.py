"""Turn (image, prompt, answer) examples into model inputs for training and for greedy generation.

Both paths render the same prompt text (the processor's chat template when it has one, else a plain
"Question/Answer" format), so the model is trained on exactly the prefix it later generates from.
A training row is the processor's encoding of the prompt followed by the tokenized answer and eos;
only the answer and eos positions are supervised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from sweeps.errors import SlsweepError

IGNORE_INDEX = -100
# Processors whose token_type_ids mark the causal suffix (1) after a bidirectional prefix (0): the
# answer of a training row is suffix. (Gemma-3's mark image tokens instead: the answer stays 0.)
_PREFIX_LM_PROCESSORS = ("PaliGemmaProcessor",)


class ChatTemplateError(SlsweepError):
    """The processor's chat template cannot render an image + question prompt."""


class Batcher:
    """Builds train and generation batches for one processor.

    Args:
        processor: a `transformers` multimodal processor (tokenizer + image processor).
        max_new_tokens: generation length used by `generate`.
        answer_prefix: text put between the prompt and the answer, as part of the prompt. Default:
            a space when the rendered prompt ends with ":" (e.g. "Answer:", SmolVLM's "Assistant:"),
            else nothing (chat templates that end with a newline).
    """

    def __init__(self, processor: Any, *, max_new_tokens: int = 16, answer_prefix: str | None = None) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_new_tokens = max_new_tokens
        self.answer_prefix = answer_prefix
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer of {type(processor).__name__} has no eos token; answers need one")
        self.eos_id: int = int(self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad_id: int = int(pad) if pad is not None else self.eos_id
        self.uses_chat_template = bool(getattr(processor, "chat_template", None))
        self.prefix_lm = type(processor).__name__ in _PREFIX_LM_PROCESSORS
        self._prompt_cache: dict[str, str] = {}
        self._answer_cache: dict[str, list[int]] = {}

    # ----------------------------------------------------------------------------------- prompts
    def prompt_text(self, prompt: str) -> str:
        """The full prompt string for one image and one question, ending where the answer starts."""
        text = self._prompt_cache.get(prompt)
        if text is None:
            if self.uses_chat_template:
                text = self._chat_prompt(prompt)
            else:
                image_token = getattr(self.processor, "image_token", None) or "<image>"
                text = f"{image_token}\nQuestion: {prompt}\nAnswer:"
            prefix = self.answer_prefix
            if prefix is None:
                prefix = " " if text.endswith(":") else ""
            text += prefix
            self._prompt_cache[prompt] = text
        return text

    def _chat_prompt(self, prompt: str) -> str:
        """The chat template's prompt: multimodal content parts, else (a text-only LLM's template, e.g.
        Qwen3's, rejects list content) the image token inside a plain string.

        Raises:
            ChatTemplateError: the template renders neither form.
        """
        image_token = getattr(self.processor, "image_token", None) or "<image>"
        forms = ([{"type": "image"}, {"type": "text", "text": prompt}], f"{image_token}\n{prompt}")
        problems = []
        for content in forms:
            messages = [{"role": "user", "content": content}]
            try:
                text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception as exc:  # noqa: BLE001 - jinja errors of a user's template: try the next form
                problems.append(" ".join(f"{type(exc).__name__}: {exc}".split())[:200])
                continue
            if image_token in text:
                return text
            problems.append("the rendered prompt has no image token")
        where = getattr(self.tokenizer, "name_or_path", "") or "the model folder"
        raise ChatTemplateError(
            f"{where}: the processor's chat template renders neither multimodal nor text content with the "
            f"image token ({'; '.join(problems)}); fix or remove `chat_template` in that folder "
            "(chat_template.jinja / processor or tokenizer config), or set a template that accepts "
            "[{'type': 'image'}, {'type': 'text'}] content")

    def answer_ids(self, answer: str) -> list[int]:
        """The answer's token ids as training supervises them: tokenized alone, then eos."""
        ids = self._answer_cache.get(answer)
        if ids is None:
            ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [self.eos_id]
            if len(self._answer_cache) < 100_000:
                self._answer_cache[answer] = ids
        return ids

    def _encode_prompts(self, images: Sequence[Image.Image], prompts: Sequence[str], side: str) -> dict[str, Any]:
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        if not prompts:
            raise ValueError("empty batch")
        texts = [self.prompt_text(p) for p in prompts]
        # One image per example; processors that accept nested lists get [[img], [img], ...].
        # A rendered chat template already holds its special tokens (Gemma's "<bos>"): add none twice.
        enc = self.processor(images=list(images), text=texts, padding=True, padding_side=side,
                             return_tensors="pt", add_special_tokens=not self.uses_chat_template)
        enc.pop("labels", None)  # PaliGemma's processor derives labels from its token types: ours are built below
        return enc

    # ------------------------------------------------------------------------------------ batches
    def train_batch(self, images: Sequence[Image.Image], prompts: Sequence[str],
                    answers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs with `labels` for teacher-forced training (right padding).

        Returns:
            The processor's tensors (pixel_values etc.) plus input_ids, attention_mask and labels,
            each [B, T]. labels equal input_ids on the answer and eos positions and are -100 on the
            prompt, image and padding positions (not shifted: the model/loss shifts).
        """
        if len(answers) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        enc = self._encode_prompts(images, prompts, side="right")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        prompt_lens = mask.sum(dim=1).tolist()
        answer_ids = [self.answer_ids(a) for a in answers]
        total = max(p + len(a) for p, a in zip(prompt_lens, answer_ids))
        batch, width = ids.shape
        grow = total - width

        # Other per-token outputs grow with the answer: attention_mask is 1 there; a prefix-LM's
        # (PaliGemma's) token_type_ids are 1 (the causal suffix: 0 would put the answer in the
        # bidirectional prefix, where the prompt could see it); other type ids are 0 (text).
        answer_ones = ("attention_mask", "token_type_ids") if self.prefix_lm else ("attention_mask",)
        aligned = [k for k, v in enc.items()
                   if k != "input_ids" and not k.startswith(("pixel", "image"))
                   and isinstance(v, torch.Tensor) and v.shape == ids.shape]
        new_ids = torch.cat([ids, ids.new_full((batch, grow), self.pad_id)], dim=1)
        labels = torch.full_like(new_ids, IGNORE_INDEX)
        extended = {k: torch.cat([enc[k], enc[k].new_zeros((batch, grow))], dim=1) for k in aligned}
        for row, (start, a_ids) in enumerate(zip(prompt_lens, answer_ids)):
            # Right padding: the prompt occupies [0, start); the answer overwrites padding after it.
            end = start + len(a_ids)
            a = torch.tensor(a_ids, dtype=new_ids.dtype)
            new_ids[row, start:end] = a
            labels[row, start:end] = a
            for k in aligned:
                extended[k][row, start:end] = 1 if k in answer_ones else 0
        return {**enc, **extended, "input_ids": new_ids, "labels": labels}

    def generation_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs for `model.generate` (left padding); every row ends where the answer starts.

        Returns:
            The processor's tensors; input_ids and attention_mask are [B, T].
        """
        return dict(self._encode_prompts(images, prompts, side="left"))

    def decode(self, generated: torch.Tensor, prompt_length: int) -> list[str]:
        """Decode the new tokens of `generate` output [B, T_prompt + T_new], special tokens removed."""
        new = generated[:, prompt_length:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [t.strip() for t in texts]

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[str]:
        """Greedy answers for a batch: `generation_batch` -> `model.generate` -> `decode`."""
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in self.generation_batch(images, prompts).items()}
        out = model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                             pad_token_id=self.pad_id)
        return self.decode(out, batch["input_ids"].shape[1])
