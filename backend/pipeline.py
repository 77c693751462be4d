"""The Track-Anything pipeline: keyframe masks → propagation → per-frame masks.

1. **Keyframes.** For every object, each frame with clicks gets a mask from
   the segmenter (a painted mask on that frame, if any, is the prior); a frame
   with only a painted mask uses it as is. The image is encoded once per frame
   for all objects.
2. **Propagation.** One tracker pass runs backward from the latest *first*
   keyframe to frame 0 and one forward from the earliest first keyframe to the
   end; later keyframes (corrections) are injected on the way. An object uses
   the forward pass from its first keyframe on and the backward pass before it.
   A keyframe's reach backward, between an object's previous keyframe and it, is
   :func:`splice_backward` (what those frames showed, switching to a backward pass at a seam:
   where the two agree best, or everywhere when the backward pass arrives better).
3. **Scores and refinement.** Each (frame, object) gets a quality score in
   [0, 1]: the segmenter's score on keyframes; elsewhere the tracker's own presence
   probability where it predicts one (SAM 2 — below one half the object is *lost* there and its
   mask is empty), else :func:`backend.refine.mask_quality`. With refinement on, poor frames
   are re-segmented (TAM step 3).

:func:`segment_video` streams :class:`~backend.types.FramePrediction` in the
order frames are finished (backward part first, then forward).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

import numpy as np

from backend.engine import Engine
from backend.frames import FrameSource, MediaError
from backend.masks import CompactMask, jaccard, pixel_of, wrong_points
from backend.refine import RefineConfig, mask_quality, refine_mask
from backend.tracker.base import TrackedFrame
from backend.types import Click, FramePrediction, ObjectPrompt

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: A tracker's presence probability below this marks the object lost on that frame.
LOST_BELOW = 0.5


class Cancelled(RuntimeError):
    """Raised inside :func:`segment_video` when ``should_stop`` returns True."""


class SameSizeFrames:
    """A frame source that refuses a frame whose size differs from the first one read, with
    a message an annotator can act on (trackers need one frame size per video)."""

    def __init__(self, frames: FrameSource):
        self.inner = frames
        self.size: tuple[int, int] | None = None  # (width, height) of the first frame read
        self.first = 0  # its index

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> np.ndarray:
        frame = self.inner[index]
        size = (int(frame.shape[1]), int(frame.shape[0]))
        if self.size is None:
            self.size, self.first = size, index
        elif size != self.size:
            raise MediaError(
                f"frame {index} is {size[0]}x{size[1]} but frame {self.first} is "
                f"{self.size[0]}x{self.size[1]}: all frames of a task must have the same size"
            )
        return frame


def same_size(frames: FrameSource) -> FrameSource:
    return frames if isinstance(frames, SameSizeFrames) else SameSizeFrames(frames)


@dataclass
class Keyframe:
    mask: np.ndarray
    score: float


def _clicks_to_arrays(clicks: list[Click]) -> tuple[np.ndarray, np.ndarray]:
    pts = np.array([[c.x, c.y] for c in clicks], dtype=np.float32).reshape(-1, 2)
    lab = np.array([1 if c.positive else 0 for c in clicks], dtype=np.int32)
    return pts, lab


def clicks_violated(mask: np.ndarray, clicks: list[Click]) -> bool:
    """True when a positive click lies outside ``mask`` or a negative one inside it (the
    clicks' own coordinates, not :func:`_clicks_to_arrays`' float32 ones)."""
    points = np.array([[c.x, c.y] for c in clicks], np.float64).reshape(-1, 2)
    return bool(wrong_points(mask, points, np.array([c.positive for c in clicks], int)))


def _nearer_than(mask: np.ndarray, point: tuple[int, int]) -> np.ndarray:
    """Pixels at least as near to ``point`` (row, col) as to the nearest pixel of ``mask``."""
    import cv2

    to_mask = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
    return np.hypot(yy - point[0], xx - point[1]) <= to_mask


def respect_clicks(mask: np.ndarray, clicks: list[Click], fresh: np.ndarray) -> np.ndarray:
    """Edit ``mask`` (a refined prior) so every click holds, changing only near the clicks.

    A positive click outside the mask adds the part of ``fresh`` (the same
    clicks segmented without the prior) that contains it — only the pixels nearer
    to the click than to the mask, so a fresh segmentation that leaked over the
    frame cannot come in with it; a negative click inside removes the part of
    the mask that ``fresh`` leaves out around it. Where ``fresh`` does not help
    either, a small disc around the click is added or removed, so a click is
    never silently ignored.
    """
    import cv2

    out = mask.copy()
    radius = max(3, int(0.02 * np.hypot(*mask.shape)))
    for c in clicks:
        y, x = pixel_of(c.x, c.y, mask.shape)
        if bool(out[y, x]) == c.positive:
            continue
        region = (fresh if c.positive else out & ~fresh).astype(np.uint8)
        if region[y, x] and c.positive and out.any():
            region &= _nearer_than(out, (y, x)).astype(np.uint8)
        if region[y, x]:
            _, labels = cv2.connectedComponents(region, connectivity=8)
            part = labels == labels[y, x]
        else:
            part = np.zeros_like(out)
            cv2.circle(part.view(np.uint8), (x, y), radius, 1, -1)
        out = out | part if c.positive else out & ~part
    return out


def segment_keyframes(
    engine: Engine,
    frames: FrameSource,
    objects: list[ObjectPrompt],
    *,
    cache_key: Hashable | None = None,
) -> dict[int, dict[int, Keyframe]]:
    """Masks for every keyframe: ``{frame: {obj_id: Keyframe}}``."""
    frames = same_size(frames)
    by_frame: dict[int, list[ObjectPrompt]] = {}
    for obj in objects:
        for k in obj.keyframes:
            by_frame.setdefault(k, []).append(obj)
    out: dict[int, dict[int, Keyframe]] = {}
    for k in sorted(by_frame):
        with engine.segmenter_lock:  # the segmenter holds one image at a time
            _segment_frame(engine, frames[k], k, by_frame[k], out, cache_key)
    return out


def _segment_frame(
    engine: Engine,
    image: np.ndarray,
    k: int,
    objects: list[ObjectPrompt],
    out: dict[int, dict[int, Keyframe]],
    cache_key: Hashable | None,
) -> None:
    """Keyframe masks of ``objects`` on frame ``k`` (the image is encoded at most once)."""
    height, width = image.shape[:2]
    encoded = False
    for obj in objects:
        painted = obj.masks.get(k)
        clicks = obj.clicks.get(k, [])
        box = obj.boxes.get(k)
        if painted is not None and painted.shape != (height, width):
            raise ValueError(
                f"object {obj.label!r}: mask on frame {k} is {painted.shape[1]}x"
                f"{painted.shape[0]}, the frame is {width}x{height}"
            )
        if not clicks and box is None:
            out.setdefault(k, {})[obj.obj_id] = Keyframe(painted.astype(bool), 1.0)
            continue
        if not encoded:
            engine.segmenter.set_image(
                image, cache_key=None if cache_key is None else (cache_key, k)
            )
            encoded = True
        pts, lab = _clicks_to_arrays(clicks)
        prior = None if painted is None else painted.astype(np.float32)
        multi = len(clicks) == 1  # SAM's engines take one mask with a box themselves
        kw = {} if box is None else {"box": box.as_array()}
        own = k in obj.own_priors  # the segmenter ignores it without a prior
        res = engine.segmenter.predict(
            pts, lab, mask_prior=prior, multimask_output=multi, prior_is_own=own, **kw
        )
        mask = res.best_mask().astype(bool)
        if prior is not None and clicks_violated(mask, clicks):
            fresh = engine.segmenter.predict(pts, lab, multimask_output=multi, **kw).best_mask()
            mask = respect_clicks(mask, clicks, fresh.astype(bool))
        out.setdefault(k, {})[obj.obj_id] = Keyframe(mask, float(res.best_score()))
        log.debug("keyframe %d object %d: %d px", k, obj.obj_id, int(mask.sum()))


@dataclass
class _Budget:
    """Refinements left for one run (shared by its backward and forward passes)."""

    left: int


class _Scorer:
    """Per-pass quality scoring and (optional) refinement of tracked frames."""

    def __init__(
        self,
        engine: Engine,
        frames: FrameSource,
        refine: RefineConfig,
        keyframes: dict[int, dict[int, Keyframe]],
        cache_key: Hashable | None,
        budget: _Budget,
    ):
        self.engine = engine
        self.frames = frames
        self.refine = refine
        self.keyframes = keyframes
        self.cache_key = cache_key
        self.budget = budget
        self.prev_area: dict[int, int] = {}

    def __call__(self, tf: TrackedFrame) -> tuple[dict[int, np.ndarray], dict[int, float]]:
        masks = tf.masks()
        scores: dict[int, float] = {}
        for k, oid in enumerate(tf.obj_ids):
            prob = tf.probs[k + 1]
            if tf.presence is not None and oid in tf.presence:
                quality = tf.presence[oid]
                if quality < LOST_BELOW:  # the tracker says the object is not on this frame
                    masks[oid] = np.zeros_like(masks[oid])
            else:
                quality = mask_quality(prob, masks[oid], self.prev_area.get(oid))
            if self._wants(tf.index, oid, quality, masks[oid]):
                others = np.zeros_like(masks[oid])
                for o, m in masks.items():
                    if o != oid:
                        others |= m
                key = None if self.cache_key is None else (self.cache_key, tf.index)
                with self.engine.segmenter_lock:
                    r = refine_mask(
                        self.engine.segmenter,
                        self.frames[tf.index],
                        prob,
                        masks[oid],
                        quality,
                        self.refine,
                        others=others,
                        cache_key=key,
                    )
                self.budget.left -= 1
                log.debug(
                    "frame %d object %d refined: accepted=%s (%.2f → %.2f)",
                    tf.index,
                    oid,
                    r.accepted,
                    quality,
                    r.score,
                )
                masks[oid], quality = r.mask, r.score
            scores[oid] = quality
            self.prev_area[oid] = int(masks[oid].sum())
        return masks, scores

    def _wants(self, index: int, oid: int, quality: float, mask: np.ndarray) -> bool:
        mode = self.refine.mode
        if mode == "off" or self.budget.left <= 0 or not mask.any():
            return False
        if oid in self.keyframes.get(index, {}):
            return False
        return mode == "always" or quality < self.refine.threshold


def segment_video(
    engine: Engine,
    frames: FrameSource,
    objects: list[ObjectPrompt],
    *,
    cache_key: Hashable | None = None,
    keyframes: dict[int, dict[int, Keyframe]] | None = None,
    refine: RefineConfig | None = None,
    backward: bool = True,
    stop: int | None = None,
    appearance: dict[int, dict[int, np.ndarray]] | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[FramePrediction]:
    """Masks for every frame of ``frames`` and every object (see module docstring).

    ``keyframes`` (from :func:`segment_keyframes`) skips step 1 when the
    caller already has them. ``refine`` overrides the engine's policy for TAM's
    refinement of poor propagated frames (see :mod:`backend.refine`).
    ``backward=False`` only propagates forward from the earliest keyframe, up to
    ``stop`` (inclusive; default the last frame) — a correction re-propagated
    from its frame; ``appearance`` (``{frame: {obj_id: mask}}``, frames
    before that restart) gives each object's first-keyframe mask, which a tracker may learn the
    object's looks from without propagating it. ``progress(done, total)`` is called after each
    finished frame; ``should_stop()`` is polled between frames and raises
    :class:`Cancelled`.
    """
    frames = same_size(frames)
    total = len(frames)
    objects = [o for o in objects if o.keyframes]
    if stop is not None and not (backward is False and 0 <= stop < total):
        raise ValueError(f"stop={stop} needs backward=False and a frame in 0..{total - 1}")
    if total == 0 or not objects:
        return
    for obj in objects:
        bad = [k for k in obj.keyframes if not 0 <= k < total]
        if bad:
            raise ValueError(f"object {obj.label!r}: keyframe {bad[0]} outside 0..{total - 1}")
    if keyframes is None:
        keyframes = segment_keyframes(engine, frames, objects, cache_key=cache_key)
    first = {o.obj_id: o.keyframes[0] for o in objects}
    kf_scores = {(k, oid): kf.score for k, d in keyframes.items() for oid, kf in d.items()}
    anchor_fwd = min(first.values())
    anchor_bwd = max(first.values())
    last = total - 1 if stop is None else stop
    expected = total if backward else last - anchor_fwd + 1  # frames this call yields

    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, expected)
        if should_stop is not None and should_stop():
            raise Cancelled("stopped")

    def finish(index: int, masks: dict[int, np.ndarray], scores: dict[int, float]):
        for oid in list(scores):
            if (index, oid) in kf_scores:
                scores[oid] = kf_scores[(index, oid)]
        return FramePrediction(index=index, masks=masks, scores=scores)

    refine = refine or engine.refine
    budget = _Budget(refine.max_frames)
    score_bwd = _Scorer(engine, frames, refine, keyframes, cache_key, budget)
    score_fwd = _Scorer(engine, frames, refine, keyframes, cache_key, budget)
    session = engine.tracker.start(frames)
    try:
        for k, objs in keyframes.items():
            for oid, kf in objs.items():
                session.add_mask(k, oid, kf.mask)
        if appearance and not backward:  # frames before the pass: looks only, never yielded
            for k, masks in appearance.items():
                for oid, mask in masks.items():
                    if k < anchor_fwd and oid in first:
                        session.add_mask(k, oid, mask)
        held: dict[int, tuple[dict[int, np.ndarray], dict[int, float]]] = {}
        if backward and anchor_bwd > 0:
            for tf in session.propagate(anchor_bwd, reverse=True):
                masks, scores = score_bwd(tf)
                if tf.index >= anchor_fwd:
                    # both passes cover this frame: keep objects not yet born forward
                    held[tf.index] = (
                        {o: m for o, m in masks.items() if tf.index < first[o]},
                        {o: s for o, s in scores.items() if tf.index < first[o]},
                    )
                    continue
                yield finish(tf.index, masks, scores)
                tick()
        for tf in session.propagate(anchor_fwd, stop=None if backward else stop):
            masks, scores = score_fwd(tf)
            masks = {o: m for o, m in masks.items() if tf.index >= first[o]}
            scores = {o: s for o, s in scores.items() if tf.index >= first[o]}
            if tf.index in held:
                bm, bs = held.pop(tf.index)
                masks, scores = _merge(masks, scores, bm, bs)
            yield finish(tf.index, masks, scores)
            tick()
    finally:
        session.close()


def same_place(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two masks show an object in the same place: at least half of the smaller mask
    lies in the other. An empty mask is in no place.

    Touching is not enough: a backward pass from a poor correction of a lost object can
    touch the kept mask with a few pixels while its body is elsewhere, and blending it then
    moved the object off frames that were right (libby, issue 17: frames 33-35 went from J
    0.52, 0.45, 0.27 to 0.01, 0.04, 0.11; docs/benchmarks.md, seventh round)."""
    small = min(np.count_nonzero(a), np.count_nonzero(b))
    return small > 0 and 2 * np.count_nonzero(a & b) >= small


