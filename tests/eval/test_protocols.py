"""Issue 17's protocols: named halves, the first-frame NoC protocol and the box protocol."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from backend.engine import Engine
from backend.eval import runner
from backend.eval.clicks import fix_largest_error
from backend.eval.davis import load_sequence, read_ground_truth
from backend.segmenter.base import SegmentOutput
from tests.eval.test_runner import make_davis
from tests.fakes import CopyTracker, DiskSegmenter


@pytest.fixture
def davis_root(tmp_path):
    root = tmp_path / "davis"
    make_davis(root)
    return root


class IgnoresClicks:
    """A segmenter that answers the same small square whatever it is told."""

    name = "ignores-clicks"

    def set_image(self, image, *, cache_key=None):
        self.shape = image.shape[:2]

    def predict(self, point_coords, point_labels, *, mask_prior=None, multimask_output=True,
                box=None, prior_is_own=False):  # fmt: skip
        mask = np.zeros(self.shape, bool)
        mask[:5, :5] = True
        return SegmentOutput(masks=mask[None], scores=np.array([0.5]))


class SmallDisks(DiskSegmenter):
    """Each positive click adds the pixels of its colour within 8 px, each negative click
    removes them (a box: the filled box, then the clicks): a large object needs several
    clicks."""

    def predict(self, point_coords, point_labels, *, mask_prior=None, multimask_output=True,
                box=None, prior_is_own=False):  # fmt: skip
        h, w = self.image.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), bool)
        if box is not None:
            x0, y0, x1, y1 = box
            mask = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
        img = self.image.astype(np.int32)
        for (x, y), lab in zip(point_coords, point_labels, strict=True):
            same = np.abs(img - img[int(y), int(x)]).sum(-1) < 60
            disk = ((xx - x) ** 2 + (yy - y) ** 2 <= 8**2) & same
            mask = mask | disk if lab == 1 else mask & ~disk
        return SegmentOutput(masks=mask[None], scores=np.array([0.9]))


def engine_with(segmenter) -> Engine:
    return Engine(name="classical", segmenter=segmenter, tracker=CopyTracker(),
                  model_version="test", checkpoints={})  # fmt: skip


def test_split_halves_are_fixed_and_disjoint() -> None:
    tune, validate = runner.split_sequences("tune"), runner.split_sequences("validate")
    assert len(tune) == len(validate) == 7 and not set(tune) & set(validate)
    assert "blackswan" in tune and "breakdance" in validate
    assert runner.split_sequences("both") == tune + validate
    with pytest.raises(ValueError):
        runner.split_sequences("test")


def test_report_gives_each_half_its_own_mean(davis_root, monkeypatch, fake_engine_factory):
    monkeypatch.setattr(runner, "SPLITS", {"tune": ("still",), "validate": ("pair", "gone")})
    report = runner.run_davis(davis_root, engine=fake_engine_factory(), rounds=2, max_frames=5)
    halves = report["halves"]
    assert set(halves) == {"tune", "validate"}
    for half, seq in (("tune", "still"), ("validate", "pair")):
        assert halves[half]["sequences"] == 1
        assert halves[half]["J&F"] == pytest.approx(report["sequences"][seq]["J&F"])
        assert halves[half]["rounds"] == pytest.approx(report["sequences"][seq]["rounds"])
    # the data-set mean weighs objects: 'pair' has two, 'still' one
    w = (halves["tune"]["J"] + 2 * halves["validate"]["J"]) / 3
    assert report["mean"]["J"] == pytest.approx(w)
    monkeypatch.setattr(runner, "SPLITS", {"tune": ("nothing",)})
    assert runner.run_davis(davis_root, engine=fake_engine_factory(), max_frames=3)["halves"] == {}


def test_noc_one_click_when_the_first_click_is_exact(davis_root, fake_engine_factory) -> None:
    # the fake segmenter paints a radius-20 disk, the same as the static object
    report = runner.run_davis(davis_root, sequences=["still"], engine=fake_engine_factory(),
                              protocol="noc")  # fmt: skip
    seq = report["sequences"]["still"]
    assert seq["NoC@85"] == seq["NoC@90"] == 1 and len(seq["ious"]["1"]) == 1
    assert report["mean"]["NoC@90"] == 1 and report["mean"]["IoU@1"] >= 0.9


def test_noc_is_max_clicks_when_clicks_are_ignored(davis_root) -> None:
    report = runner.run_davis(davis_root, engine=engine_with(IgnoresClicks()), protocol="noc")
    for seq in report["sequences"].values():
        assert seq["NoC@85"] == seq["NoC@90"] == runner.NOC_MAX_CLICKS
        assert all(len(v) == runner.NOC_MAX_CLICKS for v in seq["ious"].values())
    assert report["mean"]["NoC@85"] == runner.NOC_MAX_CLICKS


def test_noc_counts_the_clicks_a_large_object_needs(davis_root) -> None:
    report = runner.run_davis(davis_root, sequences=["still"], engine=engine_with(SmallDisks()),
                              protocol="noc")  # fmt: skip
    seq = report["sequences"]["still"]
    ious = seq["ious"]["1"]
    assert 1 < seq["NoC@85"] <= seq["NoC@90"] < runner.NOC_MAX_CLICKS
    k = int(seq["NoC@85"])
    assert ious[k - 1] >= 0.85 > max(ious[: k - 1])
    assert ious[-1] >= 0.90  # stops once the higher threshold is reached
    assert len(ious) == seq["NoC@90"]


def test_box_protocol_then_corrective_clicks(davis_root) -> None:
    report = runner.run_davis(davis_root, sequences=["still"], engine=engine_with(SmallDisks()),
                              protocol="box", rounds=2, max_frames=4)  # fmt: skip
    seq = report["sequences"]["still"]
    assert seq["clicks"] == 2  # the box, then one corrective click
    assert report["protocol"].startswith("box")
    # round 2 removes a corner the box wrongly covers
    assert seq["rounds"][1] > seq["rounds"][0]


def test_box_first_mask_is_the_box(davis_root, fake_engine_factory) -> None:
    report = runner.run_davis(davis_root, sequences=["still"], engine=fake_engine_factory(),
                              protocol="box", max_frames=3)  # fmt: skip
    gt = read_ground_truth(load_sequence(davis_root, "still"))[1] == 1
    rows, cols = np.nonzero(gt)
    box_area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    # three frames: only the middle one is scored; J = |disk| / |box|
    assert report["sequences"]["still"]["J"] == pytest.approx(gt.sum() / box_area, abs=1e-6)


def test_cli_split_protocol_and_refusals(davis_root, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(runner, "SPLITS", {"tune": ("still",), "validate": ("pair",)})
    monkeypatch.setattr(runner, "_build_engine", lambda name: engine_with(SmallDisks()))
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    js = tmp_path / "noc.json"
    args = parser.parse_args(["--davis", str(davis_root), "--split", "both", "--protocol",
                              "noc", "--engine", "classical", "--json", str(js)])  # fmt: skip
    assert runner.main(args) == 0
    table = capsys.readouterr().out
    assert "NoC@85" in table and "tune (1)" in table and "validate (1)" in table
    assert set(json.loads(js.read_text())["halves"]) == {"tune", "validate"}
    remote = parser.parse_args(["--davis", str(davis_root), "--protocol", "box", "--server",
                                "http://127.0.0.1:9"])  # fmt: skip
    assert runner.main(remote) == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--davis", "x", "--split", "tune", "--sequences", "a"])


def test_pick_scored_keeps_corrections_off_unscored_frames() -> None:
    from backend.eval.clicks import next_correction
    from backend.eval.metrics import EvalConfig

    gt = [np.zeros((20, 20), np.uint8) for _ in range(5)]
    for g in gt:
        g[5:15, 5:15] = 1
    pred = [g.copy() for g in gt]
    pred[4][:] = 0  # the last frame is the worst, but the DAVIS rule does not score it
    pred[2][5:10, 5:15] = 0
    assert next_correction(gt, pred, [1]).frame == 4
    frames = runner.scored_frames(5, EvalConfig(), pick_scored=True)
    assert frames == [1, 2, 3]
    assert next_correction(gt, pred, [1], frames).frame == 2
    assert runner.scored_frames(5, EvalConfig(), pick_scored=False) is None
    assert runner.scored_frames(5, EvalConfig(skip_first_last=False), pick_scored=True) is None


def test_mask_corrections_paint_the_worst_frame(davis_root, tmp_path) -> None:
    def run(corrections: str, out):
        return runner.run_davis(davis_root, sequences=["pair"], engine=engine_with(IgnoresClicks()),
                                rounds=3, corrections=corrections, out_dir=out)  # fmt: skip

    clicked = run("click", None)["sequences"]["pair"]["rounds"]
    report = run("mask", tmp_path / "out")
    painted = report["sequences"]["pair"]["rounds"]
    assert report["corrections"] == "mask"
    assert painted[0] == clicked[0] and painted[0] < painted[1] <= painted[2]
    assert painted[1] > clicked[1] + 0.1 and painted[2] > clicked[2] + 0.1
    # the frames painted in rounds 2 and 3 are shown exactly as painted
    gt = read_ground_truth(load_sequence(davis_root, "pair"))
    seq = load_sequence(davis_root, "pair")
    shown = [
        np.asarray(Image.open(tmp_path / "out" / "pair" / f"{p.stem}.png")) for p in seq.annotations
    ]
    exact = [
        t for t in range(len(gt)) if np.array_equal(shown[t], np.where(gt[t] == 255, 0, gt[t]))
    ]
    assert len(exact) >= 2
    with pytest.raises(ValueError, match="corrections"):
        runner.run_davis(davis_root, engine=engine_with(IgnoresClicks()), corrections="scribble")


def test_region_corrections_fix_only_the_clicked_region(davis_root, tmp_path) -> None:
    def run(corrections: str, out=None):
        return runner.run_davis(davis_root, sequences=["still"], engine=engine_with(IgnoresClicks()),
                                rounds=2, corrections=corrections, out_dir=out)  # fmt: skip

    clicked = run("click")["sequences"]["still"]["rounds"]
    report = run("region", tmp_path / "out")
    region = report["sequences"]["still"]["rounds"]
    assert report["corrections"] == "region"
    assert region[0] == clicked[0] and region[1] > clicked[1] + 0.1
    # The square the segmenter answers misses the disk (the largest error) and covers 25 px
    # of background: the painted frame gets the disk added and keeps the square's false part.
    seq = load_sequence(davis_root, "still")
    gt = read_ground_truth(seq)
    square = np.zeros(gt[0].shape, bool)
    square[:5, :5] = True
    expected = fix_largest_error(gt[0] == 1, square)
    assert expected[:5, :5].all() and not np.array_equal(expected, gt[0] == 1)
    for p in seq.annotations:
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "out" / "still" / f"{p.stem}.png")) == 1, expected
        )
