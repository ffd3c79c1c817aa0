"""dLLM batch decoding pipeline: prompt shards -> Ray Data -> decode actor pool -> Arrow outputs + traces.

Usage:
  python pipeline.py [run] [--config configs/<name>.yaml] [key.sub=value ...] [--overwrite]
  python pipeline.py report <run-output-url> [--out DIR] [--baseline URL] [--price-per-gpu-hour X]
  python pipeline.py labels <run-output-url> --out labels.arrow      (TSPD training rows from traces)
  python pipeline.py train-tspd labels.arrow --out controller.pt      (train the TSPD controller)

With no arguments it decodes the shipped prompt shards with the embedded model on CPU and writes to
output/default. Exit code 0 on success; otherwise one line on stderr says why.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import asdict

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from stages.config import ConfigError, PipelineConfig, load_config  # noqa: E402

SUBCOMMANDS = ("run", "report", "labels", "train-tspd")
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.yaml")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="pipeline.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="{run,report}")
    run = sub.add_parser("run", help="decode prompt shards (the default command)",
                         description="Decode prompt shards. Main options (any key of configs/default.yaml "
                                     "works as key=value): input.url, output.url, model.path, decode.policy, "
                                     "decode.steps, decode.gen_length, actors.max_actors, actors.num_gpus.")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default: configs/default.yaml)")
    run.add_argument("--overwrite", action="store_true", help="rerun every shard, ignoring committed outputs")
    run.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. decode.steps=32")
    rep = sub.add_parser("report", help="cost and step accounting report of a finished run")
    rep.add_argument("run_url", help="output root of a run (local path or fsspec URL)")
    rep.add_argument("--out", help="report directory (default: <run>/report for local runs)")
    rep.add_argument("--baseline", help="output root of a baseline run, for quality agreement and QPS")
    rep.add_argument("--price-per-gpu-hour", type=float, default=2.0, help="accelerator price (default 2.0)")
    rep.add_argument("--config", help="config of the runs (for storage settings)")
    lab = sub.add_parser("labels", help="TSPD training rows (features, label) from a run's traces")
    lab.add_argument("run_url", help="output root of a run decoded with decode.policy=[none] decode.trace=tokens")
    lab.add_argument("--out", required=True, help="Arrow file to write")
    lab.add_argument("--config", help="config of the run (for storage settings)")
    trn = sub.add_parser("train-tspd", help="train the TSPD controller from a labels file")
    trn.add_argument("labels", help="Arrow file written by `pipeline.py labels`")
    trn.add_argument("--out", required=True, help="controller file (point decode.tspd.controller_path at it)")
    trn.add_argument("--seed", type=int, default=0)
    if not argv or argv[0] not in SUBCOMMANDS + ("-h", "--help"):
        argv = ["run", *argv]
    args, extra = ap.parse_known_args(argv)
    if args.command == "run":  # overrides may come on either side of --overwrite/--config
        args.overrides += [a for a in extra if "=" in a and not a.startswith("-")]
        extra = [a for a in extra if not ("=" in a and not a.startswith("-"))]
    if extra:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "report":
            from stages.report import run_report
            run_report(args)
            return 0
        if args.command == "labels":
            from stages.labels import collect_labels
            storage = load_config(args.config).storage if args.config else None
            print(json.dumps(collect_labels(args.run_url, args.out, storage)))
            return 0
        if args.command == "train-tspd":
            from stages.decode.tspd_train import train_controller
            print(json.dumps(train_controller(args.labels, args.out, seed=args.seed), indent=2))
            return 0
        cfg = load_config(args.config, args.overrides)
        if args.overwrite:
            cfg.output.overwrite = True
        from stages.run import run_pipeline
        run_pipeline(cfg)
        return 0
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # one line, not a traceback, for users; details are in Ray's logs
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
