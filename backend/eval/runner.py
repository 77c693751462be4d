"""DAVIS protocol runner: simulated clicks → an interactive session → J/F per round.

Three protocols (``protocol``):

* ``click`` — round 1 is one positive click per object on the first frame, at the
  ground-truth mask's distance-transform maximum. Each further round adds the clicks of
  :func:`backend.eval.clicks.next_correction` (worst frame by J, one click per wrong object).
* ``box`` — round 1 is a tight box around each ground-truth object on the first frame (its
  only prompt); further rounds add corrective clicks as above.
* ``noc`` — the keyframe protocol of interactive image segmentation: on the first frame only,
  clicks are added one at a time (the first at the distance-transform maximum, each next one
  in the largest error region of what the annotator is shown) until the mask reaches an IoU
  threshold; NoC@85 / NoC@90 = clicks needed (``NOC_MAX_CLICKS`` when never reached).

Corrections (``corrections``): ``click`` (default) as above; ``mask`` — the annotator paints
each wrong object's ground-truth mask on the worst frame instead (a brush prompt, as Label
Studio sends one): the best that one correction per round can do, so the curve shows how much
of the gap the tracker leaves once the corrected frame is perfect; ``region`` — the annotator
paints what it was shown with the clicked error region (the one ``click`` would click in)
fixed and nothing else: the best a correction can do that changes only the part it is on.

Clicks go to an :class:`Annotator` one object at a time, as Label Studio sends them (all of
the clicked label's points); what it answers is what the annotator is shown. Scores use the
DAVIS semi-supervised rules of :mod:`backend.eval.metrics`. Sequences can be grouped into
named halves (:data:`SPLITS`); reports give the mean of each half present.

Two annotators, one protocol — what is measured is what is served:

* in-process (default): a :class:`backend.session.InteractiveSession` on an engine from
  :func:`backend.engine.build_engine`, the same session the server runs;
* ``--server URL``: a running backend over HTTP, exactly as Label Studio calls it
  (:mod:`backend.eval.remote`); the server must read frames from the ``--davis`` root
  (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``).

CLI: ``python -m backend eval --davis ROOT [--sequences ... | --split tune|validate|both]
[--protocol click|box|noc] [--corrections click|mask|region] [--engine ...] [--rounds N]
[--out DIR] [--json FILE] [--max-frames N] [--server URL]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from backend.config import ENGINES
from backend.eval.clicks import (
    corrective_click,
    first_frame_boxes,
    first_frame_clicks,
    fix_largest_error,
    next_correction,
)
from backend.eval.davis import (
    DavisError,
    DavisSequence,
    list_sequences,
    load_sequence,
    read_ground_truth,
    write_index_png,
)
from backend.eval.metrics import (
    EvalConfig,
    SequenceResult,
    evaluate_sequence,
    object_ids,
    summarize,
)
from backend.frames import FrameSource, LazyFrameSource, MediaError, read_image
from backend.masks import jaccard, masks_to_index
from backend.session import InteractiveSession, SessionKey
from backend.types import Box, Click

log = logging.getLogger(__name__)

PROTOCOLS = ("click", "box", "noc")
CORRECTIONS = ("click", "mask", "region")

SPLITS: dict[str, tuple[str, ...]] = {
    "tune": ("blackswan", "camel", "car-shadow", "dog", "goat", "libby", "parkour"),
    "validate": (
        "breakdance",
        "car-roundabout",
        "cows",
        "drift-straight",
        "horsejump-high",
        "motocross-jump",
        "scooter-black",
    ),
}
"""Issue 17's fixed split of the 14 shared DAVIS-2016 val sequences: engine constants are
chosen on ``tune`` only; a change is kept only if ``validate`` does not get worse."""

NOC_MAX_CLICKS = 20
NOC_THRESHOLDS = (0.85, 0.90)


def split_sequences(split: str) -> list[str]:
    """Sequence names of a named half, or of both halves for ``"both"``."""
    if split == "both":
        return [n for half in SPLITS.values() for n in half]
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {[*SPLITS, 'both']}")
    return list(SPLITS[split])


@dataclass
class SequenceRun:
    """Everything measured on one sequence, one entry per round."""

    name: str
    n_frames: int
    results: list[SequenceResult] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    clicks: list[int] = field(default_factory=list)  # total clicks used by each round

    @property
    def s_per_frame(self) -> float:
        return float(np.mean(self.seconds)) / self.n_frames if self.seconds else math.nan


def _build_engine(name: str):
    from backend.engine import build_engine

    return build_engine(name)


class Annotator(Protocol):
    """Where the simulated annotator's clicks go, one object at a time."""

    name: str

    def click(
        self,
        obj_id: int,
        label: str,
        clicks: dict[int, list[Click]],
        boxes: dict[int, Box] | None = None,
        masks: dict[int, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Send every click (and box, and painted mask) of one object (as Label Studio does
        on each click); returns the object's mask on every frame as the annotator is shown
        it."""
        ...


AnnotatorFactory = Callable[[DavisSequence, FrameSource, int], Annotator]


class SessionAnnotator:
    """The in-process annotator: an :class:`InteractiveSession` per sequence."""

    def __init__(self, engine, name: str, frames: FrameSource):
        self.engine = engine
        self.name = engine.name
        self.frames = frames
        self.session = InteractiveSession(SessionKey("eval", None, None, name), len(frames))

    def click(
        self,
        obj_id: int,
        label: str,
        clicks: dict[int, list[Click]],
        boxes: dict[int, Box] | None = None,
        masks: dict[int, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        self.session.set_object(obj_id, label, clicks=clicks, boxes=boxes, masks=masks)
        for _ in self.session.run(self.engine, self.frames, answer=[obj_id], cache_key=None):
            pass
        shape = self.frames[0].shape[:2]
        out = []
        for f in range(len(self.frames)):
            mask = self.session.shown(obj_id, f)
            out.append(np.zeros(shape, bool) if mask is None else mask)
        return out


def _count_clicks(clicks: dict[int, dict[int, list[Click]]]) -> int:
    return sum(len(c) for frames in clicks.values() for c in frames.values())


def object_label(obj_id: int) -> str:
    return f"object {obj_id}"


def run_sequence(
    annotator_factory: AnnotatorFactory,
    root: Path,
    name: str,
    *,
    rounds: int,
    max_frames: int | None,
    config: EvalConfig,
    protocol: str = "click",
    pick_scored: bool = False,
    corrections: str = "click",
) -> tuple[SequenceRun, list[np.ndarray], list[str]]:
    """All rounds on one sequence; returns the run, the last round's label maps, frame stems."""
    seq = load_sequence(root, name, max_frames)
    gt = read_ground_truth(seq)
    shape = gt[0].shape
    frames = LazyFrameSource(len(seq), lambda i: read_image(seq.images[i]), cache_size=4)
    first = frames[0]
    if first.shape[:2] != shape:
        raise DavisError(f"{name}: frames are {first.shape[:2]} but annotations {shape}")
    ids = object_ids(gt[0])
    annotator = annotator_factory(seq, frames, max(ids, default=0))
    clicks: dict[int, dict[int, list[Click]]] = {}
    shown: dict[int, list[np.ndarray]] = {}
    boxes: dict[int, dict[int, Box]] = {}
    painted: dict[int, dict[int, np.ndarray]] = {}
    todo: dict[int, tuple[int, Click | None]] = {}
    if protocol == "box":
        boxes = {oid: {0: b} for oid, b in first_frame_boxes(gt[0], ids).items()}
        todo = {oid: (0, None) for oid in boxes}
    else:
        todo = {oid: (0, c) for oid, c in first_frame_clicks(gt[0], ids).items()}
    run = SequenceRun(name=name, n_frames=len(seq))
    preds: list[np.ndarray] = []
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        for oid, (frame, click) in sorted(todo.items()):
            if click is not None:
                clicks.setdefault(oid, {}).setdefault(frame, []).append(click)
            shown[oid] = annotator.click(
                oid,
                object_label(oid),
                clicks.get(oid, {}),
                boxes=boxes.get(oid),
                masks=painted.get(oid),
            )
        run.seconds.append(time.perf_counter() - t0)
        preds = [
            masks_to_index({oid: m[f] for oid, m in shown.items()}, shape) for f in range(len(seq))
        ]
        run.clicks.append(
            _count_clicks(clicks)
            + sum(len(b) for b in boxes.values())
            + sum(len(m) for m in painted.values())
        )
        res = evaluate_sequence(gt, preds, name=name, config=config, obj_ids=ids)
        run.results.append(res)
        log.info(
            "%s round %d/%d: J&F %.3f (J %.3f F %.3f), %d clicks, %.3f s/frame",
            name, r, rounds, res.jf, res.j, res.f, run.clicks[-1], run.seconds[-1] / len(seq),
        )  # fmt: skip
        if r == rounds:
            break
        corr = next_correction(gt, preds, ids, scored_frames(len(seq), config, pick_scored))
        if corr is None:
            todo = {}
        elif corrections in ("mask", "region"):
            for oid in corr.clicks:  # the painted mask replaces the frame's clicks
                truth = gt[corr.frame] == oid
                painted.setdefault(oid, {})[corr.frame] = (
                    truth
                    if corrections == "mask"
                    else fix_largest_error(truth, shown[oid][corr.frame])
                )
                clicks.get(oid, {}).pop(corr.frame, None)
            todo = {o: (corr.frame, None) for o in corr.clicks}
        else:
            todo = {o: (corr.frame, c) for o, c in corr.clicks.items()}
        if corr is not None:
            log.info("%s: next correction on frame %d (J %.3f)", name, corr.frame, corr.quality)
        if corr is None:
            log.info("%s: prediction exact after round %d; later rounds repeat it", name, r)
    return run, preds, [p.stem for p in seq.annotations]


@dataclass
class NocRun:
    """The keyframe protocol on one sequence: IoU after each click, per object."""

    name: str
    ious: dict[int, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def noc(self, obj_id: int, threshold: float, max_clicks: int = NOC_MAX_CLICKS) -> int:
        """Clicks until the object's IoU reached ``threshold`` (``max_clicks`` if never)."""
        for k, iou in enumerate(self.ious[obj_id][:max_clicks], 1):
            if iou >= threshold:
                return k
        return max_clicks


def run_noc_sequence(
    annotator_factory: AnnotatorFactory,
    root: Path,
    name: str,
    *,
    max_clicks: int = NOC_MAX_CLICKS,
    stop_at: float = max(NOC_THRESHOLDS),
) -> NocRun:
    """Clicks on the first frame only, one at a time, until IoU ≥ ``stop_at`` or
    ``max_clicks``; each object has its own one-frame session (an instance-level NoC)."""
    seq = load_sequence(root, name, max_frames=1)
    gt = read_ground_truth(seq)[0]
    frames = LazyFrameSource(1, lambda i: read_image(seq.images[0]), cache_size=1)
    if frames[0].shape[:2] != gt.shape:
        raise DavisError(f"{name}: frames are {frames[0].shape[:2]} but annotations {gt.shape}")
    run = NocRun(name=name)
    t0 = time.perf_counter()
    for oid in object_ids(gt):
        target = gt == oid
        annotator = annotator_factory(seq, frames, oid)
        given: list[Click] = []
        click = first_frame_clicks(gt, [oid]).get(oid)
        ious: list[float] = []
        while click is not None and len(given) < max_clicks:
            given.append(click)
            mask = annotator.click(oid, object_label(oid), {0: list(given)})[0]
            ious.append(float(jaccard(target, mask)))
            if ious[-1] >= stop_at:
                break
            click = corrective_click(target, mask)
        run.ious[oid] = ious
        log.info(
            "%s object %d: IoU %s", name, oid, " ".join(f"{v:.2f}" for v in ious)
        )  # fmt: skip
    run.seconds = time.perf_counter() - t0
    return run


def build_noc_report(
    runs: list[NocRun], *, engine_name: str, thresholds: Sequence[float] = NOC_THRESHOLDS
) -> dict:
    """NoC per sequence (mean over its objects) and per data set / half (mean over objects)."""

    def key(t: float) -> str:
        return f"NoC@{round(100 * t)}"

    def first_iou(r: NocRun, oid: int) -> float:
        return r.ious[oid][0] if r.ious[oid] else 0.0

    def means(selected: list[NocRun]) -> dict[str, float]:
        objs = [(r, o) for r in selected for o in r.ious]
        out = {key(t): float(np.mean([r.noc(o, t) for r, o in objs])) for t in thresholds}
        out["IoU@1"] = float(np.mean([first_iou(r, o) for r, o in objs]))
        return out

    return {
        "engine": engine_name,
        "protocol": f"noc (first frame, max {NOC_MAX_CLICKS} clicks)",
        "max_clicks": NOC_MAX_CLICKS,
        "mean": means(runs),
        "halves": {
            half: {**means(sel), "sequences": len(sel)}
            for half, members in SPLITS.items()
            if (sel := [r for r in runs if r.name in members])
        },
        "sequences": {
            r.name: {
                **{key(t): float(np.mean([r.noc(o, t) for o in r.ious])) for t in thresholds},
                "IoU@1": float(np.mean([first_iou(r, o) for o in r.ious])),
                "ious": {str(o): v for o, v in r.ious.items()},
                "seconds": r.seconds,
            }
            for r in runs
        },
    }


def scored_frames(n: int, config: EvalConfig, pick_scored: bool) -> list[int] | None:
    """Frames a correction may go to: all (the default protocol), or with ``pick_scored``
    only those the score counts (first and last skipped under the DAVIS rule)."""
    if not pick_scored or not config.skip_first_last or n <= 2:
        return None
    return list(range(1, n - 1))


def area_under_rounds(values: Sequence[float]) -> float:
    """Trapezoid area under J&F vs round, divided by the round span (= J&F for one round)."""
    if len(values) == 1:
        return float(values[0])
    return float(np.trapezoid(values, dx=1.0) / (len(values) - 1))


def _clean(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def run_davis(
    root: str | Path,
    sequences: Sequence[str] | None = None,
    engine: Any = "auto",
    rounds: int = 1,
    out_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    max_frames: int | None = None,
    config: EvalConfig | None = None,
    protocol: str = "click",
    pick_scored: bool = False,
    corrections: str = "click",
) -> dict:
    """Run a protocol on DAVIS sequences and return the report (fractions 0..1; NoC in
    clicks).

    ``engine`` is an engine name for ``build_engine``, an already built engine, or an
    :data:`AnnotatorFactory` (e.g. :func:`backend.eval.remote.ServerAnnotators`).
    ``protocol``: ``click``, ``box`` or ``noc`` (module docstring).
    """
    config = config or EvalConfig()
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
    if corrections not in CORRECTIONS:
        raise ValueError(f"unknown corrections {corrections!r}; use one of {CORRECTIONS}")
    root = Path(root)
    names = list(sequences) if sequences else list_sequences(root)
    if not names:
        raise DavisError(f"{root}: no sequences")
    if callable(engine) and not hasattr(engine, "tracker"):
        factory, engine_name = engine, getattr(engine, "name", "remote")
    else:
        eng = _build_engine(engine) if isinstance(engine, str) else engine
        engine_name = eng.name

        def factory(seq, frames, _n):
            return SessionAnnotator(eng, seq.name, frames)

    if protocol == "noc":
        log.info("NoC on %d sequences, engine %s", len(names), engine_name)
        noc_runs = []
        for k, name in enumerate(names, 1):
            log.info("[%d/%d] %s", k, len(names), name)
            noc_runs.append(run_noc_sequence(factory, root, name))
        report = build_noc_report(noc_runs, engine_name=engine_name)
        _write_json(json_path, report)
        return report
    log.info(
        "evaluating %d sequences, engine %s, protocol %s, %d round(s)",
        len(names), engine_name, protocol, rounds,
    )  # fmt: skip
    runs: list[SequenceRun] = []
    for k, name in enumerate(names, 1):
        log.info("[%d/%d] %s", k, len(names), name)
        run, preds, stems = run_sequence(
            factory,
            root,
            name,
            rounds=rounds,
            max_frames=max_frames,
            config=config,
            protocol=protocol,
            pick_scored=pick_scored,
            corrections=corrections,
        )
        runs.append(run)
        if out_dir is not None:
            for stem, labels in zip(stems, preds, strict=True):
                write_index_png(Path(out_dir) / name / f"{stem}.png", labels)
    report = build_report(runs, engine_name=engine_name, config=config, protocol=protocol)
    report["pick_scored"] = pick_scored
    report["corrections"] = corrections
    _write_json(json_path, report)
    return report


def _write_json(json_path: str | Path | None, report: dict) -> None:
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))


def _per_round(runs: list[SequenceRun]) -> list[dict]:
    """The DAVIS summary of each round over the runs' objects."""
    return [summarize([r.results[i] for r in runs]) for i in range(len(runs[0].results))]


def _half_summary(runs: list[SequenceRun]) -> dict:
    """J, F, J&F of the last round, J&F per round and AUC, averaged over the runs' objects."""
    per_round = _per_round(runs)
    round_jf = [p["J&F-Mean"] for p in per_round]
    final = per_round[-1]
    return {
        "sequences": len(runs),
        "J": final["J-Mean"],
        "F": final["F-Mean"],
        "J&F": final["J&F-Mean"],
        "rounds": round_jf,
        "auc": area_under_rounds(round_jf),
    }


def build_report(
    runs: list[SequenceRun], *, engine_name: str, config: EvalConfig, protocol: str = "click"
) -> dict:
    per_round = _per_round(runs)
    rounds = len(per_round)
    final = per_round[-1]
    round_jf = [p["J&F-Mean"] for p in per_round]
    first = "one-click" if protocol == "click" else "box"
    return {
        "engine": engine_name,
        "protocol": first if rounds == 1 else f"{first}, interactive, {rounds} rounds",
        "skip_first_last": config.skip_first_last,
        "mean": {"J": final["J-Mean"], "F": final["F-Mean"], "J&F": final["J&F-Mean"]},
        "stats": {k: _clean(v) for k, v in final.items()},
        "sequences": {
            r.name: {
                "J": r.results[-1].j,
                "F": r.results[-1].f,
                "J&F": r.results[-1].jf,
                "s_per_frame": r.s_per_frame,
                "frames": r.n_frames,
                "clicks": r.clicks[-1],
                "rounds": [res.jf for res in r.results],
            }
            for r in runs
        },
        "rounds": round_jf,
        "auc": area_under_rounds(round_jf),
        "halves": {
            half: _half_summary(sel)
            for half, members in SPLITS.items()
            if (sel := [r for r in runs if r.name in members])
        },
        "s_per_frame": float(
            sum(sum(r.seconds) for r in runs) / sum(r.n_frames * rounds for r in runs)
        ),
    }


def format_noc_table(report: dict) -> str:
    """NoC per sequence, the mean and each half's mean, as printed by the CLI."""
    names = list(report["sequences"])
    w = max([len(n) for n in names] + [len("validate (99)")])
    keys = [k for k in report["mean"] if k.startswith("NoC@")]
    head = " ".join(f"{k:>7}" for k in keys)
    lines = [f"{'sequence':<{w}}  {head} {'IoU@1':>6}"]

    def row(label: str, values: dict) -> str:
        cells = " ".join(f"{values[k]:7.2f}" for k in keys)
        return f"{label:<{w}}  {cells} {100 * values['IoU@1']:6.1f}"

    for name, s in report["sequences"].items():
        lines.append(row(name, s))
    lines.append(row("mean", report["mean"]))
    for half, h in report.get("halves", {}).items():
        lines.append(row(f"{half} ({h['sequences']})", h))
    return "\n".join(lines)


def format_table(report: dict) -> str:
    """Per-sequence table and the mean, as printed by the CLI (percent)."""
    if "max_clicks" in report:
        return format_noc_table(report)
    names = list(report["sequences"])
    w = max([len(n) for n in names] + [len("mean")])
    lines = [f"{'sequence':<{w}}  {'J':>6} {'F':>6} {'J&F':>6} {'s/frame':>8} {'clicks':>6}"]
    for name, s in report["sequences"].items():
        lines.append(
            f"{name:<{w}}  {100 * s['J']:6.1f} {100 * s['F']:6.1f} {100 * s['J&F']:6.1f} "
            f"{s['s_per_frame']:8.3f} {s['clicks']:6d}"
        )
    m = report["mean"]
    lines.append(
        f"{'mean':<{w}}  {100 * m['J']:6.1f} {100 * m['F']:6.1f} {100 * m['J&F']:6.1f} "
        f"{report['s_per_frame']:8.3f}"
    )
    if len(report["rounds"]) > 1:
        jf = " ".join(f"{100 * v:.1f}" for v in report["rounds"])
        lines.append(f"J&F per round: {jf}  (AUC {100 * report['auc']:.1f})")
    for half, h in report.get("halves", {}).items():
        line = (
            f"{half} half ({h['sequences']} sequences): J {100 * h['J']:.1f} "
            f"F {100 * h['F']:.1f} J&F {100 * h['J&F']:.1f}"
        )
        if len(h["rounds"]) > 1:
            jf = " ".join(f"{100 * v:.1f}" for v in h["rounds"])
            line += f"; per round {jf} (AUC {100 * h['auc']:.1f})"
        lines.append(line)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m backend eval``."""
    parser.add_argument("--davis", required=True, type=Path, help="DAVIS root folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sequences", nargs="+", help="sequence names (default: all)")
    which.add_argument(
        "--split",
        choices=[*SPLITS, "both"],
        help="issue 17's named halves of the 14 shared sequences (both: all 14); the report "
        "gives each half's mean",
    )
    parser.add_argument(
        "--protocol",
        default="click",
        choices=PROTOCOLS,
        help="click: one click then corrections; box: a tight box on frame 0 then "
        "corrections; noc: clicks on frame 0 until IoU 0.85/0.90 (max 20)",
    )
    parser.add_argument(
        "--pick-scored",
        action="store_true",
        help="corrections go to the worst *scored* frame (not the first or last frame, "
        "which the DAVIS rule does not score)",
    )
    parser.add_argument(
        "--corrections",
        default="click",
        choices=CORRECTIONS,
        help="click: one corrective click per wrong object and round; mask: paint the "
        "ground-truth mask on the worst frame instead (the ceiling of one correction per round); "
        "region: paint the shown mask with only the clicked error region fixed (the ceiling of "
        "a correction that changes only the part it is on)",
    )
    parser.add_argument("--engine", default="auto", choices=ENGINES)
    parser.add_argument("--rounds", type=int, default=1, help="1 = one-click protocol")
    parser.add_argument("--out", type=Path, help="write predicted index PNGs to DIR/<seq>/")
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    parser.add_argument("--max-frames", type=int, help="only the first N frames per sequence")
    parser.add_argument(
        "--server",
        metavar="URL",
        help="evaluate a running backend over HTTP, as Label Studio calls it (its "
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT must be the --davis root)",
    )
    parser.add_argument(
        "--correct-decay",
        action="store_true",
        help="decay with correct bin indices (default: official, NaN from 256 frames)",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``eval`` from parsed arguments; prints the table, returns the exit code."""
    from backend.engine import EngineError

    try:
        engine: Any = args.engine
        if args.server and (args.protocol != "click" or args.corrections != "click"):
            raise ValueError("--server evaluates the click protocol with click corrections only")
        if args.server:
            from backend.eval.remote import ServerAnnotators

            engine = ServerAnnotators(args.server, args.davis)
        report = run_davis(
            args.davis,
            sequences=split_sequences(args.split) if args.split else args.sequences,
            protocol=args.protocol,
            pick_scored=args.pick_scored,
            corrections=args.corrections,
            engine=engine,
            rounds=args.rounds,
            out_dir=args.out,
            json_path=args.json,
            max_frames=args.max_frames,
            config=EvalConfig(decay_uint8_bug=not args.correct_decay),
        )
    except (DavisError, MediaError, EngineError, ValueError) as exc:
        log.error("eval failed: %s", exc)
        return 2
    print(format_table(report))
    return 0
