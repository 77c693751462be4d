"""Frames as network input: ImageNet normalisation (XMem and SAM 2 were trained with it)."""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    """H×W×3 uint8 RGB → 3×H×W float32, ImageNet-normalised, on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1).float() / 255
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    return (x - mean) / std
