"""Plain data messages shared by the engine modules.

Coordinates are always **pixels of the native frame** (x to the right, y down,
origin at the top-left corner of the top-left pixel); masks are ``H×W`` bool
arrays at the native frame size unless stated otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Click:
    """One annotator click: a point in native frame pixels, positive or negative."""

    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class Box:
    """A box prompt in native frame pixels: corners (x0, y0) top-left, (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float

    def as_array(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float32)


@dataclass
class ObjectPrompt:
    """Everything the annotator said about one object.

    ``obj_id`` is a stable small integer (1, 2, ...) that survives across
    requests for the same label; ``clicks``, ``boxes`` and ``masks`` are keyed by
    frame index. A frame with clicks, a box or a mask is a *keyframe* for that object.
    A mask on a frame with clicks or a box is their prior; ``own_priors`` are the frames where
    that prior is the segmenter's own earlier answer, which the clicks refine (not a painted or
    propagated mask).
    """

    obj_id: int
    label: str
    clicks: dict[int, list[Click]] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    boxes: dict[int, Box] = field(default_factory=dict)
    own_priors: frozenset[int] = frozenset()

    @property
    def keyframes(self) -> list[int]:
        return sorted(set(self.clicks) | set(self.masks) | set(self.boxes))


@dataclass
class FramePrediction:
    """Masks of every object on one frame, with a quality score in [0, 1] each."""

    index: int
    masks: dict[int, np.ndarray]
    scores: dict[int, float]
