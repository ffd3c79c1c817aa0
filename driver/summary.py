"""Terminal progress and the end-of-run summary table.

Progress is polled in a background thread from what the datasink writes: the part files of shards in
flight (`_parts/<shard>/*.rows.arrow`, read once each, a few columns) and the completion markers of
committed shards (`_done/*.json`); and from the decode actors' own count of finished rows
(stages/decoded_counter.py), which runs ahead of the parts since a decode task's rows reach the writer only
when its last row is done. So it moves batch by batch from the first one, even when the job is one big shard:
rows done / total, shards committed, sequences/s, mean steps and steps saved so far. The total is exact for
shards already seen (each row carries its shard's row count) and extrapolated for shards not yet started.

The end-of-run table totals the output root: wall time over every attempt of the run ledger
(driver/ledger.py) and this command's own share, the KV-cache figures, the top error reasons; then a few
examples, each cut to one line, read through the reader of every output format (stages/write/formats.py).
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from driver.outcome import top_reasons
from driver.resume import committed_shards
from stages.storage import join
from stages.write.formats import find_file, iter_batches

PART_COLUMNS = ["shard_rows", "error", "nfe", "step_budget"]


@dataclass
class PartStats:
    """What one part file adds to the progress: rows (outputs + errors), outputs, NFE, step budget."""
    shard_rows: int
    rows: int
    outputs: int
    nfe: int
    step_budget: int


@dataclass
class Progress:
    rows_done: int = 0
    rows_total: int | None = None     # None until at least one shard's size is known
    shards_done: int = 0
    outputs: int = 0
    nfe: int = 0
    step_budget: int = 0


def progress_counts(committed: dict[str, dict], parts: dict[str, list[PartStats]], n_shards: int,
                    already: set[str]) -> Progress:
    """Combine committed-shard summaries and in-flight parts into one `Progress` (pure: unit-tested).
    Shards in `already` were committed by an earlier run: they count toward rows done and total, but not
    toward this run's outputs/NFE. A shard's in-flight rows are capped at its size (a retried task may
    have written a part twice). The total is None until some shard's size is known (its end was read):
    a count and a rate, not a made-up percentage."""
    prog = Progress(shards_done=len(committed))
    sizes = []
    for name, s in committed.items():
        prog.rows_done += s["rows"]
        sizes.append(s["rows"])
        if name not in already:
            prog.outputs += s["outputs"]
            prog.nfe += s["nfe"]
            prog.step_budget += s["step_budget"]
    for name, ps in parts.items():
        if name in committed or not ps:
            continue
        size = max(p.shard_rows for p in ps)   # 0 until the shard's end is read
        if size:
            sizes.append(size)
        prog.rows_done += min(sum(p.rows for p in ps), size or sum(p.rows for p in ps))
        prog.outputs += sum(p.outputs for p in ps)
        prog.nfe += sum(p.nfe for p in ps)
        prog.step_budget += sum(p.step_budget for p in ps)
    if sizes:   # shards whose size is not known yet count as the mean of those known
        unseen = max(n_shards - len(sizes), 0)
        prog.rows_total = max(sum(sizes) + round(unseen * sum(sizes) / len(sizes)), prog.rows_done)
    return prog


def with_decoded(written: Progress, start: Progress, decoded: dict | None) -> Progress:
    """Progress from what is written (`written`), or from what was there when the attempt started (`start`)
    plus what the actors have decoded since (`decoded`, DecodedCounts as a dict), whichever is further
    (pure: unit-tested). Rows an actor decoded twice (a retried task) are capped at the known total."""
    if not decoded:
        return written
    out = Progress(rows_total=written.rows_total, shards_done=written.shards_done)
    for key, counted in (("rows_done", "rows"), ("outputs", "outputs"), ("nfe", "nfe"), ("step_budget", "step_budget")):
        setattr(out, key, max(getattr(written, key), getattr(start, key) + decoded[counted]))
    if out.rows_total is not None:
        out.rows_done = max(min(out.rows_done, out.rows_total), written.rows_done)
    return out


class PartScanner:
    """Reads each in-flight part file once (its few progress columns) and remembers what it held."""

    def __init__(self, fs, root: str) -> None:
        self.fs, self.root = fs, root
        self.seen: dict[str, tuple[str, PartStats]] = {}

    def scan(self, skip: set[str]) -> dict[str, list[PartStats]]:
        parts_root = join(self.root, "_parts")
        if self.fs.exists(parts_root):
            for folder in self.fs.ls(parts_root, detail=False):
                name = folder.rstrip("/").rsplit("/", 1)[-1]
                if name in skip:
                    continue
                for path in self.fs.ls(folder, detail=False):
                    if path.endswith(".rows.arrow") and path not in self.seen:
                        t = pa.Table.from_batches(list(iter_batches(self.fs, path, PART_COLUMNS)))
                        ok = pc.equal(t["error"], "")
                        self.seen[path] = (name, PartStats(
                            int(pc.max(t["shard_rows"]).as_py() or 0) if t.num_rows else 0, t.num_rows,
                            int(pc.sum(ok.cast("int64")).as_py() or 0),
                            int(pc.sum(pc.if_else(ok, t["nfe"], 0)).as_py() or 0),
                            int(pc.sum(pc.if_else(ok, t["step_budget"], 0)).as_py() or 0)))
        out: dict[str, list[PartStats]] = {}
        for name, stats in self.seen.values():
            out.setdefault(name, []).append(stats)
        return out


class ProgressWatcher:
    def __init__(self, fs, root: str, n_shards: int, already: set[str], enabled: bool, every_s: float = 2.0,
                 counter=None):
        self.fs, self.root, self.n_shards, self.already, self.every_s = fs, root, n_shards, already, every_s
        self.counter = counter          # the decode actors' DecodedCounter (stages/decoded_counter.py), or None
        self.at_start = Progress()
        tty = sys.stderr.isatty()
        self.bar = tqdm(total=None, unit="row", desc="decoding", file=sys.stderr,
                        mininterval=0.5 if tty else 30.0, dynamic_ncols=tty) if enabled else None
        self.parts = PartScanner(fs, root)
        self.committed: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.started = time.time()

    def start(self) -> None:
        if self.bar is not None:
            self.at_start = self._written()     # kept parts and shards committed before this attempt decoded
            self._thread.start()

    def _written(self) -> Progress:
        done = self.committed = committed_shards(self.fs, self.root, self.committed)
        return progress_counts(done, self.parts.scan(set(done)), self.n_shards, self.already)

    def _decoded(self) -> dict | None:
        if self.counter is None:
            return None
        import ray
        return ray.get(self.counter.totals.remote(), timeout=5)

    def _poll(self) -> None:
        p = with_decoded(self._written(), self.at_start, self._decoded())
        self.bar.total = p.rows_total
        self.bar.n = max(self.bar.n, p.rows_done)   # never backwards (a shard between merge and marker)
        postfix = {"shards": f"{p.shards_done}/{self.n_shards}"}
        if p.outputs:
            postfix["seq_s"] = f"{p.outputs / (time.time() - self.started):.1f}"
            postfix["mean_steps"] = f"{p.nfe / p.outputs:.1f}"
            postfix["saved"] = f"{1 - p.nfe / max(p.step_budget, 1):.0%}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self._poll()
            except Exception:  # progress must never break the run (e.g. a part removed while listed)
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
    attempts = manifest.get("attempts") or []
    lines = [
        ("shards", _shard_line(manifest)),
        ("rows", t["rows"]), ("outputs", t["outputs"]), ("errors", t["errors"]),
        ("blank lines skipped", t.get("blank_lines", 0)),
        ("prompt tokens", t["prompt_tokens"]), ("generated tokens", t["generated_tokens"]),
        ("NFE (forward passes x rows)", t["nfe"]), ("step budget", t["step_budget"]),
        ("steps saved", f"{t['steps_saved']} ({t['steps_saved'] / max(t['step_budget'], 1):.1%}, "
                        f"{t['step_speedup']:.2f}x fewer steps)"),
        ("exit reasons", ", ".join(f"{k}={v}" for k, v in sorted(t["exit_reasons"].items()))),
        (f"KV cache ({_cache_mode(manifest)})", _cache_line(t)),
        ("wall time", f"{wall:.1f} s" + (f" over {len(attempts)} attempts" if len(attempts) > 1 else "")),
        ("sequences/s", f"{t['outputs'] / wall:.2f}" if wall else "-"),
    ]
    if attempts:
        lines.append(("attempts", _attempts_line(attempts)))
    if t.get("error_reasons"):
        lines.append(("top error reasons", top_reasons(t["error_reasons"], most=5)))
    for i, (name, why) in enumerate((manifest.get("failed_shards") or {}).items()):
        lines.insert(1 + i, ("  failed shard", f"{name}: {why}"))
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in lines))


def _cache_mode(manifest: dict) -> str:
    return f"decode.cache={((manifest.get('config') or {}).get('decode') or {}).get('cache', 'none')}"


def _cache_line(t: dict) -> str:
    """Row-steps that ran the whole sequence (all of them without a cache) and the tokens forwards ran."""
    nfe, refreshes, tokens = t["nfe"], t.get("refreshes", 0), t.get("forward_tokens", 0)
    per = f" ({tokens / t['generated_tokens']:.1f} per generated token)" if t["generated_tokens"] else ""
    return (f"{refreshes} of {nfe} row-steps ran the full sequence ({refreshes / max(nfe, 1):.1%}), "
            f"{tokens} forward tokens{per}")


def _attempts_line(attempts: list[dict]) -> str:
    """How many attempts worked on this output, by status, and this command's own share (the last)."""
    statuses: dict[str, int] = {}
    for a in attempts:
        statuses[a["status"]] = statuses.get(a["status"], 0) + 1
    me = attempts[-1]
    return (f"{len(attempts)} ({', '.join(f'{v} {k}' for k, v in sorted(statuses.items()))}); this one "
            f"{me['wall_s']:.1f} s, {me['rows_decoded']} rows decoded, {me['actor_s']:.1f} actor-s")


