"""XMem inference core: one ``step`` per frame, in the official call semantics.

``step(image, mask, valid_labels)`` decides from four flags what to compute:

* ``is_mem_frame``: every ``mem_every`` frames, or whenever a mask is given;
* ``need_segment``: not the first frame, and not every object is given a mask;
* ``is_deep_update``: hidden state refreshed by the value encoder (on memory
  frames when synchronised, else every ``deep_update_every`` frames);
* ``is_normal_update``: the decoder updates the hidden state otherwise.

Labels are 1-based object slots: ``set_all_labels([1, 2])`` then a mask with
one row per label. The only intended difference from the official code is in
memory compression with several object groups (see :mod:`.memory`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backend.tracker.xmem.config import TAM_CONFIG, XMemConfig
from backend.tracker.xmem.memory import MemoryManager
from backend.tracker.xmem.modules import aggregate
from backend.tracker.xmem.network import KeyFeatures, XMemNetwork

PAD_MULTIPLE = 16


@dataclass(frozen=True)
class Padding:
    """Zero padding to a multiple of 16, split evenly (extra pixel bottom/right)."""

    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def for_size(cls, h: int, w: int, d: int = PAD_MULTIPLE) -> Padding:
        ph, pw = (-h) % d, (-w) % d
        return cls(ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.top or self.bottom or self.left or self.right):
            return x
        return F.pad(x, (self.left, self.right, self.top, self.bottom))

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] - self.top - self.bottom, x.shape[-1] - self.left - self.right
        return x[..., self.top : self.top + h, self.left : self.left + w]


class XMemCore:
    """Frame-by-frame XMem inference over one video (official ``InferenceCore``).

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the network under
    autocast; memory and aggregation stay float32. ``channels_last`` feeds the
    network NHWC tensors (use with a network converted to channels_last).
    ``dense_readout`` uses the official dense affinity product (slower; for
    speed comparisons only).
    """

    def __init__(
        self,
        network: XMemNetwork,
        config: XMemConfig = TAM_CONFIG,
        *,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        dense_readout: bool = False,
    ):
        self.network = network
        self.config = config
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last
        self.dense_readout = dense_readout
        self.deep_update_sync = config.deep_update_every < 0
        self.all_labels: list[int] = []
        self.clear_memory()

    def clear_memory(self) -> None:
        """Forget everything (memory, hidden state, frame counter)."""
        self.curr_ti = -1
        self.last_mem_ti = 0
        self.last_deep_update_ti = -self.config.deep_update_every
        self.memory = MemoryManager(
            self.config, self.network.dims.hidden_dim, dense_readout=self.dense_readout
        )

    def set_all_labels(self, all_labels: list[int]) -> None:
        """Declare every object label known so far (1-based, ascending)."""
        self.all_labels = list(all_labels)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        device_type = next(self.network.parameters()).device.type
        return torch.autocast(device_type, dtype=self.autocast_dtype)

    def _encode_key(self, image: torch.Tensor, need_sk: bool, need_ek: bool) -> KeyFeatures:
        with self._autocast():
            feats = self.network.encode_key(image, need_sk=need_sk, need_ek=need_ek)
        if self.autocast_dtype is not None:
            for name in ("key", "shrinkage", "selection", "f16", "f8", "f4"):
                t = getattr(feats, name)
                if t is not None:
                    setattr(feats, name, t.float())
        return feats

    @torch.inference_mode()
    def step(
        self,
        image: torch.Tensor,
        mask: torch.Tensor | None = None,
        valid_labels: list[int] | None = None,
        end: bool = False,
    ) -> torch.Tensor:
        """Process the next frame; returns probabilities (K+1)×H×W, channel 0 background.

        ``image`` is 3×H×W normalised RGB; ``mask`` (optional) is K×H×W with one
        row per label of ``all_labels``; only rows of ``valid_labels`` (default:
        all) are used, the others are taken from the prediction.
        """
        cfg = self.config
        self.curr_ti += 1
        padding = Padding.for_size(*image.shape[-2:])
        image = padding.pad(image)[None]
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)

        is_mem_frame = (
            self.curr_ti - self.last_mem_ti >= cfg.mem_every or mask is not None
        ) and not end
        need_segment = self.curr_ti > 0 and (
            valid_labels is None or len(self.all_labels) != len(valid_labels)
        )
        if self.deep_update_sync:
            is_deep_update = is_mem_frame
        else:
            due = self.curr_ti - self.last_deep_update_ti >= cfg.deep_update_every
            is_deep_update = due and not end
        is_normal_update = (not self.deep_update_sync or not is_deep_update) and not end

        feats = self._encode_key(
            image, need_sk=is_mem_frame, need_ek=cfg.enable_long_term or need_segment
        )
        memory = self.memory
        prob = None
        if need_segment:
            readout = memory.read(feats.key, feats.selection)
            with self._autocast():
                hidden, _, prob = self.network.segment(
                    feats, readout, memory.hidden, h_out=is_normal_update
                )
            prob = prob.float()
            if is_normal_update and hidden is not None:
                memory.hidden = hidden.float()

        if mask is not None:
            mask = padding.pad(mask.to(image.device, torch.float32))
            if prob is not None:
                pred = prob[1:]
                pred[:, mask.sum(0) > 0.5] = 0
                if valid_labels is not None:
                    keep = [i for i in range(pred.shape[0]) if i + 1 not in valid_labels]
                    mask[keep] = pred[keep]
            prob = aggregate(mask, dim=0)
            memory.create_hidden_state(len(self.all_labels), feats.key)

        if prob is None:
            raise ValueError("the first frame needs a mask (and valid labels covering all objects)")

        if is_mem_frame:
            with self._autocast():
                value, hidden = self.network.encode_value(
                    image, feats.f16, memory.hidden, prob[1:], is_deep_update=is_deep_update
                )
            memory.add_memory(
                feats.key,
                feats.shrinkage,
                value.float(),
                [label - 1 for label in self.all_labels],
                feats.selection if cfg.enable_long_term else None,
            )
            self.last_mem_ti = self.curr_ti
            if is_deep_update:
                if hidden is not None:
                    memory.hidden = hidden.float()
                self.last_deep_update_ti = self.curr_ti

        return padding.unpad(prob)
