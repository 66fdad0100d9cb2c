"""A run's result survives the embedded run's result.json (the launcher reads what the child wrote)."""

from training import RunResult


def test_a_result_reads_back_as_written(tmp_path):
    result = RunResult(version="v1", processes=2, metrics={"cross": {"spearman_vs_labels": 0.5}},
                       artifacts={"cross_encoder": "/m/cross.onnx"}, minutes=1.5,
                       decision={"promoted": True, "incumbent_version": "v0"}, report={"json": "/r.json"})
    (tmp_path / "result.json").write_text(result.to_json())
    assert RunResult.read(tmp_path / "result.json") == result


def test_a_rejected_run_retired_nothing():
    rejected = RunResult(version="v2", decision={"promoted": False, "incumbent_version": "v1"})
    assert not rejected.promoted and rejected.incumbent_version is None
    promoted = RunResult(version="v2", decision={"promoted": True, "incumbent_version": "v1"})
    assert promoted.promoted and promoted.incumbent_version == "v1"

