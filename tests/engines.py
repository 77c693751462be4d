"""Engine factories for subprocess servers in tests (``ENGINE=tests.engines:...``)."""

from __future__ import annotations

import dataclasses

from backend.config import Settings
from backend.engine import Engine, build_sam_xmem
from backend.segmenter import sam as sam_module
from tests.segmenter.conftest import TINY_TYPE, build_tiny_sam


def tiny_sam_xmem(settings: Settings) -> Engine:
    """The production SAM+XMem builder with a tiny SAM architecture registered.

    ``SAM_CHECKPOINT`` must hold a tiny SAM state dict; ``XMEM_CHECKPOINT`` any official-layout
    XMem file (the golden weights in tests).
    """
    sam_module.MODEL_BUILDERS.setdefault(TINY_TYPE, build_tiny_sam)
    return build_sam_xmem(dataclasses.replace(settings, sam_model_type=TINY_TYPE))
