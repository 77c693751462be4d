"""How far one correction per round lifts the interactive curve, with and without the
session's backward reach (issue 17, target 2).

Runs the interactive protocol on issue 17's halves four ways, side by side:

* ``forward``: a correction on frame k re-propagates k onward only; the frames before it are
  kept (``InteractiveSession(reach_back=False)``);
* ``back``: what the session does by default — the same, plus the frames between the
  object's previous keyframe and k spliced with a backward pass from k
  (:func:`backend.pipeline.splice_backward`), and every other stretch between two keyframes
  with a backward pass from the later one;

each with the simulated annotator's corrective clicks (``--corrections click``) and with the
ground-truth mask painted on the worst frame (``mask``: a perfect correction, the ceiling).
``--corrections region`` adds the shown mask with only the clicked error region fixed (a
perfect *local* correction; docs/evaluation.md).

Usage::

    python bench/corrections.py                       # both halves, click and mask, 5 rounds
    python bench/corrections.py --split tune --corrections mask --reach back --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.demo import DAVIS_DIR as DAVIS  # noqa: E402
from backend.engine import build_engine  # noqa: E402
from backend.eval.runner import SessionAnnotator, run_davis, split_sequences  # noqa: E402


def annotators(engine, reach_back: bool):
    """An annotator factory for ``run_davis`` whose sessions reach back or not."""

    def factory(seq, frames, _n):
        annotator = SessionAnnotator(engine, seq.name, frames)
        annotator.session.reach_back = reach_back
        return annotator

    factory.name = f"{engine.name} ({'back' if reach_back else 'forward'})"
    return factory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--davis", type=Path, default=DAVIS)
    parser.add_argument("--split", default="both", choices=["tune", "validate", "both"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engine", default="classical")
    parser.add_argument("--corrections", nargs="+", default=["click", "mask"])
    parser.add_argument("--reach", nargs="+", default=["forward", "back"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    engine = build_engine(args.engine)
    names = split_sequences(args.split)
    print(f"engine {engine.name}, {args.rounds} rounds, J&F ×100 per round")
    for corrections in args.corrections:
        for reach_back in [r == "back" for r in args.reach]:
            report = run_davis(args.davis, names, engine=annotators(engine, reach_back),
                               rounds=args.rounds, corrections=corrections)  # fmt: skip
            label = "back" if reach_back else "forward"
            for half, h in report["halves"].items():
                jf = " ".join(f"{100 * v:5.1f}" for v in h["rounds"])
                gain = 100 * (h["rounds"][-1] - h["rounds"][0])
                print(f"{corrections:6s} {label:8s} {half:9s} {jf}   gain {gain:+5.1f}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
