"""SAM (segment-anything 1.0) behind the :class:`~backend.segmenter.base.Segmenter` protocol.

What this adds over ``segment_anything.SamPredictor``:

* checkpoints are loaded with ``torch.load(map_location=device, weights_only=True)`` and checked
  against the requested model type, with an error that says which type the file looks like;
* image embeddings are cached per ``(cache_key, model)`` in memory and on disk
  (:mod:`backend.segmenter.embedding_cache`), so a repeat click on a frame runs only the decoder;
* follow-up clicks on the same image feed the previous answer's low-res logits back as
  ``mask_input`` (SAM was trained that way), and a native-size probability prior is converted to
  SAM's padded 256×256 logit frame by :func:`prob_to_mask_input` (never stretched).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from backend.segmenter.base import SegmentOutput, image_digest, prompt_arrays
from backend.segmenter.embedding_cache import Embedding, EmbeddingCache, entry_key
from backend.state_dicts import fit_problems

log = logging.getLogger(__name__)

#: Builders of an untrained SAM per model type (weights are loaded separately). Tests register
#: small architectures here; the production types are the three official ones.
MODEL_BUILDERS: dict[str, Callable[[], Sam]] = {
    "vit_b": build_sam_vit_b,
    "vit_l": build_sam_vit_l,
    "vit_h": build_sam_vit_h,
}

#: Image-encoder signature of the official checkpoints: (number of ViT blocks, embedding width).
ENCODER_SIGNATURES: dict[str, tuple[int, int]] = {
    "vit_b": (12, 768),
    "vit_l": (24, 1024),
    "vit_h": (32, 1280),
}

_BLOCK_KEY = re.compile(r"^image_encoder\.blocks\.(\d+)\.")


class CheckpointError(RuntimeError):
    """A SAM checkpoint is missing, unreadable, or does not fit the requested model type."""


@dataclass(frozen=True)
class SamConfig:
    """Behaviour knobs of :class:`SamSegmenter`.

    ``memory_cache_items``: embeddings kept in RAM (≈4 MiB each).
    ``disk_cache_items``: embedding files kept in ``cache_dir`` (≈4 MiB each), oldest pruned.
    ``refine_with_previous``: feed the chosen low-res logits of the previous call back as
    ``mask_input`` when the new clicks extend the previous ones on the same image.
    ``multimask_single_click_only``: SAM's three-mask head is meant for ambiguous single clicks;
    with two or more clicks the single-mask head is used even if multimask was requested.
    ``prior_eps``: probabilities are clipped to [eps, 1-eps] before p→logit.
    """

    memory_cache_items: int = 8
    disk_cache_items: int = 512
    refine_with_previous: bool = True
    multimask_single_click_only: bool = True
    prior_eps: float = 1e-4
    refine_memory_items: int = 32


# --------------------------------------------------------------------------- checkpoints


def describe_state_dict(state: Mapping[str, object]) -> str:
    """Human description of which SAM variant a state_dict's keys and shapes look like."""
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))}
    if not blocks:
        some = ", ".join(list(state)[:3]) or "none"
        return f"not a SAM checkpoint (no image_encoder.blocks.* keys; first keys: {some})"
    depth = max(blocks) + 1
    proj = state.get("image_encoder.patch_embed.proj.weight")
    width = int(proj.shape[0]) if isinstance(proj, torch.Tensor) else -1
    for name, signature in ENCODER_SIGNATURES.items():
        if signature == (depth, width):
            return f"{name} ({depth} encoder blocks, width {width})"
    return f"an unknown SAM variant ({depth} encoder blocks, width {width})"


def _unwrap_state_dict(obj: object) -> dict[str, torch.Tensor] | None:
    """The tensor dict inside a loaded checkpoint (plain, or under "model"/"state_dict")."""
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
        if obj and all(isinstance(k, str) for k in obj):
            return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return None


def load_sam(checkpoint: Path, model_type: str, device: str = "cpu") -> Sam:
    """Build ``model_type`` and load the weights in ``checkpoint`` onto ``device`` (eval mode).

    Raises :class:`CheckpointError` for an unknown type, a missing or unreadable file, or weights
    that do not fit the architecture (naming the type the file looks like).
    """
    builder = MODEL_BUILDERS.get(model_type)
    if builder is None:
        raise CheckpointError(
            f"unknown SAM model type {model_type!r}; expected one of {sorted(MODEL_BUILDERS)}"
        )
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(
            f"SAM checkpoint not found: {path}. Download it with "
            f"`python -m backend weights download sam_{model_type}` (see docs/weights.md)."
        )
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(
            f"cannot read SAM checkpoint {path} ({type(exc).__name__}: {exc}); the file is "
            "corrupt, truncated or not a PyTorch checkpoint. Re-download it and check it with "
            "`python -m backend weights verify`."
        ) from exc
    state = _unwrap_state_dict(loaded)
    if not state:
        raise CheckpointError(f"{path} does not contain a state_dict of tensors")
    model = builder()
    problems = fit_problems(model.state_dict(), state)
    if problems:
        raise CheckpointError(
            f"checkpoint {path.name} does not fit model type {model_type!r}: it looks like "
            f"{describe_state_dict(state)}; " + "; ".join(problems)
        )
    model.to(device)
    model.load_state_dict(state)
    model.eval()
    return model


