"""One correction, one frame: how much a corrective click improves the frame it lands on
(issue 17, target 2), replayable against a changed segmenter in seconds instead of minutes.

``record`` runs the interactive protocol on issue 17's halves (as ``python -m backend eval
--rounds R``) and keeps every correction it makes: the sequence and frame, the mask the
annotator was shown there, the frame's clicks after the correction and the ground truth.

``replay`` sends each kept correction through the session's keyframe path
(:func:`backend.pipeline.segment_keyframes`, the shown mask as the prior) with the code as it
is now, and prints J on that frame before and after, per half, beside what a perfect local
correction would reach there (the shown mask with exactly the clicked error region fixed,
``--corrections region`` in the protocol). Replaying with the code that
recorded gives the run's own masks back (the check is printed), so a replay after a segmenter
change isolates what the change does to corrections. It does not replace the whole protocol:
later rounds would land elsewhere once corrections change; confirm a change with
``python -m backend eval --split both --rounds 5``.

Usage::

    python bench/correction_frames.py record out/corrections.npz        # ~10 min, 2 cores
    python bench/correction_frames.py replay out/corrections.npz [-v]   # ~30 s
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.demo import DAVIS_DIR as DAVIS  # noqa: E402
from backend.engine import build_engine  # noqa: E402
from backend.eval.clicks import fix_largest_error  # noqa: E402
from backend.eval.davis import load_sequence, read_ground_truth  # noqa: E402
from backend.eval.runner import SPLITS, SessionAnnotator, run_davis  # noqa: E402
from backend.frames import LazyFrameSource, read_image  # noqa: E402
from backend.masks import jaccard  # noqa: E402
from backend.pipeline import segment_keyframes  # noqa: E402
from backend.types import Click, ObjectPrompt  # noqa: E402


@dataclass
class Case:
    """One correction as the annotator made it."""

    sequence: str
    obj_id: int
    frame: int
    clicks: list[Click]  # every click on the frame, the correction last
    shown: np.ndarray  # the mask on the frame before the correction
    gt: np.ndarray
    after: np.ndarray  # the mask on the frame after it, in the recorded run


class RecordingAnnotator(SessionAnnotator):
    """The in-process annotator, keeping every correction it receives."""

    def __init__(self, engine, seq, frames, cases: list[Case]):
        super().__init__(engine, seq.name, frames)
        self.seq_name = seq.name
        self.gt = read_ground_truth(seq)
        self.cases = cases
        self.last: dict[int, tuple[dict[int, int], list[np.ndarray]]] = {}

    def click(self, obj_id, label, clicks, boxes=None, masks=None):
        counts = {f: len(c) for f, c in clicks.items()}
        shown = super().click(obj_id, label, clicks, boxes=boxes, masks=masks)
        if obj_id in self.last:
            before, previous = self.last[obj_id]
            for f, n in counts.items():
                if n > before.get(f, 0):
                    case = Case(sequence=self.seq_name, obj_id=obj_id, frame=f,
                                clicks=list(clicks[f]), shown=previous[f],
                                gt=self.gt[f] == obj_id, after=shown[f])  # fmt: skip
                    self.cases.append(case)
        self.last[obj_id] = (counts, shown)
        return shown


def record(path: Path, davis: Path, split: str, rounds: int, engine_name: str) -> None:
    engine = build_engine(engine_name)
    halves = ["tune", "validate"] if split == "both" else [split]
    cases: list[Case] = []

    def factory(seq, frames, _n):
        return RecordingAnnotator(engine, seq, frames, cases)

    factory.name = engine.name
    for half in halves:
        run_davis(davis, list(SPLITS[half]), engine=factory, rounds=rounds)
    save(path, cases)
    print(f"{len(cases)} corrections kept in {path}")


def save(path: Path, cases: list[Case]) -> None:
    meta = [
        {
            "sequence": c.sequence,
            "obj_id": c.obj_id,
            "frame": c.frame,
            "shape": c.gt.shape,
            "clicks": [[k.x, k.y, k.positive] for k in c.clicks],
        }
        for c in cases
    ]
    arrays = {}
    for i, c in enumerate(cases):
        arrays[f"shown{i}"] = np.packbits(c.shown)
        arrays[f"gt{i}"] = np.packbits(c.gt)
        arrays[f"after{i}"] = np.packbits(c.after)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)


def load(path: Path) -> list[Case]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        out = []
        for i, m in enumerate(meta):
            h, w = m["shape"]

            def unpack(name: str, i: int = i, h: int = h, w: int = w) -> np.ndarray:
                return np.unpackbits(data[f"{name}{i}"])[: h * w].reshape(h, w).astype(bool)

            clicks = [Click(x=x, y=y, positive=bool(p)) for x, y, p in m["clicks"]]
            out.append(Case(m["sequence"], m["obj_id"], m["frame"], clicks,
                            unpack("shown"), unpack("gt"), unpack("after")))  # fmt: skip
    return out


def replay(path: Path, davis: Path, verbose: bool, engine_name: str) -> None:
    engine = build_engine(engine_name)
    half_of = {name: half for half, names in SPLITS.items() for name in names}
    rows: dict[str, list[tuple[float, float, float]]] = {}
    same = 0
    cases = load(path)
    current, frames = None, None
    for c in cases:  # recorded sequence by sequence: each one's files are listed once
        if c.sequence != current:
            seq = load_sequence(davis, c.sequence)
            current = c.sequence
            frames = LazyFrameSource(len(seq), lambda i, seq=seq: read_image(seq.images[i]))
        # earlier clicks on the frame: the mask shown there is the segmenter's own answer
        own = frozenset({c.frame}) if len(c.clicks) > 1 else frozenset()
        prompt = ObjectPrompt(c.obj_id, "object", clicks={c.frame: c.clicks},
                              masks={c.frame: c.shown}, own_priors=own)  # fmt: skip
        mask = segment_keyframes(engine, frames, [prompt])[c.frame][c.obj_id].mask
        before, after = jaccard(c.gt, c.shown), jaccard(c.gt, mask)
        region = jaccard(c.gt, fix_largest_error(c.gt, c.shown))
        same += bool(np.array_equal(mask, c.after))
        rows.setdefault(half_of.get(c.sequence, "other"), []).append((before, after, region))
        if verbose:
            sign = "+" if c.clicks[-1].positive else "-"
            print(f"{c.sequence:15s} frame {c.frame:3d} {sign} ({len(c.clicks)} clicks) "
                  f"J {before:.2f} -> {after:.2f} (recorded {jaccard(c.gt, c.after):.2f}, "
                  f"region {region:.2f})")  # fmt: skip
    print(f"{same}/{len(cases)} corrected masks identical to the recorded run's")
    for half, vals in rows.items():
        b, a, r = np.mean(vals, axis=0)
        print(f"{half:9s} {len(vals):3d} corrections: J {b:.3f} -> {a:.3f} (gain {a - b:+.3f}; "
              f"a perfect local correction {r:.3f}, gain {r - b:+.3f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the protocol and keep its corrections")
    rec.add_argument("path", type=Path)
    rec.add_argument("--split", default="both", choices=["tune", "validate", "both"])
    rec.add_argument("--rounds", type=int, default=5)
    rep = sub.add_parser("replay", help="correct the kept frames again with the code as it is")
    rep.add_argument("path", type=Path)
    rep.add_argument("-v", "--verbose", action="store_true")
    for p in (rec, rep):
        p.add_argument("--davis", type=Path, default=DAVIS)
        p.add_argument("--engine", default="classical")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.command == "record":
        record(args.path, args.davis, args.split, args.rounds, args.engine)
    else:
        replay(args.path, args.davis, args.verbose, args.engine)


if __name__ == "__main__":
    main()
