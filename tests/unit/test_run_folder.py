"""run_folder.RunRecord / RunInfo: the run folder's files by name, and run.json's one writer and reader."""

import json

import pytest

from dlsr_deploy.errors import ConfigError
from dlsr_deploy.run_folder import RUN_FILES, RUN_JSON, RunInfo, RunRecord, write_started


def test_run_json_round_trips_strictly(tmp_path):
    rec = RunRecord(tmp_path)
    info = RunInfo(status="done", identity={"data": ["a.npz"]}, n_images=10, holdout_indices=[1, 4], limit=None)
    rec.write_info(info)
    assert rec.read_info() == info and RunInfo.from_dict(info.to_dict()) == info
    assert json.loads((tmp_path / RUN_JSON).read_text())["n_images"] == 10 and RUN_JSON in RUN_FILES


def test_run_json_refuses_unknown_fields_and_garbage(tmp_path):
    rec = RunRecord(tmp_path)
    (tmp_path / RUN_JSON).write_text(json.dumps({"status": "done", "surprise": 1}))
    with pytest.raises(ConfigError, match=r"unknown fields \['surprise'\]"):
        rec.read_info()
    (tmp_path / RUN_JSON).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        rec.read_info()
    (tmp_path / RUN_JSON).write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object with a 'status'"):
        rec.read_info()
    with pytest.raises(ConfigError, match="cannot read"):
        RunRecord(tmp_path / "nowhere").read_info()


def test_a_started_run_is_a_run_record(tmp_path):
    write_started(tmp_path, {"data": ["x"]}, {"native_size_source": "given"})
    info = RunRecord(tmp_path).read_info()
    assert info.status == "training" and info.identity == {"data": ["x"]} and info.native_size_source == "given"


def test_the_default_run_json_reads(tmp_path):
    """A run.json written by the training pipeline before RunInfo existed has only known fields."""
    keys = [
        "status", "identity", "data", "data_sha256", "flip", "feature_engine", "feature_parity", "feature_seconds",
        "limit", "skipped_files", "native_size", "native_size_source", "n_images", "n_train", "n_train_vectors",
        "n_holdout", "holdout_indices", "epochs", "final_loss", "epochs_run", "best_epoch", "heldout_losses",
        "best_heldout_loss", "model", "train_seconds", "density_heads", "density_seconds", "total_seconds",
    ]  # fmt: skip
    (tmp_path / RUN_JSON).write_text(json.dumps({k: None for k in keys} | {"status": "done"}))
    assert RunRecord(tmp_path).read_info().status == "done"
