"""Export the students to ONNX (dynamic batch and sequence axes), check parity, quantise.

Parity is checked on fresh random inputs (random token ids and lengths, not the training
data): max |onnx - torch| over the logits must stay within ``tolerance`` (1e-4).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import cast

import numpy as np
import torch

from models.students import CrossEncoderStudent, TwoTowerStudent

OPSET = 17


def _export(module, args, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> Path:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    return path


def export_cross_encoder(model: CrossEncoderStudent, out_dir: Path) -> Path:
    ids = torch.randint(1000, 2000, (2, 12))
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    seq = {0: "batch", 1: "sequence"}
    return _export(model, (ids, mask, types), Path(out_dir) / "cross_encoder.onnx",
                   ["input_ids", "attention_mask", "token_type_ids"], ["logits"],
                   {"input_ids": seq, "attention_mask": seq, "token_type_ids": seq, "logits": {0: "batch"}})


def export_two_tower(model: TwoTowerStudent, out_dir: Path) -> tuple[Path, Path]:
    ids = torch.randint(1000, 2000, (2, 12))
    mask = torch.ones_like(ids)
    seq = {0: "batch", 1: "sequence"}
    tower = _export(model.tower, (ids, mask), Path(out_dir) / "item_encoder.onnx",
                    ["input_ids", "attention_mask"], ["embedding"],
                    {"input_ids": seq, "attention_mask": seq, "embedding": {0: "batch"}})
    first_layer = cast(torch.nn.Linear, model.head.mlp[0])
    dim = first_layer.in_features // 3
    u, v = torch.randn(2, dim), torch.randn(2, dim)
    head = _export(model.head, (u, v), Path(out_dir) / "pair_head.onnx", ["u", "v"], ["logits"],
                   {"u": {0: "batch"}, "v": {0: "batch"}, "logits": {0: "batch"}})
    return tower, head


def _random_batch(vocab: int, batch: int, seq: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=gen)
    lengths = torch.randint(3, seq + 1, (batch,), generator=gen)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def cross_parity(model: CrossEncoderStudent, path: Path, vocab: int, seed: int = 0) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    model.eval()
    for batch, seq in ((1, 7), (5, 33), (3, 64)):
        ids, mask = _random_batch(vocab, batch, seq, seed + batch)
        types = torch.zeros_like(ids)
        with torch.inference_mode():
            expected = model(ids, mask, types).numpy()
        got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                 "token_type_ids": types.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def two_tower_parity(model: TwoTowerStudent, tower_path: Path, head_path: Path, vocab: int,
                     seed: int = 0) -> float:
    import onnxruntime as ort

    tower = ort.InferenceSession(str(tower_path), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(head_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    model.eval()
    for batch, seq in ((1, 9), (4, 40)):
        ids_a, mask_a = _random_batch(vocab, batch, seq, seed + 10 * batch)
        ids_b, mask_b = _random_batch(vocab, batch, seq, seed + 10 * batch + 1)
        with torch.inference_mode():
            expected = model(ids_a, mask_a, ids_b, mask_b).numpy()
        u = tower.run(None, {"input_ids": ids_a.numpy(), "attention_mask": mask_a.numpy()})[0]
        v = tower.run(None, {"input_ids": ids_b.numpy(), "attention_mask": mask_b.numpy()})[0]
        got = head.run(None, {"u": u, "v": v})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def quantize_int8(path: Path) -> Path:
    """Dynamic int8 quantisation of the weights (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_name(path.stem + ".int8.onnx")
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    return out


def export_students(cross: CrossEncoderStudent, tower: TwoTowerStudent, tokenizer, out_dir: Path,
                    max_length: int, seed: int = 0) -> tuple[dict[str, str], dict[str, float]]:
    """Both students as one servable bundle: (artifacts, parity). ``models.runtime.Students``
    loads exactly these artifacts; ``max_length`` travels with them so serving tokenises
    like training did."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts = {"dir": str(out_dir), "max_length": str(max_length)}
    artifacts["cross_encoder"] = str(export_cross_encoder(cross, out_dir))
    tower_path, head_path = export_two_tower(tower, out_dir)
    artifacts["item_encoder"], artifacts["pair_head"] = str(tower_path), str(head_path)
    tokenizer.save_pretrained(out_dir / "tokenizer")
    artifacts["tokenizer"] = str(out_dir / "tokenizer")
    vocab = tokenizer.vocab_size
    parity = {"cross": cross_parity(cross, Path(artifacts["cross_encoder"]), vocab, seed),
              "two_tower": two_tower_parity(tower, tower_path, head_path, vocab, seed)}
    return artifacts, parity
