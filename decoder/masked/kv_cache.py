"""Per-row approximate KV cache (Fast-dLLM's prefix / dual cache), kept per row so rows refresh at their own
block boundaries, exit on their own step and hand their slot to a new row without touching the others.

A row's cache is the keys/values of its whole sequence as of its last *refresh* (a full forward whose
logits also serve that step). A *cached* step runs only the row's query span — `prefix`: the current block
and the rest of the answer; `dual`: the current block — attending bidirectionally to the cached keys of
every position outside the span (their K/V are stale: computed while the span still held masks; that is
the approximation) plus the span's fresh ones. For shift families (Dream: the logits at j come from j - 1)
the span starts one position earlier. The batch view of the rows' caches is stacked and left-padded per
step, with a 2-D key mask; K/V are post-RoPE, so key order does not matter.

Shapes: a layer's keys/values are [B, kv_heads, length, head_dim] in the model's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from decoder.padding import left_pad



@dataclass
class RowCache:
    """Keys/values of one row's whole sequence at its last refresh: per layer ([kvh, L, hd], [kvh, L, hd])."""
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    block: int              # the block the row was in when it refreshed
    step: int               # the row's step at the refresh

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() * 2 for k, _ in self.layers)


def kv_bytes_per_token(model) -> int:
    """Bytes one token's keys and values take across the layers (the `max_cache_mb` unit)."""
    c = model.config
    heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return 2 * c.num_hidden_layers * heads * head_dim * next(model.parameters()).element_size()


def capture(cache: DynamicCache, starts: list[int]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Split a batch forward's cache into per-row K/V, dropping each row's left padding (`starts[b]` is the
    column of its first real token)."""
    return [[(layer.keys[b, :, s:].clone(), layer.values[b, :, s:].clone()) for layer in cache.layers]
            for b, s in enumerate(starts)]


def stacked(rows: list[RowCache], keep: list[torch.Tensor]) -> tuple[DynamicCache, torch.Tensor]:
    """A batch cache of the kept positions of each row (`keep[b]`: long indices into its sequence),
    left-padded to the longest, and its key mask [B, Cmax] (1 = a real key)."""
    n_layers, width = len(rows[0].layers), max(len(k) for k in keep)
    mask = torch.stack([torch.cat([torch.zeros(width - len(k), dtype=torch.long), torch.ones(len(k), dtype=torch.long)])
                        for k in keep])
    data = []
    for li in range(n_layers):
        k0, _ = rows[0].layers[li]
        shape = (len(rows), k0.shape[0], width, k0.shape[2])
        keys, values = k0.new_zeros(shape), k0.new_zeros(shape)
        for b, (row, idx) in enumerate(zip(rows, keep)):
            k, v = row.layers[li]
            keys[b, :, width - len(idx):] = k.index_select(1, idx.to(k.device))
            values[b, :, width - len(idx):] = v.index_select(1, idx.to(v.device))
        data.append((keys, values))
    return DynamicCache(ddp_cache_data=data), mask.to(rows[0].layers[0][0].device)


@dataclass
class QueryBatch:
    """The span each cached row runs: ids/mask [B, Q] left-padded, positions [B, Q] (true positions in the
    row), and per row the span's [start, end) in sequence coordinates."""
    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    spans: list[tuple[int, int]]


def query_batch(seqs: list[list[int]], spans: list[tuple[int, int]], pad_id: int) -> QueryBatch:
    ids, mask = left_pad([s[a:b] for s, (a, b) in zip(seqs, spans)], pad_id)
    width = ids.shape[1]
    positions = torch.stack([torch.cat([torch.zeros(width - (b - a), dtype=torch.long), torch.arange(a, b)])
                             for a, b in spans])
    return QueryBatch(ids, mask, positions, spans)


def outside(span: tuple[int, int], length: int) -> torch.Tensor:
    """Sequence positions not in `span`: the keys a cached step takes from the cache."""
    a, b = span
    return torch.cat([torch.arange(0, a), torch.arange(b, length)])
