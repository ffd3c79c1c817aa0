"""Reading and aggregating a run's files for the cost and step report (report/main.py).

Everything streams: outputs and errors are read record batch by record batch through the one reader of
every output format (stages/write/formats.py: Arrow IPC, Parquet or JSONL, whichever the run wrote),
only the needed columns, with the same types whatever the format; traces (always Arrow) likewise. They
are folded into per-shard counters (`ShardStats`) and bounded-size plot accumulators (`PlotData`). At most
one shard's outputs (or, for the baseline comparison, one shard of each run) is held in memory at a time.

The report is right or refuses: `locate` finds every file each shard of the manifest needs (outputs and
errors in some format; the step trace, and with `decode.trace=tokens` the token trace, unless the shard
was decoded with `decode.trace=off`) and raises `IncompleteRun` naming what is missing.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from report.qps import qps
from stages.storage import join
from stages.write.formats import EXTENSIONS, READ_ORDER, find_file, iter_batches
from settings.schema import MissingInputError

RUN_ROW = "__run__"
#: The output columns the report reads, with the types the write stage gives them (stages/decode.py
#: DECODE_FIELDS, stages/write/sink.py): a JSONL file is parsed as these types.
OUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("sample", pa.int32()), ("output", pa.string()), ("steps_taken", pa.int32()),
    ("step_budget", pa.int32()), ("nfe", pa.int32()), ("exit_reason", pa.string()), ("prompt_tokens", pa.int32()),
    ("generated_tokens", pa.int32()), ("slot_s", pa.float64()), ("actor", pa.string()),
    ("commit_step", pa.list_(pa.int32())), ("refreshes", pa.int32()), ("forward_tokens", pa.int64()),
    ("encoder_passes", pa.int32()), ("output_ids", pa.list_(pa.int32())),
])


class IncompleteRun(MissingInputError):
    """The run lacks a file the report needs (exit 2, the message names what and why)."""


# ----- reading --------------------------------------------------------------------------------------
def out_schema(columns: list[str]) -> pa.Schema:
    return pa.schema([OUT_SCHEMA.field(c) for c in columns])


def read_columns(fs, path: str, columns: list[str]) -> pa.Table:
    """`columns` of an outputs file in any format, as a table with OUT_SCHEMA's types."""
    schema = out_schema(columns)
    batches = list(iter_batches(fs, path, schema))
    if batches:
        return pa.Table.from_batches(batches)
    return schema.empty_table()


def count_rows(fs, path: str) -> int:
    return sum(b.num_rows for b in iter_batches(fs, path, ["id"]))


@dataclass
class ShardFiles:
    """The files of one shard the report reads (`steps`/`tokens` None: not traced)."""
    outputs: str
    errors: str
    steps: str | None = None
    tokens: str | None = None


def shard_trace(manifest: dict, name: str) -> str:
    """decode.trace the shard was decoded with (its fingerprint; else the command's config)."""
    fp = ((manifest.get("shards") or {}).get(name, {}).get("fingerprint") or {}).get("config") or {}
    return fp.get("decode.trace") or ((manifest.get("config") or {}).get("decode") or {}).get("trace") or "tokens"


def locate(fs, root: str, manifest: dict, names: list[str]) -> dict[str, ShardFiles]:
    """Every shard's files, or IncompleteRun naming each one missing (at most 5, then a count)."""
    found, missing = {}, []
    any_of = "|".join(EXTENSIONS[f] for f in READ_ORDER)
    for n in names:
        paths = {}
        for sub in ("outputs", "errors"):
            paths[sub] = find_file(fs, join(root, sub, n))
            if paths[sub] is None:
                missing.append(f"{sub}/{n}{{{any_of}}}")
        trace = shard_trace(manifest, n)
        for kind, needed in (("steps", trace in ("steps", "tokens")), ("tokens", trace == "tokens")):
            path = join(root, "traces", f"{n}.{kind}.arrow")
            if needed and not fs.exists(path):
                missing.append(f"traces/{n}.{kind}.arrow (decode.trace={trace})")
            paths[kind] = path if needed else None
        found[n] = ShardFiles(**paths)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise IncompleteRun(f"{root}: the run's manifest lists {len(names)} shard(s) but these files are missing: "
                            f"{', '.join(missing[:5])}{more}; nothing was reported (rerun the same `pipeline.py "
                            f"run` to redo the shards, or report another run)")
    return found


