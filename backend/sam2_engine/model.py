"""Building a SAM 2.x model from Meta's configs and loading an official checkpoint, strictly.

An official checkpoint is ``torch.save({"model": state_dict})`` of the network that the
package's Hydra config describes (``configs/sam2.1/sam2.1_hiera_t.yaml`` …). Loading is strict:
a missing or unexpected key is a :class:`Sam2CheckpointError` that names the keys and the likely
cause (a ``SAM2_MODEL`` that does not match the file), never a half-initialised model.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from backend.state_dicts import fit_problems

log = logging.getLogger(__name__)

#: ``SAM2_MODEL`` value → the config inside the ``sam2`` package.
MODEL_CONFIGS: dict[str, str] = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}

# the official file names spell the size out (sam2.1_hiera_base_plus.pt …)
_SIZE_WORDS = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
_FILE_NAME = re.compile(r"(sam2(?:\.1)?)_hiera_(tiny|small|base_plus|large)")


class Sam2CheckpointError(RuntimeError):
    """A SAM 2 checkpoint is missing, unreadable, or does not fit the requested model."""


def model_from_filename(path: Path) -> str | None:
    """The ``SAM2_MODEL`` an official file name implies (``sam2.1_hiera_small.pt`` →
    ``sam2.1_hiera_s``), or ``None`` for any other name."""
    m = _FILE_NAME.search(path.name)
    return f"{m.group(1)}_hiera_{_SIZE_WORDS[m.group(2)]}" if m else None


@dataclass(frozen=True)
class Precision:
    """How the model runs on a device: CUDA uses bfloat16 autocast and TF32 matmuls (the
    precision SAM 2 was released with); CPU and MPS run in float32."""

    device: torch.device

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.device.type == "cuda" else None

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Inference mode (and autocast on CUDA) for one model call or one propagation."""
        with torch.inference_mode():
            if self.autocast_dtype is None:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    yield


def resolve_device(name: str) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` / ``mps``, checked to exist on this machine."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Sam2CheckpointError(f"DEVICE={name} but torch sees no CUDA device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise Sam2CheckpointError(f"DEVICE={name} but torch sees no MPS device")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def build_untrained(model_name: str, image_size: int | None = None, device: str = "cpu"):
    """An untrained ``SAM2VideoPredictor`` of ``model_name``'s architecture, in eval mode.

    ``image_size`` overrides the config's input side (1024); the weights do not depend on it,
    so a small side runs an official checkpoint faster at a lower resolution (multiple of 32).
    """
    if model_name not in MODEL_CONFIGS:
        raise Sam2CheckpointError(
            f"unknown SAM2_MODEL {model_name!r}; expected one of {', '.join(MODEL_CONFIGS)}"
        )
    if image_size is not None and (image_size < 64 or image_size % 32):
        raise Sam2CheckpointError(f"SAM2_IMAGE_SIZE={image_size}: use a multiple of 32, ≥ 64")
    from sam2.build_sam import build_sam2_video_predictor

    extra = [] if image_size is None else [f"++model.image_size={image_size}"]
    # ckpt_path=None: the package's own loader is not strict about messages; ours is
    return build_sam2_video_predictor(
        MODEL_CONFIGS[model_name], ckpt_path=None, device=device, hydra_overrides_extra=extra
    )


def read_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of an official checkpoint file (tensors only, no pickles)."""
    if not checkpoint.is_file():
        raise Sam2CheckpointError(f"SAM2_CHECKPOINT {checkpoint} does not exist")
    try:
        obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Sam2CheckpointError(f"cannot read SAM2_CHECKPOINT {checkpoint}: {exc}") from None
    state = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Sam2CheckpointError(
            f"SAM2_CHECKPOINT {checkpoint} is not an official SAM 2 checkpoint "
            '(expected a dict with a "model" state dict)'
        )
    return state


def _has_compiled_ops() -> bool:
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def load_model(
    checkpoint: Path, model_name: str, device: str = "cpu", image_size: int | None = None
):
    """``model_name``'s network with ``checkpoint``'s weights on ``device``, strictly loaded."""
    torch_device = resolve_device(device)
    state = read_state_dict(checkpoint)
    model = build_untrained(model_name, image_size=image_size, device="cpu")
    problems = fit_problems(model.state_dict(), state)
    if problems:
        guess = model_from_filename(checkpoint)
        hint = (
            f"; the file name suggests SAM2_MODEL={guess}"
            if guess and guess != model_name
            else "; does SAM2_MODEL match the checkpoint?"
        )
        raise Sam2CheckpointError(
            f"SAM2_CHECKPOINT {checkpoint} does not fit SAM2_MODEL={model_name}: "
            + "; ".join(problems)
            + hint
        )
    model.load_state_dict(state, strict=True)
    if not _has_compiled_ops():
        # hole filling needs the package's optional CUDA extension; without it every frame
        # would log a failed import (the masks are the same up to 8-pixel holes)
        model.fill_hole_area = 0
    model = model.to(torch_device).eval()
    log.info("SAM 2 %s loaded from %s on %s", model_name, checkpoint, torch_device)
    return model
