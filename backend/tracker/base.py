"""The tracker interface: masks on keyframes → probabilities on every frame.

Modelled on SAM 2's video predictor, with Cutie-style stable object ids::

    session = tracker.start(frames)               # frames: a FrameSource
    session.add_mask(0, obj_id=1, mask=m1)        # H×W bool, native size
    session.add_mask(0, obj_id=2, mask=m2)
    for out in session.propagate(0):              # forward to the last frame
        out.index, out.obj_ids, out.probs         # probs: (K+1)×H×W, ch 0 = bg
    for out in session.propagate(0, reverse=True):
        ...

Rules every implementation follows:

* ``propagate(start)`` needs masks added on ``start`` for at least one object;
  it yields ``start`` itself first (the conditioned masks as probabilities),
  then each following frame up to ``stop`` inclusive (default: the last frame,
  or frame 0 when ``reverse``). Frames are read one at a time from the source.
* A frame on the way that has masks added (a correction / another keyframe)
  uses those masks for the objects they cover instead of the prediction.
* Each ``propagate`` call starts from a clean memory: nothing from an earlier
  call leaks into it, so forward and backward passes are independent.
* Probabilities are float32 at the native frame size; object order in
  ``probs[1:]`` follows ``obj_ids``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from backend.frames import FrameSource


@dataclass
class TrackedFrame:
    """One propagated frame: ``probs`` is (K+1)×H×W float32, channel 0 background.

    ``presence`` is the tracker's own probability that each object is visible on this frame
    (SAM 2's object score), for trackers that predict it; ``None`` otherwise.
    """

    index: int
    obj_ids: list[int]
    probs: np.ndarray
    presence: dict[int, float] | None = None

    def masks(self) -> dict[int, np.ndarray]:
        """Per-object bool masks by argmax over background and objects (ties: background)."""
        if len(self.obj_ids) == 1:  # one comparison instead of an argmax over the stack
            return {self.obj_ids[0]: self.probs[1] > self.probs[0]}
        winner = np.argmax(self.probs, axis=0)
        return {oid: winner == (k + 1) for k, oid in enumerate(self.obj_ids)}


@runtime_checkable
class TrackerSession(Protocol):
    def add_mask(self, frame_index: int, obj_id: int, mask: np.ndarray) -> None:
        """Set (or replace) object ``obj_id``'s mask on ``frame_index``."""
        ...

    def remove_object(self, obj_id: int) -> None:
        """Forget an object everywhere."""
        ...

    def propagate(
        self, start: int, *, reverse: bool = False, stop: int | None = None
    ) -> Iterator[TrackedFrame]:
        """Yield frames from ``start`` towards ``stop`` (see module docstring)."""
        ...

    def close(self) -> None:
        """Release memory held by the session."""
        ...


@runtime_checkable
class Tracker(Protocol):
    """Factory of tracking sessions over one video each."""

    name: str

    def start(self, frames: FrameSource) -> TrackerSession: ...
