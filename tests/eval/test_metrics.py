"""backend.eval.metrics against vos-benchmark (independent reference) and the DAVIS rules."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vos_benchmark.benchmark import benchmark
from vos_benchmark.evaluator import Evaluator

from backend.eval import metrics
from backend.eval.davis import load_sequence, read_ground_truth, write_index_png
from backend.eval.metrics import EvalConfig, evaluate_sequence

DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-val"


def vos_per_object(gt: list[np.ndarray], pred: list[np.ndarray]) -> dict[int, tuple[float, float]]:
    """vos-benchmark's per-object (J, F) means as fractions, first and last frame skipped."""
    ev = Evaluator(name="seq")
    for g, p in zip(gt[1:-1], pred[1:-1], strict=True):
        ev.feed_frame(p, g)
    iou, bf = ev.conclude()
    return {int(k): (iou[k] / 100, bf[k] / 100) for k in iou}


def ellipse(shape, cy, cx, ry, rx, angle=0.0) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (int(cx), int(cy)), (max(1, int(rx)), max(1, int(ry))), angle, 0, 360, 1, -1)
    return m.astype(bool)


def synthetic_sequence(seed: int, n_frames: int = 9, shape=(72, 96), n_obj: int = 2):
    """Moving ellipses (GT) and a perturbed prediction: shifted, shrunk, dropped, noisy."""
    rng = np.random.default_rng(seed)
    gt, pred = [], []
    params = [
        (rng.uniform(15, 55), rng.uniform(15, 80), rng.uniform(6, 18), rng.uniform(6, 24))
        for _ in range(n_obj)
    ]
    for t in range(n_frames):
        g = np.zeros(shape, np.uint8)
        p = np.zeros(shape, np.uint8)
        for k, (cy, cx, ry, rx) in enumerate(params, start=1):
            cy_t, cx_t = cy + 1.5 * t * (k % 2 * 2 - 1), cx + 2 * t
            visible = t < 2 or rng.random() > 0.15  # objects may vanish (occlusion) later
            if visible:
                g[ellipse(shape, cy_t, cx_t, ry, rx, 10 * t)] = k
            mode = rng.integers(0, 4)
            if mode == 3 and t >= 2:
                continue  # object missing from the prediction
            dy, dx = rng.integers(-4, 5, 2)
            scale = 1.0 if mode == 0 else rng.uniform(0.6, 1.2)
            pm = ellipse(shape, cy_t + dy, cx_t + dx, ry * scale, rx * scale, 10 * t)
            if mode == 2:
                pm ^= rng.random(shape) < 0.02
            p[pm] = k
        # every object must be in frames 0 and 1 for the two evaluators to see the same frames
        gt.append(g)
        pred.append(p)
    return gt, pred


@pytest.mark.parametrize("seed", range(6))
def test_sequence_scores_equal_vos_benchmark(seed: int) -> None:
    gt, pred = synthetic_sequence(seed, n_obj=1 + seed % 3)
    ours = evaluate_sequence(gt, pred)
    ref = vos_per_object(gt, pred)
    assert sorted(ref) == [o.obj_id for o in ours.objects]
    for o in ours.objects:
        assert o.j_stats.mean == pytest.approx(ref[o.obj_id][0], abs=1e-6)
        assert o.f_stats.mean == pytest.approx(ref[o.obj_id][1], abs=1e-6)
    jf_ref = (np.mean([v[0] for v in ref.values()]) + np.mean([v[1] for v in ref.values()])) / 2
    assert ours.jf == pytest.approx(jf_ref, abs=1e-6)
    assert 0.0 < ours.jf < 1.0  # the fixture is neither perfect nor hopeless


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31 - 1),
)
def test_frame_j_and_f_equal_vos_benchmark(h: int, w: int, pg: float, pp: float, seed: int):
    rng = np.random.default_rng(seed)
    g = (rng.random((h, w)) < pg).astype(np.uint8)
    p = (rng.random((h, w)) < pp).astype(np.uint8)
    g[0, 0] = 1  # the reference only scores objects present in the ground truth
    ev = Evaluator()
    ev.feed_frame(p, g)
    iou, bf = ev.conclude()
    assert metrics.jaccard(g == 1, p == 1) == pytest.approx(iou[1] / 100, abs=1e-9)
    assert metrics.f_measure(g == 1, p == 1) == pytest.approx(bf[1] / 100, abs=1e-9)


