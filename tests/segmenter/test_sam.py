"""SamSegmenter on a tiny random SAM (see conftest.py): loading, frames, refinement, caching."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from backend.segmenter.base import Segmenter
from backend.segmenter.embedding_cache import Embedding, EmbeddingCache, entry_key
from backend.segmenter.sam import (
    CheckpointError,
    SamConfig,
    SamSegmenter,
    describe_state_dict,
    prob_to_mask_input,
)

H, W = 90, 160  # non-square on purpose: exercises SAM's resize + bottom padding


def _image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[20:60, 40:100] = (200, 30, 30)  # a flat object so masks have some structure
    return img


def _count_encodes(seg: SamSegmenter) -> list[int]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    seg.model.image_encoder.register_forward_hook(hook)
    return calls


def _record_mask_prompts(seg: SamSegmenter) -> list[torch.Tensor | None]:
    """Wrap the prompt encoder to record the ``masks`` argument of every decode."""
    seen: list[torch.Tensor | None] = []
    original = seg.model.prompt_encoder.forward

    def spy(points, boxes, masks):  # noqa: ANN001, ANN202
        seen.append(None if masks is None else masks.clone())
        return original(points, boxes, masks)

    seg.model.prompt_encoder.forward = spy  # type: ignore[method-assign]
    return seen


@pytest.fixture
def seg(tiny_checkpoint: Path, tiny_model_type: str) -> SamSegmenter:
    return SamSegmenter(tiny_checkpoint, tiny_model_type)


# ------------------------------------------------------------------ checkpoints


def test_loads_checkpoint_weights_through_production_path(seg, tiny_checkpoint):
    saved = torch.load(tiny_checkpoint, weights_only=True)
    loaded = seg.model.state_dict()
    assert set(saved) == set(loaded)
    for k, v in saved.items():
        assert torch.equal(v, loaded[k]), k
    assert isinstance(seg, Segmenter)
    assert not seg.model.training


def test_missing_checkpoint_is_a_clear_error(tmp_path, tiny_model_type):
    with pytest.raises(CheckpointError, match="not found"):
        SamSegmenter(tmp_path / "nope.pth", tiny_model_type)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, tiny_checkpoint, tiny_model_type):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt"):
        SamSegmenter(bad, tiny_model_type)


def test_wrong_model_type_names_what_the_file_looks_like(tiny_checkpoint):
    with pytest.raises(CheckpointError) as err:
        SamSegmenter(tiny_checkpoint, "test_tiny_wide")
    msg = str(err.value)
    assert "test_tiny_wide" in msg
    assert "1 encoder blocks, width 32" in msg
    assert "shape mismatches" in msg


def test_non_sam_checkpoint_and_unknown_type(tmp_path, tiny_checkpoint):
    other = tmp_path / "xmem_like.pth"
    torch.save({"key_encoder.conv1.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        SamSegmenter(other, "test_tiny")
    with pytest.raises(CheckpointError, match="unknown SAM model type"):
        SamSegmenter(tiny_checkpoint, "vit_q")


@pytest.mark.parametrize(
    ("depth", "width", "expected"),
    [(12, 768, "vit_b"), (24, 1024, "vit_l"), (32, 1280, "vit_h"), (12, 1024, "unknown")],
)
def test_describe_state_dict_recognises_official_encoders(depth, width, expected):
    state = {f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(depth)}
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(width, 1, 1, 1)
    assert describe_state_dict(state).startswith(expected if expected != "unknown" else "an unk")


# ------------------------------------------------------------------ frames and shapes


def test_matches_sam_predictor_in_native_frame(seg):
    """Same model, same image, same clicks → same answer as segment-anything's predictor,
    including the refinement pass that feeds back the best low-res logits."""
    img = _image(0)
    pred = SamPredictor(seg.model)
    pred.set_image(img)
    seg.set_image(img, cache_key=("t", 0))

    p1, l1 = np.array([[70.0, 40.0]]), np.array([1])
    ref_m, ref_s, ref_lr = pred.predict(p1, l1, multimask_output=True)
    out = seg.predict(p1, l1)
    assert out.masks.shape == (3, H, W) and out.masks.dtype == bool
    assert out.low_res_logits.shape == (3, 256, 256)
    np.testing.assert_allclose(out.scores, ref_s, atol=1e-5)
    np.testing.assert_allclose(out.low_res_logits, ref_lr, atol=1e-4)
    assert (out.masks == ref_m).mean() > 0.999

    p2, l2 = np.array([[70.0, 40.0], [10.0, 80.0]]), np.array([1, 0])
    best = ref_lr[int(np.argmax(ref_s))][None]
    ref_m2, ref_s2, ref_lr2 = pred.predict(p2, l2, mask_input=best, multimask_output=False)
    out2 = seg.predict(p2, l2)
    assert out2.masks.shape == (1, H, W)
    np.testing.assert_allclose(out2.scores, ref_s2, atol=1e-5)
    np.testing.assert_allclose(out2.low_res_logits, ref_lr2, atol=1e-4)


def test_negative_only_and_prior_only_prompts(seg):
    seg.set_image(_image(1), cache_key="neg")
    out = seg.predict(np.array([[5.0, 5.0], [150.0, 80.0]]), np.array([0, 0]))
    assert out.masks.shape == (1, H, W)
    assert np.isfinite(out.scores).all()

    prior = np.zeros((H, W), np.float32)
    prior[20:60, 40:100] = 1.0
    only = seg.predict(np.zeros((0, 2)), np.zeros(0, int), mask_prior=prior)
    assert only.masks.shape[1:] == (H, W) and np.isfinite(only.scores).all()

    empty = seg.predict(np.zeros((0, 2)), np.zeros(0, int))
    assert not empty.masks.any() and empty.best_score() == 0.0


def test_bad_inputs_raise(seg):
    with pytest.raises(RuntimeError, match="set_image"):
        seg.predict(np.array([[1.0, 1.0]]), np.array([1]))
    with pytest.raises(ValueError):
        seg.set_image(np.zeros((4, 4), np.uint8))
    seg.set_image(_image(2), cache_key="bad")
    with pytest.raises(ValueError, match="labels"):
        seg.predict(np.array([[1.0, 1.0]]), np.array([1, 0]))
    with pytest.raises(ValueError, match="mask prior shape"):
        seg.predict(np.array([[1.0, 1.0]]), np.array([1]), mask_prior=np.zeros((W, H)))


# ------------------------------------------------------------------ refinement


def test_follow_up_click_reuses_best_scoring_logits(seg):
    seen = _record_mask_prompts(seg)
    seg.set_image(_image(3), cache_key="refine")
    p = np.array([[70.0, 40.0], [20.0, 20.0], [120.0, 70.0]])
    lab = np.array([1, 0, 1])

    first = seg.predict(p[:1], lab[:1])
    second = seg.predict(p[:2], lab[:2])
    third = seg.predict(p, lab)
    assert seen[0] is None
    best = first.low_res_logits[first.best_index()]
    np.testing.assert_array_equal(seen[1][0, 0].numpy(), best)
    np.testing.assert_array_equal(seen[2][0, 0].numpy(), second.low_res_logits[0])
    assert third.masks.shape == (1, H, W)

    # Clicks that do not extend the previous ones start fresh, as does an explicit reset.
    seg.predict(p[1:2], lab[1:2])
    assert seen[3] is None
    seg.predict(p[1:3], lab[1:3])
    assert seen[4] is not None
    seg.reset_refinement()
    seg.predict(p[1:3], lab[1:3])
    assert seen[5] is None


def test_refinement_is_keyed_per_image(seg):
    seen = _record_mask_prompts(seg)
    p, lab = np.array([[70.0, 40.0], [20.0, 20.0]]), np.array([1, 0])
    seg.set_image(_image(4), cache_key="a")
    seg.predict(p[:1], lab[:1])
    seg.set_image(_image(5), cache_key="b")
    seg.predict(p, lab)  # extends a's clicks but on another image → no reuse
    assert seen[1] is None
    seg.set_image(_image(4), cache_key="a")
    seg.predict(p, lab)
    assert seen[2] is not None


def test_mask_prior_takes_precedence_and_is_converted(seg):
    seen = _record_mask_prompts(seg)
    seg.set_image(_image(6), cache_key="prior")
    seg.predict(np.array([[70.0, 40.0]]), np.array([1]))
    prior = np.zeros((H, W), np.float32)
    prior[10:30, 10:50] = 0.9
    seg.predict(np.array([[70.0, 40.0], [5.0, 5.0]]), np.array([1, 0]), mask_prior=prior)
    expected = prob_to_mask_input(prior, (576, 1024), (H, W))
    np.testing.assert_allclose(seen[1][0].numpy(), expected, atol=1e-6)


# ------------------------------------------------------------------ prior geometry


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize(("h", "w"), [(300, 700), (700, 300), (480, 854)])
def test_prob_to_mask_input_round_trips_through_sam_postprocess(seg, h, w):
    """A prior converted to SAM's frame and mapped back by Sam.postprocess_masks lands on
    the same pixels; stretching to 256×256 (TAM's dormant code) would not."""
    prob = np.zeros((h, w), np.float32)
    prob[h // 5 : h // 2, w // 2 : (9 * w) // 10] = 1.0
    scale = 1024 / max(h, w)
    input_size = (int(h * scale + 0.5), int(w * scale + 0.5))
    mask_input = prob_to_mask_input(prob, input_size, (h, w))
    assert mask_input.shape == (1, 256, 256) and mask_input.dtype == np.float32

    def back(logits: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(logits)[None]
        return (seg.model.postprocess_masks(t, input_size, (h, w))[0, 0] > 0).numpy()

    assert _iou(back(mask_input), prob > 0.5) > 0.95
    # the padded strip (outside the resized image) is a large negative logit
    pad_rows = mask_input[0, (input_size[0] + 3) // 4 :, :]
    pad_cols = mask_input[0, :, (input_size[1] + 3) // 4 :]
    for strip in (pad_rows, pad_cols):
        assert strip.size == 0 or strip.max() < -8.0
    # control: a stretched prior is misplaced for non-square frames
    t = torch.from_numpy(prob)[None, None]
    stretched = torch.nn.functional.interpolate(t, (256, 256), mode="bilinear")[0].numpy()
    clipped = np.clip(stretched, 1e-4, 1 - 1e-4)
    stretched_logits = np.log(clipped / (1 - clipped)).astype(np.float32)
    assert _iou(back(stretched_logits), prob > 0.5) < 0.8


def test_prob_to_mask_input_logit_values():
    prob = np.full((64, 64), 0.5, np.float32)
    prob[:32] = 0.9
    out = prob_to_mask_input(prob, (1024, 1024), (64, 64))
    assert out[0, 10, 10] == pytest.approx(np.log(9.0), abs=1e-4)
    assert out[0, 200, 10] == pytest.approx(0.0, abs=1e-4)


# ------------------------------------------------------------------ embedding cache


def test_memory_cache_skips_encoder(seg):
    calls = _count_encodes(seg)
    a, b = _image(7), _image(8)
    seg.set_image(a, cache_key=("task", 0))
    first = seg.predict(np.array([[70.0, 40.0]]), np.array([1]))
    seg.set_image(b, cache_key=("task", 1))
    seg.set_image(a, cache_key=("task", 0))
    again = seg.predict(np.array([[70.0, 40.0]]), np.array([1]))
    assert calls[0] == 2
    np.testing.assert_array_equal(first.low_res_logits, again.low_res_logits)


def test_content_hash_key_when_no_cache_key(seg):
    calls = _count_encodes(seg)
    a = _image(9)
    seg.set_image(a)
    seg.set_image(_image(10))
    seg.set_image(a.copy())
    assert calls[0] == 2


def test_memory_cache_is_bounded(tiny_checkpoint, tiny_model_type):
    seg = SamSegmenter(tiny_checkpoint, tiny_model_type, config=SamConfig(memory_cache_items=1))
    calls = _count_encodes(seg)
    for key in ("a", "b", "a"):
        seg.set_image(_image(11), cache_key=key)
    assert calls[0] == 3
    assert len(seg.cache) == 1


def test_disk_cache_survives_a_new_segmenter(tmp_path, tiny_checkpoint, tiny_model_type):
    img = _image(12)
    seg1 = SamSegmenter(tiny_checkpoint, tiny_model_type, cache_dir=tmp_path / "emb")
    seg1.set_image(img, cache_key=("task", 5))
    out1 = seg1.predict(np.array([[30.0, 30.0]]), np.array([1]))
    files = list((tmp_path / "emb").glob("*.pt"))
    assert len(files) == 1 and not list((tmp_path / "emb").glob("*.tmp"))

    seg2 = SamSegmenter(tiny_checkpoint, tiny_model_type, cache_dir=tmp_path / "emb")
    calls = _count_encodes(seg2)
    seg2.set_image(img, cache_key=("task", 5))
    out2 = seg2.predict(np.array([[30.0, 30.0]]), np.array([1]))
    assert calls[0] == 0
    np.testing.assert_array_equal(out1.low_res_logits, out2.low_res_logits)

    # another model identity must not read these embeddings
    seg3 = SamSegmenter.from_model(seg2.model, model_id="other", cache_dir=tmp_path / "emb")
    calls3 = _count_encodes(seg3)
    seg3.set_image(img, cache_key=("task", 5))
    assert calls3[0] == 1


def test_same_key_different_size_reencodes(seg):
    calls = _count_encodes(seg)
    seg.set_image(_image(13), cache_key="k")
    seg.set_image(_image(13, 50, 60), cache_key="k")
    assert calls[0] == 2
    assert seg.predict(np.array([[5.0, 5.0]]), np.array([1])).masks.shape[1:] == (50, 60)


def test_embedding_cache_corrupt_file_is_a_miss(tmp_path):
    cache = EmbeddingCache(max_items=0, disk_dir=tmp_path)
    key = entry_key(("t", 1), "m")
    emb = Embedding(torch.arange(8.0).reshape(1, 2, 2, 2), (1024, 576), (480, 270))
    cache.put(key, emb)
    got = cache.get(key)
    assert got is not None and got.input_size == (1024, 576) and got.original_size == (480, 270)
    assert torch.equal(got.features, emb.features)
    (tmp_path / f"{key}.pt").write_bytes(b"garbage")
    assert cache.get(key) is None
    assert not (tmp_path / f"{key}.pt").exists()


def test_embedding_cache_disk_is_bounded(tmp_path):
    cache = EmbeddingCache(max_items=0, disk_dir=tmp_path, max_disk_items=2)
    emb = Embedding(torch.zeros(1, 1, 2, 2), (1024, 1024), (8, 8))
    keys = [entry_key(i, "m") for i in range(3)]
    cache.put(keys[0], emb)
    cache.put(keys[1], emb)
    past = (tmp_path / f"{keys[1]}.pt").stat().st_mtime - 100
    os.utime(tmp_path / f"{keys[1]}.pt", (past, past))
    cache.put(keys[2], emb)
    assert sorted(p.stem for p in tmp_path.glob("*.pt")) == sorted([keys[0], keys[2]])


def test_entry_key_depends_on_key_and_model():
    assert entry_key(("t", 1), "m") == entry_key(("t", 1), "m")
    assert entry_key(("t", 1), "m") != entry_key(("t", 2), "m")
    assert entry_key(("t", 1), "m") != entry_key(("t", 1), "n")


def test_box_prompt_matches_sam_predictor(seg):
    """A box (alone, and with a click) goes to SAM's prompt encoder as segment-anything's
    predictor sends it: same scores, logits and masks."""
    img = _image(3)
    pred = SamPredictor(seg.model)
    pred.set_image(img)
    seg.set_image(img, cache_key=("box", 0))
    box = np.array([20.0, 15.0, 90.0, 70.0])
    ref_m, ref_s, ref_lr = pred.predict(box=box, multimask_output=False)
    out = seg.predict(np.zeros((0, 2)), np.zeros(0, int), box=box)
    assert out.masks.shape == (1, H, W), "a box is not ambiguous: one mask"
    np.testing.assert_allclose(out.scores, ref_s, atol=1e-5)
    np.testing.assert_allclose(out.low_res_logits, ref_lr, atol=1e-4)
    assert (out.masks == ref_m).mean() > 0.999
    seg.set_image(img, cache_key=("box", 1))
    pts, labels = np.array([[50.0, 40.0]]), np.array([1])
    ref_m, ref_s, _ = pred.predict(pts, labels, box=box, multimask_output=False)
    out = seg.predict(pts, labels, box=box)
    np.testing.assert_allclose(out.scores, ref_s, atol=1e-5)
