"""Per-frame masks → Label Studio ``videorectangle`` tracks with the fewest keyframes.

Label Studio 1.23 shows no masks on ``<Video>``; its only spatial video region is a box
track: ``value.sequence`` is a list of keyframes ``{frame (1-based), x, y, width, height
(percent of the frame), rotation, enabled, time}``. The UI draws frame ``t`` from the last
keyframe at or before ``t``:

* none → no box (before the first keyframe);
* it is on ``t`` → its box, even when it is ``enabled: false``;
* it is disabled → no box (a disabled keyframe ends a span; the box is gone from the
  next frame until the next keyframe);
* otherwise → the linear interpolation towards the next keyframe, or the same box when
  there is none (the last shape holds to the end of the video).

This module turns a per-frame box track (from masks) into such a sequence.

**Error.** The error of a shown box against the real box of a frame is the largest
displacement of any of the four box edges, in pixels:
``max(|Δleft|, |Δtop|, |Δright|, |Δbottom|)`` (:func:`box_error`). Equivalently every
corner stays inside a square of half-side ``tolerance`` around its real position, so its
Euclidean distance is at most ``√2 · tolerance``. The default tolerance is 1 % of the
frame diagonal (about 9.8 px at 854×480).

**Keyframes.** Inside a span of consecutive shown frames, keyframes sit on real boxes
(rounded to the stored precision) and a shortest-path search over frames picks the fewest
of them such that the interpolation between consecutive keyframes stays within the
tolerance of the real box on *every* frame in between (:func:`select_keyframes`). Edge
feasibility uses the slope interval of each edge coordinate, so one source frame costs
O(its reach) and the result is exactly minimal for keyframes on real boxes.

**Visibility.** A frame is shown when it has a box with ``score >= min_score`` or an
annotator keyframe. A span never interpolates across a gap: its last frame gets an
``enabled: false`` keyframe (unless the span reaches the end of the video) and the next
span starts with a new enabled keyframe.

**Annotator keyframes** are kept exactly: same frame, same percent box, same rotation;
they also replace the model's box on their frame. An annotator keyframe with
``enabled: false`` ends its span; an enabled one that ends a span before the end of the
video is written disabled (only the flag changes). Rotation is not part of the error.

Frame indices in this module are 0-based, as in the pipeline; Label Studio frame =
index + 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.types import FramePrediction

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_FRACTION = 0.01
"""Default tolerance as a share of the frame diagonal."""
DEFAULT_MIN_SCORE = 0.3
"""A frame whose score is below this is treated as lost (no box shown)."""
PERCENT_DECIMALS = 4
"""Decimals kept in the percent coordinates (1e-4 % of 1920 px ≈ 0.002 px)."""


# --------------------------------------------------------------------------- boxes


@dataclass(frozen=True)
class FrameBox:
    """An axis-aligned box in native frame pixels: left ``x``, top ``y``, width, height.

    Pixel edges, not centres: a mask covering columns 3..5 has ``x=3, w=3``.
    """

    x: float
    y: float
    w: float
    h: float

    @property
    def edges(self) -> tuple[float, float, float, float]:
        """``(left, top, right, bottom)`` in pixels."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def percent(self, width: int, height: int) -> tuple[float, float, float, float]:
        """``(x, y, width, height)`` in percent of a ``width``×``height`` frame."""
        return (
            100.0 * self.x / width,
            100.0 * self.y / height,
            100.0 * self.w / width,
            100.0 * self.h / height,
        )

    @classmethod
    def from_percent(
        cls, x: float, y: float, w: float, h: float, width: int, height: int
    ) -> FrameBox:
        """The pixel box of Label Studio percent coordinates on a ``width``×``height`` frame."""
        return cls(x * width / 100.0, y * height / 100.0, w * width / 100.0, h * height / 100.0)


def mask_box(mask: np.ndarray) -> FrameBox | None:
    """The tight box around the true pixels of an H×W mask; ``None`` when it is empty."""
    mask = np.asarray(mask, dtype=bool)
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])
    return FrameBox(float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1))


