"""Click → mask segmenters (weights-free classical and SAM)."""

from backend.segmenter.base import Segmenter, SegmentOutput

__all__ = ["SegmentOutput", "Segmenter"]
