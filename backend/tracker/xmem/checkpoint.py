"""Loading official XMem checkpoints (``XMem.pth``, ``XMem-s012.pth``, ...).

The file is a plain tensor state_dict, loaded with ``weights_only=True``.
Loading is strict: the only tolerated differences from the network's own
state_dict are missing ``num_batches_tracked`` buffers and a 4-channel
``value_encoder.conv1.weight`` (single-object checkpoints), which is
zero-padded to 5 channels exactly like the official loader does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from backend.state_dicts import fit_problems
from backend.tracker.xmem.config import XMemDims
from backend.tracker.xmem.network import XMemNetwork

log = logging.getLogger(__name__)

VALUE_CONV1 = "value_encoder.conv1.weight"


class CheckpointError(ValueError):
    """The checkpoint does not fit the XMem network; the message lists why."""


def dims_from_state_dict(sd: Mapping[str, torch.Tensor]) -> XMemDims:
    """Key, value and hidden sizes as stored in the weights (hidden 0 = no-sensory)."""
    try:
        key_dim = int(sd["key_proj.key_proj.weight"].shape[0])
        value_dim = int(sd["value_encoder.fuser.block2.conv2.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"not an XMem state_dict: missing {exc.args[0]}") from None
    transform = sd.get("decoder.hidden_update.transform.weight")
    hidden_dim = int(transform.shape[0]) // 3 if transform is not None else 0
    return XMemDims(key_dim=key_dim, value_dim=value_dim, hidden_dim=hidden_dim)


def adapt_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy of ``sd`` in float32, with a 4-channel value conv1 zero-padded to 5 channels."""
    out = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    w = out.get(VALUE_CONV1)
    if w is not None and w.ndim == 4 and w.shape[1] == 4:
        log.info("single-object checkpoint: zero-padding %s to 5 input channels", VALUE_CONV1)
        out[VALUE_CONV1] = torch.cat([w, torch.zeros_like(w[:, :1])], 1)
    return out


def check_state_dict(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> None:
    """Raise :class:`CheckpointError` listing missing/unexpected keys and shape mismatches."""
    problems = fit_problems(expected, given, optional_suffixes=("num_batches_tracked",))
    if problems:
        raise CheckpointError("XMem checkpoint does not match the network: " + " | ".join(problems))


def read_state_dict(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load`` a tensor-only state_dict (also accepts ``{"state_dict": ...}``)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"{p.name}: not a readable tensor checkpoint ({exc})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p.name}: expected a state_dict, got {type(obj).__name__}")
    return dict(obj)


def network_from_state_dict(
    sd: Mapping[str, torch.Tensor], device: str | torch.device = "cpu"
) -> XMemNetwork:
    """Build an eval-mode network whose dims come from ``sd`` and load it strictly.

    The network is built on the meta device and takes the checkpoint tensors
    over (no random initialisation, no copy); they are moved to ``device``.
    """
    sd = adapt_state_dict(sd)
    with torch.device("meta"):
        net = XMemNetwork(dims_from_state_dict(sd))
    expected = net.state_dict()
    check_state_dict(expected, sd)
    full = {
        k: sd[k] if k in sd else torch.zeros(v.shape, dtype=v.dtype)  # num_batches_tracked
        for k, v in expected.items()
    }
    net.load_state_dict(full, strict=True, assign=True)
    return net.to(device).eval()


def load_network(
    path: str | Path, device: str | torch.device = "cpu", *, fold_batchnorm: bool = True
) -> XMemNetwork:
    """Load an XMem checkpoint file onto ``device`` (BatchNorm folded for speed)."""
    sd = read_state_dict(path, map_location=torch.device(device))
    net = network_from_state_dict(sd, device)
    if fold_batchnorm:
        net.fold_batchnorm()
    return net
