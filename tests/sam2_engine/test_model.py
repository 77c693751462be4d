"""Strict loading of official-format SAM 2 checkpoints, and engine selection."""

from __future__ import annotations

import pytest
import torch

from backend.config import ConfigError, Settings
from backend.engine import EngineError, build_engine, resolve_engine_name
from backend.sam2_engine.model import (
    Sam2CheckpointError,
    build_untrained,
    load_model,
    model_from_filename,
)
from tests.sam2_engine.conftest import MODEL, SIDE


def test_official_file_names_name_their_model(tmp_path):
    assert model_from_filename(tmp_path / "sam2.1_hiera_tiny.pt") == "sam2.1_hiera_t"
    assert model_from_filename(tmp_path / "sam2.1_hiera_base_plus.pt") == "sam2.1_hiera_b+"
    assert model_from_filename(tmp_path / "sam2_hiera_large.pt") == "sam2_hiera_l"
    assert model_from_filename(tmp_path / "weights.pt") is None


def test_a_checkpoint_loads_exactly(sam2_checkpoint, sam2_model):
    saved = torch.load(sam2_checkpoint, map_location="cpu", weights_only=True)["model"]
    loaded = sam2_model.state_dict()
    assert set(saved) == set(loaded)
    key = "image_encoder.trunk.blocks.0.attn.qkv.weight"
    assert torch.equal(saved[key], loaded[key])
    assert sam2_model.image_size == SIDE and not sam2_model.training


def _resave(src, dst, edit):
    state = torch.load(src, map_location="cpu", weights_only=True)["model"]
    edit(state)
    torch.save({"model": state}, dst)
    return dst


def test_a_missing_key_is_named(tmp_path, sam2_checkpoint):
    bad = _resave(sam2_checkpoint, tmp_path / "x.pt", lambda s: s.pop("no_mem_embed"))
    with pytest.raises(Sam2CheckpointError, match=r"1 missing keys: no_mem_embed"):
        load_model(bad, MODEL, image_size=SIDE)


def test_an_unexpected_key_is_named(tmp_path, sam2_checkpoint):
    bad = _resave(
        sam2_checkpoint, tmp_path / "x.pt", lambda s: s.__setitem__("extra.w", torch.zeros(1))
    )
    with pytest.raises(Sam2CheckpointError, match=r"unexpected keys: extra\.w"):
        load_model(bad, MODEL, image_size=SIDE)


def test_another_model_size_is_refused_with_a_hint(tmp_path, sam2_checkpoint):
    with pytest.raises(Sam2CheckpointError, match="suggests SAM2_MODEL=sam2.1_hiera_t"):
        load_model(sam2_checkpoint, "sam2.1_hiera_s", image_size=SIDE)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not a checkpoint", "cannot read"),
        (None, "not an official SAM 2 checkpoint"),
    ],
)
def test_unreadable_or_foreign_files(tmp_path, payload, message):
    path = tmp_path / "f.pt"
    if payload is None:
        torch.save({"state_dict": {}}, path)
    else:
        path.write_bytes(payload)
    with pytest.raises(Sam2CheckpointError, match=message):
        load_model(path, MODEL, image_size=SIDE)


def test_bad_image_size_and_model_name():
    with pytest.raises(Sam2CheckpointError, match="multiple of 32"):
        build_untrained(MODEL, image_size=100)
    with pytest.raises(Sam2CheckpointError, match="unknown SAM2_MODEL"):
        build_untrained("sam3")


def test_settings_and_auto_priority(tmp_path):
    env = {"SAM2_CHECKPOINT": "a.pt", "SAM2_MODEL": "sam2.1_hiera_b+", "SAM2_IMAGE_SIZE": "512"}
    s = Settings.from_env(env)
    assert (s.sam2_model, s.sam2_image_size) == ("sam2.1_hiera_b+", 512)
    assert resolve_engine_name(s) == "sam2"
    both = Settings.from_env({**env, "SAM_CHECKPOINT": "s", "XMEM_CHECKPOINT": "x"})
    assert resolve_engine_name(both) == "sam2", "SAM 2 comes first when configured"
    assert resolve_engine_name(Settings.from_env({"SAM_CHECKPOINT": "s", "XMEM_CHECKPOINT": "x"}))
    with pytest.raises(ConfigError, match="SAM2_MODEL"):
        Settings.from_env({"SAM2_MODEL": "hiera_huge"})


def test_build_engine(sam2_checkpoint):
    engine = build_engine("auto", Settings(sam2_checkpoint=sam2_checkpoint, sam2_image_size=SIDE))
    assert engine.name == "sam2" and engine.model_version.startswith("tam-sam2.1_hiera_t-")
    assert engine.segmenter.model is engine.tracker.model, "one network for both roles"
    assert engine.refine.mode == "off"


def test_engine_errors(tmp_path, sam2_checkpoint):
    with pytest.raises(EngineError, match="needs SAM2_CHECKPOINT"):
        build_engine("sam2", Settings())
    anonymous = tmp_path / "weights.pt"
    anonymous.write_bytes(sam2_checkpoint.read_bytes())
    with pytest.raises(EngineError, match="set SAM2_MODEL"):
        build_engine("sam2", Settings(sam2_checkpoint=anonymous))
    with pytest.raises(EngineError, match="does not exist"):
        build_engine("sam2", Settings(sam2_checkpoint=tmp_path / "sam2.1_hiera_tiny.pt"))
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA"):
            build_engine("sam2", Settings(sam2_checkpoint=sam2_checkpoint, device="cuda"))
