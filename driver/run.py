"""Assemble and run the Ray Data pipeline for one config: pre-flight (driver/preflight.py: checkpoint, shards and
their columns, output bucket), plan the resume (committed shards that match are kept; conflicts stop the run
before Ray starts), open this command's attempt in the run ledger (driver/ledger.py), keep the parts an
interrupted run left (driver/resume.py: only the rows they lack are decoded), stream read -> parse ->
preprocess -> decode actor pool -> shard datasink, show progress, close the attempt, write the manifest
with the totals over attempts.
"""
from __future__ import annotations

import logging
import os
import time

import ray
from omegaconf import OmegaConf

from settings.schema import PipelineConfig
from stages.decoded_counter import DecodedCounter
from stages.processor import decode_stages
from stages.read.coverage import Coverage
from stages.read.stage import ReadOptions, read_shards
from driver.ledger import Attempt, ledger_totals, read_attempts, table
from driver.outcome import catch_sigterm
from driver.reaper import start_reaper
from driver.fingerprint import shard_fingerprint
from driver.outcome import log_path
from driver.preflight import Preflight, preflight
from driver.worker_logs import route_worker_logs
from driver.resume import (ResumeConflict, committed_shards, conflict_message, drop_shards, drop_uncommitted,
                           drop_parts, failed_shards, keep_parts, plan_resume, prepare_output, write_manifest)
from stages.storage import filesystem
from driver.summary import ProgressWatcher, print_examples, print_summary
from stages.write.sink import JobKill, ShardDatasink

#: A local Ray serves this machine only: every port it opens is bound to the loopback interface.
LOOPBACK = "127.0.0.1"


