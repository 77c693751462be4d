"""The interactive session: one task's prompts, what the annotator was shown, and what to
recompute after a click.

Modelled on SAM 2's video predictor (a session per video, prompts on any frame,
propagation as a generator) with Cutie-style stable object ids. It works on
pixel prompts and masks only; Label Studio JSON never reaches it::

    session = InteractiveSession(key, num_frames=len(frames))
    session.add_click(obj_id=1, frame=0, click=Click(x, y), label="car")
    for fp in session.run(engine, frames):        # FramePrediction per changed frame
        ...
    session.add_click(1, 40, Click(x2, y2, positive=False))   # a correction
    session.plan()      # RunPlan(FORWARD, start=40, stop=last frame, back=1)
    session.shown(1, 41)                           # the mask shown on frame 41

What is recomputed after a change (:func:`plan_run`):

* nothing, when the prompts equal those of the last complete run;
* **a correction**, when only frame ``k`` changed and ``k`` comes after the first keyframe
  of every changed object: forward from ``k`` up to the changed object's next keyframe
  (exclusive) — the corrected frame keeps the clicked result, and the tracker restarts at
  ``k`` from the corrected masks (other objects from the last run's masks there) with each
  object's first keyframe to learn its looks from — and **back** down to the changed
  object's previous keyframe (exclusive): those frames switch from what they showed to a
  backward pass from ``k`` at a seam (where the two agree best, or everywhere when the
  backward pass arrives better), never moving the object elsewhere
  (:func:`backend.pipeline.splice_backward`), so the frames just before a corrected one,
  usually as wrong as it was, improve too.
  Frames outside that range, keyframes included, are reused. ``reach_back=False`` keeps
  every frame before ``k``;
* everything otherwise (first click, a new object, a removed keyframe, a change on an
  object's first keyframe, changes on several frames).

Every stretch between two keyframes of an object splices the forward pass from the earlier
one and a backward pass from the later one (:class:`Reach`), in a full run as after a
correction (the frames it propagated forward are spliced again with a pass from the next
keyframe), so the masks are those of the prompts whatever order they came in.
``reach_back=False`` splices nothing.

A click on a frame corrects the mask shown there: when a frame's prompts change, the
mask shown on that frame becomes the segmenter's prior (a painted mask on the frame takes
its place), and stays its prior while the frame's prompts stay the same — re-sending the
same clicks gives the same masks. Keyframe masks are kept per (object, frame) and
recomputed only when that frame's prompts change.

Masks are held as :class:`~backend.masks.CompactMask` (run lengths); :attr:`nbytes`
is what a :class:`SessionStore` budget counts.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from backend.engine import Engine
from backend.frames import FrameSource
from backend.masks import CompactMask
from backend.pipeline import Keyframe, segment_keyframes, segment_video, splice_backward
from backend.types import Box, Click, FramePrediction, ObjectPrompt

log = logging.getLogger(__name__)

Signature = dict[int, dict[int, tuple]]  # obj_id → frame → digest of that frame's prompts


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class SessionKey:
    """What a task *is*: two requests share a session only when all four agree.

    ``origin`` tells Label Studio instances apart (the adapter uses the task's creation
    time, which two instances never share); ``media`` is a fingerprint of the frame
    list or media URL, so a task whose frames changed gets a fresh session.
    """

    origin: str
    project: int | None
    task: int | None
    media: str

    @property
    def task_key(self) -> tuple:
        """The task regardless of its media (to drop sessions of its old frames)."""
        return (self.origin, self.project, self.task)

    @property
    def cache_key(self) -> tuple:
        """A hashable with a deterministic repr (for caches of image encodings on disk)."""
        return (self.origin, self.project, self.task, self.media)


def media_fingerprint(items: Sequence[str]) -> str:
    """A short stable digest of a frame URL list (or one media URL)."""
    h = hashlib.sha1()
    for item in items:
        h.update(item.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return f"{len(items)}:{h.hexdigest()[:16]}"


# --------------------------------------------------------------------------- planning


class PlanKind(Enum):
    NONE = "none"  # prompts unchanged: the last run answers
    FULL = "full"  # every frame, backward and forward
    FORWARD = "forward"  # frames start..stop, forward from a correction


@dataclass(frozen=True)
class RunPlan:
    """Which frames a run recomputes; the others come from the last run.

    A forward plan propagates ``start`` .. ``stop``; with ``back`` < ``start`` it also
    splices frames ``back`` .. ``start − 1`` with a backward pass from ``start`` for the
    corrected objects ``earlier`` (object → its previous keyframe)."""

    kind: PlanKind
    start: int = 0
    stop: int = -1  # inclusive
    reason: str = ""
    back: int | None = None  # first spliced frame (forward plans); None: start
    earlier: dict[int, int] = field(default_factory=dict)

    def covers(self, frame: int) -> bool:
        """Whether ``frame`` is propagated forward (keyframes there are the tracker's)."""
        return self.kind is not PlanKind.NONE and self.start <= frame <= self.stop

    def recomputes(self, frame: int) -> bool:
        """Whether the run gives ``frame`` anew (propagated or spliced)."""
        return self.kind is not PlanKind.NONE and self.first <= frame <= self.stop

    @property
    def first(self) -> int:
        return self.start if self.back is None else self.back

    @property
    def frames(self) -> range:
        return range(self.first, self.stop + 1) if self.kind is not PlanKind.NONE else range(0)


def plan_run(
    previous: Signature | None, current: Signature, num_frames: int, *, reach_back: bool = True
) -> RunPlan:
    """What to recompute when the prompts go from ``previous`` (the last complete run's,
    or None) to ``current`` (see the module docstring); ``reach_back=False`` keeps every
    frame before a correction as it was."""
    full = RunPlan(PlanKind.FULL, 0, num_frames - 1)
    if previous is None:
        return RunPlan(PlanKind.FULL, 0, num_frames - 1, "first run")
    if set(previous) != set(current):
        return RunPlan(PlanKind.FULL, 0, num_frames - 1, "objects added or removed")
    changed: dict[int, set[int]] = {}  # frame → objects whose prompts changed there
    for oid, frames in current.items():
        old = previous[oid]
        if not set(old) <= set(frames):
            return RunPlan(PlanKind.FULL, 0, num_frames - 1, f"object {oid}: keyframe removed")
        for k, sig in frames.items():
            if old.get(k) != sig:
                changed.setdefault(k, set()).add(oid)
    if not changed:
        return RunPlan(PlanKind.NONE, reason="prompts unchanged")
    if len(changed) > 1:
        return RunPlan(full.kind, full.start, full.stop, "prompts changed on several frames")
    ((k, oids),) = changed.items()
    firsts = {oid: min(frames) for oid, frames in current.items()}
    if any(firsts[o] >= k for o in oids):
        return RunPlan(full.kind, full.start, full.stop, f"first keyframe changed (frame {k})")
    if any(f > k for f in firsts.values()):
        return RunPlan(full.kind, full.start, full.stop, "an object starts after the correction")
    stop = num_frames - 1
    for oid in oids:
        later = [f for f in current[oid] if f > k]
        if later:
            stop = min(stop, min(later) - 1)
    earlier = {o: max(f for f in current[o] if f < k) for o in sorted(oids)}
    back = min(earlier.values()) + 1
    if not reach_back or back >= k:
        return RunPlan(PlanKind.FORWARD, k, stop, f"correction on frame {k}")
    return RunPlan(
        PlanKind.FORWARD, k, stop, f"correction on frame {k}, spliced back to {back}", back,
        earlier,
    )  # fmt: skip


# --------------------------------------------------------------------------- state


@dataclass
class _Object:
    obj_id: int
    label: str
    clicks: dict[int, tuple[Click, ...]] = field(default_factory=dict)
    painted: dict[int, CompactMask] = field(default_factory=dict)
    boxes: dict[int, Box] = field(default_factory=dict)

    @property
    def keyframes(self) -> list[int]:
        return sorted(set(self.clicks) | set(self.painted) | set(self.boxes))

    def signature(self) -> dict[int, tuple]:
        out: dict[int, tuple] = {}
        for k in self.keyframes:
            clicks = tuple(
                (round(c.x, 3), round(c.y, 3), c.positive) for c in self.clicks.get(k, ())
            )
            painted = self.painted.get(k)
            digest = None if painted is None else hashlib.sha1(painted.runs).hexdigest()[:16]
            box = self.boxes.get(k)
            corners = None if box is None else tuple(round(v, 3) for v in box.as_array().tolist())
            out[k] = (clicks, digest, corners)
        return out


@dataclass
class _KeyframeRecord:
    """A keyframe's segmentation, valid while its prompts keep ``signature``."""

    signature: tuple
    prior: CompactMask | None  # the painted mask, or the mask shown when the prompts changed
    prior_is_own: bool = False  # the prior is this keyframe's earlier segmentation
    mask: CompactMask | None = None
    score: float = 0.0


def _is_its_answer(rec: _KeyframeRecord, shown: CompactMask | None) -> bool:
    """``shown`` is what the segmenter answered to ``rec``'s clicks or box (not a painted
    mask, not a propagated one)."""
    clicks, _, corners = rec.signature
    return (bool(clicks) or corners is not None) and rec.mask is not None and rec.mask == shown


FrameMasks = dict[int, tuple[CompactMask, float]]  # obj_id → (mask, score) on one frame


@dataclass
class Run:
    """A finished propagation: every frame's masks and scores, for the prompts it answered."""

    signature: Signature
    labels: dict[int, str]
    frames: dict[int, FrameMasks]

    def mask(self, obj_id: int, frame: int) -> CompactMask | None:
        entry = self.frames.get(frame, {}).get(obj_id)
        return None if entry is None else entry[0]

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for fm in self.frames.values() for m, _ in fm.values())


