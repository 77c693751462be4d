"""DAVIS protocol runner: simulated clicks → the server's pipeline → J/F per round.

Round 1 is the one-click protocol: one positive click per object on the first frame, at
the ground-truth mask's distance-transform maximum. Each further round adds the clicks of
:func:`backend.eval.clicks.next_correction` (worst frame by J, one click per wrong object)
to the prompts and runs the whole video again. Scores use the DAVIS semi-supervised rules of
:mod:`backend.eval.metrics`. Masks come from ``backend.pipeline.segment_video`` with an
engine from ``backend.engine.build_engine``: exactly what the server runs.

CLI: ``python -m backend eval --davis ROOT [--sequences ...] [--engine ...] [--rounds N]
[--out DIR] [--json FILE] [--max-frames N]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.eval.clicks import first_frame_clicks, next_correction
from backend.eval.davis import (
    DavisError,
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
from backend.frames import LazyFrameSource, MediaError, read_image
from backend.pipeline import apply_correction_priors
from backend.types import ObjectPrompt

log = logging.getLogger(__name__)

ENGINES = ("auto", "classical", "sam-xmem")


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


def _segment_video(engine, frames, objects):
    from backend.pipeline import segment_video

    return segment_video(engine, frames, objects)


def label_map(masks: dict[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Combine per-object masks into one label map; higher ids win overlapping pixels."""
    out = np.zeros(shape, np.uint8)
    for oid in sorted(masks):
        m = np.asarray(masks[oid], bool)
        if m.shape != shape:
            raise ValueError(f"object {oid}: mask {m.shape} but frame is {shape}")
        out[m] = oid
    return out


def predict_labels(engine, frames, objects: list[ObjectPrompt], shape) -> list[np.ndarray]:
    """Run the pipeline and return one label map per frame (missing frames stay empty)."""
    maps: list[np.ndarray | None] = [None] * len(frames)
    for fp in _segment_video(engine, frames, objects):
        maps[fp.index] = label_map(fp.masks, shape)
    missing = [i for i, m in enumerate(maps) if m is None]
    if missing:
        log.warning(
            "pipeline returned no prediction for %d frames, e.g. %s", len(missing), missing[:3]
        )
    return [m if m is not None else np.zeros(shape, np.uint8) for m in maps]


def _count_clicks(objects: list[ObjectPrompt]) -> int:
    return sum(len(c) for o in objects for c in o.clicks.values())


def run_sequence(
    engine, root: Path, name: str, *, rounds: int, max_frames: int | None, config: EvalConfig
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
    objects = [
        ObjectPrompt(obj_id=oid, label=f"object {oid}", clicks={0: [click]})
        for oid, click in first_frame_clicks(gt[0], ids).items()
    ]
    run = SequenceRun(name=name, n_frames=len(seq))
    preds: list[np.ndarray] = []
    priors: dict = {}
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        preds = predict_labels(engine, frames, objects, shape)
        run.seconds.append(time.perf_counter() - t0)
        run.clicks.append(_count_clicks(objects))
        res = evaluate_sequence(gt, preds, name=name, config=config, obj_ids=ids)
        run.results.append(res)
        log.info(
            "%s round %d/%d: J&F %.3f (J %.3f F %.3f), %d clicks, %.3f s/frame",
            name, r, rounds, res.jf, res.j, res.f, run.clicks[-1], run.seconds[-1] / len(seq),
        )  # fmt: skip
        if r == rounds:
            break
        corr = next_correction(gt, preds, ids)
        if corr is None:
            log.info("%s: prediction exact after round %d; later rounds repeat it", name, r)
            continue
        by_id = {o.obj_id: o for o in objects}
        for oid, click in corr.clicks.items():
            if oid not in by_id:  # object absent from frame 0: its first click comes now
                by_id[oid] = ObjectPrompt(obj_id=oid, label=f"object {oid}")
                objects.append(by_id[oid])
            by_id[oid].clicks.setdefault(corr.frame, []).append(click)
        # as in the server: clicks on a frame correct the mask shown there when they were made
        for obj in objects:
            obj.masks.clear()
        apply_correction_priors(objects, lambda oid, k, shown=preds: shown[k] == oid, priors)
    return run, preds, [p.stem for p in seq.annotations]


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
) -> dict:
    """Run the protocol on DAVIS sequences and return the report (fractions 0..1).

    ``engine`` is an engine name for ``build_engine`` or an already built engine.
    """
    config = config or EvalConfig()
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    root = Path(root)
    names = list(sequences) if sequences else list_sequences(root)
    if not names:
        raise DavisError(f"{root}: no sequences")
    eng = _build_engine(engine) if isinstance(engine, str) else engine
    log.info("evaluating %d sequences, engine %s, %d round(s)", len(names), eng.name, rounds)
    runs: list[SequenceRun] = []
    for k, name in enumerate(names, 1):
        log.info("[%d/%d] %s", k, len(names), name)
        run, preds, stems = run_sequence(
            eng, root, name, rounds=rounds, max_frames=max_frames, config=config
        )
        runs.append(run)
        if out_dir is not None:
            for stem, labels in zip(stems, preds, strict=True):
                write_index_png(Path(out_dir) / name / f"{stem}.png", labels)
    report = build_report(runs, engine_name=eng.name, config=config)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
    return report


def build_report(runs: list[SequenceRun], *, engine_name: str, config: EvalConfig) -> dict:
    rounds = len(runs[0].results)
    per_round = [summarize([r.results[i] for r in runs]) for i in range(rounds)]
    final = per_round[-1]
    round_jf = [p["J&F-Mean"] for p in per_round]
    return {
        "engine": engine_name,
        "protocol": "one-click" if rounds == 1 else f"interactive, {rounds} rounds",
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
        "s_per_frame": float(
            sum(sum(r.seconds) for r in runs) / sum(r.n_frames * rounds for r in runs)
        ),
    }


def format_table(report: dict) -> str:
    """Per-sequence table and the mean, as printed by the CLI (percent)."""
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
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m backend eval``."""
    parser.add_argument("--davis", required=True, type=Path, help="DAVIS root folder")
    parser.add_argument("--sequences", nargs="+", help="sequence names (default: all)")
    parser.add_argument("--engine", default="auto", choices=ENGINES)
    parser.add_argument("--rounds", type=int, default=1, help="1 = one-click protocol")
    parser.add_argument("--out", type=Path, help="write predicted index PNGs to DIR/<seq>/")
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    parser.add_argument("--max-frames", type=int, help="only the first N frames per sequence")
    parser.add_argument(
        "--correct-decay",
        action="store_true",
        help="decay with correct bin indices (default: official, NaN from 256 frames)",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``eval`` from parsed arguments; prints the table, returns the exit code."""
    from backend.engine import EngineError

    try:
        report = run_davis(
            args.davis,
            sequences=args.sequences,
            engine=args.engine,
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
