"""Weights-free click → mask segmenter (OpenCV, scikit-image, NumPy).

Pipeline on a reduced working copy of the image (long side ``work_size``):

1. Geodesic distances on an edge-weighted cost map (``skimage.graph.MCP_Geometric``) from the
   positive seeds and from the negative seeds (negative clicks plus, weakly, the image border).
   A pixel geodesically closer to the positives is "probably object" — the classic geodesic
   Voronoi split, which follows strong edges instead of straight lines.
2. ``cv2.grabCut`` initialised with that trimap (sure-foreground discs at positive clicks,
   sure-background discs at negative clicks) fits colour models and cuts along edges. Its
   colour models start from a deterministic Orchard–Bouman split (:func:`gmm_model`) instead
   of OpenCV's random k-means, so the mask depends only on the image and the clicks.
3. Only components touching a positive seed survive; holes are filled.
4. Upsampled to the native size and snapped to image edges with a guided filter whose guide
   is the image projected on the colour direction separating the mask from the rest.

Several candidates (different geodesic ratios) are returned for ``multimask_output``; each is
scored by its colour contrast with a ring around it, by how well its boundary sits on edges,
by its stability across neighbouring ratios and by how deep inside it the click sits.
A ``mask_prior`` adds its confident core to the positive seeds and its outside to the
background seeds, so corrections keep the rest of the previous answer; a negative click inside
the prior removes only the part of it geodesically closer to that click. A correction (a click
the prior gets wrong) is answered with one mask: the cut at each ratio is a candidate, and the
one whose change holds its clicks most deeply and centrally wins (:func:`correction_fit`).
When the object's place is known (the segmenter's own earlier answer, or a box alone), the cut
is made in a window around it at up to native resolution (:func:`zoom_window`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.graph import MCP_Geometric

from backend.masks import jaccard, wrong_points
from backend.segmenter.base import SegmentOutput

log = logging.getLogger(__name__)

GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD = 0, 1, 2, 3

SURE_FG = 0.2
"""Sure object where ``d_pos < SURE_FG · ratio · d_neg``. Kept small: flat background next to
the object is geodesically close to the click too, and GrabCut cannot undo a sure label."""
W_CENTRAL = 0.4
"""Weight of :func:`click_centrality` in the candidate score."""


@dataclass(frozen=True)
class ClassicalSegmenterConfig:
    """Settings of :class:`ClassicalSegmenter` (global; never tuned per video)."""

    work_size: int = 320
    """Long side in pixels of the working copy used for geodesics and GrabCut."""
    edge_weight: float = 4.0
    """Weight of the colour gradient in the geodesic cost (1 = flat cost)."""
    border_weight: float = 1.6
    """Multiplier on geodesic distances to the image border (>1: border is a weaker bg seed)."""
    ratios: tuple[float, ...] = (0.3, 0.45, 0.65, 0.9)
    """Candidate split ratios: probably-object where d_pos < ratio · d_neg."""
    grabcut_iters: int = 3
    click_radius: float = 0.012
    """Radius of the sure discs around clicks, as a fraction of the working long side."""
    refine_radius: int = 4
    """Guided-filter radius (native pixels) for edge-aware boundary refinement; 0 = off."""
    refine_eps: float = 2e-3
    prior_core: float = 0.85
    """``mask_prior`` values above this become positive seeds."""
    prior_out: float = 0.15
    """``mask_prior`` values below this become (probable) background."""
    local_corrections: bool = True
    """With a ``mask_prior``, clicks that disagree with it change the mask only in the region
    they claim geodesically; the rest of the prior is kept as it was."""
    zoom_margin: float = 0.5
    """With a ``mask_prior`` that is the segmenter's own earlier answer (``prior_is_own``: the
    annotator clicks again on a frame; no box) or with a box alone, the image is segmented in
    a window around the answer and the clicks, or around the box, widened on each side by
    this share of the window's longer side (:func:`zoom_window`). The window gets as many
    working pixels as the whole frame has, so a small object is cut at up to native
    resolution at no extra cost. 0 = never. First-frame NoC@85 on issue 17's tune half at
    0.25 / 0.5 / 1.0: 6.14 / 5.86 / 6.86 (7.57 without; docs/benchmarks.md, sixteenth
    round)."""
    zoom_max_share: float = 0.9
    """A window covering at least this share of the image's area is not cut out: it gains
    little resolution and loses the image border as background. Tune NoC@85 / NoC@90 at 0.8 /
    0.9 / 1.0: 5.86 / 11.43, 5.86 / 11.43, 6.00 / 12.00."""
    threads: int = 0
    """Threads for the candidate cuts; 0 = OpenCV's thread count (``cv2.setNumThreads``, which
    bulk workers set to their CPU share). The cuts are independent and GrabCut releases the
    GIL, so they run side by side; the masks do not depend on it."""


@dataclass
class _Prepared:
    image: np.ndarray  # native RGB
    small: np.ndarray  # working RGB uint8
    cost: np.ndarray  # working geodesic cost
    grad: np.ndarray  # working edge magnitude in [0, 1]
    scale: float  # working / native


def _gray_float(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def fisher_projection(
    rgb: np.ndarray, mask: np.ndarray, max_samples: int = 20000
) -> tuple[np.ndarray, float, float] | None:
    """RGB direction that best separates ``mask`` from the rest (Fisher discriminant), with the
    1st/99th percentiles of the projection for normalising; ``None`` if undefined."""
    pixels = rgb.reshape(-1, 3)
    m = mask.reshape(-1)
    n_fg = int(np.count_nonzero(m))
    if n_fg < 2 or n_fg > m.size - 2:
        return None

    def sample(rows: np.ndarray | slice) -> np.ndarray:  # only the sampled pixels, as floats
        return pixels[rows].astype(np.float32) / 255.0

    fg_rows, bg_rows = np.flatnonzero(m), np.flatnonzero(~m)
    fg = sample(fg_rows[:: max(1, len(fg_rows) // max_samples)])
    bg = sample(bg_rows[:: max(1, len(bg_rows) // max_samples)])
    cov = np.cov(fg.T) + np.cov(bg.T) + 1e-3 * np.eye(3)
    wdir = np.linalg.solve(cov, fg.mean(0) - bg.mean(0)).astype(np.float32)
    g = sample(slice(None, None, max(1, len(pixels) // max_samples))) @ wdir
    lo, hi = float(np.percentile(g, 1)), float(np.percentile(g, 99))
    return wdir, lo, max(hi - lo, 1e-6)


def project(rgb: np.ndarray, proj: tuple[np.ndarray, float, float]) -> np.ndarray:
    """Grey image of ``rgb`` along a :func:`fisher_projection`, in about [0, 1]."""
    wdir, lo, span = proj
    wsc = (wdir / (255.0 * span)).astype(np.float32)
    g = cv2.transform(rgb, wsc.reshape(1, 3)).astype(np.float32) - lo / span
    return np.clip(g, 0.0, 1.0)


def contrast_guide(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey guide image that best separates ``mask`` from the rest.

    A plain grey guide can lose an edge between two colours of equal brightness (red on
    green); projecting onto the discriminant direction keeps it, at the cost of one channel.
    """
    proj = fisher_projection(rgb, mask)
    return _gray_float(rgb) if proj is None else project(rgb, proj)