@dataclass(frozen=True)
class Reach:
    """A backward pass from an object's keyframe ``anchor``, spliced into frames ``low`` ..
    ``high`` after its previous keyframe (:func:`backend.pipeline.splice_backward`).

    ``masks``: the keyframe masks on ``anchor`` of the objects it carries; ``earlier``: each
    one's previous keyframe, whose forward pass it is spliced with."""

    anchor: int
    masks: dict[int, CompactMask]
    earlier: dict[int, int]
    low: int
    high: int

    @property
    def frames(self) -> range:
        return range(self.low, self.high + 1)


@dataclass
class Prepared:
    """A planned run with its keyframes segmented, ready to :meth:`InteractiveSession.propagate`."""

    plan: RunPlan
    signature: Signature
    labels: dict[int, str]
    answer: frozenset[int]
    base: Run | None  # the run whose frames outside the plan are reused
    objects: list[ObjectPrompt] = field(default_factory=list)  # tracker prompts (masks only)
    keyframes: dict[int, dict[int, Keyframe]] = field(default_factory=dict)
    appearance: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    reaches: list[Reach] = field(default_factory=list)  # in the order they run

    def held(self) -> set[int]:
        """Frames a reach splices: each is yielded once, when its last reach is done."""
        return {t for r in self.reaches for t in r.frames}

    def reused(self, obj_ids: Iterable[int] | None = None) -> Iterator[FramePrediction]:
        """Frames of the last run this run does not propagate, decoded, in frame order: those
        outside the plan, and those a reach splices (shown as they were until their splice
        comes, so a partial answer has no holes)."""
        if self.base is None:
            return
        held = self.held()
        for f in sorted(self.base.frames):
            if not self.plan.covers(f) or f in held:
                yield _decode(f, self.base.frames[f], obj_ids)

    def keyframe_predictions(self) -> Iterator[FramePrediction]:
        """The keyframe masks this run starts from, one prediction per keyframe."""
        for k, objs in sorted(self.keyframes.items()):
            yield FramePrediction(
                k, {o: kf.mask for o, kf in objs.items()}, {o: kf.score for o, kf in objs.items()}
            )


