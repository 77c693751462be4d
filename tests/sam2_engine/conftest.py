"""SAM 2.1 tiny with random weights, saved as an official checkpoint (``{"model": state_dict}``)
and loaded back through the production loader. Inputs are squashed to 64×64 (``SAM2_IMAGE_SIZE``)
so that the tests stay quick on a CPU; the weights do not depend on the input side."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backend.sam2_engine.model import Precision, build_untrained, load_model

MODEL = "sam2.1_hiera_t"
SIDE = 64


def save_random_checkpoint(path: Path, model_name: str = MODEL, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = build_untrained(model_name, image_size=SIDE)
    torch.save({"model": net.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt")


@pytest.fixture(scope="session")
def sam2_model(sam2_checkpoint):
    return load_model(sam2_checkpoint, MODEL, image_size=SIDE)


@pytest.fixture(scope="session")
def precision(sam2_model) -> Precision:
    return Precision(sam2_model.device)