def _seam(agreement: dict[int, float], earlier: int, anchor: int) -> int | None:
    """The frame where a stretch switches from the forward pass to the backward one
    (``agreement``: frame → IoU of the two masks).

    Each pass starts on its own keyframe and drifts as it goes. On the lowest frame the
    backward pass has come the whole way and the forward one has just left its keyframe;
    on the highest frame it is the other way round. So the agreement there says how well
    the backward pass arrives at the earlier keyframe, and the forward pass at the later
    one (the lowest and highest frames sought: the whole stretch, unless a correction
    recomputed only part of it). A backward pass that arrives better agrees with both
    keyframes and covers the whole stretch (the seam is the lowest frame); otherwise the
    passes meet where they agree best, nearest the middle on ties."""
    if not agreement:
        return None
    lowest, highest = min(agreement), max(agreement)
    if agreement[lowest] > agreement[highest]:
        return lowest
    return max(agreement, key=lambda t: (agreement[t], -abs(2 * t - earlier - anchor), t))


def splice_backward(
    engine: Engine,
    frames: FrameSource,
    anchor: int,
    masks: dict[int, np.ndarray],
    earlier: dict[int, int],
    kept: Callable[[int], tuple[dict[int, np.ndarray], dict[int, float]]],
    *,
    low: int | None = None,
    high: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[FramePrediction]:
    """A keyframe's reach backward: each object's stretch between its previous keyframe
    ``p = earlier[obj]`` and ``anchor`` switches from the forward pass to a backward pass
    from ``anchor`` at a seam.

    Each object of ``masks`` (its keyframe mask on ``anchor``: a correction, or a later
    keyframe) is tracked backward from ``anchor`` down to ``p + 1``; ``kept(frame)`` gives
    every object's masks and scores as they stand, come forward from ``p``. From the seam up
    to ``anchor − 1`` the object shows the backward mask and its score, below it what it
    kept. The seam comes from the two masks' overlap (IoU) on each frame, with no weight or
    threshold to choose (:func:`_seam`): the lowest frame when the backward pass arrives at
    ``p`` better than the forward one at ``anchor``, else where the two agree best, so they
    meet where they leave the least jump. When one pass drifts early, the two tend to agree
    best near the other's keyframe, which then covers more of the stretch (not always:
    docs/benchmarks.md, issue 17, fourteenth round, goat).
    Where the backward mask is not in the kept one's place (:func:`same_place`; an
    empty backward mask never is) the frame keeps its mask: the reach refines what a frame
    showed, it never moves or removes the object (a poor correction of a lost object would
    carry its wrong region back). Other objects keep their masks; a spliced mask never takes
    pixels of another object.

    Only frames ``high`` down to ``low`` are spliced (default ``anchor − 1`` down to
    ``min(earlier) + 1``), and the seam is sought among them: a caller passes the frames
    whose kept masks are the forward pass's (after a correction, those it recomputed). The
    seam needs the whole pass, so frames are yielded after it, from the highest down; the
    backward masks are held compact meanwhile. The tracker also gets each object's mask on
    ``p``, which the pass never reaches: a tracker may learn the object's looks there rather
    than from a correction that is often partial (the weights-free one does, as a forward
    restart learns them on the first keyframe). Measured on issue 17's halves:
    docs/benchmarks.md.
    """
    frames = same_size(frames)
    if not masks:
        return
    bad = [o for o in masks if not 0 <= earlier[o] < anchor]
    if bad or not 0 < anchor < len(frames):
        raise ValueError(f"backward reach needs 0 <= earlier < anchor < {len(frames)}")
    bottom = min(earlier[o] for o in masks) + 1
    bottom = bottom if low is None else max(bottom, low)
    top = anchor - 1 if high is None else min(high, anchor - 1)
    if bottom > top:
        return
    passed: dict[int, dict[int, tuple[CompactMask, float]]] = {}  # frame → obj → back, score
    agreement: dict[int, dict[int, float]] = {o: {} for o in masks}  # obj → frame → IoU
    session = engine.tracker.start(frames)
    try:
        for oid, mask in masks.items():
            session.add_mask(anchor, oid, mask)
            look = kept(earlier[oid])[0].get(oid)
            if look is not None and look.any():  # beyond the pass's end: looks only
                session.add_mask(earlier[oid], oid, look)
        for tf in session.propagate(anchor, reverse=True, stop=bottom):
            t = tf.index
            if t > top:
                continue
            old_masks = kept(t)[0]
            for k, oid in enumerate(tf.obj_ids):
                if oid not in masks or t <= earlier[oid]:
                    continue
                prob = tf.probs[k + 1]
                present = None if tf.presence is None else tf.presence.get(oid)
                if present is not None and present < LOST_BELOW:
                    prob = np.zeros_like(prob)
                back = prob > 0.5
                old = old_masks.get(oid)
                if old is not None and old.any() and not same_place(old, back):
                    continue  # the passes disagree on where it is: no move, no removal
                quality = present if present is not None else mask_quality(prob, back, None)
                passed.setdefault(t, {})[oid] = (CompactMask.encode(back), float(quality))
                agreement[oid][t] = jaccard(old, back) if old is not None else 0.0
            if should_stop is not None and should_stop():
                raise Cancelled("stopped")
    finally:
        session.close()
    seams = {o: _seam(agreement[o], earlier[o], anchor) for o in masks}
    for t in range(top, bottom - 1, -1):
        out_masks, out_scores = kept(t)
        out_masks, out_scores = dict(out_masks), dict(out_scores)
        for oid, (back, quality) in passed.get(t, {}).items():
            seam = seams[oid]
            if seam is None or t < seam:
                continue
            spliced = back.decode()
            for o, m in out_masks.items():
                if o != oid:
                    spliced &= ~m
            out_masks[oid], out_scores[oid] = spliced, quality
        yield FramePrediction(index=t, masks=out_masks, scores=out_scores)


def _merge(
    masks_a: dict[int, np.ndarray],
    scores_a: dict[int, float],
    masks_b: dict[int, np.ndarray],
    scores_b: dict[int, float],
) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """Union of two disjoint object sets; pixels claimed twice go to the first set."""
    taken = np.zeros_like(next(iter(masks_a.values()))) if masks_a else None
    for m in masks_a.values():
        taken |= m
    masks = dict(masks_a)
    for oid, m in masks_b.items():
        masks[oid] = m & ~taken if taken is not None else m
    return masks, {**scores_a, **scores_b}