def test_benchmark_cli_on_our_png_files_agrees(tmp_path: Path) -> None:
    """Whole-file path: our index PNGs read back by vos-benchmark's own loader."""
    expected = {}
    for seed, name in enumerate(["seqa", "seqb"]):
        gt, pred = synthetic_sequence(10 + seed, n_obj=2)
        for t, (g, p) in enumerate(zip(gt, pred, strict=True)):
            write_index_png(tmp_path / "gt" / name / f"{t:05d}.png", g)
            write_index_png(tmp_path / "pred" / name / f"{t:05d}.png", p)
        expected[name] = evaluate_sequence(gt, pred, name=name)
    jf, j, f, _ = benchmark(
        [str(tmp_path / "gt")], [str(tmp_path / "pred")], num_processes=1, verbose=False
    )
    summary = metrics.summarize(list(expected.values()))
    assert summary["J-Mean"] == pytest.approx(j[0] / 100, abs=1e-6)
    assert summary["F-Mean"] == pytest.approx(f[0] / 100, abs=1e-6)
    assert summary["J&F-Mean"] == pytest.approx(jf[0] / 100, abs=1e-6)


def test_void_counts_as_background_like_the_official_code() -> None:
    gt, pred = synthetic_sequence(3, n_obj=1)
    gt_void = []
    for g in gt:
        ring = cv2.dilate(g, np.ones((5, 5), np.uint8)).astype(bool) & (g == 0)
        gv = g.copy()
        gv[ring] = 255
        gt_void.append(gv)
    ours = evaluate_sequence(gt_void, pred)
    # official rule: void → background, i.e. the same as scoring the GT without void
    assert ours.jf == pytest.approx(evaluate_sequence(gt, pred).jf, abs=1e-12)
    void_as_bg = [np.where(g == 255, 0, g) for g in gt_void]
    ref = vos_per_object(void_as_bg, pred)
    assert ours.jf == pytest.approx((ref[1][0] + ref[1][1]) / 2, abs=1e-6)
    # vos-benchmark on the raw void GT adds a phantom object 255 (documented difference)
    raw = vos_per_object(gt_void, pred)
    assert 255 in raw and [o.obj_id for o in ours.objects] == [1]


def test_skips_first_and_last_frame_and_pads_missing_objects() -> None:
    gt, pred = synthetic_sequence(4, n_obj=2)
    base = evaluate_sequence(gt, pred)
    garbage = [np.full_like(pred[0], 2), *pred[1:-1], np.full_like(pred[0], 1)]
    assert evaluate_sequence(gt, garbage).jf == base.jf
    all_frames = evaluate_sequence(gt, garbage, config=EvalConfig(skip_first_last=False))
    assert all_frames.objects[0].frames == tuple(range(len(gt)))
    assert all_frames.jf < base.jf
    # object 2 never predicted: zero wherever it is visible, one where GT is empty too
    only_one = [np.where(p == 2, 0, p) for p in pred]
    res = evaluate_sequence(gt, only_one)
    obj2 = res.objects[1]
    visible = np.array([(gt[t] == 2).any() for t in obj2.frames])
    assert np.all(obj2.j[visible] == 0) and np.all(obj2.f[visible] == 0)
    assert np.all(obj2.j[~visible] == 1) and np.all(obj2.f[~visible] == 1)


def test_too_short_sequence_is_an_error() -> None:
    g = np.ones((4, 4), np.uint8)
    with pytest.raises(ValueError):
        evaluate_sequence([g, g], [g, g])
    assert evaluate_sequence([g, g], [g, g], config=EvalConfig(skip_first_last=False)).jf == 1


