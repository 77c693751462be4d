"""Why a checkpoint's state dict does not load strictly into a network — one wording for every
loader (SAM, XMem, SAM 2), so that each error names the keys a user can look for."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def _some(keys: list[str], limit: int) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def fit_problems(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    *,
    optional_suffixes: tuple[str, ...] = (),
    limit: int = 3,
) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches of ``given`` against ``expected`` (a
    network's ``state_dict()``), each with its count and the first ``limit`` keys; empty when
    ``given`` fits. Keys of ``expected`` ending in ``optional_suffixes`` may be absent."""
    missing = sorted(k for k in expected if k not in given and not k.endswith(optional_suffixes))
    unexpected = sorted(k for k in given if k not in expected)
    shapes = sorted(
        k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_some(missing, limit)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_some(unexpected, limit)}")
    if shapes:
        detail = [
            f"{k}: file {tuple(given[k].shape)}, network {tuple(expected[k].shape)}"
            for k in shapes[:limit]
        ]
        more = f" (+{len(shapes) - limit} more)" if len(shapes) > limit else ""
        problems.append(f"{len(shapes)} shape mismatches: {'; '.join(detail)}{more}")
    return problems