def run_settings(manifest: dict) -> tuple[dict, list[str]]:
    """(config, warnings): the manifest's command config with its decode-relevant keys replaced by the
    shards' own fingerprints (`shards.<name>.fingerprint.config`), which describe the outputs that exist;
    a warning names the keys when shards were decoded with different settings (the first shard's are shown)."""
    config = json.loads(json.dumps(manifest.get("config", {}) or {}))
    fps = [(s.get("fingerprint") or {}).get("config") for s in (manifest.get("shards") or {}).values()]
    fps = [f for f in fps if f]
    if not fps:
        return config, []
    differ = sorted(k for k in set().union(*fps) if len({json.dumps(f.get(k)) for f in fps}) > 1)
    warnings = [f"shards were decoded with different settings ({', '.join(differ)}); the first shard's are shown"] \
        if differ else []
    for key, value in fps[0].items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config, warnings


def load_run(fs, root: str) -> tuple[dict, list[str]]:
    """(manifest, sorted shard names). A run without `_manifest.json` is refused: it has not completed,
    so its time, cost and shard list are not known."""
    path = join(root, "_manifest.json")
    if not fs.exists(path):
        done = join(root, "_done")
        committed = len([p for p in fs.ls(done, detail=False) if p.endswith(".json")]) if fs.exists(done) else 0
        if committed or fs.exists(join(root, "outputs")):
            raise IncompleteRun(f"{root} has no _manifest.json: the run has not completed ({committed} shard(s) "
                                f"committed); rerun the same `pipeline.py run` to complete it, then report")
        raise MissingInputError(f"no run at {root}: neither _manifest.json nor outputs/ found")
    with fs.open(path) as f:
        manifest = json.load(f)
    return manifest, sorted(manifest.get("shards", {}))


# ----- aggregation ----------------------------------------------------------------------------------
@dataclass
class ShardStats:
    name: str
    sequences: int = 0
    prompts: int = 0                   # sequences of sample 0 (one per prompt)
    errors: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    nfe_outputs: int = 0
    nfe_traced: int | None = None
    step_budget: int = 0
    steps_taken: int = 0
    slot_s: float = 0.0
    refreshes: int = 0
    forward_tokens: int = 0
    encoder_passes: int = 0            # canvas families: encoder passes, not among the nfe
    blocks: int = 0                    # block families: blocks decoded (from the step traces) ...
    blocks_exited: int = 0             # ... of which an exit policy closed early
    exits: Counter = field(default_factory=Counter)
    slot_by_actor: dict = field(default_factory=lambda: defaultdict(float))

    @property
    def nfe(self) -> int:
        return self.nfe_traced if self.nfe_traced is not None else self.nfe_outputs


class PlotData:
    """Run-wide, bounded-size accumulators behind the plots."""

    def __init__(self) -> None:
        self.exit_hist: Counter = Counter()      # (exit_reason, steps_taken) -> rows
        self.budgets: Counter = Counter()        # step_budget -> rows
        self.commit = np.zeros((0, 0), np.int64)  # [step, position] -> tokens committed there
        self.margin: dict = defaultdict(lambda: np.zeros(5))  # p -> sum g, sum g^2, n, sum tau, n tau
        self.margin_source = "gbar"
        self.curve: dict = {}

    def add_commits(self, steps: np.ndarray, positions: np.ndarray) -> None:
        ok = steps >= 0
        steps, positions = steps[ok], positions[ok]
        if not len(steps):
            return
        need = (int(steps.max()) + 1, int(positions.max()) + 1)
        if need[0] > self.commit.shape[0] or need[1] > self.commit.shape[1]:
            grid = np.zeros((max(need[0], self.commit.shape[0]), max(need[1], self.commit.shape[1])), np.int64)
            grid[: self.commit.shape[0], : self.commit.shape[1]] = self.commit
            self.commit = grid
        np.add.at(self.commit, (steps, positions), 1)

    def add_margin(self, p: np.ndarray, g: np.ndarray, tau: np.ndarray | None) -> None:
        p = np.round(p.astype(np.float64), 4)
        keys, inv = np.unique(p, return_inverse=True)
        fin = np.isfinite(g)
        sums = [np.bincount(inv, np.where(fin, g, 0.0), len(keys)),
                np.bincount(inv, np.where(fin, g, 0.0) ** 2, len(keys)), np.bincount(inv, fin, len(keys))]
        if tau is not None:
            tfin = np.isfinite(tau)
            sums += [np.bincount(inv, np.where(tfin, tau, 0.0), len(keys)), np.bincount(inv, tfin, len(keys))]
        else:
            sums += [np.zeros(len(keys)), np.zeros(len(keys))]
        for j, k in enumerate(keys):
            self.margin[float(k)] += np.array([s[j] for s in sums])

    def has_margin(self) -> bool:
        return any(v[2] > 0 for v in self.margin.values())


