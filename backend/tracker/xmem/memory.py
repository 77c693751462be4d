"""XMem's working and long-term memory (Atkinson-Shiffrin model).

A :class:`MemoryStore` holds memory *elements* (feature pixels at stride 16):
keys, shrinkage, optional selection and usage counters, shared by all
objects, and one value tensor per *object group* (objects added on the same
frame form a group).

Values are stored element-major (``E×n_g×C``: one row per memory element)
so that the top-k readout gathers contiguous rows.

Invariant (checked by the tests): group ``g``'s values belong to the **last**
``value_size(g)`` elements, in order. Groups that join later therefore cover
a suffix of the keys. Every removal goes through :meth:`MemoryStore.keep`,
which removes the same elements from keys and from every group's values, so
the invariant survives compression and obsolete-feature removal. The
official code breaks it for later groups (it sieves keys but not short value
tensors); that is the one intended deviation, see ``docs/tracker.md``.

:class:`MemoryManager` implements the read (top-k anisotropic L2 affinity),
usage counting, consolidation of working memory into long-term prototypes and
removal of obsolete long-term elements, numerically as the official
``MemoryManager``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from backend.tracker.xmem.config import XMemConfig

LIFE_EPS = 1e-7


def similarity(
    mem_key: torch.Tensor,
    mem_shrinkage: torch.Tensor | None,
    query_key: torch.Tensor,
    query_selection: torch.Tensor | None,
) -> torch.Tensor:
    """Negative anisotropic squared L2 distance, N_mem × N_query.

    ``mem_key`` CK×N, ``mem_shrinkage`` 1×N, ``query_key``/``query_selection``
    CK×M. Expanded as ``−a² + 2ab − b²`` like the official code; without
    selection the query-only term is dropped.
    """
    ck = mem_key.shape[0]
    mk = mem_key.transpose(0, 1)
    if query_selection is not None:
        a_sq = mk.pow(2) @ query_selection
        two_ab = 2 * (mk @ (query_key * query_selection))
        b_sq = (query_selection * query_key.pow(2)).sum(0, keepdim=True)
        sim = -a_sq + two_ab - b_sq
    else:
        a_sq = mk.pow(2).sum(1, keepdim=True)
        sim = -a_sq + 2 * (mk @ query_key)
    if mem_shrinkage is not None:
        return sim * mem_shrinkage.transpose(0, 1) / math.sqrt(ck)
    return sim / math.sqrt(ck)


def topk_softmax(sim: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k softmax over memory elements (dim 0) → (indices k×M, weights k×M).

    Like the official ``do_softmax`` the max is not subtracted: similarities
    are ≤ 0 so ``exp`` cannot overflow. ``k`` is capped at the memory size.
    """
    values, indices = torch.topk(sim, k=min(top_k, sim.shape[0]), dim=0)
    weights = values.exp()
    weights /= weights.sum(0, keepdim=True)
    return indices, weights


