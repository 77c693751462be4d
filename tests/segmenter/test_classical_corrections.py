"""Correction clicks on a mask prior (issue 17): local, hard-constraint edits."""

from __future__ import annotations

import numpy as np

from backend.segmenter.classical import (
    REACH,
    ClassicalSegmenter,
    ClassicalSegmenterConfig,
    _ordered_discs,
    _reach,
    keep_seeded_components,
    zoom_window,
)
from tests.conftest import textured_background

H, W = 120, 160


def _two_colour_object() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red body with a blue head attached: image, whole object, body only."""
    img = textured_background(H, W, 3, amplitude=20)
    yy, xx = np.mgrid[:H, :W]
    body = (xx >= 30) & (xx < 100) & (yy >= 50) & (yy < 85)
    head = (xx - 112) ** 2 + (yy - 55) ** 2 <= 14**2
    img[body] = (220, 40, 40)
    img[head & ~body] = (40, 60, 220)
    return img, body | head, body


def _predict(img, pts, labels, prior, **cfg):
    seg = ClassicalSegmenter(ClassicalSegmenterConfig(**cfg))
    seg.set_image(img)
    out = seg.predict(
        np.array(pts, float).reshape(-1, 2),
        np.array(labels),
        mask_prior=prior.astype(np.float32),
        multimask_output=False,
    )
    return out.best_mask()


def test_positive_correction_adds_the_missed_part_and_keeps_the_rest() -> None:
    img, whole, body = _two_colour_object()
    # the accepted mask: the body, plus a stray patch the annotator did not fix
    prior = body.copy()
    prior[10:20, 10:20] = True
    mask = _predict(img, [[60, 67], [114, 55]], [1, 1], prior)
    head = whole & ~body
    assert (mask & head).sum() >= 0.8 * head.sum()  # the click's part is added
    assert (mask & ~whole & ~prior).sum() <= 0.1 * head.sum()  # and little else
    far = np.zeros((H, W), bool)
    far[:, :70] = True  # far from the click: exactly the prior, stray patch included
    assert np.array_equal(mask[far], prior[far])


def test_negative_correction_removes_the_wrong_part_only() -> None:
    img, whole, body = _two_colour_object()
    mask = _predict(img, [[60, 67], [114, 55]], [1, 0], whole)
    head = whole & ~body
    assert (mask & head).sum() <= 0.2 * head.sum()
    assert (mask & body).sum() >= 0.95 * body.sum()


def test_negative_seed_in_a_hole_keeps_the_hole_open() -> None:
    ring = np.zeros((40, 40), bool)
    ring[5:35, 5:35] = True
    ring[15:25, 15:25] = False
    pos = np.zeros_like(ring)
    pos[8, 8] = True
    neg = np.zeros_like(ring)
    neg[20, 20] = True
    assert keep_seeded_components(ring, pos)[20, 20]  # holes are filled ...
    kept = keep_seeded_components(ring, pos, neg)
    assert not kept[15:25, 15:25].any() and kept[8, 8]  # ... unless a negative click is there


def test_overlapping_discs_go_to_the_nearest_click() -> None:
    pts = np.array([[10.0, 10.0], [13.0, 10.0]])
    pos, neg = _ordered_discs((20, 30), pts, np.array([1, 0]), 3)
    assert pos[10, 10] and pos[10, 11] and neg[10, 12] and neg[10, 13] and pos[10, 7]
    assert not (pos & neg).any()
    pos, neg = _ordered_discs((20, 30), pts, np.array([0, 1]), 3)
    assert neg[10, 10] and pos[10, 13] and not pos[10, 10]
    same = np.array([[10.0, 10.0], [10.0, 10.0]])  # the same spot: the later click wins
    pos, neg = _ordered_discs((20, 30), same, np.array([1, 0]), 3)
    assert neg[10, 10] and not pos.any()


def test_reach_scales_with_the_clicks_distance_to_the_boundary() -> None:
    side = np.ones((80, 80), bool)
    side[:, :20] = False  # the prior's other side: columns < 20
    new = np.zeros_like(side)
    new[40, 30] = True  # 11 px from column 19 (a 3x3 distance transform says about 10.5)
    reach = _reach(new, side)
    lo, hi = int(REACH * 10), int(np.ceil(REACH * 11))
    assert reach[40, 30 + lo] and not reach[40, 30 + hi + 1] and not reach[40 - hi - 1, 30]
    assert _reach(new, np.ones_like(side)).all()  # no prior boundary: no bound


def _small_object_in_a_large_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red disc with a thin arm, small in a 1600×900 frame: image, whole object, disc."""
    h, w = 900, 1600
    img = textured_background(h, w, 5, amplitude=12)
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - 800) ** 2 + (yy - 450) ** 2 <= 30**2
    whole = disc | ((yy >= 430) & (yy < 442) & (xx >= 825) & (xx < 900))
    img[whole] = (200, 60, 60)
    return img, whole, disc


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_clicking_again_refines_the_own_answer_at_the_objects_scale() -> None:
    """At ``work_size`` over the whole frame the object is a few working pixels across; a
    refinement of the segmenter's own answer is cut in a window around it, near native
    resolution, so the arm the click adds and the disc's boundary come out exact."""
    img, whole, disc = _small_object_in_a_large_frame()
    seg = ClassicalSegmenter()
    seg.set_image(img)
    click = (np.array([[880.0, 436.0]]), np.array([1]))
    prior = disc.astype(np.float32)
    kw = {"mask_prior": prior, "multimask_output": False}
    coarse = seg.predict(*click, **kw).best_mask()
    fine = seg.predict(*click, prior_is_own=True, **kw).best_mask()
    assert fine.shape == whole.shape and fine[436, 880]
    assert _iou(fine, whole) > 0.99 and _iou(coarse, whole) < 0.9
    # the segmenter still holds the whole frame afterwards
    np.testing.assert_array_equal(seg.predict(*click, **kw).best_mask(), coarse)
    # with no margin, or no share of the frame small enough, the own answer is cut whole
    whole_frame = []
    for cfg in (
        ClassicalSegmenterConfig(zoom_margin=0.0),
        ClassicalSegmenterConfig(zoom_max_share=0.0),
    ):
        off = ClassicalSegmenter(cfg)
        off.set_image(img)
        whole_frame.append(off.predict(*click, prior_is_own=True, **kw).best_mask())
    np.testing.assert_array_equal(*whole_frame)
    assert _iou(whole_frame[0], whole) < 0.9


