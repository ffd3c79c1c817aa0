"""Per-row encoder caches of a canvas (block-diffusion) model, and the batch view stacked from them.

Each row owns its keys and values per layer ([kv_heads, n, head_dim]); sliding-window layers keep only the
last `window - 1` tokens, as transformers' `DynamicSlidingWindowLayer` does, so a row's cache holds exactly what
`generate()` would hold. A batch view left-pads them into [B, kv_heads, L, head_dim] per layer with a
per-row key-validity mask; the stock attention layers read it through a tiny duck-typed cache
(`StackedKV`: `.layers[i].keys/.values`, `update()`). The decoder only reads it; an encoder pass appends
through `update()`, and `split_new` hands each row its new keys and values. The 4-D masks are bool
(True = attend, SDPA's convention); a mask with nothing to hide is None, as HF passes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerSpec:
    sliding: bool
    kv_heads: int
    head_dim: int


@dataclass
class RowKV:
    """One row's encoder cache: keys/values per layer [kv_heads, n_l, head_dim]; `length` = tokens encoded
    (the next token's position)."""
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0

    @classmethod
    def empty(cls, specs: list[LayerSpec], dtype: torch.dtype, device) -> "RowKV":
        blank = [torch.zeros(s.kv_heads, 0, s.head_dim, dtype=dtype, device=device) for s in specs]
        return cls(list(blank), list(blank), 0)

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() * 2 for k in self.keys)


@dataclass
class _Layer:
    keys: torch.Tensor
    values: torch.Tensor


@dataclass
class StackedKV:
    """The batch's caches as the stock layers read them; `new[i]` records what an encoder pass appended."""
    layers: list[_Layer]
    lengths: list[torch.Tensor]               # per layer [B] real cached tokens (right-aligned)
    is_compileable: bool = False
    new: dict = field(default_factory=dict)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.new[layer_idx] = (key_states, value_states)
        layer = self.layers[layer_idx]
        return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)


def stack(rows: list[RowKV]) -> StackedKV:
    """Left-pad every row's cache to the longest per layer (zeros, masked out by `key_valid`)."""
    layers, lengths = [], []
    for i in range(len(rows[0].keys)):
        ks, vs = [r.keys[i] for r in rows], [r.values[i] for r in rows]
        longest = max(k.shape[1] for k in ks)
        heads, dim = ks[0].shape[0], ks[0].shape[2]
        kp = ks[0].new_zeros(len(rows), heads, longest, dim)
        vp = torch.zeros_like(kp)
        for b, (k, v) in enumerate(zip(ks, vs)):
            if k.shape[1]:
                kp[b, :, longest - k.shape[1]:] = k
                vp[b, :, longest - v.shape[1]:] = v
        layers.append(_Layer(kp, vp))
        lengths.append(torch.tensor([k.shape[1] for k in ks], device=kp.device))
    return StackedKV(layers, lengths)


def key_valid(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width] bool: the right-aligned real slots of a left-padded cache."""
    return torch.arange(width, device=lengths.device) >= (width - lengths)[:, None]


def decoder_masks(kv: StackedKV, specs: list[LayerSpec], canvas: int) -> dict[str, torch.Tensor | None]:
    """Per layer type, the [B, 1, C, L + C] bool mask of the decoder: every real cached key and the whole
    canvas, bidirectionally (the decoder ignores the sliding window: it sees what the cache holds)."""
    out = {}
    for kind, sliding in (("sliding_attention", True), ("full_attention", False)):
        idx = next((i for i, s in enumerate(specs) if s.sliding == sliding), None)
        if idx is None:
            continue
        lengths = kv.lengths[idx]
        width = kv.layers[idx].keys.shape[2]
        valid = torch.cat([key_valid(lengths, width), lengths.new_ones(len(lengths), canvas, dtype=torch.bool)], 1)
        out[kind] = None if bool(valid.all()) else valid[:, None, None, :].expand(-1, 1, canvas, -1)
    return out


def encoder_masks(kv: StackedKV, specs: list[LayerSpec], starts: torch.Tensor, new_lengths: torch.Tensor,
                  width: int, window: int) -> dict[str, torch.Tensor]:
    """Per layer type, the [B, 1, M, L + M] causal bool mask of an encoder pass: row b's new tokens (the last
    new_lengths[b] of M left-padded slots) sit at positions starts[b] + j after its cached keys; sliding
    layers see keys within `window` positions (HF's kv > q - window). A pad query sees only itself."""
    device = starts.device
    m = torch.arange(width, device=device)
    q_real = m >= (width - new_lengths)[:, None]
    q_pos = starts[:, None] + m - (width - new_lengths)[:, None]
    own = torch.eye(width, dtype=torch.bool, device=device)
    out = {}
    for kind, sliding in (("sliding_attention", True), ("full_attention", False)):
        idx = next((i for i, s in enumerate(specs) if s.sliding == sliding), None)
        if idx is None:
            continue
        lengths, cached = kv.lengths[idx], kv.layers[idx].keys.shape[2]
        c = torch.arange(cached, device=device)
        k_pos = torch.cat([starts[:, None] - (cached - c), q_pos], 1)
        k_real = torch.cat([key_valid(lengths, cached), q_real], 1)
        allowed = k_real[:, None, :] & (k_pos[:, None, :] <= q_pos[:, :, None])
        if sliding:
            allowed &= k_pos[:, None, :] > q_pos[:, :, None] - window
        pad_self = ~q_real[:, :, None] & torch.cat([own.new_zeros(width, cached), own], 1)[None]
        out[kind] = (torch.where(q_real[:, :, None], allowed, pad_self))[:, None]
    return out


def split_new(rows: list[RowKV], kv: StackedKV, specs: list[LayerSpec], new_lengths: list[int],
              window: int) -> None:
    """After an encoder pass: append each row's new keys/values (the last n of the pass) to its cache in
    place; sliding layers keep their last window - 1 tokens."""
    for i, spec in enumerate(specs):
        k_new, v_new = kv.new[i]
        for b, (row, n) in enumerate(zip(rows, new_lengths)):
            k = torch.cat([row.keys[i], k_new[b, :, k_new.shape[2] - n:]], dim=1)
            v = torch.cat([row.values[i], v_new[b, :, v_new.shape[2] - n:]], dim=1)
            if spec.sliding:
                k, v = k[:, -(window - 1):], v[:, -(window - 1):]
            row.keys[i], row.values[i] = k.contiguous(), v.contiguous()
    for row, n in zip(rows, new_lengths):
        row.length += n
