"""Building blocks of the XMem network (Cheng & Schwing, ECCV 2022).

Attribute names follow the official state_dict (``key_encoder.res2``,
``*.attention.ChannelGate.mlp.1``, ...) so official checkpoints load as-is.

Tensor conventions (batch size is always 1 at inference):

* image features: ``1×C×H×W`` (one per frame, shared by all objects);
* group features: ``N×C×H×W``, one row per object (the official code uses
  ``B×N×C×H×W``; with B = 1 the two are the same memory).

Objects only meet image features through "concatenate then convolve"; for
N > 1 the image half of those convolutions is computed once and broadcast,
which is the same sum in a different order (see :func:`conv_cat_shared`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5


def conv_cat_shared(conv: nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``conv(cat[x expanded to N rows, g])`` with the ``x`` part computed once.

    ``x`` is 1×Cx×H×W, ``g`` is N×Cg×H×W. For N == 1 this is the plain
    convolution of the concatenation.
    """
    if g.shape[0] == 1:
        return conv(torch.cat([x, g], 1))
    cx = x.shape[1]
    w = conv.weight
    pad, stride = conv.padding, conv.stride
    shared = F.conv2d(x, w[:, :cx], conv.bias, stride, pad)
    return shared + F.conv2d(g, w[:, cx:], None, stride, pad)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm into the preceding convolution.

    New parameter tensors are created, so tensors shared with a caller's
    state_dict are never modified.
    """
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
        conv.bias = nn.Parameter(bias, requires_grad=False)


def _fold_pairs(block: nn.Module, pairs: list[tuple[str, str]]) -> None:
    for conv_name, bn_name in pairs:
        bn = getattr(block, bn_name)
        if isinstance(bn, nn.BatchNorm2d):
            fold_conv_bn(getattr(block, conv_name), bn)
            setattr(block, bn_name, nn.Identity())


# ----------------------------------------------------------------------------- ResNet trunks


def _downsample(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """ResNet projection shortcut: ``downsample.0`` conv1×1, ``downsample.1`` BN."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch, eps=BN_EPS)
    )


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3×3 conv), expansion 4."""

    def __init__(self, in_ch: int, mid: int, stride: int = 1):
        super().__init__()
        out_ch = mid * 4
        self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.conv3 = nn.Conv2d(mid, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        need_proj = stride != 1 or in_ch != out_ch
        self.downsample = _downsample(in_ch, out_ch, stride) if need_proj else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)

    def fold(self) -> None:
        _fold_pairs(self, [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")])
        if self.downsample is not None:
            _fold_pairs(self.downsample, [("0", "1")])


class BasicBlock(nn.Module):
    """ResNet-18/34 basic block."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        need_proj = stride != 1 or in_ch != out_ch
        self.downsample = _downsample(in_ch, out_ch, stride) if need_proj else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)

    def fold(self) -> None:
        _fold_pairs(self, [("conv1", "bn1"), ("conv2", "bn2")])
        if self.downsample is not None:
            _fold_pairs(self.downsample, [("0", "1")])


