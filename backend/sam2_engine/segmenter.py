"""SAM 2's image path behind the :class:`~backend.segmenter.base.Segmenter` protocol.

The same loaded network as the tracker (one copy of the weights), through the package's
``SAM2ImagePredictor``. Additions: image features are kept per ``cache_key`` (a repeated click on
a frame runs only the decoder); a native-size probability prior becomes SAM 2's low-resolution
mask prompt (the model squashes every image to a square, so the prior is squashed the same way);
several clicks use the single-mask head, one click the three-mask head (SAM's rule).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path

import cv2
import numpy as np

from backend.sam2_engine.model import Precision
from backend.segmenter.base import SegmentOutput, image_digest, prompt_arrays

PRIOR_EPS = 1e-4


class _QuietSam2Info(logging.Filter):
    """Drops the INFO lines the package logs on the root logger for every image it encodes
    ("Computing image embeddings …"); its warnings and errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and "sam2" in Path(record.pathname).parts)


def _quiet_package_logs() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _QuietSam2Info) for f in root.filters):
        root.addFilter(_QuietSam2Info())


def prior_to_mask_input(prob: np.ndarray, side: int, eps: float = PRIOR_EPS) -> np.ndarray:
    """An H×W foreground probability as SAM 2's 1×side×side logit mask prompt."""
    small = cv2.resize(prob.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
    p = np.clip(small, eps, 1.0 - eps)
    return np.log(p / (1.0 - p))[None].astype(np.float32)


class Sam2Segmenter:
    """Clicks and boxes on one image → masks, with SAM 2 (``SamPredictor``-like)."""

    name = "sam2"

    def __init__(self, model, precision: Precision, cache_items: int = 8):
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        _quiet_package_logs()
        self.model = model
        self.precision = precision
        self.predictor = SAM2ImagePredictor(model)
        side = model.image_size
        # the package assumes a 1024 input; the backbone's three levels are side/4, /8, /16
        self.predictor._bb_feat_sizes = [
            (side // 4, side // 4),
            (side // 8, side // 8),
            (side // 16, side // 16),
        ]
        self.cache_items = cache_items
        self._cache: OrderedDict[Hashable, tuple] = OrderedDict()
        self._lock = threading.RLock()
        self._size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray, *, cache_key: Hashable | None = None) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.shape} {image.dtype}")
        key = None if cache_key is None else (cache_key, image_digest(image))
        with self._lock:
            hit = self._cache.get(key) if key is not None else None
            if hit is not None:
                self._cache.move_to_end(key)
                self.predictor._features, self.predictor._orig_hw = hit
                self.predictor._is_image_set = True
            else:
                with self.precision.context():
                    self.predictor.set_image(image)
                if key is not None:
                    self._cache[key] = (self.predictor._features, self.predictor._orig_hw)
                    while len(self._cache) > self.cache_items:
                        self._cache.popitem(last=False)
            self._size = image.shape[:2]

    def predict(
        self,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        *,
        mask_prior: np.ndarray | None = None,
        multimask_output: bool = True,
        box: np.ndarray | None = None,
        prior_is_own: bool = False,
    ) -> SegmentOutput:
        """Masks for the current image from clicks (x, y native pixels; 1 = fg, 0 = bg), an
        optional box (x0, y0, x1, y1 native pixels) and an optional native-size prior
        (``prior_is_own`` is not used: the prior is taken the same way whatever its source)."""
        with self._lock:
            if self._size is None:
                raise RuntimeError("call set_image() before predict()")
            points, labels = prompt_arrays(point_coords, point_labels)
            side = self.model.image_size // 4
            mask_input = None
            if mask_prior is not None:
                if mask_prior.shape != self._size:
                    raise ValueError(f"mask prior shape {mask_prior.shape} != image {self._size}")
                mask_input = prior_to_mask_input(mask_prior, side)
            if box is not None:
                box = np.asarray(box, dtype=np.float32).reshape(4)
            if len(points) == 0 and box is None and mask_input is None:
                return SegmentOutput(
                    masks=np.zeros((1, *self._size), dtype=bool),
                    scores=np.zeros(1, dtype=np.float32),
                    low_res_logits=np.full((1, side, side), -20.0, dtype=np.float32),
                )
            multimask = multimask_output and box is None and len(points) <= 1
            with self.precision.context():
                masks, scores, low_res = self.predictor.predict(
                    point_coords=points if len(points) else None,
                    point_labels=labels if len(points) else None,
                    box=box,
                    mask_input=mask_input,
                    multimask_output=multimask,
                )
            return SegmentOutput(
                masks=np.asarray(masks) > 0,
                scores=np.asarray(scores, dtype=np.float32),
                low_res_logits=np.asarray(low_res, dtype=np.float32),
            )