def _checked_box(box: Box) -> Box:
    values = box.as_array()
    if not np.isfinite(values).all() or box.x1 <= box.x0 or box.y1 <= box.y0:
        raise ValueError(f"box {values.tolist()} is empty or not finite (x0 < x1, y0 < y1)")
    return box


def _encode(fp: FramePrediction) -> FrameMasks:
    return {o: (CompactMask.encode(m), float(fp.scores.get(o, 0.0))) for o, m in fp.masks.items()}


def _decode(index: int, fm: FrameMasks, obj_ids: Iterable[int] | None) -> FramePrediction:
    wanted = set(fm) if obj_ids is None else set(obj_ids) & set(fm)
    return FramePrediction(
        index=index,
        masks={o: fm[o][0].decode() for o in sorted(wanted)},
        scores={o: fm[o][1] for o in sorted(wanted)},
    )


class InteractiveSession:
    """One task's interactive state (see the module docstring). Thread-safe."""

    def __init__(self, key: SessionKey, num_frames: int, *, reach_back: bool = True):
        if num_frames < 1:
            raise ValueError("a session needs at least one frame")
        self.key = key
        self.num_frames = num_frames
        self.reach_back = reach_back
        self._objects: dict[int, _Object] = {}
        self._keyframes: dict[tuple[int, int], _KeyframeRecord] = {}
        self._last: Run | None = None
        self._shown: dict[int, Run] = {}  # obj_id → the run whose masks it was last shown
        self._names: dict[str, int] = {}  # stable object names (e.g. region ids) → object ids
        self._lock = threading.RLock()
        self._nbytes = 0

    # ------------------------------------------------------------------ prompts
    def set_object(
        self,
        obj_id: int,
        label: str,
        *,
        clicks: Mapping[int, Sequence[Click]] | None = None,
        masks: Mapping[int, np.ndarray] | None = None,
        boxes: Mapping[int, Box] | None = None,
    ) -> None:
        """Replace every prompt of one object (Label Studio re-sends all of a label's points)."""
        clicks = {int(k): tuple(v) for k, v in (clicks or {}).items() if v}
        painted = {
            int(k): CompactMask.encode(np.asarray(m, bool)) for k, m in (masks or {}).items()
        }
        boxed = {int(k): _checked_box(b) for k, b in (boxes or {}).items()}
        for k in set(clicks) | set(painted) | set(boxed):
            self._check_frame(k)
        with self._lock:
            if not clicks and not painted and not boxed:
                self._objects.pop(obj_id, None)
                return
            self._objects[obj_id] = _Object(obj_id, label, clicks, painted, boxed)

    def add_click(self, obj_id: int, frame: int, click: Click, *, label: str | None = None) -> None:
        """Add one click for an object on a frame (the object is created if new)."""
        self._check_frame(frame)
        with self._lock:
            obj = self._object(obj_id, label)
            obj.clicks[frame] = (*obj.clicks.get(frame, ()), click)

    def add_box(self, obj_id: int, frame: int, box: Box, *, label: str | None = None) -> None:
        """Set the box around an object on a frame (replaces an earlier box there)."""
        self._check_frame(frame)
        box = _checked_box(box)
        with self._lock:
            self._object(obj_id, label).boxes[frame] = box

    def add_mask(
        self, obj_id: int, frame: int, mask: np.ndarray, *, label: str | None = None
    ) -> None:
        """Set a painted mask (``H×W`` bool) for an object on a frame."""
        self._check_frame(frame)
        with self._lock:
            self._object(obj_id, label).painted[frame] = CompactMask.encode(np.asarray(mask, bool))

    def clear_frame(self, obj_id: int, frame: int) -> None:
        """Remove an object's prompts on one frame."""
        with self._lock:
            obj = self._objects.get(obj_id)
            if obj is None:
                return
            obj.clicks.pop(frame, None)
            obj.painted.pop(frame, None)
            obj.boxes.pop(frame, None)
            if not obj.keyframes:
                del self._objects[obj_id]

    def remove_object(self, obj_id: int) -> None:
        with self._lock:
            self._objects.pop(obj_id, None)

    def object_id(self, name: str) -> int:
        """A stable object id for a name (e.g. a Label Studio region id): the same name gets
        the same id for the session's life, a new name the next free id."""
        with self._lock:
            if name not in self._names:
                taken = set(self._names.values()) | set(self._objects)
                self._names[name] = next(i for i in range(1, len(taken) + 2) if i not in taken)
            return self._names[name]

    @property
    def labels(self) -> dict[int, str]:
        with self._lock:
            return {o.obj_id: o.label for o in self._objects.values()}

    def prompts(self) -> list[ObjectPrompt]:
        """The current prompts (pixel clicks, painted masks decoded), by object id."""
        with self._lock:
            return [
                ObjectPrompt(
                    o.obj_id,
                    o.label,
                    clicks={k: list(v) for k, v in o.clicks.items()},
                    masks={k: m.decode() for k, m in o.painted.items()},
                    boxes=dict(o.boxes),
                )
                for o in sorted(self._objects.values(), key=lambda o: o.obj_id)
            ]

    def export_prompts(self) -> dict[str, Any]:
        """The prompts as JSON-able data (a job store keeps them to resume after a crash)."""
        with self._lock:
            return {
                "num_frames": self.num_frames,
                "names": dict(self._names),
                "objects": [
                    {
                        "id": o.obj_id,
                        "label": o.label,
                        "clicks": {
                            str(k): [[c.x, c.y, c.positive] for c in v] for k, v in o.clicks.items()
                        },
                        "masks": {
                            str(k): [m.height, m.width, base64.b64encode(m.runs).decode()]
                            for k, m in o.painted.items()
                        },
                        "boxes": {str(k): b.as_array().tolist() for k, b in o.boxes.items()},
                    }
                    for o in self._objects.values()
                ],
            }

    def import_prompts(self, data: Mapping[str, Any]) -> None:
        """Replace the prompts by :meth:`export_prompts` data."""
        if data.get("num_frames") != self.num_frames:
            raise ValueError(f"saved prompts are for {data.get('num_frames')} frames")
        objects = {}
        for o in data["objects"]:
            obj = _Object(int(o["id"]), str(o["label"]))
            for k, v in o["clicks"].items():
                obj.clicks[int(k)] = tuple(Click(float(x), float(y), bool(p)) for x, y, p in v)
            for k, (h, w, runs) in o["masks"].items():
                obj.painted[int(k)] = CompactMask(int(h), int(w), base64.b64decode(runs))
            for k, corners in o.get("boxes", {}).items():
                obj.boxes[int(k)] = Box(*(float(v) for v in corners))
            objects[obj.obj_id] = obj
        with self._lock:
            self._objects = objects
            self._names.update({str(k): int(v) for k, v in data.get("names", {}).items()})

    def request_key(self, answer: Iterable[int], version: str) -> str:
        """Equal for requests that ask this session the same thing (duplicate clicks)."""
        text = repr((self.key, self.signature(), sorted(answer), version))
        return f"{self.key.task}:{hashlib.sha1(text.encode()).hexdigest()[:20]}"

    @contextmanager
    def transaction(self) -> Iterator[InteractiveSession]:
        """Prompt changes made inside are undone when the block raises: a bad prompt never
        stays in the task's memory to fail later requests."""
        saved = self.export_prompts()
        try:
            yield self
        except BaseException:
            self.import_prompts(saved)
            raise

    def signature(self) -> Signature:
        with self._lock:
            return {oid: o.signature() for oid, o in sorted(self._objects.items())}

    # ------------------------------------------------------------------ reading
    def plan(self) -> RunPlan:
        """What the next run would recompute."""
        with self._lock:
            previous = None if self._last is None else self._last.signature
            return plan_run(previous, self.signature(), self.num_frames,
                            reach_back=self.reach_back)  # fmt: skip

    def shown(self, obj_id: int, frame: int) -> np.ndarray | None:
        """The mask the annotator was last shown for an object on a frame, or None."""
        with self._lock:
            run = self._shown.get(obj_id)
            mask = None if run is None else run.mask(obj_id, frame)
        return None if mask is None else mask.decode()

    def results(self, obj_ids: Iterable[int] | None = None) -> Iterator[FramePrediction]:
        """Every frame of the last complete run (all objects, or ``obj_ids``), in order."""
        with self._lock:
            run = self._last
        if run is None:
            return
        ids = None if obj_ids is None else list(obj_ids)
        for f in sorted(run.frames):
            yield _decode(f, run.frames[f], ids)

    @property
    def nbytes(self) -> int:
        """Approximate memory held (compact masks), updated after each run."""
        return self._nbytes

    # ------------------------------------------------------------------ running
    def prepare(
        self,
        engine: Engine,
        frames: FrameSource,
        *,
        answer: Iterable[int] | None = None,
        cache_key: Hashable | None = None,
    ) -> Prepared:
        """Plan the next run and segment the keyframes it needs (the segmenter's part).

        ``answer``: the objects whose masks the caller will show (default all); their
        :meth:`shown` masks become this run's when it completes.
        """
        if len(frames) != self.num_frames:
            raise ValueError(f"the session has {self.num_frames} frames, the source {len(frames)}")
        with self._lock:
            if not self._objects:
                raise ValueError("no prompts: add a click, box or mask first")
            signature = self.signature()
            labels = self.labels
            base = self._last
            plan = plan_run(None if base is None else base.signature, signature, self.num_frames,
                            reach_back=self.reach_back)  # fmt: skip
            answer_ids = frozenset(labels if answer is None else answer) & set(labels)
            prepared = Prepared(plan, signature, labels, answer_ids, base)
            if plan.kind is PlanKind.NONE:
                return prepared
            if plan.kind is PlanKind.FORWARD and not self._seeds_exist(base, plan):
                plan = RunPlan(PlanKind.FULL, 0, self.num_frames - 1, "an object is empty there")
                prepared.plan = plan
            records = self._keyframe_records(plan)
            self._segment_missing(engine, frames, records, cache_key)
            self._fill(prepared, records)
            prepared.reaches = self._reaches(plan, records)
        log.debug("session %s: %s (%s)", self.key.task, plan.kind.value, plan.reason)
        return prepared

    def propagate(
        self,
        engine: Engine,
        frames: FrameSource,
        prepared: Prepared,
        *,
        cache_key: Hashable | None = None,
        should_stop=None,
    ) -> Iterator[FramePrediction]:
        """Yield every frame the plan recomputes (all objects), each once: forward from the
        plan's start, a frame a reach splices when its splice is done. On completion the run
        becomes the session's last run and the answered objects' shown masks."""
        plan = prepared.plan
        computed: dict[int, FrameMasks] = {}
        if plan.kind is not PlanKind.NONE:
            pending = Counter(t for r in prepared.reaches for t in r.frames)
            for fp in segment_video(
                engine,
                frames,
                prepared.objects,
                cache_key=cache_key,
                keyframes=prepared.keyframes,
                backward=plan.kind is PlanKind.FULL,
                stop=plan.stop if plan.kind is PlanKind.FORWARD else None,
                appearance=prepared.appearance or None,
                should_stop=should_stop,
            ):
                computed[fp.index] = _encode(fp)
                if not pending[fp.index]:
                    yield fp
            base = prepared.base

            def kept(t: int) -> tuple[dict[int, np.ndarray], dict[int, float]]:
                assert base is not None or t in computed
                fp = _decode(t, computed[t] if t in computed else base.frames[t], None)
                return fp.masks, fp.scores

            for reach in prepared.reaches:
                masks = {o: m.decode() for o, m in reach.masks.items()}
                for fp in splice_backward(engine, frames, reach.anchor, masks, reach.earlier, kept,
                                         low=reach.low, high=reach.high,
                                         should_stop=should_stop):  # fmt: skip
                    computed[fp.index] = _encode(fp)
                    pending[fp.index] -= 1
                    if not pending[fp.index]:
                        yield fp
        self._commit(prepared, computed)

    def run(
        self,
        engine: Engine,
        frames: FrameSource,
        *,
        answer: Iterable[int] | None = None,
        cache_key: Hashable | None = None,
    ) -> Iterator[FramePrediction]:
        """:meth:`prepare` then :meth:`propagate` (what a front end without a time budget uses)."""
        prepared = self.prepare(engine, frames, answer=answer, cache_key=cache_key)
        yield from self.propagate(engine, frames, prepared, cache_key=cache_key)

    # ------------------------------------------------------------------ internals
    def _check_frame(self, frame: int) -> None:
        if not 0 <= frame < self.num_frames:
            raise ValueError(f"frame {frame} is outside 0..{self.num_frames - 1}")

    def _object(self, obj_id: int, label: str | None) -> _Object:
        obj = self._objects.get(obj_id)
        if obj is None:
            obj = self._objects[obj_id] = _Object(obj_id, label or f"object {obj_id}")
        elif label is not None:
            obj.label = label
        return obj

    def _seeds_exist(self, base: Run | None, plan: RunPlan) -> bool:
        """Every object without prompts on the restart frame had a non-empty mask there."""
        if base is None or not all(f in base.frames for f in range(self.num_frames)):
            return False
        for oid, obj in self._objects.items():
            if plan.start in obj.keyframes:
                continue
            seed = base.mask(oid, plan.start)
            if seed is None or not seed.any():
                return False
        return True

    def _keyframe_records(self, plan: RunPlan) -> dict[tuple[int, int], _KeyframeRecord]:
        """Records of the keyframes this plan uses, renewed where the prompts changed: those
        it propagates from, each object's first (its looks), and its next one after the
        plan's last frame (a reach's anchor)."""
        out: dict[tuple[int, int], _KeyframeRecord] = {}
        for oid, obj in self._objects.items():
            sigs = obj.signature()
            ks = obj.keyframes
            after_plan = next((k for k in ks if k > plan.stop), None)
            for k in ks:
                if not plan.covers(k) and k not in (ks[0], after_plan):
                    continue
                rec = self._keyframes.get((oid, k))
                if rec is None or rec.signature != sigs[k]:
                    painted = obj.painted.get(k)
                    prior = painted
                    if prior is None:
                        run = self._shown.get(oid)
                        prior = None if run is None else run.mask(oid, k)
                    own = painted is None and rec is not None and _is_its_answer(rec, prior)
                    rec = _KeyframeRecord(sigs[k], prior, own)
                    self._keyframes[(oid, k)] = rec
                out[(oid, k)] = rec
        live = {(o, k) for o, obj in self._objects.items() for k in obj.keyframes}
        for stale in set(self._keyframes) - live:
            del self._keyframes[stale]
        return out

    def _reaches(
        self, plan: RunPlan, records: dict[tuple[int, int], _KeyframeRecord]
    ) -> list[Reach]:
        """The backward passes the plan splices, in the order they run.

        Every frame between two keyframes of an object shows the forward pass from the
        earlier one spliced with a backward pass from the later one, whichever order the
        keyframes came in. A full run splices every such stretch. A correction on frame k
        splices what it propagated forward (frames k + 1 .. stop, from each object's next
        keyframe), then its corrected objects' stretch before k (``plan.back``). Without
        ``reach_back`` nothing is spliced."""
        if plan.kind is PlanKind.NONE or not self.reach_back:
            return []
        after = plan.start if plan.kind is PlanKind.FORWARD else -1  # splice frames > after
        groups: dict[int, tuple[dict[int, CompactMask], dict[int, int]]] = {}
        for oid, obj in self._objects.items():
            ks = obj.keyframes
            for p, anchor in itertools.pairwise(ks):
                rec = records.get((oid, anchor))
                if anchor <= after + 1 or p >= plan.stop or rec is None or rec.mask is None:
                    continue
                if rec.mask.any():
                    masks, earlier = groups.setdefault(anchor, ({}, {}))
                    masks[oid], earlier[oid] = rec.mask, p
        reaches = []
        for anchor, (masks, earlier) in sorted(groups.items(), reverse=True):
            low = max(after, min(earlier.values())) + 1
            high = min(anchor - 1, plan.stop)
            if low <= high:
                reaches.append(Reach(anchor, masks, earlier, low, high))
        if plan.kind is PlanKind.FORWARD and plan.back is not None:
            corrected = {o: records[(o, plan.start)].mask for o in plan.earlier}
            reaches.append(Reach(plan.start, corrected, dict(plan.earlier), plan.back,
                                 plan.start - 1))  # fmt: skip
        return reaches

    def _segment_missing(
        self,
        engine: Engine,
        frames: FrameSource,
        records: dict[tuple[int, int], _KeyframeRecord],
        cache_key: Hashable | None,
    ) -> None:
        todo: list[ObjectPrompt] = []
        for (oid, k), rec in sorted(records.items(), key=lambda item: item[0][1]):
            if rec.mask is not None:
                continue
            obj = self._objects[oid]
            todo.append(
                ObjectPrompt(
                    oid,
                    obj.label,
                    clicks={k: list(obj.clicks[k])} if k in obj.clicks else {},
                    masks={k: rec.prior.decode()} if rec.prior is not None else {},
                    boxes={k: obj.boxes[k]} if k in obj.boxes else {},
                    own_priors=frozenset({k}) if rec.prior_is_own else frozenset(),
                )
            )
        if not todo:
            return
        # one object per ObjectPrompt and frame: segment_keyframes groups them by frame
        result = segment_keyframes(engine, frames, todo, cache_key=cache_key)
        for k, objs in result.items():
            for oid, kf in objs.items():
                rec = records[(oid, k)]
                rec.mask, rec.score = CompactMask.encode(kf.mask), float(kf.score)

    def _fill(self, prepared: Prepared, records: dict[tuple[int, int], _KeyframeRecord]) -> None:
        """The tracker's prompts for the plan: keyframe masks, restart seeds, looks."""
        plan = prepared.plan
        keyframes: dict[int, dict[int, Keyframe]] = {}
        for (oid, k), rec in records.items():
            if plan.covers(k) and rec.mask is not None:
                keyframes.setdefault(k, {})[oid] = Keyframe(rec.mask.decode(), rec.score)
        if plan.kind is PlanKind.FORWARD:
            base = prepared.base
            assert base is not None
            for oid in self._objects:
                if oid not in keyframes.get(plan.start, {}):
                    mask, score = base.frames[plan.start][oid]
                    keyframes.setdefault(plan.start, {})[oid] = Keyframe(mask.decode(), score)
                first = min(self._objects[oid].keyframes)
                rec = records.get((oid, first))
                if first < plan.start and rec is not None and rec.mask is not None:
                    prepared.appearance.setdefault(first, {})[oid] = rec.mask.decode()
        prepared.keyframes = keyframes
        prepared.objects = [
            ObjectPrompt(
                oid,
                obj.label,
                masks={k: keyframes[k][oid].mask for k in sorted(keyframes) if oid in keyframes[k]},
            )
            for oid, obj in sorted(self._objects.items())
        ]

    def _commit(self, prepared: Prepared, computed: dict[int, FrameMasks]) -> None:
        plan = prepared.plan
        if plan.kind is PlanKind.NONE:
            run = prepared.base
        else:
            frames: dict[int, FrameMasks] = {}
            if prepared.base is not None:
                frames.update(
                    {f: fm for f, fm in prepared.base.frames.items() if not plan.recomputes(f)}
                )
            frames.update(computed)
            run = Run(prepared.signature, dict(prepared.labels), frames)
        if run is None:
            return
        with self._lock:
            if plan.kind is not PlanKind.NONE:
                self._last = run
            for oid in prepared.answer:
                self._shown[oid] = run
            runs = {id(r): r for r in (self._last, *self._shown.values()) if r is not None}
            kf = sum(
                (r.mask.nbytes if r.mask else 0) + (r.prior.nbytes if r.prior else 0)
                for r in self._keyframes.values()
            )
            self._nbytes = kf + sum(r.nbytes for r in runs.values())


