"""Click simulation: deepest points, first-frame clicks, corrective clicks on the worst frame."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from backend.eval import clicks
from backend.types import Click


def test_deepest_point_is_the_distance_transform_maximum() -> None:
    m = np.zeros((40, 60), bool)
    m[10:31, 5:16] = True  # 21x11 rectangle: the maximum is a ridge, its middle is chosen
    m[2:6, 40:58] = True  # thinner region elsewhere
    assert clicks.deepest_point(m) == (20, 10)
    assert clicks.deepest_point(np.zeros((5, 5), bool)) is None
    rng = np.random.default_rng(0)
    for _ in range(20):
        blob = ndimage.gaussian_filter(rng.random((30, 45)), 3) > 0.5
        if not blob.any():
            continue
        r, c = clicks.deepest_point(blob)
        exact = ndimage.distance_transform_edt(np.pad(blob, 1))[1:-1, 1:-1]
        assert blob[r, c]
        assert exact[r, c] >= exact.max() - 1e-3  # cv2 precise DT vs scipy exact EDT


def test_border_counts_as_background() -> None:
    m = np.zeros((20, 20), bool)
    m[:, :8] = True  # touches the left, top and bottom image border
    r, c = clicks.deepest_point(m)
    # distance 4 on the plateau rows 3..16, columns 3..4; the plateau's centre pixel wins
    assert (r, c) == (9, 3)


def test_first_frame_clicks_are_deterministic_pixel_centres() -> None:
    g = np.zeros((30, 40), np.uint8)
    g[5:10, 5:10] = 1
    g[15:26, 20:31] = 2
    out = clicks.first_frame_clicks(g, [1, 2, 3])
    assert out == {1: Click(7.5, 7.5, True), 2: Click(25.5, 20.5, True)}
    assert clicks.first_frame_clicks(g, [1, 2, 3]) == out


def test_corrective_click_sign_and_location() -> None:
    gt = np.zeros((40, 40), bool)
    gt[5:35, 5:35] = True
    pred = gt.copy()
    pred[10:20, 10:20] = False  # 100 px missed
    pred[36:39, 0:5] = True  # 15 px extra
    c = clicks.corrective_click(gt, pred)
    assert c.positive and gt[int(c.y), int(c.x)] and not pred[int(c.y), int(c.x)]
    pred2 = gt.copy()
    pred2[0:4, 0:40] = True  # 4 rows of false positive (136 px) vs 2 missed px
    pred2[20, 20:22] = False
    c2 = clicks.corrective_click(gt, pred2)
    assert not c2.positive and pred2[int(c2.y), int(c2.x)] and not gt[int(c2.y), int(c2.x)]
    assert clicks.corrective_click(gt, gt) is None


def test_fix_largest_error_fixes_that_region_only() -> None:
    gt = np.zeros((40, 40), bool)
    gt[5:35, 5:35] = True
    pred = gt.copy()
    pred[10:20, 10:20] = False  # 100 px missed: the largest error
    pred[36:39, 0:5] = True  # 15 px extra
    pred[25:27, 25:27] = False  # 4 px missed
    fixed = clicks.fix_largest_error(gt, pred)
    expected = pred.copy()
    expected[10:20, 10:20] = True
    assert np.array_equal(fixed, expected)
    assert not np.array_equal(pred, expected)  # the input is not edited in place
    leak = gt.copy()
    leak[0:4, :] = True  # the largest error is a false positive
    assert np.array_equal(clicks.fix_largest_error(gt, leak), gt)
    assert np.array_equal(clicks.fix_largest_error(gt, gt), gt)


def test_next_correction_picks_worst_frame_and_objects() -> None:
    g = np.zeros((30, 30), np.uint8)
    g[2:12, 2:12] = 1
    g[15:28, 15:28] = 2
    gt = [g.copy() for _ in range(4)]
    pred = [g.copy() for _ in range(4)]
    pred[1][2:12, 2:7] = 0  # object 1 half missing: J 0.5
    pred[2][15:28, 15:28] = 0  # object 2 missing entirely: J 0 on frame 2
    pred[2][0:2, 20:30] = 1  # and an object-1 false positive there
    corr = clicks.next_correction(gt, pred, [1, 2])
    assert corr.frame == 2
    assert set(corr.clicks) == {1, 2}
    assert corr.clicks[2].positive and not corr.clicks[1].positive
    assert corr.quality < 0.5
    assert clicks.next_correction(gt, gt, [1, 2]) is None


def test_tight_box_spans_the_mask_in_pixel_edges() -> None:
    m = np.zeros((30, 40), bool)
    m[5:12, 8:20] = True
    m[20, 30] = True  # a stray pixel widens the box
    box = clicks.tight_box(m)
    assert (box.x0, box.y0, box.x1, box.y1) == (8.0, 5.0, 31.0, 21.0)
    assert clicks.tight_box(np.zeros((4, 4), bool)) is None
    labels = np.zeros((30, 40), np.uint8)
    labels[2:4, 3:5] = 2
    assert set(clicks.first_frame_boxes(labels, [1, 2])) == {2}  # object 1 is absent