def _shard_line(manifest: dict) -> str:
    notes = [f"{len(manifest['resumed_shards'])} already done"]
    if manifest.get("redone_shards"):
        notes.append(f"{len(manifest['redone_shards'])} redone (config or input changed)")
    if manifest.get("failed_shards"):
        notes.append(f"{len(manifest['failed_shards'])} FAILED (unreadable, not committed)")
    if manifest.get("dropped_shards"):
        notes.append(f"{len(manifest['dropped_shards'])} dropped (not in the input)")
    return f"{len(manifest['input_shards'])} ({', '.join(notes)})"


def one_line(text, width: int) -> str:
    """`text` on one line (whitespace runs as one space) of at most `width` characters (… when cut)."""
    flat = " ".join(str(text if text is not None else "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


EXAMPLE_COLUMNS = ["prompt", "output", "steps_taken", "step_budget", "exit_reason"]


def print_examples(fs, root: str, shards: list[str], n: int = 5) -> None:
    """A few decoded rows of the first of `shards` that has outputs (in any output format), with the steps
    each took; prompts and outputs cut to one line each."""
    for shard in shards:
        path = find_file(fs, join(root, "outputs", shard))
        rows = []
        for b in iter_batches(fs, path, EXAMPLE_COLUMNS) if path else ():
            rows += b.slice(0, n - len(rows)).to_pylist()
            if len(rows) >= n:
                break
        if rows:
            break
    else:
        return
    print(f"examples from {shard}:")
    for r in rows:
        print(f"  {one_line(r['prompt'], 40)!r:44} -> {one_line(r['output'], 24)!r:28} "
              f"{r['steps_taken']:>3}/{r['step_budget']} steps ({r['exit_reason']})")