def box_error(shown: FrameBox, real: FrameBox) -> float:
    """The module's error measure: the largest edge displacement between two boxes, in pixels."""
    return max(abs(a - b) for a, b in zip(shown.edges, real.edges, strict=True))


def default_tolerance(
    width: int, height: int, fraction: float = DEFAULT_TOLERANCE_FRACTION
) -> float:
    """``fraction`` of the frame diagonal, in pixels."""
    return fraction * math.hypot(width, height)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class TrackFrame:
    """The model's estimate of one object on one frame (0-based ``index``).

    ``box`` is ``None`` when the mask is empty; ``score`` is its quality in [0, 1].
    """

    index: int
    box: FrameBox | None
    score: float


@dataclass(frozen=True)
class Keyframe:
    """An annotator's keyframe as Label Studio holds it: 0-based ``index``, percent box."""

    index: int
    x: float
    y: float
    width: float
    height: float
    enabled: bool = True
    rotation: float = 0.0

    def box(self, frame_width: int, frame_height: int) -> FrameBox:
        return FrameBox.from_percent(
            self.x, self.y, self.width, self.height, frame_width, frame_height
        )


@dataclass(frozen=True)
class ObjectTrack:
    """One object to write as one ``videorectangle`` region."""

    region_id: str
    label: str
    frames: Sequence[TrackFrame]
    keyframes: Sequence[Keyframe] = ()


@dataclass(frozen=True)
class VideoInfo:
    """The video as Label Studio sees it: native frame size, its frame grid and duration.

    ``frames_count`` is Label Studio's ``framesCount`` (duration × the config's framerate);
    ``framerate`` is the config's rate, used for ``time`` (``frames_count / duration`` when
    not given).
    """

    width: int
    height: int
    frames_count: int
    duration: float
    framerate: float | None = None

    @property
    def fps(self) -> float:
        if self.framerate:
            return float(self.framerate)
        return self.frames_count / self.duration if self.duration > 0 else 1.0


@dataclass(frozen=True)
class TrackOptions:
    """How tracks are compressed: tolerance in pixels (default: a share of the diagonal),
    the score under which a frame is lost, and the percent precision written."""

    tolerance_px: float | None = None
    tolerance_fraction: float = DEFAULT_TOLERANCE_FRACTION
    min_score: float = DEFAULT_MIN_SCORE
    decimals: int = PERCENT_DECIMALS

    def tolerance(self, video: VideoInfo) -> float:
        if self.tolerance_px is not None:
            return float(self.tolerance_px)
        return default_tolerance(video.width, video.height, self.tolerance_fraction)


def keyframes_from_sequence(sequence: Iterable[Mapping[str, Any]]) -> list[Keyframe]:
    """Annotator keyframes from a Label Studio ``value.sequence`` (1-based frames)."""
    out = []
    for kf in sequence:
        out.append(
            Keyframe(
                index=int(kf["frame"]) - 1,
                x=float(kf["x"]),
                y=float(kf["y"]),
                width=float(kf["width"]),
                height=float(kf["height"]),
                enabled=bool(kf.get("enabled", True)),
                rotation=float(kf.get("rotation", 0.0) or 0.0),
            )
        )
    return out


def track_frames(predictions: Iterable[FramePrediction]) -> dict[int, list[TrackFrame]]:
    """Per object id, its frames (box of the mask, score) from the pipeline's predictions.

    An object with a score but no mask on a frame gets ``box=None`` there.
    """
    out: dict[int, list[TrackFrame]] = {}
    for fp in predictions:
        for oid in sorted(set(fp.masks) | set(fp.scores)):
            mask = fp.masks.get(oid)
            box = mask_box(mask) if mask is not None else None
            out.setdefault(oid, []).append(
                TrackFrame(fp.index, box, float(fp.scores.get(oid, 0.0)))
            )
    return out


