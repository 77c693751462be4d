"""The DAVIS protocol runner end to end on tiny synthetic DAVIS folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from vos_benchmark.evaluator import Evaluator

from backend.eval import runner
from backend.eval.davis import list_sequences, load_sequence, read_ground_truth, write_index_png
from backend.eval.metrics import evaluate_sequence

H, W = 72, 96


def make_davis(root: Path, n_frames: int = 6) -> None:
    """'still': one static disk, 0/255 grey PNGs (DAVIS-2016 style).
    'pair': two moving objects in palette index PNGs, with a void (255) ring (DAVIS-2017 style).
    """
    for t in range(n_frames):
        img = np.full((H, W, 3), 30, np.uint8)
        ann = np.zeros((H, W), np.uint8)
        cv2.circle(img, (40, 36), 20, (230, 40, 40), -1)
        cv2.circle(ann, (40, 36), 20, 255, -1)
        _write(root, "still", t, img, ann, palette=False)

        img = np.full((H, W, 3), 30, np.uint8)
        ann = np.zeros((H, W), np.uint8)
        cv2.circle(img, (22 + 3 * t, 30), 14, (40, 220, 40), -1)
        cv2.circle(ann, (22 + 3 * t, 30), 16, 255, 2)
        cv2.circle(ann, (22 + 3 * t, 30), 14, 1, -1)
        cv2.rectangle(img, (60, 40 + t), (85, 60 + t), (40, 40, 220), -1)
        cv2.rectangle(ann, (60, 40 + t), (85, 60 + t), 2, -1)
        _write(root, "pair", t, img, ann, palette=True)


def _write(root: Path, seq: str, t: int, img: np.ndarray, ann: np.ndarray, palette: bool) -> None:
    img_dir = root / "JPEGImages" / "480p" / seq
    img_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(img_dir / f"{t:05d}.jpg"), img[:, :, ::-1])
    path = root / "Annotations" / "480p" / seq / f"{t:05d}.png"
    if palette:
        write_index_png(path, ann)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ann).save(path)


@pytest.fixture
def davis_root(tmp_path: Path) -> Path:
    root = tmp_path / "davis"
    make_davis(root)
    return root


def test_ground_truth_rule_binary_vs_index(davis_root: Path) -> None:
    assert list_sequences(davis_root) == ["pair", "still"]
    still = read_ground_truth(load_sequence(davis_root, "still"))
    assert set(np.unique(still[0])) == {0, 1}  # 0/255 → one object
    pair = read_ground_truth(load_sequence(davis_root, "pair", max_frames=3))
    assert len(pair) == 3
    assert set(np.unique(pair[0])) == {0, 1, 2, 255}  # index map, 255 = void


def test_one_click_run_writes_masks_and_report(davis_root, tmp_path, fake_engine_factory):
    out, js = tmp_path / "pred", tmp_path / "report.json"
    report = runner.run_davis(davis_root, engine=fake_engine_factory(), out_dir=out, json_path=js)
    assert json.loads(js.read_text()) == json.loads(json.dumps(report))
    assert set(report["sequences"]) == {"pair", "still"}
    assert report["rounds"] == [report["mean"]["J&F"]] and report["auc"] == report["rounds"][0]
    results = []
    for name, seq in report["sequences"].items():
        assert seq["clicks"] == (2 if name == "pair" else 1)
        assert seq["s_per_frame"] > 0
        gt_seq = load_sequence(davis_root, name)
        written = sorted((out / name).glob("*.png"))
        assert [p.name for p in written] == [p.name for p in gt_seq.annotations]
        preds = [np.array(Image.open(p)) for p in written]
        res = evaluate_sequence(read_ground_truth(gt_seq), preds)
        results.append(res)
        assert res.jf == pytest.approx(seq["J&F"], abs=1e-12)
    # the fake segmenter paints a radius-20 disk at the click: the static disk is nearly exact
    assert report["sequences"]["still"]["J&F"] > 0.9
    # independent check of the binary sequence with vos-benchmark on the written files
    ev = Evaluator()
    gt_files = load_sequence(davis_root, "still").annotations
    for g, p in zip(gt_files[1:-1], sorted((out / "still").glob("*.png"))[1:-1], strict=True):
        ev.feed_frame(np.array(Image.open(p)), (np.array(Image.open(g)) == 255).astype(np.uint8))
    iou, bf = ev.conclude()
    assert report["sequences"]["still"]["J"] == pytest.approx(iou[1] / 100, abs=1e-6)
    assert report["sequences"]["still"]["F"] == pytest.approx(bf[1] / 100, abs=1e-6)
    # the data-set mean averages the three objects, not the two sequences
    per_object = [o.j_stats.mean for r in results for o in r.objects]
    assert len(per_object) == 3
    assert report["mean"]["J"] == pytest.approx(np.mean(per_object), abs=1e-12)


def test_interactive_rounds_add_clicks(davis_root, fake_engine_factory):
    report = runner.run_davis(
        davis_root, sequences=["pair"], engine=fake_engine_factory(), rounds=3, max_frames=5
    )
    seq = report["sequences"]["pair"]
    assert len(report["rounds"]) == 3 and seq["rounds"] == report["rounds"]
    assert seq["clicks"] > 2  # corrective clicks were added after rounds 1 and 2
    r = report["rounds"]
    assert report["auc"] == pytest.approx((r[0] / 2 + r[1] + r[2] / 2) / 2)


def test_area_under_rounds() -> None:
    assert runner.area_under_rounds([0.5]) == 0.5
    assert runner.area_under_rounds([0.2, 0.4, 0.8]) == pytest.approx((0.1 + 0.4 + 0.4) / 2)


def test_cli_with_classical_engine(davis_root, tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    js = tmp_path / "r.json"
    args = parser.parse_args(
        ["--davis", str(davis_root), "--sequences", "still", "--engine", "classical"]
        + ["--max-frames", "4", "--json", str(js)]
    )
    assert runner.main(args) == 0
    table = capsys.readouterr().out
    assert "still" in table and "mean" in table
    report = json.loads(js.read_text())
    assert report["engine"] == "classical"
    assert 0.0 <= report["mean"]["J&F"] <= 1.0
    bad = parser.parse_args(["--davis", str(tmp_path / "nowhere")])
    assert runner.main(bad) == 2
