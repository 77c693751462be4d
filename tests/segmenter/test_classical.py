"""ClassicalSegmenter: clicks → masks on synthetic images and one real DAVIS frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.frames import read_image
from backend.masks import jaccard
from backend.segmenter.base import Segmenter
from backend.segmenter.classical import (
    GC_BGD,
    GC_FGD,
    GC_PR_BGD,
    GC_PR_FGD,
    ClassicalSegmenter,
    ClassicalSegmenterConfig,
    click_centrality,
    color_index,
    correction_fit,
    fisher_projection,
    geodesic_distance,
    gmm_model,
    grabcut_deterministic,
    guided_filter,
    keep_seeded_components,
)
from tests.conftest import DAVIS, textured_background

H, W = 120, 160


def _background(seed: int = 0) -> np.ndarray:
    return textured_background(H, W, seed, amplitude=20)


def _scene(mask: np.ndarray, colour=(220, 40, 40), seed: int = 0) -> np.ndarray:
    img = _background(seed)
    img[mask] = colour
    return img


def _disk(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _predict(img, pts, labels, **kw):
    seg = ClassicalSegmenter()
    seg.set_image(img)
    return seg.predict(np.array(pts, float).reshape(-1, 2), np.array(labels), **kw)


def test_implements_protocol():
    assert isinstance(ClassicalSegmenter(), Segmenter)


def test_one_click_on_disk():
    gt = _disk(70, 60, 25)
    out = _predict(_scene(gt), [[70, 60]], [1])
    n = len(ClassicalSegmenterConfig().ratios)
    assert out.masks.shape == (n, H, W) and out.masks.dtype == bool
    assert out.scores.shape == (n,) and np.all((out.scores >= 0) & (out.scores <= 1))
    assert jaccard(out.best_mask(), gt) > 0.9


def test_single_mask_output():
    gt = _disk(70, 60, 25)
    out = _predict(_scene(gt), [[70, 60]], [1], multimask_output=False)
    assert out.masks.shape == (1, H, W)
    assert jaccard(out.masks[0], gt) > 0.9


def test_negative_click_cuts_a_part_away():
    left, right = _disk(50, 60, 22), _disk(105, 60, 22)
    bridge = np.zeros((H, W), bool)
    bridge[56:64, 50:105] = True
    obj = left | right | bridge
    img = _scene(obj)
    both = _predict(img, [[50, 60]], [1]).best_mask()
    assert both[60, 105]  # one click takes the whole same-coloured blob
    cut = _predict(img, [[50, 60], [105, 60]], [1, 0]).best_mask()
    assert cut[60, 50] and not cut[60, 105]
    assert (cut & right).sum() < 0.1 * right.sum()


def test_negative_only_and_no_clicks_give_empty():
    img = _scene(_disk(70, 60, 25))
    for pts, labels in (([[70, 60]], [0]), (np.zeros((0, 2)), np.zeros(0, int))):
        out = _predict(img, pts, labels)
        assert out.masks.shape[1:] == (H, W)
        assert not out.masks.any()
        assert np.all(out.scores == 0)


def test_clicks_outside_the_image_are_ignored():
    gt = _disk(70, 60, 25)
    out = _predict(_scene(gt), [[70, 60], [-5, 10], [500, 10]], [1, 0, 1])
    assert jaccard(out.best_mask(), gt) > 0.9


def test_tiny_object():
    gt = _disk(100, 40, 4)
    out = _predict(_scene(gt), [[100, 40]], [1])
    assert out.best_mask()[40, 100]
    assert jaccard(out.best_mask(), gt) > 0.5


def test_uniform_image_does_not_fail():
    img = np.full((H, W, 3), 77, np.uint8)
    out = _predict(img, [[80, 60]], [1])
    m = out.best_mask()
    assert m[60, 80]  # the clicked pixel is in
    assert m.sum() < H * W  # but not the whole frame


def test_mask_prior_alone_is_kept_and_snapped_to_the_object():
    gt = _disk(70, 60, 25)
    prior = np.roll(gt, 3, axis=1).astype(np.float32)  # slightly off
    out = _predict(_scene(gt), np.zeros((0, 2)), np.zeros(0, int), mask_prior=prior)
    assert jaccard(out.best_mask(), gt) > jaccard(prior > 0.5, gt)


def test_mask_prior_with_negative_click_removes_region():
    left, right = _disk(50, 60, 22), _disk(110, 60, 22)
    img = _scene(left | right)
    prior = (left | right).astype(np.float32)
    out = _predict(img, [[110, 60]], [0], mask_prior=prior).best_mask()
    assert out[60, 50] and not out[60, 110]
    assert jaccard(out, left) > 0.8


def test_bad_inputs_raise():
    seg = ClassicalSegmenter()
    with pytest.raises(RuntimeError):
        seg.predict(np.array([[1.0, 1.0]]), np.array([1]))
    with pytest.raises(ValueError):
        seg.set_image(np.zeros((10, 10), np.uint8))
    seg.set_image(_background())
    with pytest.raises(ValueError):
        seg.predict(np.array([[1.0, 1.0]]), np.array([1]), mask_prior=np.zeros((5, 5)))


def test_cache_key_reuses_preparation():
    seg = ClassicalSegmenter()
    img = _background()
    seg.set_image(img, cache_key=("t", 0))
    prep = seg._prep
    seg.set_image(img, cache_key=("t", 0))
    assert seg._prep is prep
    seg.set_image(img, cache_key=("t", 1))
    assert seg._prep is not prep


def test_helpers():
    cost = np.ones((5, 7))
    seeds = np.zeros((5, 7), bool)
    seeds[2, 0] = True
    d = geodesic_distance(cost, seeds)
    assert d[2, 0] == 0 and d[2, 6] > d[2, 3] > 0
    assert np.all(np.isinf(geodesic_distance(cost, np.zeros_like(seeds))))
    m = np.zeros((9, 9), bool)
    m[1:4, 1:4] = m[5:8, 5:8] = True
    m[2, 2] = False
    s = np.zeros_like(m)
    s[6, 6] = True
    kept = keep_seeded_components(m, s)
    assert kept[6, 6] and not kept[1, 1]
    flat = np.full((8, 8), 0.5, np.float32)
    np.testing.assert_allclose(guided_filter(flat, flat, 2, 1e-3), 0.5, atol=1e-5)


def test_color_index_gives_each_quantised_colour_its_own_bin():
    levels = np.arange(0, 256, 32, dtype=np.uint8)  # one value per 3-bit level
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).reshape(64, 8, 3)
    idx = color_index(rgb, 3)
    assert idx.dtype == np.int32 and idx.shape == (64, 8)
    assert sorted(idx.ravel().tolist()) == list(range(512))
    # values inside one level share its bin; red is the most significant channel
    assert color_index(rgb + 31, 3).tolist() == idx.tolist()
    assert color_index(np.array([[[32, 0, 0], [0, 0, 32]]], np.uint8), 3).tolist() == [[64, 1]]


def test_fisher_projection_separates_the_mask_and_samples_every_nth_pixel():
    """The direction, from every n-th pixel of each side (n = count // max_samples), is the
    discriminant computed on exactly those pixels; and it points from background to object."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 120, (90, 140, 3)).astype(np.uint8)
    mask = _disk(70, 45, 25)[:90, :140]
    rgb[mask, 0] += 100  # the object is redder
    wdir, lo, span = fisher_projection(rgb, mask, max_samples=1000)
    flat = rgb.reshape(-1, 3).astype(np.float32) / 255.0
    fg, bg = flat[mask.ravel()], flat[~mask.ravel()]
    fg, bg = fg[:: len(fg) // 1000], bg[:: len(bg) // 1000]
    cov = np.cov(fg.T) + np.cov(bg.T) + 1e-3 * np.eye(3)
    expected = np.linalg.solve(cov, fg.mean(0) - bg.mean(0))
    np.testing.assert_allclose(wdir, expected, rtol=1e-5)
    assert wdir[0] > 0 and abs(wdir[0]) > 5 * max(abs(wdir[1]), abs(wdir[2]))
    g = flat[:: flat.shape[0] // 1000] @ wdir
    assert (lo, lo + span) == pytest.approx(tuple(np.percentile(g, (1, 99))), rel=1e-5)
    assert fisher_projection(rgb, np.zeros(mask.shape, bool)) is None


def test_geodesic_distance_from_a_region_equals_the_search_from_all_its_pixels():
    """Paths start from the seeds' edge only; the distances must be those of a search that
    starts from every seed (regions touching the border, diagonal corners, lone pixels)."""
    from skimage.graph import MCP_Geometric

    rng = np.random.default_rng(5)
    cost = 1.0 + 4.0 * rng.random((60, 90)) ** 2
    seeds = _disk(30, 25, 14)[:60, :90] | (np.arange(90)[None] < 3)
    seeds[40:50, 50:60] = seeds[50:55, 50:55] = True
    seeds[5, 80] = True
    # In the concave corner, (50, 55) is reached most cheaply diagonally from (49, 54), a
    # seed whose four side neighbours are all seeds: only the 8-neighbour edge starts there.
    cost[49, 54] = cost[50, 55] = 1.0
    cost[49, 55] = cost[50, 54] = cost[49, 56] = cost[51, 54] = cost[51, 56] = 5.0
    full, _ = MCP_Geometric(cost).find_costs(np.argwhere(seeds))
    np.testing.assert_array_equal(geodesic_distance(cost, seeds), full.astype(np.float32))


def test_gmm_model_layout_and_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[20, 20, 20], [200, 30, 30], [30, 200, 30], [30, 30, 200], [220] * 3])
    pix = np.concatenate([c + rng.normal(0, 3, (400, 3)) for c in centres]).astype(np.uint8)
    model = gmm_model(pix, lloyd_iters=5)
    assert model.shape == (1, 65) and model.dtype == np.float64
    weights, means = model[0, :5], model[0, 5:20].reshape(5, 3)
    covs = model[0, 20:].reshape(5, 3, 3)
    np.testing.assert_allclose(weights.sum(), 1.0)
    # each well-separated colour cluster gets one component with its mean
    for c in centres:
        assert np.min(np.linalg.norm(means - c, axis=1)) < 3.0
    assert all(np.linalg.det(c) > 0 for c in covs)
    np.testing.assert_array_equal(gmm_model(pix, lloyd_iters=5), model)  # no randomness
    # plain Orchard–Bouman splitting: the first split separates two distant colours
    two = gmm_model(pix[:800], k=2)
    assert two.shape == (1, 26)
    np.testing.assert_allclose(np.sort(two[0, :2]), [0.5, 0.5])
    got = two[0, 2:8].reshape(2, 3)
    for c in centres[:2]:
        assert np.min(np.linalg.norm(got - c, axis=1)) < 3.0
    few = gmm_model(np.array([[10, 10, 10], [12, 10, 10]], np.uint8))
    assert few.shape == (1, 65) and np.isclose(few[0, :5].sum(), 1.0)


def test_grabcut_ignores_the_global_rng_state():
    """Same clicks → same mask, whatever ran before (GrabCut's own init draws random numbers)."""
    gt = _disk(70, 60, 25) | _disk(110, 70, 12)
    img = _scene(gt, seed=3)
    trimap = np.full((H, W), GC_PR_BGD, np.uint8)
    trimap[_disk(80, 62, 38)] = GC_PR_FGD
    trimap[_disk(70, 60, 4)] = GC_FGD
    trimap[:3] = GC_BGD
    results = []
    for seed in (0, 1, 12345):
        cv2.setRNGSeed(seed)
        results.append(grabcut_deterministic(img, trimap, 3))
        cv2.setRNGSeed(seed)
        _ = np.random.default_rng(seed)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    fg = np.isin(results[0], (GC_FGD, GC_PR_FGD))
    assert jaccard(fg, gt) > 0.9
    masks = []
    for seed in (0, 99):
        cv2.setRNGSeed(seed)
        masks.append(_predict(img, [[70, 60]], [1]).masks)
    np.testing.assert_array_equal(masks[0], masks[1])


def test_click_centrality_prefers_the_mask_the_click_is_central_in():
    seeds = _disk(40, 60, 2)
    small = _disk(40, 60, 20)
    leak = small | _disk(100, 60, 40)  # click now sits near the edge of a bigger blob
    assert click_centrality(small, seeds) > 0.9
    assert click_centrality(leak, seeds) < 0.6
    assert click_centrality(small, _disk(140, 10, 2)) == 0.0


def test_real_davis_frame_one_click():
    img = read_image(DAVIS / "JPEGImages" / "480p" / "blackswan" / "00000.jpg")
    gt = cv2.imread(str(DAVIS / "Annotations" / "480p" / "blackswan" / "00000.png"), 0) > 127
    # native 854×480; the mask is deterministic (GrabCut starts from our own colour models)
    dt = cv2.distanceTransform(gt.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    seg = ClassicalSegmenter(ClassicalSegmenterConfig())
    seg.set_image(img)
    out = seg.predict(np.array([[x, y]], float), np.array([1]))
    assert jaccard(out.best_mask(), gt) > 0.6


def _first_frame(
    name: str, config: ClassicalSegmenterConfig | None = None
) -> tuple[ClassicalSegmenter, np.ndarray]:
    """A segmenter set on frame 0 of a shared DAVIS sequence, and that frame's label map."""
    from backend.eval.davis import load_sequence, read_ground_truth

    seq = load_sequence(DAVIS, name, 1)
    seg = ClassicalSegmenter(config)
    seg.set_image(read_image(seq.images[0]))
    return seg, read_ground_truth(seq)[0]


def _outside_box(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    outside = mask.copy()
    outside[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = False
    return outside


@pytest.mark.parametrize("name", ["dog", "car-roundabout"])
def test_box_alone_segments_the_object(name):
    """A tight box around the object on a real DAVIS frame: GrabCut from the box."""
    seg, labels = _first_frame(name)
    gt = labels == 1
    ys, xs = np.nonzero(gt)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    out = seg.predict(np.zeros((0, 2)), np.zeros(0, int), box=box)
    mask = out.best_mask()
    assert jaccard(gt, mask) > 0.7, jaccard(gt, mask)
    assert not _outside_box(mask, box).any(), "nothing outside the box"


@pytest.mark.parametrize("name", ["car-shadow", "cows"])
def test_box_with_a_click_is_no_worse_than_the_click(name):
    """A tight box sent with the click (no prior): the box's outside is background for the
    cut but not a geodesic seed, so the object's ends, which touch a tight box, stay object.
    As a seed it took them: with the box added, car-shadow fell from 0.76 to 0.50 and cows
    from 0.73 to 0.28 (one mask, as the pipeline then asked; 0.17 and 0.06 with candidates)."""
    from backend.eval.clicks import first_frame_boxes, first_frame_clicks
    from backend.pipeline import _clicks_to_arrays

    seg, labels = _first_frame(name)
    gt = labels == 1
    pts, lab = _clicks_to_arrays([first_frame_clicks(labels, [1])[1]])
    box = first_frame_boxes(labels, [1])[1].as_array()
    alone = jaccard(gt, seg.predict(pts, lab).best_mask())
    both = seg.predict(pts, lab, box=box).best_mask()
    assert jaccard(gt, both) >= max(0.7, alone - 0.01), (jaccard(gt, both), alone)
    assert not _outside_box(both, box).any(), "nothing outside the box"


def test_correction_fit_wants_each_click_deep_and_central_in_its_change():
    shown = _disk(50, 60, 20)
    part = _disk(90, 60, 12)  # a missed part, clicked at its middle
    fit = correction_fit(shown | part, shown, [(90, 60, True)])
    assert fit == pytest.approx(12, abs=1.5), "central: the click's depth"
    leak = part | _disk(120, 60, 25)  # the same click near the edge of a larger addition
    assert correction_fit(shown | leak, shown, [(90, 60, True)]) < 0.6 * fit
    sliver = _disk(90, 60, 3)  # the click's own seed disc and nothing more: central, shallow
    assert correction_fit(shown | sliver, shown, [(90, 60, True)]) < 0.3 * fit
    assert correction_fit(shown, shown, [(90, 60, True)]) == 0.0, "nothing changed"
    removed = shown & ~_disk(50, 60, 8)  # a negative click at the middle of what it removed
    assert correction_fit(removed, shown, [(50, 60, False)]) == pytest.approx(8, abs=1.5)
    both = correction_fit(removed | part, shown, [(50, 60, False), (90, 60, True)])
    assert both == pytest.approx(10, abs=1.5), "the mean over the clicks"
    assert correction_fit(removed, shown, [(50, 60, False), (90, 60, True)]) < 0.5 * both


def test_a_correction_returns_one_mask_even_when_several_are_asked():
    gt = _disk(70, 60, 25)
    img = _scene(gt)
    shown = _disk(70, 60, 15)  # too small: a click in the middle of the missed ring
    prior = shown.astype(np.float32)
    out = _predict(img, [[70, 60], [70, 80]], [1, 1], mask_prior=prior, multimask_output=True)
    assert out.masks.shape == (1, H, W)
    assert out.best_mask()[80, 70] and jaccard(out.best_mask(), gt) > jaccard(shown, gt)


def test_a_corrective_click_on_a_real_frame_does_not_leak():
    """The NoC protocol's first corrective click on dog's frame 0 (its head, at the top
    edge): the cut at ratio 1 alone added the fence around the head, with the click near the
    edge of the addition (IoU 0.81 → 0.75). The candidate whose change holds the click
    centrally adds the head (0.84)."""
    from backend.eval.clicks import corrective_click, first_frame_clicks
    from backend.pipeline import _clicks_to_arrays

    seg, labels = _first_frame("dog")
    gt = labels == 1
    prompt = [first_frame_clicks(labels, [1])[1]]
    shown = seg.predict(*_clicks_to_arrays(prompt)).best_mask()
    prompt.append(corrective_click(gt, shown))
    prior = shown.astype(np.float32)
    out = seg.predict(*_clicks_to_arrays(prompt), mask_prior=prior, multimask_output=False)
    assert jaccard(gt, out.best_mask()) > jaccard(gt, shown) + 0.02


def test_candidate_cuts_on_threads_give_the_same_masks_in_the_same_order():
    """The cuts run side by side (``threads``); a first click's four candidates and a
    correction's five cuts must not depend on it."""
    from backend.eval.clicks import corrective_click, first_frame_clicks
    from backend.pipeline import _clicks_to_arrays

    outs = {}
    for threads in (1, 4):
        seg, labels = _first_frame("dog", ClassicalSegmenterConfig(threads=threads))
        prompt = [first_frame_clicks(labels, [1])[1]]
        first = seg.predict(*_clicks_to_arrays(prompt))
        prompt.append(corrective_click(labels == 1, first.best_mask()))
        prior = first.best_mask().astype(np.float32)
        outs[threads] = (first, seg.predict(*_clicks_to_arrays(prompt), mask_prior=prior))
    for serial, threaded in zip(outs[1], outs[4], strict=True):
        np.testing.assert_array_equal(serial.masks, threaded.masks)
        np.testing.assert_array_equal(serial.scores, threaded.scores)
    assert len({m.tobytes() for m in outs[1][0].masks}) > 1  # distinct candidates: order counts