# --------------------------------------------------------------------------- keyframe selection


def _edges_from(
    i: int, end: int, vertices: np.ndarray, targets: np.ndarray, tol: float
) -> np.ndarray:
    """Which frames ``j`` in ``(i, end]`` can follow a keyframe on ``i`` (a bool per ``j``).

    For each edge coordinate the slopes ``s`` with ``|v_i + s·(k-i) − t_k| <= tol`` form an
    interval per frame ``k``; their running intersection over ``k <= j`` must contain the
    slope towards ``v_j``. Once the intersection is empty no later ``j`` can work, so the
    scan stops there: the cost is the reach of ``i``, not the span.
    """
    lo_parts, hi_parts, d_parts = [], [], []
    lo_run = np.full(4, -np.inf)
    hi_run = np.full(4, np.inf)
    first, window = i + 1, 64
    while first <= end:
        stop = min(end, first + window - 1)
        d = np.arange(first - i, stop - i + 1, dtype=np.float64)[:, None]
        chunk = targets[first : stop + 1]
        lo = np.maximum.accumulate(np.vstack([lo_run, (chunk - tol - vertices[i]) / d]))[1:]
        hi = np.minimum.accumulate(np.vstack([hi_run, (chunk + tol - vertices[i]) / d]))[1:]
        lo_parts.append(lo)
        hi_parts.append(hi)
        d_parts.append(d)
        lo_run, hi_run = lo[-1], hi[-1]
        if (lo_run > hi_run).any():
            break
        first, window = stop + 1, window * 4
    lo, hi, d = np.vstack(lo_parts), np.vstack(hi_parts), np.vstack(d_parts)
    slope = (vertices[i + 1 : i + 1 + len(d)] - vertices[i]) / d
    valid = ((lo <= slope) & (slope <= hi)).all(axis=1)
    valid[0] = True  # adjacent keyframes leave no frame in between
    return valid


def _shortest(
    start: int, end: int, vertices: np.ndarray, targets: np.ndarray, tol: float, hold: bool
) -> list[int]:
    """Fewest keyframes from ``start`` to ``end`` (both keyframes), or, with ``hold``, from
    ``start`` to a last keyframe whose box held to ``end`` stays within ``tol``."""
    n = end - start + 1
    unreached = np.iinfo(np.int64).max
    dist = np.full(n, unreached, dtype=np.int64)
    parent = np.full(n, -1, dtype=np.int64)
    dist[0] = 0
    reached = 0  # the furthest local index with a distance
    for li in range(n - 1):
        # skip a frame that cannot shorten any path: everything after it is reached in one more
        if reached == n - 1 and int(dist[li + 1 :].max()) <= dist[li] + 1:
            continue
        js = li + 1 + np.flatnonzero(_edges_from(start + li, end, vertices, targets, tol))
        better = js[dist[js] > dist[li] + 1]
        dist[better] = dist[li] + 1
        parent[better] = li
        reached = max(reached, int(js[-1]))
    last = n - 1
    if hold:
        # frames a keyframe's box can hold to the end from: within tol of every later target
        span = targets[start : end + 1]
        after_max = np.maximum.accumulate(span[::-1], axis=0)[::-1]
        after_min = np.minimum.accumulate(span[::-1], axis=0)[::-1]
        ok = np.ones(n, dtype=bool)
        v = vertices[start:end]
        ok[:-1] = ((after_max[1:] - v <= tol) & (v - after_min[1:] <= tol)).all(axis=1)
        candidates = np.flatnonzero(ok)
        best = int(dist[candidates].min())
        last = int(candidates[dist[candidates] == best][-1])  # ties: the latest
    path = [last]
    while path[-1] != 0:
        path.append(int(parent[path[-1]]))
    return [start + p for p in reversed(path)]


