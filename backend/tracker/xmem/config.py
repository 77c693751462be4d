"""Configuration of the XMem inference engine.

:class:`XMemConfig` holds the memory policy (never mutated by anything);
:class:`XMemDims` holds the feature sizes, which are read from the checkpoint
and kept separately instead of being written back into the config.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class XMemConfig:
    """Memory policy of the inference core; the defaults are Track-Anything's.

    ``mem_every``: a frame becomes a memory frame every this many frames (and
    always when a mask is given). ``deep_update_every``: refresh the hidden
    state through the value encoder every this many frames; a negative value
    synchronises it with memory frames. The ``*_mid_term_frames`` budgets and
    ``max_long_term_elements`` bound the memory (see ``docs/tracker.md``).
    """

    mem_every: int = 5
    deep_update_every: int = -1
    enable_long_term: bool = True
    enable_long_term_count_usage: bool = True
    max_mid_term_frames: int = 10
    min_mid_term_frames: int = 5
    num_prototypes: int = 128
    max_long_term_elements: int = 1000
    top_k: int = 30

    def __post_init__(self) -> None:
        if self.mem_every < 1:
            raise ValueError("mem_every must be >= 1")
        if self.deep_update_every == 0:
            raise ValueError("deep_update_every must be negative (synchronised) or >= 1")
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.enable_long_term:
            if not 1 <= self.min_mid_term_frames < self.max_mid_term_frames:
                raise ValueError("need 1 <= min_mid_term_frames < max_mid_term_frames")
            if not 0 < self.num_prototypes < self.max_long_term_elements:
                raise ValueError("need 0 < num_prototypes < max_long_term_elements")

    @classmethod
    def from_dict(cls, values: dict) -> XMemConfig:
        """Build from a dict such as the official YAML; unknown keys are ignored."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in values.items() if k in names})


TAM_CONFIG = XMemConfig()
"""Track-Anything's ``tracker/config/config.yaml`` (the defaults)."""


@dataclass(frozen=True)
class XMemDims:
    """Feature sizes of one set of weights (official: 64 / 512 / 64)."""

    key_dim: int = 64
    value_dim: int = 512
    hidden_dim: int = 64


OFFICIAL_DIMS = XMemDims()