def _list_positions(arr: pa.ListArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flattened values, position within its list, row index) of a list column."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy()
    values = pc.list_flatten(arr).to_numpy(zero_copy_only=False)
    starts = np.cumsum(lengths) - lengths
    rows = np.repeat(np.arange(len(lengths)), lengths)
    return values, np.arange(len(values)) - np.repeat(starts, lengths), rows


def _sum(batch, col) -> float:
    if col not in batch.schema.names or not batch.num_rows:
        return 0
    return pc.sum(batch.column(col)).as_py() or 0


def scan_outputs(fs, files: ShardFiles, st: ShardStats, plots: PlotData) -> None:
    for b in iter_batches(fs, files.outputs, OUT_SCHEMA):
        st.sequences += b.num_rows
        st.prompts += (int(pc.sum(pc.equal(b.column("sample"), 0).cast(pa.int64())).as_py() or 0)
                       if "sample" in b.schema.names and b.num_rows else b.num_rows)
        st.prompt_tokens += int(_sum(b, "prompt_tokens"))
        st.generated_tokens += int(_sum(b, "generated_tokens"))
        st.nfe_outputs += int(_sum(b, "nfe"))
        st.step_budget += int(_sum(b, "step_budget"))
        st.steps_taken += int(_sum(b, "steps_taken"))
        st.slot_s += float(_sum(b, "slot_s"))
        st.refreshes += int(_sum(b, "refreshes"))
        st.forward_tokens += int(_sum(b, "forward_tokens"))
        st.encoder_passes += int(_sum(b, "encoder_passes"))
        t = pa.Table.from_batches([b])
        for r in t.group_by(["exit_reason", "steps_taken"]).aggregate([("id", "count")]).to_pylist():
            st.exits[r["exit_reason"]] += r["id_count"]
            plots.exit_hist[(r["exit_reason"], r["steps_taken"])] += r["id_count"]
        for r in t.group_by("step_budget").aggregate([("id", "count")]).to_pylist():
            plots.budgets[r["step_budget"]] += r["id_count"]
        if "actor" in t.column_names and "slot_s" in t.column_names:
            for r in t.group_by("actor").aggregate([("slot_s", "sum")]).to_pylist():
                st.slot_by_actor[r["actor"] or ""] += r["slot_s_sum"] or 0.0
        if "commit_step" in t.column_names:
            values, positions, _ = _list_positions(b.column("commit_step"))
            plots.add_commits(values.astype(np.int64), positions)


def scan_steps(fs, files: ShardFiles, st: ShardStats, plots: PlotData) -> None:
    """NFE from the step trace (when the shard was traced) and the margin-vs-progress sums."""
    if files.steps is None:
        return
    st.nfe_traced = 0
    last_block: dict[str, int] = {}    # block families: per row, its last block
    for b in iter_batches(fs, files.steps, ["id", "step", "progress", "tau", "gbar", "exit", "block"]):
        st.nfe_traced += b.num_rows
        if b.num_rows:
            plots.add_margin(b.column("progress").to_numpy(zero_copy_only=False),
                             b.column("gbar").to_numpy(zero_copy_only=False),
                             b.column("tau").to_numpy(zero_copy_only=False))
        if "block" in b.schema.names and b.column("block").null_count < b.num_rows:
            t = pa.table({"id": b.column("id"), "block": b.column("block")}).drop_null()
            for r in t.group_by("id").aggregate([("block", "max")]).to_pylist():
                last_block[r["id"]] = max(last_block.get(r["id"], -1), r["block_max"])
            st.blocks_exited += int(pc.sum(pc.and_(b.column("exit"), pc.is_valid(b.column("block")))).as_py() or 0)
    st.blocks = sum(v + 1 for v in last_block.values())


