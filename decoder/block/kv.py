"""The block engine's exact KV cache: each row's prompt and finished blocks, and the masks that read it.

Block-diffusion models attend block-causally (bidirectional inside a block, causal across blocks), so a finished
block's keys and values never change: a cache of them is exact, not an approximation. Rows keep their keys in
slots [0, length) of one tensor per layer, [rows, kv_heads, capacity, head_dim]: slot j holds position j, and
rotary positions are applied before caching, so a forward only needs to know which slots are real. Appending a
finished block writes that row's next slots in place; nothing is re-stacked until rows leave (`keep`).

A forward sees the cache through `ForwardKV`, the duck-typed cache the stock attention layers call `update` on:
it returns cached + new keys and remembers the new ones, which `BatchKV.write` stores when the forward was a
commit (prefill, or a finished block) and drops when it was a denoise step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ForwardKV:
    """The cache as one forward's layers read it: per layer [b, kv_heads, L, head_dim] cached keys/values."""
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    new: dict = field(default_factory=dict)
    is_compileable: bool = False

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.new[layer_idx] = (key_states, value_states)
        return (torch.cat([self.keys[layer_idx], key_states], dim=-2),
                torch.cat([self.values[layer_idx], value_states], dim=-2))


class BatchKV:
    """Per-layer key/value slots of every row in the batch, with each row's cached length."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device) -> None:
        self.shape, self.dtype, self.device = (kv_heads, head_dim), dtype, device
        self.keys = [self._blank(0, 0) for _ in range(layers)]
        self.values = [self._blank(0, 0) for _ in range(layers)]
        self.lengths = torch.zeros(0, dtype=torch.long, device=device)

    def _blank(self, rows: int, capacity: int) -> torch.Tensor:
        return torch.zeros(rows, self.shape[0], capacity, self.shape[1], dtype=self.dtype, device=self.device)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def bytes_per_token(self) -> int:
        return 2 * len(self.keys) * self.shape[0] * self.shape[1] * torch.empty(0, dtype=self.dtype).element_size()

    def add_rows(self, n: int) -> None:
        """n empty rows at the end of the batch."""
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                store[i] = torch.cat([t, self._blank(n, t.shape[2])])
        self.lengths = torch.cat([self.lengths, self.lengths.new_zeros(n)])

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in that order); the capacity shrinks to the longest kept row."""
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.lengths = self.lengths.index_select(0, idx)
        longest = int(self.lengths.max()) if rows else 0
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                store[i] = t.index_select(0, idx)[:, :, :longest].contiguous()

    def view(self, rows: list[int] | None = None) -> ForwardKV:
        """The cache of `rows` (None: every row), trimmed to the longest of them."""
        lengths = self.lengths if rows is None else self.lengths[rows]
        longest = int(lengths.max()) if len(lengths) else 0
        pick = (lambda t: t[:, :, :longest]) if rows is None else \
            (lambda t: t.index_select(0, torch.tensor(rows, device=self.device))[:, :, :longest])
        return ForwardKV([pick(k) for k in self.keys], [pick(v) for v in self.values])

    def write(self, kv: ForwardKV, rows: list[int], counts: list[int]) -> None:
        """After a commit forward over `rows`: append each row's new keys/values (the last counts[b] query
        positions of the forward, which left-pads its queries) to its slots."""
        need = max(int(self.lengths[r]) + n for r, n in zip(rows, counts))
        if need > self.capacity:
            self._grow(max(need, 2 * self.capacity))
        for layer, (k_new, v_new) in kv.new.items():
            q = k_new.shape[2]
            for b, (r, n) in enumerate(zip(rows, counts)):
                start = int(self.lengths[r])
                self.keys[layer][r, :, start:start + n] = k_new[b, :, q - n:]
                self.values[layer][r, :, start:start + n] = v_new[b, :, q - n:]
        for r, n in zip(rows, counts):
            self.lengths[r] += n

    def _grow(self, capacity: int) -> None:
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                grown = self._blank(t.shape[0], capacity)
                grown[:, :, :t.shape[2]] = t
                store[i] = grown


def block_causal_mask(cached: torch.Tensor, width: int, q_pos: torch.Tensor, q_real: torch.Tensor, block: int,
                      dtype: torch.dtype) -> torch.Tensor:
    """[b, 1, Q, width + Q] additive mask of a forward whose queries sit at positions q_pos [b, Q] (q_real: not
    padding) over `width` cache slots of which each row's first cached[b] are real.

    A real query sees every real cached slot (all lie in earlier blocks, or in its own block's already-cached
    part, never later) and the real queries of its own or earlier blocks; a padding query sees only itself, so
    no row of the softmax is empty."""
    device = q_pos.device
    slots = torch.arange(width, device=device)
    cache_ok = (slots[None, :] < cached[:, None])[:, None, :].expand(-1, q_pos.shape[1], -1)
    q_block = torch.div(q_pos, block, rounding_mode="floor")
    own = q_real[:, None, :] & (q_block[:, None, :] <= q_block[:, :, None])
    pad_self = torch.eye(q_pos.shape[1], dtype=torch.bool, device=device)[None] & ~q_real[:, :, None]
    allowed = torch.cat([cache_ok & q_real[:, :, None], torch.where(q_real[:, :, None], own, pad_self)], dim=2)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