def guided_upsample(
    guide_small: np.ndarray, src_small: np.ndarray, guide: np.ndarray, radius: int, eps: float
) -> np.ndarray:
    """Fast guided filter: coefficients at the small size, applied with the full-size guide."""
    k = (2 * radius + 1, 2 * radius + 1)
    mean_i = cv2.boxFilter(guide_small, -1, k)
    mean_p = cv2.boxFilter(src_small, -1, k)
    cov = cv2.boxFilter(guide_small * src_small, -1, k) - mean_i * mean_p
    var = cv2.boxFilter(guide_small * guide_small, -1, k) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    size = (guide.shape[1], guide.shape[0])
    a_up = cv2.resize(cv2.boxFilter(a, -1, k), size, interpolation=cv2.INTER_LINEAR)
    b_up = cv2.resize(cv2.boxFilter(b, -1, k), size, interpolation=cv2.INTER_LINEAR)
    return a_up * guide + b_up


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey-guide guided filter (He et al.): smooths ``src`` while keeping ``guide``'s edges."""
    k = (2 * radius + 1, 2 * radius + 1)
    mean_i = cv2.boxFilter(guide, -1, k)
    mean_p = cv2.boxFilter(src, -1, k)
    corr_ip = cv2.boxFilter(guide * src, -1, k)
    var_i = cv2.boxFilter(guide * guide, -1, k) - mean_i * mean_i
    a = (corr_ip - mean_i * mean_p) / (var_i + eps)
    b = mean_p - a * mean_i
    return cv2.boxFilter(a, -1, k) * guide + cv2.boxFilter(b, -1, k)


