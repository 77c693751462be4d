"""A tiny, randomly initialised SAM built from segment-anything's own classes.

It keeps SAM's geometry (1024-pixel input, 256×64×64 image embedding, 256×256 low-res logits)
but uses a one-block, narrow, windowed ViT and a small two-way transformer so that an encode costs well
under a second on a CPU. It is registered as model type ``test_tiny`` so tests go through the
same checkpoint-loading path as production.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from backend.segmenter import sam as sam_module

TINY_TYPE = "test_tiny"
WIDE_TYPE = "test_tiny_wide"  # same layout, wider encoder: for model-type mismatch tests


def build_tiny_sam(encoder_width: int = 32) -> Sam:
    """SAM with the official geometry and a tiny encoder/decoder."""
    embed = 256
    encoder = ImageEncoderViT(
        img_size=1024,
        patch_size=16,
        embed_dim=encoder_width,
        depth=1,
        num_heads=1,
        mlp_ratio=2.0,
        out_chans=embed,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=(),
    )
    prompt = PromptEncoder(
        embed_dim=embed,
        image_embedding_size=(64, 64),
        input_image_size=(1024, 1024),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=1, embedding_dim=embed, mlp_dim=64, num_heads=2),
        transformer_dim=embed,
        iou_head_depth=2,
        iou_head_hidden_dim=32,
    )
    model = Sam(
        image_encoder=encoder,
        prompt_encoder=prompt,
        mask_decoder=decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return model.eval()


@pytest.fixture(autouse=True)
def tiny_model_type(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the tiny types in the production builder table for the duration of a test."""
    monkeypatch.setitem(sam_module.MODEL_BUILDERS, TINY_TYPE, build_tiny_sam)
    monkeypatch.setitem(sam_module.MODEL_BUILDERS, WIDE_TYPE, partial(build_tiny_sam, 48))
    return TINY_TYPE


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint file (plain state_dict, like the official ones) of a seeded tiny SAM."""
    torch.manual_seed(0)
    model = build_tiny_sam()
    path = tmp_path_factory.mktemp("ckpt") / "sam_test_tiny.pth"
    torch.save(model.state_dict(), path)
    return path