def loopback_only() -> None:
    """Make the local Ray about to start bind to 127.0.0.1 only. Ray binds all interfaces unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which it reads when imported: set it for the processes Ray starts
    and in this process's already-imported constant (pipeline.py sets it before importing Ray; library
    callers may have imported Ray first)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants
    ray_constants.ENABLE_RAY_CLUSTER = False


def init_ray(cfg: PipelineConfig) -> None:
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", str(cfg.ray.no_progress_timeout_s))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PYTHONPATH": root, "OMP_NUM_THREADS": str(cfg.actors.threads), "TOKENIZERS_PARALLELISM": "false"}
    kwargs = {"include_dashboard": False, "log_to_driver": cfg.progress, "logging_level": "ERROR",
              "runtime_env": {"env_vars": env}}
    if cfg.ray.address == "local":
        loopback_only()
        kwargs.update(address="local", _node_ip_address=LOOPBACK, dashboard_host=LOOPBACK,
                      num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus,
                      object_store_memory=cfg.ray.object_store_mb * 1024 * 1024)
    else:
        kwargs["address"] = cfg.ray.address
    ray.init(**kwargs)
    catch_sigterm()   # ray.init replaced our SIGTERM handler with one that aborts the driver
    route_worker_logs(log_path())   # workers' tracebacks to the log file, not the terminal (driver/worker_logs.py)
    if cfg.ray.address == "local":   # its Ray dies with this process, however it ends (driver/reaper.py)
        global _REAPER
        _REAPER = start_reaper()


_REAPER = None   # held for the life of the driver: its pipe closing is the signal


def build_dataset(cfg: PipelineConfig, shards: list[str], names: dict[str, str],
                  covered: dict[str, Coverage] | None = None, counter=None) -> ray.data.Dataset:
    fs, _ = filesystem(cfg.input.url, cfg.storage)
    # one read task per shard, streaming its blocks (a generator): memory stays bounded whatever its size
    ds = ray.data.from_items([{"path": s} for s in shards], override_num_blocks=len(shards))
    ds = ds.map_batches(read_shards, batch_size=1, batch_format="pyarrow",
                        fn_kwargs={"fs": fs, "names": names, "opts": ReadOptions.from_config(cfg),
                                   "covered": covered or {}})
    if cfg.input.block_rows > 0:  # a big shard must not travel as one block (one task, one actor, no progress)
        ds = ds.repartition(target_num_rows_per_block=cfg.input.block_rows)
    return decode_stages(ds, cfg, counter)   # the same decode path as the Python processor (stages/processor.py)


def run_pipeline(cfg: PipelineConfig, checked: Preflight | None = None) -> dict:
    """Decode every shard of `cfg` that is not committed yet; returns the manifest. `checked`: this config's
    pre-flight (driver/preflight.py), run here when not given."""
    started = time.time()
    checked = checked or preflight(cfg)
    in_fs, shards, names = checked.in_fs, checked.shards, checked.names
    fingerprints, failed = fingerprint_shards(cfg, in_fs, shards, names)
    readable = [s for s in shards if names[s] not in failed]
    out_fs, out_root = filesystem(cfg.output.url, cfg.storage)
    done = {} if cfg.output.overwrite else committed_shards(out_fs, out_root)
    plan = plan_resume(readable, names, fingerprints, {n: v for n, v in done.items() if n not in failed})
    if plan.conflicts and not cfg.output.redo_changed:
        raise ResumeConflict(conflict_message(plan, cfg.output.url, done, fingerprints))
    kept = {n: m for n, m in done.items() if n not in plan.changed and n not in plan.stale}   # markers that stay
    attempt = Attempt(out_fs, out_root, started, cfg.actors.num_gpus, len(plan.todo), known=kept)
    with attempt:   # an exception on the way out closes the attempt as interrupted or failed
        prepare_output(out_fs, out_root, cfg.output.overwrite)
        drop_shards(out_fs, out_root, [*plan.changed, *plan.stale])
        drop_uncommitted(out_fs, out_root, set(done) - set(plan.changed) - set(plan.stale))
        sink = datasink(cfg, fingerprints, attempt.id)
        covered = keep_parts(out_fs, out_root, fingerprints, {names[s] for s in plan.todo})
        finished = set(sink.commit_ready(sorted(covered)))   # interrupted after their last part
        drop_parts(out_fs, out_root, finished)
        todo = [s for s in plan.todo if names[s] not in finished]
        if todo:
            decode(cfg, todo, shards, names, {n: c for n, c in covered.items() if n not in finished}, sink,
                   out_fs, out_root, already={names[s] for s in plan.skipped} | finished)
        summaries = committed_shards(out_fs, out_root)
        failed.update({n: why for n, why in failed_shards(out_fs, out_root).items() if n not in summaries})
        missing = [names[s] for s in shards if names[s] not in summaries and names[s] not in failed]
        if missing:
            raise RuntimeError(f"{len(missing)} shard(s) were not committed: {missing[:5]}")
        attempt.close("completed")
    attempts = read_attempts(out_fs, out_root, summaries)
    spent = ledger_totals(attempts)
    extra = {"actors": merge_actor_stats(summaries), "redone_shards": sorted(plan.changed),
             "dropped_shards": plan.stale, "failed_shards": dict(sorted(failed.items())),
             "attempts": table(attempts), "spent": spent, "started_at": spent["first_started_at"],
             "wall_s": spent["wall_s"], "empty_shards": sorted(n for n, s in summaries.items() if s.get("empty"))}
    manifest = write_manifest(out_fs, out_root, OmegaConf.to_container(OmegaConf.structured(cfg)), shards,
                              plan.skipped, summaries, started, extra)
    if cfg.progress:
        print_summary(manifest)
        print_examples(out_fs, out_root, [names[s] for s in shards])
    return manifest


def datasink(cfg: PipelineConfig, fingerprints: dict[str, dict], attempt: str) -> ShardDatasink:
    t = cfg.testing
    kill = JobKill(os.getpid(), t.kill_after_commits, t.kill_before_marker, t.kill_after_rows, t.kill_signal) \
        if t.kill_after_commits or t.kill_before_marker or t.kill_after_rows else None
    return ShardDatasink(cfg.output.url, cfg.storage, cfg.output.parquet, fingerprints, kill,
                         formats=cfg.output.format, attempt=attempt)


def decode(cfg: PipelineConfig, todo: list[str], shards: list[str], names: dict[str, str],
           covered: dict[str, Coverage], sink: ShardDatasink, out_fs, out_root: str, already: set[str]) -> None:
    """Start Ray (a local one, or join a cluster) and decode the shards `todo` (less the rows kept parts
    hold, `covered`), committing each one; `already`: shards committed before Ray started."""
    init_ray(cfg)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # ours replace Ray's bars
    logging.getLogger("ray.data.exceptions").setLevel(logging.CRITICAL)  # pipeline.py logs the traceback itself
    counter = DecodedCounter.remote() if cfg.progress else None
    watcher = ProgressWatcher(out_fs, out_root, len(shards), already, enabled=cfg.progress, counter=counter)
    watcher.start()
    try:
        build_dataset(cfg, todo, names, covered, counter).write_datasink(sink)
    finally:
        watcher.stop()


def fingerprint_shards(cfg: PipelineConfig, fs, shards: list[str], names: dict[str, str]
                       ) -> tuple[dict[str, dict], dict[str, str]]:
    """(name -> fingerprint, name -> reason for the shards that vanished or became unreadable since listed)."""
    fingerprints, failed = {}, {}
    for s in shards:
        try:
            fingerprints[names[s]] = shard_fingerprint(cfg, fs, s)
        except OSError as e:
            failed[names[s]] = f"shard failed: {type(e).__name__}: {e}"
    return fingerprints, failed


def merge_actor_stats(summaries: dict[str, dict]) -> dict[str, dict]:
    """Latest stats of every decode actor over all shards (each shard marker holds a snapshot)."""
    merged: dict[str, dict] = {}
    for s in summaries.values():
        for actor, stats in s.get("actors", {}).items():
            if actor not in merged or stats["row_steps"] >= merged[actor]["row_steps"]:
                merged[actor] = stats
    return merged