def test_zoom_window_holds_prior_clicks_and_box_with_a_margin() -> None:
    shape = (900, 1600)
    prior = np.zeros(shape, bool)
    prior[400:500, 700:800] = True  # 100 × 100
    clicks = np.array([[850.0, 450.0]])
    # the box around prior and click: x 700..851, y 400..500 → 151 wide; half of it each side
    assert zoom_window(prior, clicks, None, 0.5, 0.9, shape) == (624, 324, 927, 576)
    box = np.array([650.0, 380.0, 820.0, 520.0])
    x0, y0, x1, y1 = zoom_window(prior, clicks, box, 0.5, 0.9, shape)
    assert x0 < 650 and y0 < 380 and x1 > 851 and y1 > 520
    # a box alone says where the object is too: x 650..821, y 380..521 → 171 wide
    assert zoom_window(None, np.empty((0, 2)), box, 0.5, 0.9, shape) == (564, 294, 907, 607)
    # kept inside the image
    assert zoom_window(prior, np.array([[10.0, 10.0]]), None, 0.5, 0.9, shape)[:2] == (0, 0)
    # nothing says where the object is, or the window would be nearly the whole image
    assert zoom_window(np.zeros(shape, bool), clicks, None, 0.5, 0.9, shape) is None
    assert zoom_window(None, clicks, None, 0.5, 0.9, shape) is None
    assert zoom_window(prior, clicks, None, 5.0, 0.9, shape) is None


def test_a_window_gets_no_more_working_pixels_than_the_whole_frame() -> None:
    """A refinement costs what a cut of the whole frame costs: the window is worked on with
    at most the whole frame's working pixels, and never enlarged."""
    seg = ClassicalSegmenter()
    frame = textured_background(480, 854, 1)
    budget = seg._prepare(frame).small.shape[:2]
    assert budget == (180, 320)
    square = seg._prepare(frame[:, :480], budget[0] * budget[1])
    assert square.small.shape[0] * square.small.shape[1] <= budget[0] * budget[1]
    assert square.scale > 320 / 854
    small = seg._prepare(frame[100:200, 100:200], budget[0] * budget[1])
    assert small.scale == 1.0 and small.small.shape[:2] == (100, 100)