def _bottleneck_layer(in_ch: int, mid: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_ch, mid, stride)]
    layers += [Bottleneck(mid * 4, mid) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _basic_layer(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_ch, out_ch, stride)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _fold_all(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (Bottleneck, BasicBlock)):
            m.fold()


class KeyEncoder(nn.Module):
    """ResNet-50 without layer4: image → (f16 1024ch, f8 512ch, f4 256ch)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.res2 = _bottleneck_layer(64, 64, 3, 1)  # ResNet "layer1", renamed upstream
        self.layer2 = _bottleneck_layer(256, 128, 4, 2)
        self.layer3 = _bottleneck_layer(512, 256, 6, 2)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(image)))
        x = F.max_pool2d(x, 3, 2, 1)
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4

    def fold(self) -> None:
        _fold_pairs(self, [("conv1", "bn1")])
        _fold_all(self)


class KeyProjection(nn.Module):
    """f16 → key, shrinkage ``d² + 1`` (≥ 1) and selection ``sigmoid(e)``."""

    def __init__(self, in_dim: int, key_dim: int):
        super().__init__()
        self.key_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)
        self.d_proj = nn.Conv2d(in_dim, 1, 3, padding=1)
        self.e_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)

    def forward(
        self, f16: torch.Tensor, need_s: bool, need_e: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        shrinkage = self.d_proj(f16) ** 2 + 1 if need_s else None
        selection = torch.sigmoid(self.e_proj(f16)) if need_e else None
        return self.key_proj(f16), shrinkage, selection


# ----------------------------------------------------------------------------- group modules


class GroupResBlock(nn.Module):
    """Pre-activation residual block on group features (3×3 convs with bias).

    ``conv2(relu(conv1(relu(g)))) + shortcut(g)``; the shortcut is a 3×3 conv
    when the channel count changes. With ``x`` given, the input is
    ``cat[x, g]`` (image feature first), computed without materialising it.
    """

    share_image_half = True  # False: materialise cat[x, g] like the official code

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, out_dim, 3, padding=1) if in_dim != out_dim else None
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1)

    def forward(self, g: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if x is None:
            out = self.conv1(F.relu(g))
            shortcut = g if self.downsample is None else self.downsample(g)
        elif not self.share_image_half:
            g = torch.cat([x.expand(g.shape[0], -1, -1, -1), g], 1)
            return self.forward(g)
        else:
            out = conv_cat_shared(self.conv1, F.relu(x), F.relu(g))
            shortcut = conv_cat_shared(self.downsample, x, g)
        return self.conv2(F.relu(out)) + shortcut


class ChannelGate(nn.Module):
    """CBAM channel attention: shared MLP on avg- and max-pooled features."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3)))
        return x * torch.sigmoid(att)[:, :, None, None]


class _SpatialConv(nn.Module):
    """Holder so the 7×7 conv is named ``spatial.conv`` like upstream."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)


class SpatialGate(nn.Module):
    """CBAM spatial attention: 7×7 conv on [channel max, channel mean]."""

    def __init__(self):
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial.conv(pooled))


class CBAM(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.ChannelGate = ChannelGate(channels)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """Fuse an image feature with group features: block1(cat) → +CBAM → block2."""

    def __init__(self, x_in: int, g_in: int, g_mid: int, g_out: int):
        super().__init__()
        self.block1 = GroupResBlock(x_in + g_in, g_mid)
        self.attention = CBAM(g_mid)
        self.block2 = GroupResBlock(g_mid, g_out)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g = self.block1(g, x)
        return self.block2(g + self.attention(g))


def gated_hidden_update(values: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """XMem's GRU variant: ``f·h·(1−u) + u·tanh(n)`` (not the textbook GRU)."""
    d = h.shape[1]
    forget = torch.sigmoid(values[:, :d])
    update = torch.sigmoid(values[:, d : 2 * d])
    new_value = torch.tanh(values[:, 2 * d :])
    return forget * h * (1 - update) + update * new_value


class HiddenReinforcer(nn.Module):
    """Deep update of the hidden state from the new value (value encoder side)."""

    def __init__(self, g_dim: int, hidden_dim: int):
        super().__init__()
        self.transform = nn.Conv2d(g_dim + hidden_dim, hidden_dim * 3, 3, padding=1)

    def forward(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return gated_hidden_update(self.transform(torch.cat([g, h], 1)), h)


class HiddenUpdater(nn.Module):
    """Decoder-side hidden update from the multi-scale decoder features."""

    def __init__(self, g_dims: tuple[int, int, int], mid_dim: int, hidden_dim: int):
        super().__init__()
        self.g16_conv = nn.Conv2d(g_dims[0], mid_dim, 1)
        self.g8_conv = nn.Conv2d(g_dims[1], mid_dim, 1)
        self.g4_conv = nn.Conv2d(g_dims[2], mid_dim, 1)
        self.transform = nn.Conv2d(mid_dim + hidden_dim, hidden_dim * 3, 3, padding=1)

    def forward(
        self, g16: torch.Tensor, g8: torch.Tensor, g4: torch.Tensor, h: torch.Tensor
    ) -> torch.Tensor:
        g = (
            self.g16_conv(g16)
            + self.g8_conv(F.interpolate(g8, scale_factor=0.5, mode="area"))
            + self.g4_conv(F.interpolate(g4, scale_factor=0.25, mode="area"))
        )
        return gated_hidden_update(self.transform(torch.cat([g, h], 1)), h)


class ValueEncoder(nn.Module):
    """ResNet-18 trunk (no layer4) on [image, mask, others] → value (+ hidden)."""

    def __init__(self, value_dim: int, hidden_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(5, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.layer1 = _basic_layer(64, 64, 2, 1)
        self.layer2 = _basic_layer(64, 128, 2, 2)
        self.layer3 = _basic_layer(128, 256, 2, 2)
        self.fuser = FeatureFusionBlock(1024, 256, value_dim, value_dim)
        self.hidden_reinforce = HiddenReinforcer(value_dim, hidden_dim) if hidden_dim else None

    def forward(
        self,
        image: torch.Tensor,
        f16: torch.Tensor,
        hidden: torch.Tensor | None,
        masks: torch.Tensor,
        others: torch.Tensor,
        is_deep_update: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """image 1×3×H×W, masks/others N×H×W → value N×Cv×h×w, hidden N×Ch×h×w."""
        n = masks.shape[0]
        g = torch.cat([image.expand(n, -1, -1, -1), masks[:, None], others[:, None]], 1)
        g = self.bn1(self.conv1(g))
        g = F.relu(F.max_pool2d(g, 3, 2, 1))
        g = self.layer3(self.layer2(self.layer1(g)))
        g = self.fuser(f16, g)
        if is_deep_update and self.hidden_reinforce is not None and hidden is not None:
            hidden = self.hidden_reinforce(g, hidden)
        return g, hidden

    def fold(self) -> None:
        _fold_pairs(self, [("conv1", "bn1")])
        _fold_all(self)


class UpsampleBlock(nn.Module):
    """×2 bilinear upsample of group features plus a projected skip feature."""

    def __init__(self, skip_dim: int, g_up_dim: int, g_out_dim: int):
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_dim, g_up_dim, 3, padding=1)
        self.out_conv = GroupResBlock(g_up_dim, g_out_dim)

    def forward(self, skip: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        skip = self.skip_conv(skip)
        g = F.interpolate(g, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out_conv(skip + g)


class Decoder(nn.Module):
    """Memory readout (+ hidden) and skip features → logits at full resolution."""

    def __init__(self, value_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.fuser = FeatureFusionBlock(1024, value_dim + hidden_dim, 512, 512)
        self.hidden_update = HiddenUpdater((512, 256, 257), 256, hidden_dim) if hidden_dim else None
        self.up_16_8 = UpsampleBlock(512, 512, 256)
        self.up_8_4 = UpsampleBlock(256, 256, 256)
        self.pred = nn.Conv2d(256, 1, 3, padding=1)

    def forward(
        self,
        f16: torch.Tensor,
        f8: torch.Tensor,
        f4: torch.Tensor,
        hidden: torch.Tensor | None,
        readout: torch.Tensor,
        h_out: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Returns (new hidden or None, logits N×1×H×W upsampled ×4)."""
        g = readout if self.hidden_update is None else torch.cat([readout, hidden], 1)
        g16 = self.fuser(f16, g)
        g8 = self.up_16_8(f8, g16)
        g4 = self.up_8_4(f4, g8)
        logits = self.pred(F.relu(g4))
        new_hidden = None
        if h_out and self.hidden_update is not None:
            new_hidden = self.hidden_update(g16, g8, torch.cat([g4, logits], 1), hidden)
        logits = F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)
        return new_hidden, logits


def aggregate(prob: torch.Tensor, dim: int) -> torch.Tensor:
    """Soft aggregation: per-object probabilities → softmax over [bg, objects].

    Background is ``Π(1−p_i)``; all terms are clamped to [1e-7, 1−1e-7] and
    turned into log-odds before the softmax.
    """
    bg = torch.prod(1 - prob, dim=dim, keepdim=True)
    q = torch.cat([bg, prob], dim).clamp(1e-7, 1 - 1e-7)
    return torch.softmax(torch.log(q / (1 - q)), dim=dim)