def select_keyframes(
    vertices: np.ndarray,
    targets: np.ndarray,
    tolerance: float,
    required: Iterable[int] = (),
    hold_end: bool = False,
) -> list[int]:
    """The fewest keyframes over one span of consecutive frames (local indices 0..n-1).

    ``targets`` (n×4) are the real boxes as ``(left, top, right, bottom)`` pixels and
    ``vertices`` (n×4) the boxes a keyframe on that frame would store (the real box as
    rounded for output, or the annotator's box). The first frame and every ``required``
    frame are keyframes; so is the last unless ``hold_end``, where the last keyframe's box
    may hold to the end. Every frame between two consecutive keyframes (and after the last
    one) is within ``tolerance`` of its target under linear interpolation; keyframes
    themselves show their vertex.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n = len(targets)
    if n == 0:
        return []
    tol = max(float(tolerance), 0.0)
    stops = sorted({0, *(int(r) for r in required if 0 <= r < n)})
    if not hold_end and stops[-1] != n - 1:
        stops.append(n - 1)
    out = [stops[0]]
    for a, b in zip(stops, stops[1:], strict=False):
        out += _shortest(a, b, vertices, targets, tol, hold=False)[1:]
    if hold_end and stops[-1] != n - 1:
        out += _shortest(stops[-1], n - 1, vertices, targets, tol, hold=True)[1:]
    return out


# --------------------------------------------------------------------------- tracks → results


@dataclass(frozen=True)
class _Shown:
    """What a frame should show: real box, the box a keyframe would store, its score."""

    target: tuple[float, float, float, float]
    vertex: tuple[float, float, float, float]
    percent: tuple[float, float, float, float]
    score: float | None
    keyframe: Keyframe | None = None


@dataclass
class _Span:
    """A run of consecutive shown frames, built frame by frame."""

    first: int
    frames: list[_Shown] = field(default_factory=list)

    @property
    def last(self) -> int:
        return self.first + len(self.frames) - 1


def _shown_frames(track: ObjectTrack, video: VideoInfo, options: TrackOptions) -> dict[int, _Shown]:
    w, h, nd = video.width, video.height, options.decimals
    shown: dict[int, _Shown] = {}
    dropped = 0
    scores: dict[int, float] = {}
    for tf in track.frames:
        index = int(tf.index)
        if not 0 <= index < video.frames_count:
            dropped += 1
            continue
        scores[index] = float(tf.score)
        if tf.box is None or tf.score < options.min_score:
            continue
        px, py, pw, ph = (round(float(v), nd) for v in tf.box.percent(w, h))
        vertex = FrameBox.from_percent(px, py, pw, ph, w, h).edges
        shown[index] = _Shown(tf.box.edges, vertex, (px, py, pw, ph), float(tf.score))
    for kf in track.keyframes:
        index = int(kf.index)
        if not 0 <= index < video.frames_count:
            dropped += 1
            continue
        edges = kf.box(w, h).edges
        pct = (kf.x, kf.y, kf.width, kf.height)
        shown[index] = _Shown(edges, edges, pct, scores.get(index), kf)
    if dropped:
        log.warning(
            "track %s: %d frame(s) outside the video's %d frames ignored",
            track.region_id,
            dropped,
            video.frames_count,
        )
    return shown


def _spans(shown: Mapping[int, _Shown]) -> list[_Span]:
    spans: list[_Span] = []
    for index in sorted(shown):
        s = shown[index]
        cur = spans[-1] if spans else None
        ended = cur is not None and (
            cur.last != index - 1
            or (cur.frames[-1].keyframe is not None and not cur.frames[-1].keyframe.enabled)
        )
        if cur is None or ended:
            spans.append(_Span(index))
        spans[-1].frames.append(s)
    return spans


def compress_track(
    track: ObjectTrack, video: VideoInfo, options: TrackOptions | None = None
) -> list[dict[str, Any]]:
    """The Label Studio ``value.sequence`` of ``track``: fewest keyframes within tolerance."""
    options = options or TrackOptions()
    return _sequence(_shown_frames(track, video, options), video, options.tolerance(video))


def _sequence(shown: Mapping[int, _Shown], video: VideoInfo, tol: float) -> list[dict[str, Any]]:
    fps = video.fps
    sequence: list[dict[str, Any]] = []
    for span in _spans(shown):
        targets = np.array([s.target for s in span.frames])
        vertices = np.array([s.vertex for s in span.frames])
        required = [k for k, s in enumerate(span.frames) if s.keyframe is not None]
        at_end = span.last == video.frames_count - 1
        end_kf = span.frames[-1].keyframe
        closes = not at_end or (end_kf is not None and not end_kf.enabled)
        picks = select_keyframes(vertices, targets, tol, required, hold_end=not closes)
        for k in picks:
            s = span.frames[k]
            frame = span.first + k + 1
            x, y, width, height = s.percent
            sequence.append(
                {
                    "frame": frame,
                    "enabled": not (closes and k == len(span.frames) - 1),
                    "rotation": s.keyframe.rotation if s.keyframe else 0,
                    "x": x,
                    "y": y,
                    "width": width,
                    "height": height,
                    "time": round(frame / fps, 6),
                }
            )
    return sequence


def _score_meta(track: ObjectTrack, frames_count: int) -> dict[str, Any] | None:
    """Per-frame scores as integer percent from the first scored frame on (``None`` where
    the model gave none): about 3 bytes a frame."""
    scores = {int(tf.index): float(tf.score) for tf in track.frames}
    scores = {i: v for i, v in scores.items() if 0 <= i < frames_count}
    if not scores:
        return None
    first, last = min(scores), max(scores)
    values = [round(100 * scores[i]) if i in scores else None for i in range(first, last + 1)]
    return {"first_frame": first + 1, "values": values}


def track_result(
    track: ObjectTrack,
    *,
    from_name: str,
    to_name: str,
    video: VideoInfo,
    options: TrackOptions | None = None,
) -> dict[str, Any] | None:
    """One ``videorectangle`` result for ``track``; ``None`` when no frame is shown.

    ``score`` is the mean model score over the shown frames (annotator keyframes without a
    model score count as 1). ``meta.frame_scores`` keeps every frame's score, lost frames
    included: the 1.23 editor holds a result's ``meta`` as an opaque object, writes it back
    on save and displays only ``meta.text``.
    """
    options = options or TrackOptions()
    shown = _shown_frames(track, video, options)
    sequence = _sequence(shown, video, options.tolerance(video))
    if not sequence:
        log.info("track %s: no frame shown, no region", track.region_id)
        return None
    shown_scores = [1.0 if s.score is None else s.score for s in shown.values()]
    result: dict[str, Any] = {
        "id": track.region_id,
        "from_name": from_name,
        "to_name": to_name,
        "type": "videorectangle",
        "value": {
            "framesCount": int(video.frames_count),
            "duration": video.duration,
            "sequence": sequence,
            "labels": [track.label],
        },
        "score": round(float(np.mean(shown_scores)), 4),
    }
    meta = _score_meta(track, video.frames_count)
    if meta is not None:
        result["meta"] = {"frame_scores": meta}
    log.debug(
        "track %s: %d keyframes for %d shown frames", track.region_id, len(sequence), len(shown)
    )
    return result


def track_results(
    tracks: Iterable[ObjectTrack],
    *,
    from_name: str,
    to_name: str,
    video: VideoInfo,
    options: TrackOptions | None = None,
) -> list[dict[str, Any]]:
    """Results of every track that shows at least one frame, in order."""
    out = []
    for track in tracks:
        result = track_result(
            track, from_name=from_name, to_name=to_name, video=video, options=options
        )
        if result is not None:
            out.append(result)
    return out


def prediction_score(results: Iterable[Mapping[str, Any]]) -> float:
    """The prediction's score: the mean of its regions' scores (0 when none has one)."""
    scores = [float(r["score"]) for r in results if r.get("score") is not None]
    return round(float(np.mean(scores)), 4) if scores else 0.0
