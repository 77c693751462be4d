"""The XMem network: key encoder + projection, value encoder, decoder.

No weights are downloaded or loaded here; :mod:`.checkpoint` does that.
All methods work on a batch of one frame (see the tensor conventions in
:mod:`.modules`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backend.tracker.xmem.config import OFFICIAL_DIMS, XMemDims
from backend.tracker.xmem.modules import (
    Decoder,
    GroupResBlock,
    KeyEncoder,
    KeyProjection,
    ValueEncoder,
    aggregate,
)


@dataclass
class KeyFeatures:
    """Output of :meth:`XMemNetwork.encode_key` for one frame (1×C×h×w each)."""

    key: torch.Tensor
    shrinkage: torch.Tensor | None
    selection: torch.Tensor | None
    f16: torch.Tensor
    f8: torch.Tensor
    f4: torch.Tensor


def others_channel(masks: torch.Tensor) -> torch.Tensor:
    """For each object, the sum of the other objects' masks (zeros for one object)."""
    if masks.shape[0] == 1:
        return torch.zeros_like(masks)
    return torch.stack(
        [masks[[j for j in range(masks.shape[0]) if j != i]].sum(0) for i in range(masks.shape[0])]
    )


class XMemNetwork(nn.Module):
    """The four sub-networks, named as in the official state_dict."""

    def __init__(self, dims: XMemDims = OFFICIAL_DIMS):
        super().__init__()
        self.dims = dims
        self.key_encoder = KeyEncoder()
        self.value_encoder = ValueEncoder(dims.value_dim, dims.hidden_dim)
        self.key_proj = KeyProjection(1024, dims.key_dim)
        self.decoder = Decoder(dims.value_dim, dims.hidden_dim)
        self.folded = False

    def fold_batchnorm(self) -> None:
        """Fold every BatchNorm into its conv (inference only; changes state_dict keys)."""
        if not self.folded:
            self.key_encoder.fold()
            self.value_encoder.fold()
            self.folded = True

    def set_reference_mode(self, on: bool) -> None:
        """``on``: compute image/object concatenations literally, like the official code.

        Only for speed comparisons; results agree either way up to float rounding.
        """
        for m in self.modules():
            if isinstance(m, GroupResBlock):
                m.share_image_half = not on

    def encode_key(self, image: torch.Tensor, need_sk: bool, need_ek: bool) -> KeyFeatures:
        """image 1×3×H×W (normalised, padded to /16) → key features."""
        f16, f8, f4 = self.key_encoder(image)
        key, shrinkage, selection = self.key_proj(f16, need_sk, need_ek)
        return KeyFeatures(key, shrinkage, selection, f16, f8, f4)

    def encode_value(
        self,
        image: torch.Tensor,
        f16: torch.Tensor,
        hidden: torch.Tensor | None,
        masks: torch.Tensor,
        is_deep_update: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """masks N×H×W soft probabilities → (value N×Cv×h×w, hidden N×Ch×h×w)."""
        return self.value_encoder(image, f16, hidden, masks, others_channel(masks), is_deep_update)

    def segment(
        self,
        feats: KeyFeatures,
        readout: torch.Tensor,
        hidden: torch.Tensor | None,
        h_out: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """readout N×Cv×h×w → (new hidden or None, raw logits N×1×H×W, prob (N+1)×H×W)."""
        new_hidden, logits = self.decoder(feats.f16, feats.f8, feats.f4, hidden, readout, h_out)
        prob = aggregate(torch.sigmoid(logits[:, 0]), dim=0)
        return new_hidden, logits, prob