def sparse_readout(
    values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``values @ A`` for a top-k affinity ``A`` given as (indices, weights).

    ``values`` is element-major N×n×C; the result is n×C×M. Only the k
    non-zero rows of each column are touched (an embedding-bag gather), which
    is much cheaper than the dense product and equal up to summation order.
    """
    _, n, c = values.shape
    table = values.reshape(values.shape[0], n * c)  # N × (n·C), rows contiguous
    out = F.embedding_bag(
        indices.t(), table, per_sample_weights=weights.t().contiguous(), mode="sum"
    )  # M × (n·C)
    return out.t().reshape(n, c, -1)


def usage_of(indices: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """Affinity summed over query pixels, per memory element (length ``size``)."""
    usage = torch.zeros(size, dtype=weights.dtype, device=weights.device)
    return usage.index_add_(0, indices.flatten(), weights.flatten())


class MemoryStore:
    """Keys shared by all objects plus per-group values (see module docstring)."""

    def __init__(self, count_usage: bool):
        self.count_usage = count_usage
        self.key: torch.Tensor | None = None  # CK×N
        self.shrinkage: torch.Tensor | None = None  # 1×N
        self.selection: torch.Tensor | None = None  # CK×N (working memory only)
        self.use_count: torch.Tensor | None = None  # N
        self.life_count: torch.Tensor | None = None  # N
        self.values: list[torch.Tensor] = []  # per group: v_g×n_g×CV (element-major)
        self.groups: list[list[int]] = []  # per group: 0-based object slots

    @property
    def size(self) -> int:
        return 0 if self.key is None else self.key.shape[-1]

    @property
    def num_groups(self) -> int:
        return len(self.values)

    def value_size(self, group: int) -> int:
        return self.values[group].shape[0]

    def engaged(self) -> bool:
        return self.key is not None

    def _append_keys(
        self, key: torch.Tensor, shrinkage: torch.Tensor | None, selection: torch.Tensor | None
    ) -> None:
        n = key.shape[-1]

        def cat(old: torch.Tensor | None, new: torch.Tensor | None) -> torch.Tensor | None:
            if new is None:
                return old
            return new if old is None else torch.cat([old, new], -1)

        self.key = cat(self.key, key)
        self.shrinkage = cat(self.shrinkage, shrinkage)
        self.selection = cat(self.selection, selection)
        if self.count_usage:
            self.use_count = cat(self.use_count, key.new_zeros(n))
            self.life_count = cat(self.life_count, key.new_full((n,), LIFE_EPS))

    def add_objects(
        self,
        key: torch.Tensor,
        shrinkage: torch.Tensor | None,
        selection: torch.Tensor | None,
        value: torch.Tensor,
        slots: list[int],
    ) -> None:
        """Add one frame: ``value`` is E×N_obj×CV; new slots form a new group."""
        self._append_keys(key, shrinkage, selection)
        remaining = list(slots)
        for gi, group in enumerate(self.groups):
            for slot in group:
                remaining.remove(slot)
            self.values[gi] = torch.cat([self.values[gi], value[:, group]], 0)
        if remaining:
            if self.groups and min(remaining) <= max(max(g) for g in self.groups):
                raise ValueError("new objects must have larger slots than existing ones")
            self.groups.append(remaining)
            self.values.append(value[:, remaining].contiguous())

    def add_prototypes(
        self,
        key: torch.Tensor,
        shrinkage: torch.Tensor | None,
        values: list[torch.Tensor | None],
    ) -> None:
        """Append long-term elements; ``values[g]`` (P_g×n_g×CV) covers the last P_g."""
        self._append_keys(key, shrinkage, None)
        for gi, gv in enumerate(values):
            if gv is None:
                continue
            if gi < self.num_groups:
                self.values[gi] = torch.cat([self.values[gi], gv], 0)
            elif gi == self.num_groups:
                self.values.append(gv)
            else:
                raise ValueError("a group cannot get long-term values before earlier groups")

    def update_usage(self, usage: torch.Tensor) -> None:
        if self.count_usage:
            self.use_count += usage
            self.life_count += 1

    def usage(self) -> torch.Tensor:
        """Normalised usage ``use_count / life_count`` per element."""
        if not self.count_usage or self.use_count is None:
            raise RuntimeError("usage is not counted in this memory store")
        return self.use_count / self.life_count

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the elements where ``mask`` (bool, length size) is True.

        Each group's values are filtered with the part of ``mask`` that covers
        the group's elements, so values stay aligned with their keys.
        """
        n = self.size
        self.key = self.key[:, mask]
        if self.shrinkage is not None:
            self.shrinkage = self.shrinkage[:, mask]
        if self.selection is not None:
            self.selection = self.selection[:, mask]
        if self.count_usage:
            self.use_count = self.use_count[mask]
            self.life_count = self.life_count[mask]
        self.values = [gv[mask[n - gv.shape[0] :]] for gv in self.values]

    def remove_obsolete(self, max_size: int) -> None:
        """Drop the least-used elements down to at most ``max_size`` (ties all dropped)."""
        if self.size <= max_size:  # the official code crashes here (topk with k = 0)
            return
        usage = self.usage()
        lowest, _ = torch.topk(usage, k=self.size - max_size, largest=False, sorted=True)
        self.keep(usage > lowest[-1])


class MemoryManager:
    """Working + long-term memory and the hidden state of one inference run."""

    def __init__(self, config: XMemConfig, hidden_dim: int, *, dense_readout: bool = False):
        self.config = config
        self.dense_readout = dense_readout  # official dense ``V @ A`` (speed comparisons)
        self.hidden_dim = hidden_dim
        self.hidden: torch.Tensor | None = None  # N×CH×h×w
        self.work = MemoryStore(count_usage=config.enable_long_term)
        self.long = MemoryStore(count_usage=config.enable_long_term_count_usage)
        self.hw: int | None = None

    # ------------------------------------------------------------------ hidden state

    def create_hidden_state(self, num_objects: int, key: torch.Tensor) -> None:
        """Grow the hidden state with zeros for new objects (1×C×h×w ``key`` for shape)."""
        h, w = key.shape[-2:]
        have = 0 if self.hidden is None else self.hidden.shape[0]
        if num_objects > have:
            zeros = key.new_zeros((num_objects - have, self.hidden_dim, h, w))
            self.hidden = zeros if self.hidden is None else torch.cat([self.hidden, zeros], 0)

    # ------------------------------------------------------------------ read

    def read(self, query_key: torch.Tensor, selection: torch.Tensor | None) -> torch.Tensor:
        """Memory readout for a query frame: 1×CK×h×w → N_obj×CV×h×w."""
        h, w = query_key.shape[-2:]
        qk = query_key[0].flatten(1)
        qe = selection[0].flatten(1) if selection is not None else None
        work, long = self.work, self.long
        use_long = self.config.enable_long_term and long.engaged()
        if use_long:
            n_long = long.size
            sim = similarity(
                torch.cat([long.key, work.key], -1),
                torch.cat([long.shrinkage, work.shrinkage], -1),
                qk,
                qe,
            )
            long_sim, work_sim = sim[:n_long], sim[n_long:]
        else:
            n_long = 0
            work_sim = similarity(work.key, work.shrinkage, qk, qe)

        readouts = []
        for gi in range(work.num_groups):
            parts = [work_sim[-work.value_size(gi) :]]
            values = [work.values[gi]]
            if use_long and gi < long.num_groups:
                parts.insert(0, long_sim[-long.value_size(gi) :])
                values.insert(0, long.values[gi])
            gsim = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
            gval = values[0] if len(values) == 1 else torch.cat(values, 0)
            indices, weights = topk_softmax(gsim, self.config.top_k)
            if gi == 0 and self.config.enable_long_term:
                self._count_usage(
                    usage_of(indices, weights, gsim.shape[0]), n_long if use_long else 0
                )
            if self.dense_readout:
                affinity = torch.zeros_like(gsim).scatter_(0, indices, weights)
                readouts.append(gval.permute(1, 2, 0) @ affinity)
            else:
                readouts.append(sparse_readout(gval, indices, weights))
        out = torch.cat(readouts, 0) if len(readouts) > 1 else readouts[0]
        return out.view(out.shape[0], out.shape[1], h, w)

    def _count_usage(self, usage: torch.Tensor, n_long: int) -> None:
        """Group 0 covers every element, so its usage splits into long | work."""
        self.work.update_usage(usage[n_long:])
        if n_long:
            self.long.update_usage(usage[:n_long])

    # ------------------------------------------------------------------ write

    def add_memory(
        self,
        key: torch.Tensor,
        shrinkage: torch.Tensor,
        value: torch.Tensor,
        slots: list[int],
        selection: torch.Tensor | None,
    ) -> None:
        """Add a memory frame (key 1×CK×h×w, value N×CV×h×w), then consolidate if full."""
        self.hw = key.shape[-2] * key.shape[-1]
        self.work.add_objects(
            key[0].flatten(1),
            shrinkage[0].flatten(1),
            selection[0].flatten(1) if selection is not None else None,
            value.flatten(2).permute(2, 0, 1).contiguous(),
            slots,
        )
        cfg = self.config
        if cfg.enable_long_term and self.work.size >= cfg.max_mid_term_frames * self.hw:
            if self.long.size >= cfg.max_long_term_elements - cfg.num_prototypes:
                self.long.remove_obsolete(cfg.max_long_term_elements - cfg.num_prototypes)
            self.compress()

    def compress(self) -> None:
        """Move working elements ``[HW, size − min_work + HW)`` into long-term prototypes.

        The first memory frame and the last ``min_mid_term_frames − 1`` frames
        stay in working memory.
        """
        work, hw = self.work, self.hw
        start, end = hw, work.size - self.config.min_mid_term_frames * hw + hw
        cand_key = work.key[:, start:end]
        cand_shrinkage = work.shrinkage[:, start:end]
        cand_selection = work.selection[:, start:end] if work.selection is not None else None
        cand_usage = work.usage()[start:end]
        cand_values = []
        for gi in range(work.num_groups):
            first = max(start, work.size - work.value_size(gi))  # first candidate of this group
            if first >= end:
                cand_values.append(None)
            else:
                offset = work.size - work.value_size(gi)
                cand_values.append(work.values[gi][first - offset : end - offset])
        proto_key, proto_shrinkage, proto_values = self._consolidate(
            cand_key, cand_shrinkage, cand_selection, cand_usage, cand_values
        )
        mask = torch.ones(work.size, dtype=torch.bool, device=work.key.device)
        mask[start:end] = False
        work.keep(mask)
        self.long.add_prototypes(proto_key, proto_shrinkage, proto_values)

    def _consolidate(
        self,
        key: torch.Tensor,
        shrinkage: torch.Tensor,
        selection: torch.Tensor | None,
        usage: torch.Tensor,
        values: list[torch.Tensor | None],
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
        """Pick the most used candidates as prototypes and potentiate them.

        Prototypes are kept in candidate order (ascending index), so the
        prototypes valid for a later group (which covers a suffix of the
        candidates) are a suffix of the prototypes: the store invariant holds
        in long-term memory too.
        """
        n = key.shape[-1]
        _, idx = torch.topk(usage, k=min(self.config.num_prototypes, n), sorted=True)
        idx, _ = torch.sort(idx)
        proto_key = key[:, idx]
        proto_selection = selection[:, idx] if selection is not None else None
        sim = similarity(key, shrinkage, proto_key, proto_selection)  # n × P

        def potentiate(gv: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
            if gv is None:
                return None
            e, g, c = gv.shape
            valid = idx >= n - e
            if not bool(valid.any()):
                return None
            affinity = torch.softmax(sim[-e:, valid], dim=0)  # e × P_g
            proto = affinity.t() @ gv.reshape(e, g * c)  # P_g × (n_g·CV)
            return affinity, proto.reshape(-1, g, c)

        results = [potentiate(gv) for gv in values]
        proto_values = [None if r is None else r[1] for r in results]
        proto_shrinkage = shrinkage @ results[0][0]
        return proto_key, proto_shrinkage, proto_values