def edge_map(rgb: np.ndarray) -> np.ndarray:
    """Colour gradient magnitude of a smoothed Lab image, normalised to about [0, 1]."""
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (5, 5), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    gx = cv2.Sobel(lab, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt((gx * gx + gy * gy).sum(axis=2))
    scale = float(np.percentile(mag, 98)) + 1e-6
    return np.clip(mag / scale, 0.0, 1.0)


def geodesic_distance(cost: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Minimum path cost from any True pixel of ``seeds`` (inf where unreachable / no seed).

    Paths start from the seeds' edge only (seeds with a non-seed among their 8 neighbours):
    every path out of a seed region leaves through its edge, so the distances are the same,
    and a prior's core or a box's outside (thousands of seeds) costs as little as its
    outline (the search does NumPy work for every start it is given)."""
    if not seeds.any():
        return np.full(cost.shape, np.inf, dtype=np.float32)
    inner = cv2.erode(
        seeds.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE
    )
    mcp = MCP_Geometric(cost)
    dist, _ = mcp.find_costs(np.argwhere(seeds & ~inner.astype(bool)))
    dist[seeds] = 0.0
    return dist.astype(np.float32)


def _ordered_discs(
    shape: tuple[int, int], pts: np.ndarray, labels: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative seed discs around clicks. Where discs of opposite sign overlap,
    each pixel goes to the nearest click (the later one on ties), so every click keeps its
    own pixel and no click is silently overruled by a neighbour."""
    h, w = shape
    r = max(1, int(round(radius)))
    best = np.full(shape, np.inf, np.float32)
    out = np.zeros(shape, np.uint8)  # 0 none, 1 positive, 2 negative
    yy, xx = np.mgrid[:h, :w]
    for (x, y), lab in zip(pts, labels, strict=True):
        cx, cy = int(round(x)), int(round(y))
        d2 = ((xx - cx) ** 2 + (yy - cy) ** 2).astype(np.float32)
        take = (d2 <= r * r) & (d2 <= best)
        best[take] = d2[take]
        out[take] = 1 if lab == 1 else 2
    return out == 1, out == 2


def keep_seeded_components(
    mask: np.ndarray, seeds: np.ndarray, neg_seeds: np.ndarray | None = None
) -> np.ndarray:
    """Components of ``mask`` that touch ``seeds``, holes filled except holes holding a
    negative seed (a negative click is a hard constraint)."""
    if not mask.any():
        return mask
    lab, n = ndi.label(mask)
    ids = np.unique(lab[seeds & mask])
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros_like(mask)
    kept = np.isin(lab, ids)
    filled = ndi.binary_fill_holes(kept)
    if neg_seeds is not None and (neg_seeds & filled & ~kept).any():
        holes, _ = ndi.label(filled & ~kept)
        bad = np.unique(holes[neg_seeds & filled & ~kept])
        filled &= ~np.isin(holes, bad[bad > 0])
    return filled


def _lloyd(x: np.ndarray, clusters: list[np.ndarray], iters: int) -> list[np.ndarray]:
    """A few k-means (Lloyd) steps from the given clusters; empty clusters are dropped."""
    centres = np.stack([c.mean(0) for c in clusters if len(c)])
    for _ in range(iters):
        d = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        lab = d.argmin(1)
        new = [x[lab == i] for i in range(len(centres))]
        new = [c for c in new if len(c)]
        centres = np.stack([c.mean(0) for c in new])
        clusters = new
    return clusters


def gmm_model(
    pixels: np.ndarray, k: int = 5, max_samples: int = 10000, lloyd_iters: int = 0
) -> np.ndarray:
    """OpenCV GrabCut GMM (1×(13·k): weights, means, covariances) fitted deterministically.

    Orchard–Bouman splitting, as in the GrabCut paper: repeatedly split the cluster with the
    largest colour variance at its mean along its principal axis. Unlike OpenCV's k-means++
    initialisation this needs no random numbers, so the cut cannot change with the RNG state.
    ``lloyd_iters`` k-means steps from that split can settle clusters the mean split cut
    through; off by default: GrabCut re-fits the components anyway, and on the one-click DAVIS
    protocol they changed single masks both ways with no net gain (J&F 0.527 vs 0.554).
    """
    x = pixels.reshape(-1, 3)
    x = x[:: max(1, len(x) // max_samples)].astype(np.float64)
    clusters = [x]
    while len(clusters) < k:
        best, best_var, best_dir = -1, 0.0, None
        for i, c in enumerate(clusters):
            if len(c) < 2:
                continue
            vals, vecs = np.linalg.eigh(np.cov(c.T))
            if vals[-1] > best_var:
                best, best_var, best_dir = i, float(vals[-1]), vecs[:, -1]
        if best < 0 or best_var <= 1e-9:
            break
        c = clusters.pop(best)
        side = (c - c.mean(0)) @ best_dir > 0
        clusters += [c[side], c[~side]]
    clusters = _lloyd(x, clusters, iters=lloyd_iters)
    model = np.zeros((k, 13), np.float64)
    for i, c in enumerate(clusters):
        model[i, 0] = len(c) / len(x)
        model[i, 1:4] = c.mean(0)
        cov = np.cov(c.T) if len(c) > 1 else np.zeros((3, 3))
        model[i, 4:] = (cov + 0.01 * np.eye(3)).reshape(-1)
    # OpenCV's layout: all weights, then all means, then all covariances.
    return np.concatenate([model[:, 0], model[:, 1:4].ravel(), model[:, 4:].ravel()])[None]


def grabcut_deterministic(
    image: np.ndarray, trimap: np.ndarray, iters: int, sure_models: bool = False
) -> np.ndarray:
    """``cv2.grabCut`` on ``trimap`` (GC_* labels) started from :func:`gmm_model` colour
    models (``GC_EVAL``), so the result depends only on the inputs; returns the new labels.
    ``sure_models``: fit the starting models on the sure labels only (when both have pixels)."""
    gc = trimap.copy()
    fg = np.isin(gc, (GC_FGD, GC_PR_FGD))
    bg = ~fg
    if sure_models and (gc == GC_FGD).sum() >= 20 and (gc == GC_BGD).sum() >= 20:
        fg, bg = gc == GC_FGD, gc == GC_BGD
    pix = image.reshape(-1, 3)
    bgd = gmm_model(pix[bg.reshape(-1)])
    fgd = gmm_model(pix[fg.reshape(-1)])
    try:
        cv2.grabCut(image, gc, None, bgd, fgd, iters, cv2.GC_EVAL)
    except cv2.error as exc:  # degenerate colour models (e.g. a flat image)
        log.debug("grabCut failed (%s); keeping the geodesic split", exc)
        return trimap
    return gc


def _boundary_edge_score(mask: np.ndarray, grad: np.ndarray) -> float:
    """Mean edge strength on the mask boundary (objects tend to end on edges)."""
    m = mask.astype(np.uint8)
    ring = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
    if not ring.any():
        return 0.0
    return float(grad[ring].mean())


@dataclass(frozen=True)
class _Prompt:
    """One :meth:`ClassicalSegmenter.predict` call's prompts, checked: the clicks inside the
    image (N×2 x, y native pixels and N labels, 1 = positive), the prior at the image's size
    and whether it is the segmenter's own earlier answer (``own``)."""

    pts: np.ndarray
    labels: np.ndarray
    prior: np.ndarray | None
    box: np.ndarray | None
    multimask: bool
    own: bool = False

    def cropped(self, window: tuple[int, int, int, int]) -> _Prompt:
        """The same prompts on the image cut to ``window`` (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = window
        shift = np.array([x0, y0], np.float64)
        return _Prompt(
            self.pts - shift,
            self.labels,
            None if self.prior is None else np.asarray(self.prior)[y0:y1, x0:x1],
            None if self.box is None else np.asarray(self.box, np.float64) - np.tile(shift, 2),
            self.multimask,
            self.own,
        )


class ClassicalSegmenter:
    """Click-promptable segmenter with no learned weights (see module docstring)."""

    name = "classical"

    def __init__(self, config: ClassicalSegmenterConfig | None = None, device: str = "cpu"):
        self.config = config or ClassicalSegmenterConfig()
        self.device = device  # CPU only; kept for interface symmetry with SAM
        self._prep: _Prepared | None = None
        self._cache_key: Hashable | None = None

    # -- image ------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, *, cache_key: Hashable | None = None) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected H×W×3 uint8 RGB, got {image.shape} {image.dtype}")
        if cache_key is not None and cache_key == self._cache_key and self._prep is not None:
            return
        self._prep = self._prepare(image)
        self._cache_key = cache_key

    def _prepare(self, image: np.ndarray, max_pixels: int | None = None) -> _Prepared:
        """``image`` at the working size (long side ``work_size``, never enlarged, at most
        ``max_pixels`` pixels) with its edge map and geodesic cost."""
        h, w = image.shape[:2]
        scale = min(1.0, self.config.work_size / max(h, w))
        if max_pixels is not None:
            scale = min(scale, float(np.sqrt(max_pixels / (h * w))))
        size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
        grad = edge_map(small)
        cost = (1.0 + self.config.edge_weight * grad**2).astype(np.float64)
        return _Prepared(image=image, small=small, cost=cost, grad=grad, scale=scale)

    # -- prediction -------------------------------------------------------------------------
    def predict(
        self,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        *,
        mask_prior: np.ndarray | None = None,
        multimask_output: bool = True,
        box: np.ndarray | None = None,
        prior_is_own: bool = False,
    ) -> SegmentOutput:
        """Geodesic seeds from the clicks → GrabCut, cut to the box. A box alone starts
        GrabCut from the box; with clicks, outside the box is background for the cut and
        the candidates are those of the clicks alone, cut to the box. With a ``mask_prior``
        that some click disagrees with (a correction) one mask comes back even when
        ``multimask_output`` asks for more: the prior settles the ambiguity that several
        masks are for, and the candidate that fits the correction is chosen here. A prior that
        is the segmenter's own answer (``prior_is_own``, no box) and a box alone are cut in a
        window around them (``zoom_margin``)."""
        if self._prep is None:
            raise RuntimeError("set_image must be called before predict")
        h, w = self._prep.image.shape[:2]
        pts = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(point_labels).reshape(-1).astype(int)
        if pts.shape[0] != labels.shape[0]:
            raise ValueError("point_coords and point_labels differ in length")
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        pts, labels = pts[inside], labels[inside]
        if mask_prior is not None and mask_prior.shape != (h, w):
            raise ValueError(f"mask_prior {mask_prior.shape} != image {(h, w)}")
        prompt = _Prompt(pts, labels, mask_prior, box, multimask_output, prior_is_own)
        window = self._window(self._prep, prompt)
        if window is not None:
            return self._predict_in(self._prep, window, prompt)
        return self._predict(self._prep, prompt)

    def _window(self, prep: _Prepared, prompt: _Prompt) -> tuple[int, int, int, int] | None:
        """Where to cut instead of the whole image, if anywhere: around the segmenter's own
        answer (no box), or around a box alone. Not with a positive click in a box (the
        geodesic split needs the image's border) nor for a refinement inside a box (it lost on
        frame 0 of the tune half); docs/classical-engine.md."""
        cfg, p = self.config, prompt
        if cfg.zoom_margin <= 0:
            return None
        own = None
        if p.own and p.prior is not None and p.box is None:
            own = np.asarray(p.prior) > 0.5
        box_alone = p.box is not None and p.prior is None and not (p.labels == 1).any()
        if own is None and not box_alone:
            return None
        shape = prep.image.shape[:2]
        return zoom_window(own, p.pts, p.box, cfg.zoom_margin, cfg.zoom_max_share, shape)

    def _predict(self, prep: _Prepared, prompt: _Prompt) -> SegmentOutput:
        """:meth:`predict` on the whole of ``prep``'s image."""
        cfg = self.config
        pts, labels, mask_prior, box = prompt.pts, prompt.labels, prompt.prior, prompt.box
        multimask_output = prompt.multimask
        h, w = prep.image.shape[:2]
        neg = pts[labels == 0]
        n_out = len(cfg.ratios) if multimask_output else 1

        sh, sw = prep.small.shape[:2]
        prior_small = None
        if mask_prior is not None:
            prior_small = cv2.resize(
                np.asarray(mask_prior, np.float32), (sw, sh), interpolation=cv2.INTER_AREA
            )

        radius = cfg.click_radius * max(sh, sw)
        pos_seed, neg_seed = _ordered_discs((sh, sw), pts * prep.scale, labels, radius)
        clicked_neg = neg_seed
        if box is not None:
            small_box = np.asarray(box, np.float64) * prep.scale
            inside_box = _box_region((sh, sw), small_box)
            neg_seed = neg_seed | ~inside_box
            pos_seed &= inside_box
            if not pos_seed.any() and prior_small is None:  # a box alone: GrabCut from it
                core = _box_core((sh, sw), small_box)
                cut = self._box_cut(prep, inside_box, core, neg_seed)
                native = self._to_native(prep, cut)[None] & _box_region((h, w), np.asarray(box), 0)
                native &= ~_points_mask(neg, h, w)
                scores = _score([cut], prep.grad, prep.small, core).astype(np.float32)
                return SegmentOutput(masks=native, scores=scores)
            if not pos_seed.any():
                pos_seed |= _box_core((sh, sw), small_box)
        clicked_pos = pos_seed.copy()  # the prior's core joins the seeds below
        claimed_in = claimed = None
        if prior_small is not None:
            core, claimed_in = self._prior_core(prep, prior_small, pos_seed, neg_seed)
            pos_seed |= core
        if not pos_seed.any():
            return _empty(h, w, n_out)

        # Geodesic background seeds: the negative clicks; a box's outside too once there is a
        # prior. On a first prompt it is only a label for the cut: a tight box touches the
        # object, so as a seed it would claim the object's ends, nearer to it than the click.
        geo_neg = neg_seed if prior_small is not None else clicked_neg
        d_pos, d_neg = self._split(prep, pos_seed, geo_neg)
        if prior_small is not None:
            outside, claimed = self._prior_outside(prep, prior_small, pos_seed, neg_seed)
            # Only positive corrections are local: a negative click on a leak must be able to
            # remove the whole leak, which often reaches past what the click claims.
            local = cfg.local_corrections and claimed_in is not None and not claimed_in.any()
            if not (local and claimed.any()):
                claimed = None
            # A local correction's claim competes with the accepted outside on equal terms.
            far = 1.0 if claimed is not None else 2.0
            d_neg = np.minimum(d_neg, geodesic_distance(prep.cost, outside & ~pos_seed) * far)

        shown = None if mask_prior is None else np.asarray(mask_prior) > 0.5
        disagree = [] if shown is None else wrong_points(shown, pts, labels)
        ratios = cfg.ratios if multimask_output else (1.0,)
        choose = bool(disagree)
        if choose:  # a correction: every ratio and 1 compete; the best fit is the one answer
            ratios = (*cfg.ratios, 1.0)
        fixed = grown = None
        if claimed is not None:  # the claim and a pixel around it are the cut's to decide
            grown = cv2.dilate(claimed.astype(np.uint8), np.ones((3, 3), np.uint8))
            fixed = (~grown.astype(bool), prior_small >= 0.5)
        candidates = self._map(
            lambda r: self._cut(prep, d_pos, d_neg, r, pos_seed, neg_seed, fixed), ratios
        )
        scores = _score(candidates, prep.grad, prep.small, pos_seed)
        masks = self._answers(prep, candidates, prompt, grown)
        if choose:
            best = int(np.argmax([correction_fit(m, shown, disagree) for m in masks]))
            masks, scores = masks[best : best + 1], scores[best : best + 1]
            if (
                grown is not None
                and not prompt.own
                and _adds_little(candidates[best], claimed, clicked_pos)
            ):
                again = self._cuts_from_clicks(
                    prep, prompt, grown, clicked_pos, clicked_neg, neg_seed
                )
                fits = [correction_fit(m, shown, disagree) for m in again]
                taken = max(fits) > 0  # else no cut holds a correction click
                log.debug("a correction added only its discs; cut from its clicks: %s", taken)
                if taken:
                    masks = again[int(np.argmax(fits))][None]
        return SegmentOutput(masks=masks, scores=scores.astype(np.float32))

    def _split(
        self, prep: _Prepared, pos_seed: np.ndarray, neg_seed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Geodesic distances to the object seeds and to the background: the negative seeds,
        and the image border (less the object seeds) at ``border_weight``."""
        border = np.zeros(pos_seed.shape, bool)
        border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
        d_border = geodesic_distance(prep.cost, border & ~pos_seed) * self.config.border_weight
        d_neg = np.minimum(d_border, geodesic_distance(prep.cost, neg_seed))
        return geodesic_distance(prep.cost, pos_seed), d_neg

    def _answers(
        self,
        prep: _Prepared,
        candidates: list[np.ndarray],
        prompt: _Prompt,
        grown: np.ndarray | None,
    ) -> np.ndarray:
        """Working-size cuts → native masks: never on a negative click, cut to the box, and
        for a local correction (``grown``: its claim and a pixel around it) the prior outside
        the claim."""
        h, w = prep.image.shape[:2]
        masks = np.stack([self._to_native(prep, m) for m in candidates])
        masks &= ~_points_mask(prompt.pts[prompt.labels == 0], h, w)
        if prompt.box is not None:
            masks &= _box_region((h, w), np.asarray(prompt.box, np.float64), 0)
        if grown is not None:
            # A correction edits the prior only where its clicks claimed; elsewhere the prior
            # (the mask the annotator accepted) stays exactly as it was.
            region = cv2.resize(grown, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
            masks = np.where(region[None], masks, np.asarray(prompt.prior)[None] > 0.5)
        return masks

    def _cuts_from_clicks(
        self,
        prep: _Prepared,
        prompt: _Prompt,
        grown: np.ndarray,
        clicked_pos: np.ndarray,
        clicked_neg: np.ndarray,
        neg_seed: np.ndarray,
    ) -> np.ndarray:
        """A positive local correction's claim cut again from the clicks alone, as a first
        click is (one native mask per ratio, the prior outside the claim): for a correction
        whose own cut took less of the claim beyond the click discs than the discs themselves.

        The correction's cut starts its colour models from the prior and the accepted
        outside. A part the tracker lost (a wheel, a dancer's legs) often has colours that
        the outside holds elsewhere and the prior does not, so the cut gave it to the
        background and the click changed nothing (motocross-jump's front wheel, issue 17).
        A prior that is the segmenter's own answer is not cut again: a click there that
        adds only its disc has mostly found a detail, and cutting from it alone leaked
        (libby's tail on frame 0: IoU 0.83 → 0.45)."""
        d_pos, d_neg = self._split(prep, clicked_pos, clicked_neg)
        cuts = self._map(
            lambda r: self._cut(prep, d_pos, d_neg, r, clicked_pos, neg_seed), self.config.ratios
        )
        return self._answers(prep, cuts, prompt, grown)

    def _predict_in(
        self, whole: _Prepared, window: tuple[int, int, int, int], prompt: _Prompt
    ) -> SegmentOutput:
        """:meth:`_predict` on ``whole``'s image cut to ``window`` (x0, y0, x1, y1 native
        pixels), as if it were the whole image, with as many working pixels as the whole image
        has (so it costs what a cut of the whole image costs); the masks come back at the
        native size, empty outside the window. The image that is set stays as it is."""
        x0, y0, x1, y1 = window
        pixels = whole.small.shape[0] * whole.small.shape[1]
        crop = self._prepare(np.ascontiguousarray(whole.image[y0:y1, x0:x1]), pixels)
        out = self._predict(crop, prompt.cropped(window))
        h, w = whole.image.shape[:2]
        masks = np.zeros((len(out.masks), h, w), bool)
        masks[:, y0:y1, x0:x1] = out.masks
        return SegmentOutput(masks=masks, scores=out.scores)

    def _map(
        self, fn: Callable[[float], np.ndarray], ratios: tuple[float, ...]
    ) -> list[np.ndarray]:
        """``[fn(r) for r in ratios]``, on up to :attr:`ClassicalSegmenterConfig.threads`
        threads (a pool per call: nothing is shared between calls or segmenters)."""
        threads = min(len(ratios), self.config.threads or cv2.getNumThreads())
        if threads <= 1:
            return [fn(r) for r in ratios]
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cut") as pool:
            return list(pool.map(fn, ratios))

    def _prior_core(
        self, prep: _Prepared, prior: np.ndarray, pos_seed: np.ndarray, neg_seed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Confident part of ``mask_prior`` usable as positive seeds, and the part of the
        prior that negative clicks claim.

        A negative click inside the prior claims the part of it that is geodesically closer
        to the click than to the prior's far side (or to the positive clicks), so a correction
        removes a local region, not the whole object.
        """
        core = prior > self.config.prior_core
        new = neg_seed & (prior >= 0.5)
        if not new.any() or not (core & ~neg_seed).any():
            return core & ~neg_seed, new
        keep = _geodesic_keep(prep.grad, core, new, pos_seed)
        return keep, (core & ~keep) | new

    def _prior_outside(
        self, prep: _Prepared, prior: np.ndarray, pos_seed: np.ndarray, neg_seed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Confident outside of ``mask_prior`` usable as background seeds, and the part of
        it that positive clicks claim.

        The mirror image of :meth:`_prior_core`: a positive click outside the prior (a missed
        part) claims the part of the outside that is geodesically closer to the click than to
        the outside's far side (or to the negative clicks), so the missed part is re-decided
        by the cut instead of being pinned to the background around the click.
        """
        out = prior < self.config.prior_out
        new = pos_seed & (prior < 0.5)
        if not new.any() or not (out & ~pos_seed).any():
            return out & ~pos_seed, new
        keep = _geodesic_keep(prep.grad, out, new, neg_seed, exclude=pos_seed)
        keep |= out & ~pos_seed & ~_reach(new, prior < 0.5)
        return keep, (out & ~keep) | new

    def _cut(
        self,
        prep: _Prepared,
        d_pos: np.ndarray,
        d_neg: np.ndarray,
        ratio: float,
        pos_seed: np.ndarray,
        neg_seed: np.ndarray,
        fixed: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Geodesic trimap → GrabCut → seeded components, at the working size.

        ``fixed`` = (where, value): pixels whose label is given (the accepted prior outside a
        correction's claim): hard labels for the cut and the source of its colour models."""
        likely = d_pos < ratio * d_neg
        gc = np.full(d_pos.shape, GC_PR_BGD, np.uint8)
        gc[likely] = GC_PR_FGD
        gc[d_pos < SURE_FG * ratio * d_neg] = GC_FGD
        gc[d_neg * ratio < 0.25 * d_pos] = GC_BGD
        if fixed is not None:
            where, value = fixed
            # inside the claim only the clicks are sure; the cut decides the rest
            gc[~where & (gc == GC_FGD)] = GC_PR_FGD
            gc[~where & (gc == GC_BGD)] = GC_PR_BGD
            gc[where & value] = GC_FGD
            gc[where & ~value] = GC_BGD
        gc[pos_seed] = GC_FGD
        gc[neg_seed] = GC_BGD
        has_fg = np.isin(gc, (GC_FGD, GC_PR_FGD)).any()
        has_bg = np.isin(gc, (GC_BGD, GC_PR_BGD)).any()
        if self.config.grabcut_iters > 0 and has_fg and has_bg:
            gc = grabcut_deterministic(
                prep.small, gc, self.config.grabcut_iters, sure_models=fixed is not None
            )
        mask = np.isin(gc, (GC_FGD, GC_PR_FGD))
        return keep_seeded_components(mask, pos_seed, neg_seed)

    def _box_cut(
        self, prep: _Prepared, inside: np.ndarray, core: np.ndarray, neg_seed: np.ndarray
    ) -> np.ndarray:
        """GrabCut initialised by the box (inside probably object, outside background, the
        centre object), keeping the largest part: the classic box-to-mask start."""
        gc = np.full(inside.shape, GC_BGD, np.uint8)
        gc[inside] = GC_PR_FGD
        gc[core] = GC_FGD
        gc[neg_seed] = GC_BGD
        gc = grabcut_deterministic(prep.small, gc, max(1, self.config.grabcut_iters))
        mask = np.isin(gc, (GC_FGD, GC_PR_FGD))
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        if count > 2:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            mask = labels == int(np.argmax(sizes))
        return mask

    def _to_native(self, prep: _Prepared, mask: np.ndarray) -> np.ndarray:
        h, w = prep.image.shape[:2]
        soft = mask.astype(np.float32)
        if soft.shape != (h, w):
            soft = cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)
        raw = soft > 0.5
        r = self.config.refine_radius
        if r > 0 and raw.any():
            guide = contrast_guide(prep.image, raw)
            refined = guided_filter(guide, soft, r, self.config.refine_eps) > 0.5
            # Refinement snaps boundaries; it must not erase thin or tiny objects.
            if refined.sum() >= 0.7 * raw.sum():
                return refined
        return raw


def _adds_little(cut: np.ndarray, claimed: np.ndarray, discs: np.ndarray) -> bool:
    """Whether a working-size ``cut`` took less of a correction's ``claimed`` region beyond
    the click ``discs`` (object labels, which every cut holds) than the discs themselves: the
    click changed little more than its own pixels."""
    return int((cut & claimed & ~discs).sum()) < int((claimed & discs).sum())


def _geodesic_keep(
    grad: np.ndarray,
    region: np.ndarray,
    new: np.ndarray,
    far_seeds: np.ndarray,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """The part of ``region`` (less ``exclude``) that clicks on the wrong side of a prior
    (``new``) do not claim: pixels geodesically nearer to the region's far half (its pixels
    farther from ``new`` than the median, plus ``far_seeds``) than to ``new``. The cost is
    strongly edge-weighted, so a claim stops at colour edges inside the region. Shared by
    :meth:`ClassicalSegmenter._prior_core` (negative clicks in the prior) and
    :meth:`ClassicalSegmenter._prior_outside` (positive clicks outside it)."""
    allowed = region if exclude is None else region & ~exclude
    cost = 1.0 + 50.0 * grad.astype(np.float64) ** 2
    d_click = geodesic_distance(cost, new)
    finite = region & np.isfinite(d_click)
    med = float(np.median(d_click[finite])) if finite.any() else 0.0
    d_far = geodesic_distance(cost, (allowed & (d_click > med)) | far_seeds)
    return allowed & (d_click > d_far)


REACH = 3.0
"""A correction click claims at most ``REACH`` × its distance to the prior's boundary around
it: the simulated (and a careful human) annotator clicks at the middle of the wrong part, so
the part seldom extends much further from the click than the click is from the boundary."""


def _reach(new: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Pixels within ``REACH`` × depth of each component of ``new`` (seed discs on the wrong
    side of the prior), where depth is the seed's distance to the other side of the prior."""
    if side.all() or not new.any():
        return np.ones_like(new)
    depth = cv2.distanceTransform(side.astype(np.uint8), cv2.DIST_L2, 3)
    count, labels = cv2.connectedComponents(new.astype(np.uint8), connectivity=8)
    out = np.zeros(new.shape, np.uint8)
    for k in range(1, count):
        rows, cols = np.nonzero(labels == k)
        d = float(depth[rows, cols].max())
        cy, cx = int(round(rows.mean())), int(round(cols.mean()))
        cv2.circle(out, (cx, cy), max(2, int(np.ceil(REACH * d))), 1, -1)
    return out.astype(bool)


def zoom_window(
    prior: np.ndarray | None,
    points: np.ndarray,
    box: np.ndarray | None,
    margin: float,
    max_share: float,
    shape: tuple[int, int],
) -> tuple[int, int, int, int] | None:
    """The window (x0, y0, x1, y1, native pixels, end exclusive) of an image of ``shape``
    (H, W) in which to segment around ``prior`` (H×W bool), ``points`` (N×2 x, y) and a
    ``box`` (x0, y0, x1, y1): the box around them, widened on each side by ``margin`` × its
    longer side and kept inside the image. None when neither a non-empty prior nor a box says
    where the object is, or when the window covers at least ``max_share`` of the image."""
    corners = [np.asarray(points, np.float64).reshape(-1, 2)]
    if prior is not None and prior.any():
        ys, xs = np.nonzero(prior)
        corners.append(np.array([[xs.min(), ys.min()], [xs.max(), ys.max()]], np.float64))
    elif box is None:
        return None
    if box is not None:
        corners.append(np.asarray(box, np.float64).reshape(2, 2))
    everything = np.concatenate(corners)
    (x_lo, y_lo), (x_hi, y_hi) = everything.min(axis=0), everything.max(axis=0) + 1
    pad = margin * max(x_hi - x_lo, y_hi - y_lo)
    h, w = shape
    x0, y0 = max(0, int(np.floor(x_lo - pad))), max(0, int(np.floor(y_lo - pad)))
    x1, y1 = min(w, int(np.ceil(x_hi + pad))), min(h, int(np.ceil(y_hi + pad)))
    if (x1 - x0) * (y1 - y0) >= max_share * h * w:
        return None
    return x0, y0, x1, y1


def _box_region(shape: tuple[int, int], box: np.ndarray, margin: int = 1) -> np.ndarray:
    """Pixels inside a box (x0, y0, x1, y1), grown by ``margin`` px for rounding."""
    h, w = shape
    x0, y0, x1, y1 = box
    out = np.zeros(shape, bool)
    c0, r0 = max(0, int(np.floor(x0)) - margin), max(0, int(np.floor(y0)) - margin)
    c1, r1 = min(w, int(np.ceil(x1)) + margin), min(h, int(np.ceil(y1)) + margin)
    out[r0:r1, c0:c1] = True
    return out


def _box_core(shape: tuple[int, int], box: np.ndarray) -> np.ndarray:
    """An ellipse at the box centre, a quarter of its size: where the object most likely is."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = max(1.0, (x1 - x0) / 8), max(1.0, (y1 - y0) / 8)
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0


def _points_mask(pts: np.ndarray, h: int, w: int) -> np.ndarray:
    """An h×w mask holding the pixels of (x, y) points (an N×2 array)."""
    out = np.zeros((h, w), bool)
    for x, y in pts:
        out[int(y), int(x)] = True
    return out


def color_index(rgb: np.ndarray, bits: int) -> np.ndarray:
    """Joint RGB histogram bin of every pixel, ``bits`` per channel (int32 H×W, values below
    ``2 ** (3 · bits)``): the quantisation of both engines' colour histograms."""
    q = (rgb >> (8 - bits)).astype(np.int32)
    return (q[..., 0] << (2 * bits)) | (q[..., 1] << bits) | q[..., 2]


def surroundings(mask: np.ndarray, ring_px: int) -> np.ndarray:
    """The ring around a bool ``mask``: pixels within ``ring_px`` of it (a square window,
    at least 3 px wide), outside it. The segmenter scores a candidate's colour contrast with
    this ring; the tracker's colour and motion models compare the object with it, what it
    can leak into."""
    k = max(3, 2 * ring_px + 1)
    return cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool) & ~mask


def _ring_contrast(small: np.ndarray, mask: np.ndarray, bits: int = 3) -> float:
    """1 − Bhattacharyya coefficient between colours inside ``mask`` and in a ring around it.

    A region that stops where the colour changes (an object) scores high; one that cuts
    through a uniform area or stops short inside the object scores low.
    """
    area = int(mask.sum())
    if area == 0 or mask.all():
        return 0.0
    ring = surroundings(mask, int(0.25 * np.sqrt(area)) // 2)
    if not ring.any():
        return 0.0
    idx = color_index(small, bits)
    n = 1 << (3 * bits)
    h_in = np.bincount(idx[mask], minlength=n).astype(np.float64)
    h_out = np.bincount(idx[ring], minlength=n).astype(np.float64)
    bc = np.sqrt(h_in / h_in.sum() * h_out / h_out.sum()).sum()
    return float(1.0 - bc)


def _depth(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the outside of ``mask`` (the image's edge counting as
    outside), in pixels; 0 outside."""
    return cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]


def click_centrality(mask: np.ndarray, seeds: np.ndarray) -> float:
    """How deep inside ``mask`` the positive seeds sit, relative to its deepest point (0..1).

    People click well inside the object they mean; a candidate that leaks into the
    background puts the click near its edge, so its depth at the click falls behind its own
    maximum depth.
    """
    inside = seeds & mask
    if not inside.any():
        return 0.0
    dist = _depth(mask)
    top = float(dist.max())
    return float(dist[inside].max()) / top if top > 0 else 0.0


def correction_fit(
    mask: np.ndarray, shown: np.ndarray, clicks: list[tuple[int, int, bool]]
) -> float:
    """How well a candidate fits the correction clicks: the mean over them of the click's
    depth in the part it changed times how central it is there (pixels).

    A correction click is put in the middle of the wrong part (the simulated annotator clicks
    its deepest point, and a person aims at its middle too). So the part a click adds (or
    removes) should hold the click about as deep as that part goes: a cut that adds a much
    larger region around a click near its edge leaked. Centrality alone cannot tell the
    right part from a sliver around the click, which holds it just as centrally, only
    shallowly: the depth at the click can. A click that changed nothing scores 0.
    """
    if not clicks:
        return 0.0
    total = 0.0
    for x, y, positive in clicks:
        change = mask & ~shown if positive else shown & ~mask
        if change[y, x]:
            dist = _depth(_component_at(change, x, y))
            total += float(dist[y, x]) ** 2 / float(dist.max())
    return total / len(clicks)


def _component_at(mask: np.ndarray, x: int, y: int) -> np.ndarray:
    """The 8-connected part of ``mask`` holding pixel (x, y)."""
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return labels == labels[y, x]


def _score(
    candidates: list[np.ndarray], grad: np.ndarray, small: np.ndarray, seeds: np.ndarray
) -> np.ndarray:
    """Quality in [0, 1]: colour contrast with the surroundings, boundary edges, stability,
    and how central the click is."""
    n = len(candidates)
    out = np.zeros(n)
    for i, m in enumerate(candidates):
        if not m.any():
            continue
        neigh = [candidates[j] for j in (i - 1, i + 1) if 0 <= j < n]
        stab = np.mean([jaccard(m, o) for o in neigh]) if neigh else 1.0
        edge = min(1.0, _boundary_edge_score(m, grad) / 0.5)
        base = 0.5 * _ring_contrast(small, m) + 0.25 * edge + 0.25 * stab
        out[i] = (1.0 - W_CENTRAL) * base + W_CENTRAL * click_centrality(m, seeds)
    return out


def _empty(h: int, w: int, n: int) -> SegmentOutput:
    return SegmentOutput(masks=np.zeros((n, h, w), bool), scores=np.zeros(n, np.float32))
