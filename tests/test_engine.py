"""Engine selection and the SAM + XMem engine end to end through /predict, without real weights.

SAM: a tiny SAM built from segment-anything's own classes, saved as a checkpoint file.
XMem: the golden-reference weights (full official architecture) saved as a ``.pth`` file.
Both load through the same code path as a user's official checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from label_studio_sdk.converter.brush import decode_rle

from backend.config import Settings
from backend.engine import EngineError, build_engine, refine_config, resolve_engine_name
from backend.segmenter import sam as sam_module
from backend.server.app import create_app
from bench.xmem_golden import save_golden_weights
from model import TrackAnythingModel
from tests.conftest import SHARED, load_fixture, write_frames
from tests.segmenter.conftest import TINY_TYPE, build_tiny_sam

GOLDEN = SHARED / "xmem-golden"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("weights")
    sam_path = root / "sam_tiny.pth"
    torch.manual_seed(0)
    torch.save(build_tiny_sam().state_dict(), sam_path)
    xmem_path = root / "xmem-golden.pth"
    save_golden_weights(GOLDEN, xmem_path)
    return sam_path, xmem_path


@pytest.fixture(autouse=True)
def tiny_type(monkeypatch):
    monkeypatch.setitem(sam_module.MODEL_BUILDERS, TINY_TYPE, build_tiny_sam)


def settings_for(tmp_path, sam: Path | None, xmem: Path | None, **kw) -> Settings:
    return Settings(
        sam_checkpoint=sam,
        xmem_checkpoint=xmem,
        sam_model_type=TINY_TYPE,
        internal_size=0,
        local_files_root=tmp_path / "media",
        model_dir=tmp_path / "md",
        **kw,
    )


def test_auto_selection(tmp_path):
    assert resolve_engine_name(settings_for(tmp_path, None, None)) == "classical"
    assert resolve_engine_name(settings_for(tmp_path, Path("s"), None)) == "classical"
    assert resolve_engine_name(settings_for(tmp_path, Path("s"), Path("x"))) == "sam-xmem"
    assert resolve_engine_name(settings_for(tmp_path, None, None, engine="sam-xmem")) == "sam-xmem"


def test_refine_defaults():
    assert refine_config(Settings(), "classical").mode == "off"
    assert refine_config(Settings(), "sam-xmem").mode == "off", "CPU: a SAM encode costs ~17 s"
    assert refine_config(Settings(refine="auto"), "sam-xmem").max_frames == 2
    gpu = refine_config(Settings(device="cuda:1"), "sam-xmem")
    assert gpu.mode == "auto" and gpu.max_frames == 20
    assert (
        refine_config(Settings(refine="always", refine_max_frames=5), "classical").max_frames == 5
    )


def test_sam_xmem_through_predict(tmp_path, checkpoints):
    sam, xmem = checkpoints
    write_frames(tmp_path / "media", "frames", 5)
    settings = settings_for(tmp_path, sam, xmem, predict_budget_s=120)
    model = TrackAnythingModel(settings)
    client = create_app(settings, model, metrics=model.metrics).test_client()
    health = client.get("/health").get_json()
    assert health["engine"] == "sam-xmem" and health["status"] == "UP"
    assert health["checkpoints"] == {"sam": True, "xmem": True, "sam2": False}
    assert (
        client.post("/setup", json={"schema": load_fixture("20_")["label_config"]})
        .get_json()["model_version"]
        .startswith("tam-sam_test_tiny-xmem")
    )
    body = load_fixture("07_")["body"]
    resp = client.post("/predict", json=body)
    assert resp.status_code == 200, resp.get_json()
    regions = resp.get_json()["results"][0]["result"]
    # random weights: the masks mean nothing, but every frame is answered and decodes exactly
    frames = sorted({r["item_index"] for r in regions})
    assert frames and set(frames) <= set(range(5))
    for r in regions:
        alpha = np.reshape(decode_rle(r["value"]["rle"]), (240, 320, 4))[:, :, 3]
        assert set(np.unique(alpha)) <= {0, 255} and alpha.any()
    assert model.engine.tracker.name == "xmem"


def test_broken_checkpoint_is_an_error_not_a_fallback(tmp_path, checkpoints):
    _, xmem = checkpoints
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not a checkpoint")
    settings = settings_for(tmp_path, bad, xmem)
    with pytest.raises(EngineError, match="SAM"):
        build_engine("auto", settings)
    model = TrackAnythingModel(settings)
    client = create_app(settings, model, metrics=model.metrics).test_client()
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["status"] == "ERROR" and health.get_json()["engine"] == "sam-xmem"
    assert "bad.pth" in health.get_json()["error"] or "SAM" in health.get_json()["error"]
    resp = client.post("/predict", json=load_fixture("07_")["body"])
    assert resp.status_code == 503 and resp.get_json()["errors"]


def test_missing_checkpoint_file(tmp_path, checkpoints):
    sam, _ = checkpoints
    with pytest.raises(EngineError, match="cannot load"):
        build_engine("sam-xmem", settings_for(tmp_path, sam, tmp_path / "nope.pth"))
    with pytest.raises(EngineError, match="XMEM_CHECKPOINT"):
        build_engine("sam-xmem", settings_for(tmp_path, sam, None))


def test_custom_engine_plugin(tmp_path):
    engine = build_engine("tests.fakes:fake_engine", settings_for(tmp_path, None, None))
    assert engine.model_version == "tam-fake-test"
    with pytest.raises(EngineError, match="cannot import"):
        build_engine("tests.nope:factory", settings_for(tmp_path, None, None))
