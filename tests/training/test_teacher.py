"""The teacher's choices that a GPU would make: checked here without one."""


def test_lora_only_for_a_pretrained_teacher_on_a_gpu():
    """The tiny teacher is built from scratch: LoRA would freeze a random base that then learns
    nothing, so CUDA alone must not switch it on (the README: LoRA only with ``--teacher PATH``)."""
    from training.teacher import wants_lora

    assert not wants_lora(None, "cuda") and not wants_lora("", "cuda")
    assert wants_lora("/models/qwen", "cuda")
    assert not wants_lora("/models/qwen", "cpu")
    assert wants_lora(None, "cpu", lora=True) and not wants_lora("/models/qwen", "cuda", lora=False)