def test_a_box_alone_is_cut_in_a_window_around_it() -> None:
    """A box says where the object is, so GrabCut from the box works in a window around it,
    at the whole frame's working pixels: finer than the whole frame at ``work_size``."""
    img, whole, _ = _small_object_in_a_large_frame()
    box = np.array([768.0, 418.0, 902.0, 482.0])
    none = (np.empty((0, 2)), np.empty(0, int))
    found = {}
    for margin in (0.5, 0.0):
        seg = ClassicalSegmenter(ClassicalSegmenterConfig(zoom_margin=margin))
        seg.set_image(img)
        found[margin] = _iou(seg.predict(*none, box=box).best_mask(), whole)
    assert found[0.5] > found[0.0] + 0.03, found


def test_with_a_positive_click_in_a_box_the_whole_frame_is_cut() -> None:
    """A box with a positive click (the geodesic split needs the image's border) and a
    refinement inside a box are cut on the whole frame, as without a window."""
    img, _, disc = _small_object_in_a_large_frame()
    box = np.array([768.0, 418.0, 902.0, 482.0])
    click = (np.array([[800.0, 450.0]]), np.array([1]))
    prompts = [
        {"box": box},
        {"box": box, "mask_prior": disc.astype(np.float32), "prior_is_own": True},
    ]
    for kw in prompts:
        masks = []
        for margin in (0.5, 0.0):
            seg = ClassicalSegmenter(ClassicalSegmenterConfig(zoom_margin=margin))
            seg.set_image(img)
            masks.append(seg.predict(*click, multimask_output=False, **kw).best_mask())
        np.testing.assert_array_equal(*masks)


def _lost_part_of_a_background_colour() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red body and, attached to it, a mottled blue part whose colours two background
    corners hold as well (a wheel the size of another one elsewhere): image, body, part."""
    rng = np.random.default_rng(0)
    img = textured_background(H, W, 3, amplitude=20)
    yy, xx = np.mgrid[:H, :W]
    body = (xx >= 20) & (xx < 80) & (yy >= 50) & (yy < 85)
    part = ((xx - 98) ** 2 + (yy - 60) ** 2 <= 22**2) & ~body
    corners = np.zeros((H, W), bool)
    corners[:40, W - 40 :] = corners[H - 40 :, :40] = True
    img[body] = (220, 40, 40)
    for where in (part, corners):
        noise = rng.normal(0.0, 50.0, (int(where.sum()), 3))
        img[where] = np.clip(np.array([40.0, 60.0, 200.0]) + noise, 0, 255).astype(np.uint8)
    return img, body, part


def test_a_click_on_a_lost_part_that_adds_only_itself_is_cut_again_from_the_click() -> None:
    """A correction's cut starts its colour models from the prior (red) and the accepted
    outside (which holds the blue corners), so it gives the clicked blue part to the
    background. On a prior the segmenter did not give (a tracked frame) the claim is then cut
    again from the click alone, as a first click is; on its own answer it is not (there a
    click that adds only itself has mostly found a detail)."""
    img, body, part = _lost_part_of_a_background_colour()
    seg = ClassicalSegmenter()
    seg.set_image(img)
    masks = {
        own: seg.predict(
            np.array([[98.0, 60.0]]),
            np.array([1]),
            mask_prior=body.astype(np.float32),
            multimask_output=False,
            prior_is_own=own,
        ).best_mask()
        for own in (False, True)
    }
    assert (masks[False] & part).sum() >= 0.9 * part.sum()
    assert (masks[False] & ~body & ~part).sum() <= 0.01 * part.sum()
    far = np.zeros((H, W), bool)
    far[:, :60] = True  # far from the click: exactly the prior
    assert np.array_equal(masks[False][far], body[far])
    assert (masks[True] & part).sum() <= 0.1 * part.sum()