def checkpoint_identity(checkpoint: Path, model_type: str) -> str:
    """Cheap identity of a checkpoint file for cache keys: type, name, size and mtime."""
    st = Path(checkpoint).stat()
    return f"{model_type}:{Path(checkpoint).name}:{st.st_size}:{st.st_mtime_ns}"


# --------------------------------------------------------------------------- geometry


def prob_to_mask_input(
    prob: np.ndarray,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    *,
    img_size: int = 1024,
    eps: float = 1e-4,
) -> np.ndarray:
    """Native-size foreground probability → SAM ``mask_input`` (1×S×S logits, S = img_size/4).

    Mirrors the inverse of ``Sam.postprocess_masks``: resize to ``input_size`` (long side
    ``img_size``, aspect kept), zero-pad bottom/right to ``img_size``², average 4×4 blocks, then
    p → logit with p clipped to [eps, 1-eps] (so padding becomes logit(eps), a large negative).
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape != tuple(original_size):
        raise ValueError(f"mask prior shape {prob.shape} != original size {tuple(original_size)}")
    in_h, in_w = int(input_size[0]), int(input_size[1])
    if not (0 < in_h <= img_size and 0 < in_w <= img_size) or img_size % 4:
        raise ValueError(f"bad input_size {input_size} for img_size {img_size}")
    t = torch.from_numpy(np.clip(prob, 0.0, 1.0))[None, None]
    downscale = in_h < prob.shape[0] or in_w < prob.shape[1]
    t = F.interpolate(t, (in_h, in_w), mode="bilinear", align_corners=False, antialias=downscale)
    t = F.pad(t, (0, img_size - in_w, 0, img_size - in_h), value=0.0)
    t = F.avg_pool2d(t, kernel_size=4, stride=4)
    p = t[0].clamp(eps, 1.0 - eps)
    return torch.log(p / (1.0 - p)).numpy().astype(np.float32)


# --------------------------------------------------------------------------- segmenter


@dataclass(frozen=True)
class _PreviousAnswer:
    points: tuple[tuple[float, float], ...]
    labels: tuple[int, ...]
    logits: np.ndarray  # 1×256×256, the chosen mask's low-res logits


class SamSegmenter:
    """Click → mask with SAM, with cached image embeddings and iterative refinement.

    Not meant for concurrent use of one instance from several threads with different images
    (the current image is instance state); calls are serialized by an internal lock.
    """

    name = "sam"

    def __init__(
        self,
        checkpoint: Path,
        model_type: str,
        device: str = "cpu",
        *,
        cache_dir: Path | None = None,
        config: SamConfig | None = None,
    ) -> None:
        model = load_sam(checkpoint, model_type, device)
        self._setup(model, checkpoint_identity(checkpoint, model_type), device, cache_dir, config)

    @classmethod
    def from_model(
        cls,
        model: Sam,
        *,
        model_id: str,
        device: str = "cpu",
        cache_dir: Path | None = None,
        config: SamConfig | None = None,
    ) -> SamSegmenter:
        """Wrap an already built ``Sam`` (moved to ``device``). ``model_id`` must identify its
        weights: it names the cached embeddings."""
        self = cls.__new__(cls)
        self._setup(model.to(device).eval(), model_id, device, cache_dir, config)
        return self

    def _setup(
        self,
        model: Sam,
        model_id: str,
        device: str,
        cache_dir: Path | None,
        config: SamConfig | None,
    ) -> None:
        self.model = model
        self.model_id = model_id
        self.device = torch.device(device)
        self.config = config or SamConfig()
        self.cache = EmbeddingCache(
            self.config.memory_cache_items, cache_dir, self.config.disk_cache_items
        )
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self._lock = threading.RLock()
        self._key: str | None = None
        self._embedding: Embedding | None = None
        self._previous: OrderedDict[str, _PreviousAnswer] = OrderedDict()

    # ----------------------------------------------------------------- image

    def set_image(self, image: np.ndarray, *, cache_key: Hashable | None = None) -> None:
        """Make ``image`` (H×W×3 uint8 RGB) current, encoding it only on a cache miss.

        Without ``cache_key`` the image content hash is used as the key.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected H×W×3 uint8 RGB, got {image.shape} {image.dtype}")
        raw_key = cache_key if cache_key is not None else ("sha1", image_digest(image))
        key = entry_key(raw_key, self.model_id)
        original_size = (int(image.shape[0]), int(image.shape[1]))
        with self._lock:
            current = self._embedding
            if key == self._key and current is not None and current.original_size == original_size:
                return
            embedding = self.cache.get(key)
            if embedding is not None and embedding.original_size != original_size:
                log.warning(
                    "cache entry for %r has size %s, image has %s; re-encoding",
                    raw_key,
                    embedding.original_size,
                    original_size,
                )
                embedding = None
                self._previous.pop(key, None)
            if embedding is None:
                embedding = self._encode(image)
                self.cache.put(key, embedding)
            self._key = key
            self._embedding = Embedding(
                features=embedding.features.to(self.device),
                input_size=embedding.input_size,
                original_size=embedding.original_size,
            )

    @torch.inference_mode()
    def _encode(self, image: np.ndarray) -> Embedding:
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        input_size = (int(x.shape[-2]), int(x.shape[-1]))
        features = self.model.image_encoder(self.model.preprocess(x.float()))
        return Embedding(features, input_size, (int(image.shape[0]), int(image.shape[1])))

    def reset_refinement(self) -> None:
        """Forget previous answers, so the next click starts from points only."""
        with self._lock:
            self._previous.clear()

    # ----------------------------------------------------------------- predict

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
        """Masks for the current image from clicks (x, y native pixels; 1 = fg, 0 = bg) and an
        optional box (x0, y0, x1, y1 native pixels; SAM's box prompt).

        The prompt mask is, in order of precedence: ``mask_prior`` converted by
        :func:`prob_to_mask_input`; the previous answer's chosen logits when these clicks extend
        the previous clicks on this image; none. ``prior_is_own`` is not used: SAM takes the
        prompt mask the same way whatever its source.
        """
        with self._lock:
            if self._embedding is None or self._key is None:
                raise RuntimeError("call set_image() before predict()")
            emb = self._embedding
            points, labels = prompt_arrays(point_coords, point_labels)

            mask_input = None
            if mask_prior is not None:
                mask_input = prob_to_mask_input(
                    mask_prior,
                    emb.input_size,
                    emb.original_size,
                    img_size=self.model.image_encoder.img_size,
                    eps=self.config.prior_eps,
                )
            elif self.config.refine_with_previous:
                mask_input = self._previous_logits(points, labels)

            if box is not None:
                box = np.asarray(box, dtype=np.float64).reshape(4)
            if len(points) == 0 and mask_input is None and box is None:
                return self._empty_output(emb.original_size)

            multimask = multimask_output and box is None  # a box is not ambiguous
            if self.config.multimask_single_click_only and len(points) > 1:
                multimask = False
            out = self._decode(emb, points, labels, mask_input, multimask, box)
            if len(points):
                self._remember(points, labels, out.low_res_logits[out.best_index()][None])
            return out

    @torch.inference_mode()
    def _decode(
        self,
        emb: Embedding,
        points: np.ndarray,
        labels: np.ndarray,
        mask_input: np.ndarray | None,
        multimask: bool,
        box: np.ndarray | None = None,
    ) -> SegmentOutput:
        model = self.model
        prompt_points = None
        if len(points):
            coords = self.transform.apply_coords(points, emb.original_size)
            prompt_points = (
                torch.as_tensor(coords, dtype=torch.float, device=self.device)[None],
                torch.as_tensor(labels, dtype=torch.int, device=self.device)[None],
            )
        masks_t = None
        if mask_input is not None:
            masks_t = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)[None]
        boxes_t = None
        if box is not None:
            corners = self.transform.apply_boxes(box[None], emb.original_size)
            boxes_t = torch.as_tensor(corners, dtype=torch.float, device=self.device)
        sparse, dense = model.prompt_encoder(points=prompt_points, boxes=boxes_t, masks=masks_t)
        low_res, iou = model.mask_decoder(
            image_embeddings=emb.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        full = model.postprocess_masks(low_res, emb.input_size, emb.original_size)
        return SegmentOutput(
            masks=(full[0] > model.mask_threshold).cpu().numpy(),
            scores=iou[0].float().cpu().numpy(),
            low_res_logits=low_res[0].float().cpu().numpy(),
        )

    def _empty_output(self, original_size: tuple[int, int]) -> SegmentOutput:
        side = self.model.image_encoder.img_size // 4
        return SegmentOutput(
            masks=np.zeros((1, *original_size), dtype=bool),
            scores=np.zeros(1, dtype=np.float32),
            low_res_logits=np.full((1, side, side), -20.0, dtype=np.float32),
        )

    def _previous_logits(self, points: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
        prev = self._previous.get(self._key)
        if prev is None or len(prev.points) >= len(points):
            return None
        n = len(prev.points)
        same_points = _as_points(points[:n]) == prev.points
        if same_points and tuple(int(v) for v in labels[:n]) == prev.labels:
            return prev.logits
        return None

    def _remember(self, points: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> None:
        answer = _PreviousAnswer(_as_points(points), tuple(int(v) for v in labels), logits)
        self._previous[self._key] = answer
        self._previous.move_to_end(self._key)
        while len(self._previous) > self.config.refine_memory_items:
            self._previous.popitem(last=False)


def _as_points(points: np.ndarray) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in points)
