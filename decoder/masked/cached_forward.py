"""One step's forward under `decode.cache = prefix | dual`: refresh rows and cached rows as two forwards.

A row refreshes (full forward over its sequence, its K/V captured into its RowCache) when it has no
cache, entered a new block since its last refresh, or ran `cache_refresh_steps` steps since it; every
other active row takes a cached step over its query span (decoder/masked/kv_cache.py). Finished rows that
stay in a static batch are not computed at all. The result is the answer window's hidden states
[B, G, H] plus `computed` [B, G] (positions whose states this step produced: the refresh rows' whole
answer, the cached rows' span), for the projector (decoder/masked/projection.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from decoder.families.base import ModelAdapter
from decoder.masked.kv_cache import RowCache, capture, outside, query_batch, stacked


@dataclass
class CacheStats:
    refresh_forwards: int = 0       # forwards that refreshed at least one row
    cached_forwards: int = 0        # forwards of cached steps
    refresh_rows: int = 0           # row-steps that were refreshes
    cached_rows: int = 0            # row-steps that were cached
    forward_tokens: int = 0         # query tokens the forwards processed (pads excluded)
    forward_s: float = 0.0


class CachedForward:
    def __init__(self, adapter: ModelAdapter, mode: str, block_length: int, refresh_steps: int) -> None:
        if not adapter.split_head:
            raise ValueError(f"decode.cache={mode} needs a model whose output head runs apart from its body "
                             f"(Llama/Qwen2-style); {type(adapter.model).__name__} cannot take a cache")
        self.adapter, self.mode, self.bl, self.every = adapter, mode, block_length, refresh_steps
        self.shift = 1 if adapter.shift_logits else 0
        self.stats = CacheStats()

    def needs_refresh(self, row) -> bool:
        c = row.cache
        return c is None or c.block != row.block or (self.every > 0 and row.step - c.step >= self.every)

    def span(self, row) -> tuple[int, int]:
        """The row's query span [start, end) in its sequence: current block (+ the rest, prefix)."""
        start = len(row.request.prompt_ids) + row.block * self.bl
        end = row.length if self.mode == "prefix" else start + self.bl
        return start - self.shift, end

    @torch.inference_mode()
    def hidden(self, rows, ids: torch.Tensor, attn: torch.Tensor, g: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                      list[bool]]:
        """(hidden [B, G, H], computed [B, G] bool, refreshed per row)."""
        t0 = time.perf_counter()
        b, dev = len(rows), ids.device
        out = torch.zeros(b, g, self.adapter.model.config.hidden_size, dtype=self.adapter.dtype, device=dev)
        computed = torch.zeros(b, g, dtype=torch.bool, device=dev)
        refresh = [i for i, r in enumerate(rows) if not r.done and self.needs_refresh(r)]
        cached = [i for i, r in enumerate(rows) if not r.done and i not in set(refresh)]
        if refresh:
            self._refresh(rows, refresh, ids, attn, g, out, computed)
        if cached:
            self._cached(rows, cached, ids, g, out, computed)
        self.stats.forward_s += time.perf_counter() - t0
        return out, computed, [i in set(refresh) for i in range(b)]

    def _refresh(self, rows, idx, ids, attn, g, out, computed) -> None:
        width = max(rows[i].length for i in idx)
        sel = torch.tensor(idx, device=ids.device)
        sub_ids, sub_attn = ids.index_select(0, sel)[:, -width:], attn.index_select(0, sel)[:, -width:]
        cache = DynamicCache()
        h = self.adapter.body(sub_ids, sub_attn, cache=cache)
        out[idx] = self.adapter.window(h, g)
        for j, (i, kv) in enumerate(zip(idx, capture(cache, [width - rows[i].length for i in idx]))):
            r = rows[i]
            r.cache = RowCache(kv, r.block, r.step)
            r.refreshes += 1
            computed[i, g - r.gen_length:] = True
            r.forward_tokens += r.length
            self.stats.forward_tokens += r.length
        self.stats.refresh_forwards += 1
        self.stats.refresh_rows += len(idx)

    def _cached(self, rows, idx, ids, g, out, computed) -> None:
        width = ids.shape[1]
        seqs = [ids[i, width - rows[i].length:].tolist() for i in idx]
        spans = [self.span(rows[i]) for i in idx]
        q = query_batch(seqs, spans, self.adapter.pad_token_id)
        visible = [len(rows[i].request.prompt_ids) + getattr(rows[i], "answer_tokens", rows[i].gen_length) for i in idx]
        for j, ((a, e), end) in enumerate(zip(spans, visible)):  # EOS-fixed tail positions stay invisible
            if end < e:
                q.mask[j, q.mask.shape[1] - (e - end):] = 0
        keep = [outside(s, rows[i].length) for i, s in zip(idx, spans)]
        keep = [k[k < end] for k, end in zip(keep, visible)]
        cache, key_mask = stacked([rows[i].cache for i in idx], keep)
        dev = ids.device
        h = self.adapter.body(q.ids.to(dev), torch.cat([key_mask, q.mask.to(dev)], 1), q.positions.to(dev), cache)
        qw = q.ids.shape[1]
        for j, (i, (a, e)) in enumerate(zip(idx, spans)):
            r = rows[i]
            p = len(r.request.prompt_ids)
            cols = torch.arange(g - r.gen_length, g)
            src = p + (cols - (g - r.gen_length)) - self.shift      # sequence position feeding each column
            ok = (src >= a) & (src < e)
            slot = src[ok] - a + (qw - (e - a))
            out[i, cols[ok].to(dev)] = h[j, slot.to(dev)]
            computed[i, cols[ok].to(dev)] = True
            r.forward_tokens += e - a
            self.stats.forward_tokens += e - a
        self.stats.cached_forwards += 1
        self.stats.cached_rows += len(idx)