# --------------------------------------------------------------------------- the cache


class SessionStore:
    """Sessions by :class:`SessionKey`, least recently used first out past a byte budget.

    A task whose media changed drops its old session; the session in use is never evicted
    by its own request.
    """

    def __init__(self, budget_bytes: int, *, reach_back: bool = True):
        self.budget_bytes = budget_bytes
        self.reach_back = reach_back  # given to every session it creates
        self._sessions: OrderedDict[SessionKey, InteractiveSession] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: SessionKey, num_frames: int) -> InteractiveSession:
        """The session for ``key``, created (fresh) if there is none."""
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.num_frames == num_frames:
                self._sessions.move_to_end(key)
                return session
            for other in [k for k in self._sessions if k.task_key == key.task_key]:
                log.info("task %s: its frames changed; starting a fresh session", key.task)
                del self._sessions[other]
            session = InteractiveSession(key, num_frames, reach_back=self.reach_back)
            self._sessions[key] = session
            return session

    def drop(self, key: SessionKey) -> None:
        with self._lock:
            self._sessions.pop(key, None)

    def trim(self, keep: SessionKey | None = None) -> int:
        """Evict least recently used sessions until the total fits the budget; returns the
        bytes held afterwards."""
        with self._lock:
            total = sum(s.nbytes for s in self._sessions.values())
            for key in list(self._sessions):
                if total <= self.budget_bytes:
                    break
                if key == keep:
                    continue
                total -= self._sessions.pop(key).nbytes
                log.info("session of task %s evicted (SESSION_CACHE_MB budget)", key.task)
            return total

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: SessionKey) -> bool:
        return key in self._sessions
