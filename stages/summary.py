"""Terminal progress and the end-of-run summary table.

Progress is read from the shard completion markers the datasink writes (`_done/*.json`), polled in a
background thread: rows done, sequences/s, mean steps and steps saved so far, at shard granularity.
"""
from __future__ import annotations

import sys
import threading
import time

from tqdm import tqdm

from stages.resume import committed_shards, totals


class ProgressWatcher:
    def __init__(self, fs, root: str, n_shards: int, already: set[str], enabled: bool, every_s: float = 2.0):
        self.fs, self.root, self.already, self.every_s = fs, root, already, every_s
        tty = sys.stderr.isatty()
        self.bar = tqdm(total=n_shards, initial=len(already), unit="shard", desc="decoding", file=sys.stderr,
                        mininterval=0.5 if tty else 30.0, dynamic_ncols=tty) if enabled else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.started = time.time()

    def start(self) -> None:
        if self.bar is not None:
            self._thread.start()

    def _poll(self) -> None:
        done = committed_shards(self.fs, self.root)
        new = {k: v for k, v in done.items() if k not in self.already}
        t = totals(list(new.values())) if new else None
        self.bar.n = len(done)
        if t:
            elapsed = time.time() - self.started
            self.bar.set_postfix(rows=t["rows"], seq_s=f"{t['outputs'] / elapsed:.1f}",
                                 mean_steps=f"{t['nfe'] / max(t['outputs'], 1):.1f}",
                                 saved=f"{t['steps_saved'] / max(t['step_budget'], 1):.0%}", refresh=False)
        self.bar.refresh()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self._poll()
            except Exception:  # progress must never break the run
                pass

    def stop(self) -> None:
        self._stop.set()
        if self.bar is not None:
            if self._thread.is_alive():
                self._thread.join()
            try:
                self._poll()
            except Exception:
                pass
            self.bar.close()


def print_summary(manifest: dict) -> None:
    t, wall = manifest["totals"], manifest["wall_s"]
    lines = [
        ("shards", f"{len(manifest['input_shards'])} ({len(manifest['resumed_shards'])} already done)"),
        ("rows", t["rows"]), ("outputs", t["outputs"]), ("errors", t["errors"]),
        ("prompt tokens", t["prompt_tokens"]), ("generated tokens", t["generated_tokens"]),
        ("NFE (forward passes x rows)", t["nfe"]), ("step budget", t["step_budget"]),
        ("steps saved", f"{t['steps_saved']} ({t['steps_saved'] / max(t['step_budget'], 1):.1%}, "
                        f"{t['step_speedup']:.2f}x fewer steps)"),
        ("exit reasons", ", ".join(f"{k}={v}" for k, v in sorted(t["exit_reasons"].items()))),
        ("wall time", f"{wall:.1f} s"), ("sequences/s", f"{t['outputs'] / wall:.2f}" if wall else "-"),
    ]
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in lines))


def print_examples(fs, root: str, shard: str, n: int = 5) -> None:
    """A few decoded rows of one shard, with the steps each took."""
    from stages.write import read_ipc
    try:
        rows = read_ipc(fs, f"{root.rstrip('/')}/outputs/{shard}.arrow").slice(0, n).to_pylist()
    except FileNotFoundError:
        return
    print(f"examples from {shard}:")
    for r in rows:
        print(f"  {r['prompt']!r:28} -> {r['output']!r:16} {r['steps_taken']:>3}/{r['step_budget']} steps ({r['exit_reason']})")