def scan_token_margins(fs, files: ShardFiles, progress_mode: str, plots: PlotData) -> None:
    """Fallback when no exit policy recorded gbar: mean top-2 margin over the still-masked positions
    (commit_step >= step) from the token trace, at progress step / budget (t/T or t/(T-1))."""
    if files.tokens is None:
        return
    out = read_columns(fs, files.outputs, ["id", "step_budget", "commit_step"])
    if not out.num_rows:
        return
    values, positions, rows = _list_positions(out["commit_step"])
    commit = np.full((out.num_rows, int(positions.max()) + 1 if len(positions) else 1), -1, np.int64)
    commit[rows, positions] = values
    budget = out["step_budget"].to_numpy().astype(np.float64)
    if progress_mode == "t_over_T_minus_1":
        budget = np.maximum(budget - 1, 1)
    for b in iter_batches(fs, files.tokens, ["id", "step", "position", "margin"]):
        found = pc.index_in(b.column("id"), value_set=out["id"])
        ok = pc.is_valid(found).to_numpy(zero_copy_only=False)
        idx = pc.fill_null(found, 0).to_numpy().astype(np.int64)
        step = b.column("step").to_numpy().astype(np.int64)
        pos = b.column("position").to_numpy().astype(np.int64)
        masked = ok & (pos < commit.shape[1]) & (commit[idx, np.minimum(pos, commit.shape[1] - 1)] >= step)
        if masked.any():
            p = np.minimum(step[masked] / budget[idx[masked]], 1.0)
            plots.add_margin(p, b.column("margin").to_numpy()[masked].astype(np.float64), None)


# ----- baseline ---------------------------------------------------------------------------------------
@dataclass
class Agreement:
    matched: int = 0
    agree: int = 0
    nfe_run: int = 0
    nfe_baseline: int = 0

    def add(self, other: "Agreement") -> None:
        for k in ("matched", "agree", "nfe_run", "nfe_baseline"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def columns(self) -> dict:
        agreement = self.agree / self.matched if self.matched else float("nan")
        speedup = self.nfe_baseline / self.nfe_run if self.nfe_run else float("nan")
        return {"baseline_matched": self.matched, "agreement": agreement, "baseline_nfe": self.nfe_baseline,
                "nfe_matched": self.nfe_run, "step_speedup_vs_baseline": speedup,
                "qps4": qps(speedup, agreement, 1.0) if self.matched and self.nfe_run else float("nan")}


def compare(run: pa.Table, base: pa.Table) -> Agreement:
    """Agreement of two (id, output, nfe) tables over the ids in both."""
    base = base.rename_columns([f"b_{c}" if c != "id" else c for c in base.column_names])
    j = run.join(base, keys="id", join_type="inner")
    if not j.num_rows:
        return Agreement()
    same = pc.fill_null(pc.equal(j["output"], j["b_output"]), False)
    return Agreement(j.num_rows, int(pc.sum(same).as_py() or 0), int(pc.sum(j["nfe"]).as_py() or 0),
                     int(pc.sum(j["b_nfe"]).as_py() or 0))


def count_prompts(fs, files: dict[str, ShardFiles]) -> int:
    """Outputs of sample 0 (one per prompt decoded) over the shards' outputs files."""
    n = 0
    for f in files.values():
        for b in iter_batches(fs, f.outputs, out_schema(["id", "sample"])):
            n += (int(pc.sum(pc.equal(b.column("sample"), 0).cast(pa.int64())).as_py() or 0)
                  if "sample" in b.schema.names else b.num_rows)
    return n
