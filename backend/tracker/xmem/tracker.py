"""XMem behind the project's Tracker / TrackerSession interface.

Frames are read one at a time from the :class:`FrameSource`, resized so the
shorter side is ``internal_size`` (XMem's evaluation protocol; ``None`` or 0
runs at native size like Track-Anything), and the probabilities are upsampled
bilinearly back to the native size before they are returned.

Object ids are stable user ids; inside one ``propagate`` call they map to
XMem label slots in order of appearance (objects first seen on the same frame
in ascending id order). ``TrackedFrame.obj_ids`` lists the objects entered so
far on the way, in slot order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from backend.frames import FrameSource, resize_rgb
from backend.tracker.base import TrackedFrame
from backend.tracker.tensors import normalise
from backend.tracker.xmem.checkpoint import load_network
from backend.tracker.xmem.config import TAM_CONFIG, XMemConfig
from backend.tracker.xmem.core import XMemCore
from backend.tracker.xmem.network import XMemNetwork

log = logging.getLogger(__name__)


def internal_shape(h: int, w: int, internal_size: int | None) -> tuple[int, int]:
    """Size with the shorter side scaled to ``internal_size`` (native if None/0)."""
    if not internal_size or min(h, w) == internal_size:
        return h, w
    scale = internal_size / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask."""
    if mask.shape == shape:
        return mask
    out = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return out.astype(bool)


class XMemTracker:
    """XMem video object segmentation (one network shared by all sessions).

    ``checkpoint`` is a path to an official XMem checkpoint or an already
    built :class:`XMemNetwork`. ``autocast_dtype`` (e.g. ``torch.bfloat16``)
    trades accuracy for speed on hardware with fast bf16.
    """

    name = "xmem"

    def __init__(
        self,
        checkpoint: str | Path | XMemNetwork,
        config: XMemConfig = TAM_CONFIG,
        device: str | torch.device = "cpu",
        internal_size: int | None = 480,
        *,
        channels_last: bool = True,
        autocast_dtype: torch.dtype | None = None,
        dense_readout: bool = False,
    ):
        self.device = torch.device(device)
        if isinstance(checkpoint, XMemNetwork):
            network = checkpoint.to(self.device).eval()
        else:
            network = load_network(checkpoint, self.device)
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.config = config
        self.internal_size = internal_size
        self.channels_last = channels_last
        self.autocast_dtype = autocast_dtype
        self.dense_readout = dense_readout

    def new_core(self) -> XMemCore:
        """A fresh inference core (empty memory) on the shared network."""
        return XMemCore(
            self.network,
            self.config,
            autocast_dtype=self.autocast_dtype,
            channels_last=self.channels_last,
            dense_readout=self.dense_readout,
        )

    def start(self, frames: FrameSource) -> XMemSession:
        return XMemSession(self, frames)


class XMemSession:
    """Keyframe masks of one video plus on-demand propagation."""

    def __init__(self, tracker: XMemTracker, frames: FrameSource):
        self.tracker = tracker
        self.frames = frames
        self.keyframes: dict[int, dict[int, np.ndarray]] = {}
        self._closed = False

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.frames):
            raise IndexError(f"frame {index} out of range 0..{len(self.frames) - 1}")

    def add_mask(self, frame_index: int, obj_id: int, mask: np.ndarray) -> None:
        """Set (or replace) ``obj_id``'s H×W mask (native size) on ``frame_index``."""
        self._check_index(frame_index)
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"mask must be H×W, got shape {mask.shape}")
        frame_shape = self.frames[frame_index].shape[:2]
        if mask.shape != frame_shape:
            raise ValueError(f"mask shape {mask.shape} != frame shape {frame_shape}")
        self.keyframes.setdefault(frame_index, {})[int(obj_id)] = mask.astype(bool)

    def remove_object(self, obj_id: int) -> None:
        """Forget ``obj_id`` on every keyframe."""
        for index in list(self.keyframes):
            self.keyframes[index].pop(int(obj_id), None)
            if not self.keyframes[index]:
                del self.keyframes[index]

    def close(self) -> None:
        self.keyframes.clear()
        self._closed = True

    def propagate(
        self, start: int, *, reverse: bool = False, stop: int | None = None
    ) -> Iterator[TrackedFrame]:
        """Yield ``start`` (its masks as probabilities), then each frame up to ``stop``."""
        if self._closed:
            raise RuntimeError("session is closed")
        self._check_index(start)
        if not self.keyframes.get(start):
            raise ValueError(f"no mask on start frame {start}")
        stop = (0 if reverse else len(self.frames) - 1) if stop is None else stop
        self._check_index(stop)
        if (stop < start) != reverse and stop != start:
            raise ValueError(f"stop {stop} is on the wrong side of start {start}")
        step = -1 if reverse else 1
        return self._run(list(range(start, stop + step, step)))

    def _run(self, indices: list[int]) -> Iterator[TrackedFrame]:
        core = self.tracker.new_core()
        obj_ids: list[int] = []  # slot k holds obj_ids[k - 1]
        for t in indices:
            probs = self._track_frame(core, t, obj_ids)
            yield TrackedFrame(t, list(obj_ids), probs)
        log.debug("propagated %d frames with %d objects", len(indices), len(obj_ids))

    @torch.inference_mode()
    def _track_frame(self, core: XMemCore, t: int, obj_ids: list[int]) -> np.ndarray:
        """One core step on frame ``t``; ``obj_ids`` grows with objects first seen here."""
        tracker = self.tracker
        frame = self.frames[t]
        native = frame.shape[:2]
        shape = internal_shape(*native, tracker.internal_size)
        image = normalise(resize_rgb(frame, shape), tracker.device)
        given = self.keyframes.get(t, {})
        if given:
            obj_ids += sorted(o for o in given if o not in obj_ids)
            mask = np.zeros((len(obj_ids), *shape), np.float32)
            for oid, m in given.items():
                mask[obj_ids.index(oid)] = resize_mask(m, shape)
            labels = sorted(obj_ids.index(oid) + 1 for oid in given)
            core.set_all_labels(list(range(1, len(obj_ids) + 1)))
            prob = core.step(image, torch.from_numpy(mask), labels)
        else:
            prob = core.step(image)
        if prob.shape[-2:] != native:
            prob = F.interpolate(prob[None], size=native, mode="bilinear", align_corners=False)[0]
        return prob.float().cpu().numpy()