def test_objects_come_from_first_gt_frame() -> None:
    g0 = np.zeros((10, 10), np.uint8)
    g0[1:4, 1:4] = 3  # labels 1 and 2 absent: still objects 1..3
    g0[6:8, 6:8] = 255
    assert metrics.object_ids(g0) == [1, 2, 3]
    res = evaluate_sequence([g0] * 4, [g0] * 4)
    assert [o.obj_id for o in res.objects] == [1, 2, 3]
    assert res.jf == 1.0


def test_empty_masks_and_tolerance() -> None:
    empty = np.zeros((20, 30), bool)
    full = np.ones((20, 30), bool)
    assert metrics.jaccard(empty, empty) == 1.0
    assert metrics.f_measure(empty, empty) == 1.0
    blob = np.zeros((20, 30), bool)
    blob[5:9, 3:12] = True
    assert metrics.f_measure(empty, blob) == 0.0
    assert metrics.f_measure(blob, empty) == 0.0
    # quirk of the DAVIS boundary rule: a full-frame mask has no boundary pixels at all
    assert not metrics.boundary_map(full).any()
    assert metrics.f_measure(empty, full) == 1.0
    assert metrics.jaccard(empty, full) == 0.0
    assert metrics.boundary_tolerance((480, 854)) == 8
    assert metrics.boundary_tolerance((1080, 1920)) == 18
    assert metrics.boundary_tolerance((480, 854), 3) == 3


def test_decay_reproduces_official_uint8_bug_from_256_frames() -> None:
    rng = np.random.default_rng(0)
    for n, nan_expected in ((100, False), (255, False), (256, True), (300, True)):
        x = rng.random(n)
        buggy = metrics.statistics(x)
        correct = metrics.statistics(x, decay_uint8_bug=False)
        assert math.isnan(buggy.decay) == nan_expected
        assert not math.isnan(correct.decay)
        if not nan_expected:
            assert buggy.decay == correct.decay
    # a sequence with 258 frames has 256 evaluated frames: official decay is NaN
    shape = (6, 6)
    g = np.zeros(shape, np.uint8)
    g[1:5, 1:5] = 1
    preds = [g if t < 130 else np.zeros(shape, np.uint8) for t in range(258)]
    res = evaluate_sequence([g] * 258, preds)
    assert math.isnan(res.objects[0].j_stats.decay)
    fixed = evaluate_sequence([g] * 258, preds, config=EvalConfig(decay_uint8_bug=False))
    assert fixed.objects[0].j_stats.decay == pytest.approx(1.0)
    assert fixed.objects[0].j_stats.recall == pytest.approx(129 / 256)


def test_statistics_recall_and_decay_values() -> None:
    x = np.array([1.0, 1.0, 0.9, 0.8, 0.2, 0.1, 0.0, 0.0, 0.6])
    s = metrics.statistics(x)
    assert s.mean == pytest.approx(x.mean())
    assert s.recall == pytest.approx(5 / 9)
    # bins over 9 values: indices [0, 2, 4, 6, 8] → x[0:3] and x[6:9]
    assert s.decay == pytest.approx(x[0:3].mean() - x[6:9].mean())


@pytest.mark.parametrize("name", ["blackswan", "dog"])
def test_real_davis_parity_with_vos_benchmark(name: str) -> None:
    seq = load_sequence(DAVIS, name, max_frames=12)
    gt = read_ground_truth(seq)
    kernel = np.ones((9, 9), np.uint8)
    pred = []
    for t, g in enumerate(gt):
        p = cv2.erode(g, kernel) if t % 2 else np.roll(g, (5, -7), axis=(0, 1))
        pred.append(p)
    ours = evaluate_sequence(gt, pred, name=name)
    ref = vos_per_object(gt, pred)
    assert ours.j == pytest.approx(ref[1][0], abs=1e-6)
    assert ours.f == pytest.approx(ref[1][1], abs=1e-6)
    assert 0.3 < ours.jf < 0.99
