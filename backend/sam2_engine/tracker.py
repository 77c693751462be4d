"""SAM 2 memory propagation behind the :class:`~backend.tracker.base.Tracker` protocol.

What this adds over ``SAM2VideoPredictor.init_state`` / ``propagate_in_video``:

* **Frames are read lazily** from our :class:`~backend.frames.FrameSource`, one at a time, and
  normalised on demand (:class:`LazyImages`, a two-frame cache) — the package's own loader
  decodes the whole clip into one tensor first (3×1024×1024 float32 = 12 MiB per frame).
* **Memory stays flat**: SAM 2 attends to the conditioning frames (keyframes), the last
  ``num_maskmem - 1`` frames and object pointers of the last ``max_obj_ptrs_in_encoder``
  frames; outputs older than that window are dropped as the propagation moves on, instead of
  every frame's memory being kept to the end.
* **Presence**: the model's object-score logit per (frame, object) comes out as
  ``TrackedFrame.presence`` (its sigmoid); a frame where the object is judged absent has an
  empty mask (SAM 2 itself writes "no object" logits there).
* The protocol's semantics: stable object ids, an object enters on its first mask, masks added
  on frames on the way replace the prediction, each ``propagate`` starts from clean memory.

Per-frame model calls use the package's ``SAM2VideoPredictor._run_single_frame_inference``
(the one step that encodes a frame, attends to memory, decodes and encodes the new memory);
the inference state around it is ours. ``sam2`` is pinned to 1.1.0 for that reason.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backend.frames import FrameSource, resize_rgb
from backend.sam2_engine.model import Precision
from backend.tracker.base import TrackedFrame
from backend.tracker.tensors import normalise

log = logging.getLogger(__name__)


def model_input(frame: np.ndarray, side: int) -> torch.Tensor:
    """An H×W×3 uint8 RGB frame as SAM 2's 3×side×side normalised float32 input (squashed to a
    square, as the model was trained), on the CPU."""
    return normalise(resize_rgb(frame, (side, side)), torch.device("cpu"))


class LazyImages:
    """``images[i]`` for SAM 2's inference state, decoded from ``frames`` when asked for.

    Holds at most ``keep`` normalised frames (SAM 2 asks for the same frame once per object in
    a row); nothing else of the clip is in memory.
    """

    def __init__(self, frames: FrameSource, side: int, keep: int = 2):
        self.frames = frames
        self.side = side
        self.keep = keep
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.decoded = 0  # frames read from the source (for tests and benchmarks)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        image = model_input(self.frames[index], self.side)
        self.decoded += 1
        self._cache[index] = image
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return image


@dataclass
class _ObjectMemory:
    """One object's outputs inside one propagation, in the layout ``track_step`` reads."""

    outputs: dict[str, dict[int, Any]] = field(
        default_factory=lambda: {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    )

    @property
    def cond(self) -> dict[int, Any]:
        return self.outputs["cond_frame_outputs"]

    @property
    def non_cond(self) -> dict[int, Any]:
        return self.outputs["non_cond_frame_outputs"]

    def forget_before(self, frame: int, window: int, reverse: bool) -> None:
        """Drop non-conditioning outputs more than ``window`` frames behind ``frame``."""
        old = [t for t in self.non_cond if (t > frame + window if reverse else t < frame - window)]
        for t in old:
            del self.non_cond[t]


def memory_window(model) -> int:
    """How many frames back SAM 2 looks at non-conditioning outputs (mask memories with their
    temporal stride, object pointers)."""
    stride = max(1, int(getattr(model, "memory_temporal_stride_for_eval", 1)))
    return max(model.num_maskmem * stride, int(model.max_obj_ptrs_in_encoder)) + 1


class Sam2Tracker:
    """Factory of SAM 2 tracking sessions sharing one loaded model."""

    name = "sam2"

    def __init__(
        self,
        model,
        precision: Precision,
        *,
        offload_state_to_cpu: bool = False,
        keep_frames: int | None = None,
    ):
        self.model = model
        self.precision = precision
        self.offload_state_to_cpu = offload_state_to_cpu
        # non-conditioning outputs kept behind the current frame (default: what the model can
        # attend to; a benchmark sets it huge to show the package's keep-everything growth)
        self.keep_frames = memory_window(model) if keep_frames is None else keep_frames

    def start(self, frames: FrameSource) -> Sam2Session:
        return Sam2Session(self, frames)


class Sam2Session:
    """One video: masks per (frame, object) in, propagation out (see the module docstring)."""

    def __init__(self, tracker: Sam2Tracker, frames: FrameSource):
        self.tracker = tracker
        self.frames = frames
        self._masks: dict[int, dict[int, np.ndarray]] = {}
        self._shape: tuple[int, int] | None = None
        # the latest propagation's inference state and per-object memories (tests, benchmarks)
        self.last_state: dict[str, Any] | None = None
        self.memories: dict[int, _ObjectMemory] = {}

    def add_mask(self, frame_index: int, obj_id: int, mask: np.ndarray) -> None:
        if not 0 <= frame_index < len(self.frames):
            raise IndexError(f"frame {frame_index} outside 0..{len(self.frames) - 1}")
        if mask.ndim != 2:
            raise ValueError(f"mask must be H×W, got shape {mask.shape}")
        if self._shape is not None and mask.shape != self._shape:
            raise ValueError(f"mask shape {mask.shape} differs from the video's {self._shape}")
        self._shape = mask.shape
        self._masks.setdefault(frame_index, {})[int(obj_id)] = mask.astype(bool)

    def remove_object(self, obj_id: int) -> None:
        for masks in self._masks.values():
            masks.pop(int(obj_id), None)

    def close(self) -> None:
        self._masks.clear()
        self.last_state = None
        self.memories = {}

    # ------------------------------------------------------------------ propagation
    def _new_state(self, height: int, width: int) -> dict[str, Any]:
        """The inference state SAM 2's per-frame step reads, with lazy images."""
        model = self.tracker.model
        device = model.device
        return {
            "images": LazyImages(self.frames, model.image_size),
            "num_frames": len(self.frames),
            "video_height": height,
            "video_width": width,
            "device": device,
            "storage_device": torch.device("cpu") if self.tracker.offload_state_to_cpu else device,
            "offload_state_to_cpu": self.tracker.offload_state_to_cpu,
            "cached_features": {},
            "constants": {},
        }

    def _mask_input(self, mask: np.ndarray) -> torch.Tensor:
        """A native-size bool mask as SAM 2's 1×1×side×side mask input (0/1 float)."""
        side = self.tracker.model.image_size
        m = torch.from_numpy(mask.astype(np.float32))[None, None].to(self.tracker.model.device)
        m = F.interpolate(
            m, size=(side, side), mode="bilinear", align_corners=False, antialias=True
        )
        return (m >= 0.5).float()

    def propagate(
        self, start: int, *, reverse: bool = False, stop: int | None = None
    ) -> Iterator[TrackedFrame]:
        total = len(self.frames)
        if not self._masks.get(start):
            raise ValueError(f"propagate({start}) needs a mask added on frame {start}")
        end = (0 if reverse else total - 1) if stop is None else stop
        if (end > start) if reverse else (end < start):
            raise ValueError(f"stop={stop} lies behind start={start}")
        order = range(start, end - 1, -1) if reverse else range(start, end + 1)
        height, width = self._shape if self._shape else self.frames[start].shape[:2]
        state = self._new_state(height, width)
        self.last_state = state
        memories: dict[int, _ObjectMemory] = {}
        self.memories = memories
        window = self.tracker.keep_frames
        for index in order:
            with self.tracker.precision.context():
                logits, presence = self._step(state, memories, index, reverse)
            for mem in memories.values():
                mem.forget_before(index, window, reverse)
            state["cached_features"] = {}  # the next frame is another image
            if not logits:
                continue
            yield self._to_frame(index, logits, presence, (height, width))

    def _step(
        self, state: dict[str, Any], memories: dict[int, _ObjectMemory], index: int, reverse: bool
    ) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
        """One frame for every object entered so far: low-res logits (or the given bool mask)
        and presence."""
        model = self.tracker.model
        given = self._masks.get(index, {})
        logits: dict[int, torch.Tensor] = {}
        presence: dict[int, float] = {}
        for oid in sorted(set(memories) | set(given)):
            mem = memories.get(oid)
            mask = given.get(oid)
            first = mem is None
            if first:
                mem = memories[oid] = _ObjectMemory()
            out, low_res = model._run_single_frame_inference(
                inference_state=state,
                output_dict=mem.outputs,
                frame_idx=index,
                batch_size=1,
                is_init_cond_frame=first,
                point_inputs=None,
                mask_inputs=None if mask is None else self._mask_input(mask),
                reverse=reverse,
                run_mem_encoder=True,
            )
            (mem.cond if mask is not None else mem.non_cond)[index] = out
            # a given mask is the answer on its frame, exactly (not its low-res round trip)
            logits[oid] = low_res.float() if mask is None else torch.from_numpy(mask)
            presence[oid] = float(torch.sigmoid(out["object_score_logits"].float()).item())
        return logits, presence

    @staticmethod
    def _to_frame(
        index: int,
        logits: dict[int, torch.Tensor],
        presence: dict[int, float],
        shape: tuple[int, int],
    ) -> TrackedFrame:
        obj_ids = list(logits)
        probs = np.empty((len(obj_ids), *shape), dtype=np.float32)
        for k, oid in enumerate(obj_ids):
            t = logits[oid]
            if t.dtype == torch.bool:  # a given mask
                probs[k] = t.numpy()
                continue
            full = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)
            probs[k] = torch.sigmoid(full[0, 0]).cpu().numpy()
        background = 1.0 - probs.max(axis=0, keepdims=True)
        return TrackedFrame(
            index=index,
            obj_ids=obj_ids,
            probs=np.concatenate([background, probs], axis=0),
            presence=presence,
        )
