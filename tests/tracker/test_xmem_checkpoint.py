"""Checkpoint loading: strict against the official key table, with the official tolerances."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest
import torch

from backend.tracker.xmem.checkpoint import (
    CheckpointError,
    dims_from_state_dict,
    load_network,
    network_from_state_dict,
    read_state_dict,
)
from backend.tracker.xmem.config import XMemConfig, XMemDims
from backend.tracker.xmem.core import XMemCore
from backend.tracker.xmem.network import XMemNetwork

GOLDEN = Path(__file__).resolve().parents[2] / ".." / "shared" / "xmem-golden"
KEY_TABLE = GOLDEN / "xmem_state_dict_keys.tsv"


def _make_weights():
    spec = importlib.util.spec_from_file_location("golden_make_weights", GOLDEN / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def key_table() -> list[tuple[str, tuple[int, ...], str]]:
    return _make_weights().read_key_table(str(KEY_TABLE))


@pytest.fixture(scope="module")
def golden_sd() -> dict[str, torch.Tensor]:
    return _make_weights().as_torch_state_dict(str(KEY_TABLE))


def test_network_state_dict_is_the_official_key_table(key_table):
    with torch.device("meta"):
        sd = XMemNetwork(XMemDims()).state_dict()
    assert len(key_table) == 412
    assert list(sd) == [k for k, _, _ in key_table]
    for key, shape, dtype in key_table:
        assert tuple(sd[key].shape) == shape, key
        assert str(sd[key].dtype).removeprefix("torch.") == dtype, key


def test_dims_are_read_from_the_weights(golden_sd):
    assert dims_from_state_dict(golden_sd) == XMemDims(64, 512, 64)


def test_file_roundtrip_loads_exactly_and_pads_four_channel_value_conv(golden_sd, tmp_path):
    sd = dict(golden_sd)
    sd["value_encoder.conv1.weight"] = golden_sd["value_encoder.conv1.weight"][:, :4].clone()
    for key in [k for k in sd if k.endswith("num_batches_tracked")]:
        del sd[key]  # tolerated like the official loader
    path = tmp_path / "single-object.pth"
    torch.save(sd, path)
    net = load_network(path, "cpu", fold_batchnorm=False)
    loaded = net.state_dict()
    conv1 = loaded["value_encoder.conv1.weight"]
    assert conv1.shape == (64, 5, 7, 7)
    assert torch.equal(conv1[:, :4], sd["value_encoder.conv1.weight"])
    assert not conv1[:, 4].any()
    for key, value in sd.items():
        if key != "value_encoder.conv1.weight":
            assert torch.equal(loaded[key], value), key
    assert all(p.device.type == "cpu" for p in net.parameters())
    assert not net.training


def test_missing_and_unexpected_keys_are_listed(golden_sd):
    sd = dict(golden_sd)
    del sd["decoder.pred.bias"]
    sd["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        network_from_state_dict(sd)
    assert "decoder.pred.bias" in str(err.value)
    assert "decoder.extra.weight" in str(err.value)


def test_shape_mismatch_is_listed(golden_sd):
    sd = dict(golden_sd)
    sd["decoder.pred.weight"] = torch.zeros(1, 128, 3, 3)
    with pytest.raises(CheckpointError, match=r"decoder\.pred\.weight.*\(1, 128, 3, 3\)"):
        network_from_state_dict(sd)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_unreadable_files_give_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        read_state_dict(garbage)
    unsafe = tmp_path / "unsafe.pth"
    unsafe.write_bytes(pickle.dumps(XMemConfig()))  # arbitrary objects are refused
    with pytest.raises(CheckpointError):
        read_state_dict(unsafe)


def test_no_sensory_variant_loads_and_runs(golden_sd):
    sd = {k: v for k, v in golden_sd.items() if ".hidden_" not in k}
    for name in ("conv1", "downsample"):
        key = f"decoder.fuser.block1.{name}.weight"
        sd[key] = golden_sd[key][:, : 1024 + 512].clone()
    net = network_from_state_dict(sd)
    assert net.dims == XMemDims(64, 512, 0)
    net.fold_batchnorm()
    core = XMemCore(net, XMemConfig(mem_every=2))
    gen = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, 48, 64)
    mask[0, 10:30, 20:40] = 1
    core.set_all_labels([1])
    probs = [core.step(torch.randn(3, 48, 64, generator=gen), mask, [1])]
    probs += [core.step(torch.randn(3, 48, 64, generator=gen)) for _ in range(3)]
    for p in probs:
        assert p.shape == (2, 48, 64)
        assert torch.allclose(p.sum(0), torch.ones(48, 64), atol=1e-5)
    assert core.memory.hidden.shape[1] == 0


def test_batchnorm_folding_keeps_outputs(golden_sd):
    plain = network_from_state_dict(golden_sd)
    folded = network_from_state_dict(golden_sd)
    folded.fold_batchnorm()
    image = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a = plain.encode_key(image, True, True)
        b = folded.encode_key(image, True, True)
    for name in ("key", "shrinkage", "selection", "f4"):
        ref = getattr(a, name)
        assert torch.allclose(getattr(b, name), ref, atol=1e-4 * ref.abs().max().item()), name
