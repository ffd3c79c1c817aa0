"""dLLM batch decoding pipeline: prompt shards -> Ray Data -> decode actor pool -> Arrow outputs + traces.

Usage:
  python pipeline.py [run] [--config my.yaml] [--no-defaults] [--overwrite | --redo-changed] [key.sub=value ...]
  python pipeline.py report <run-output-url> [--out DIR] [--baseline URL] [--price-per-gpu-hour X]
                     [--what-if SETTING ...] [--config my.yaml] [storage.key=value ...]
  python pipeline.py labels <run-output-url> --out labels.arrow      (TSPD training rows from traces)
  python pipeline.py train-tspd labels.arrow --out controller.pt      (train the TSPD controller)
  python pipeline.py calibrate [--config my.yaml] [--pilot 200] [--target 0.99] [--out calibrated.yaml]
                     [--reference-field answer [--verifier module:function]] [--decode-budget-s 60]
                     [key.sub=value ...]   (choose the exit setting from a pilot)

With no arguments it decodes the shipped prompt shards with the embedded model on CPU and writes to
output/default. Config layers: configs/default.yaml, then each --config in the order given, then key=value
overrides. Relative paths on the command line are the caller's: a script that changes folder before starting
this one (./run.sh) passes the caller's folder in PIPELINE_CALLER_DIR.
Exit codes: 0 every row decoded; 3 error rows above run.max_error_fraction (default 0; everything is
still written); 4 some shards could not be read (the rest committed; rerun to retry them); 2 config error
or resume conflict (before any work); 1 failure; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM), both
keeping every committed shard (rerun to resume).
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from driver.outcome import (EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, catch_sigterm, from_ray,  # noqa: E402
                            interrupted_exit, root_cause, run_exit, write_log)
from driver.redact import scrub_text  # noqa: E402
from driver.stderr_filter import filtered_stderr  # noqa: E402
from settings.loader import load_config  # noqa: E402
from settings.schema import ConfigError  # noqa: E402

SUBCOMMANDS = ("run", "report", "labels", "train-tspd", "calibrate")
#: Set by a wrapper that changes folder before starting pipeline.py (./run.sh): the folder it was started in,
#: which relative paths on the command line are resolved against.
CALLER_DIR_ENV = "PIPELINE_CALLER_DIR"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="pipeline.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    run = sub.add_parser("run", help="decode prompt shards (the default command)",
                         description="Decode prompt shards. Main options (any key of configs/default.yaml "
                                     "works as key=value): input.url, output.url, model.path, decode.policy, "
                                     "decode.steps, decode.gen_length, actors.max_actors, actors.num_gpus, "
                                     "run.max_error_fraction.")
    run.add_argument("--config", action="append", help="YAML config layered on configs/default.yaml; several "
                     "layer in the order given (key=value overrides go on top)")
    run.add_argument("--no-defaults", action="store_true",
                     help="do not layer on configs/default.yaml: --config is standalone (on the schema defaults)")
    run.add_argument("--overwrite", action="store_true", help="rerun every shard, ignoring committed outputs")
    run.add_argument("--redo-changed", action="store_true",
                     help="re-decode committed shards whose config or input changed; drop those not in the input")
    run.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. decode.steps=32")
    rep = sub.add_parser("report", help="cost and step accounting report of a finished run")
    rep.add_argument("run_url", help="output root of a run (local path or fsspec URL)")
    rep.add_argument("--out", help="report directory (default: <run>/report for local runs)")
    rep.add_argument("--baseline", help="output root of a baseline run, for quality agreement and QPS")
    rep.add_argument("--price-per-gpu-hour", type=float, default=2.0, help="accelerator price (default 2.0)")
    rep.add_argument("--what-if", action="append", metavar="SETTING",
                     help="another exit setting, e.g. 'decode.sched.tau_high_logit=6,decode.sched.schedule=exp': "
                          "its NFE, changed outputs and cost, replayed on the run's token traces (a greedy "
                          "full-budget run with decode.trace=tokens); repeatable")
    rep.add_argument("--config", action="append", help="config of the runs (for storage settings); repeatable")
    rep.add_argument("overrides", nargs="*", help="storage.key=value settings, as for run "
                                                  "(e.g. storage.endpoint_url=http://127.0.0.1:9000)")
    lab = sub.add_parser("labels", help="TSPD training rows (features, label) from a run's traces")
    lab.add_argument("run_url", help="output root of a run decoded with decode.policy=[none] decode.trace=tokens")
    lab.add_argument("--out", required=True, help="Arrow file to write")
    lab.add_argument("--config", action="append", help="config of the run (for storage settings); repeatable")
    trn = sub.add_parser("train-tspd", help="train the TSPD controller from a labels file")
    trn.add_argument("labels", help="Arrow file written by `pipeline.py labels`")
    trn.add_argument("--out", required=True, help="controller file (point decode.tspd.controller_path at it)")
    trn.add_argument("--seed", type=int, default=0)
    cal = sub.add_parser("calibrate", help="choose the exit setting from a pilot sample of the job's input",
                         description="Decode a seeded pilot sample of the job's input once at the full budget, "
                                     "replay every exit setting of a grid on its traces, and write the cheapest "
                                     "one meeting --target as a config layer (docs/calibrate.md).")
    cal.add_argument("--config", action="append", help="the job's config layers, as for run")
    cal.add_argument("--no-defaults", action="store_true", help="as for run")
    cal.add_argument("--pilot", type=int, default=200, help="pilot rows (default 200)")
    cal.add_argument("--seed", type=int, default=0, help="pilot sampling seed (default 0)")
    cal.add_argument("--target", type=float, default=0.99,
                     help="quality the chosen setting must keep, the 95%% lower bound (default 0.99): agreement "
                          "with the full budget, or with --reference-field the fraction of the full budget's right answers kept")
    cal.add_argument("--bound", choices=("lower", "point"), default="lower",
                     help="compare the target with the 95%% interval's lower bound (default), or with the pilot's "
                          "count to its resolution (point: a setting may miss as many rows as one exactly at the "
                          "target typically would, the median of Binomial(n, 1 - target))")
    cal.add_argument("--reference-field", help="input column holding the reference answer (exact match)")
    cal.add_argument("--verifier", metavar="MODULE:FUNCTION",
                     help="judge answers against --reference-field with this callable (prediction, reference) -> "
                          "bool instead of exact match, e.g. embedded.reasoning.tasks:correct")
    cal.add_argument("--decode-budget-s", type=float, default=0.0,
                     help="also decode the pilot once per commit setting (Fast-dLLM thresholds, CE; block "
                          "thresholds) and replay the exit grid on each, within this many seconds (default 0: "
                          "exit settings on the job's commit policy only)")
    cal.add_argument("--out", default="calibrated.yaml",
                     help="config layer to write (default calibrated.yaml); .json table and .png plot beside it")
    cal.add_argument("--price-per-gpu-hour", type=float, default=2.0, help="for the estimated job cost")
    cal.add_argument("overrides", nargs="*", help="dotted key=value overrides, as for run")
    if not argv or argv[0] not in SUBCOMMANDS + ("-h", "--help"):
        argv = ["run", *argv]
    args, extra = ap.parse_known_args(argv)
    if args.command in ("run", "report", "calibrate"):  # overrides may come on either side of the flags
        args.overrides += [a for a in extra if "=" in a and not a.startswith("-")]
        extra = [a for a in extra if not ("=" in a and not a.startswith("-"))]
    if extra:
        parser = sub.choices[args.command]
        flags = [o for a in parser._actions for o in a.option_strings]
        close = difflib.get_close_matches(extra[0].split("=", 1)[0], flags, n=1)
        parser.error(f"unrecognized arguments: {' '.join(extra)}" + (f" (did you mean {close[0]}?)" if close else ""))
    return args


def main(argv: list[str] | None = None) -> int:
    caller = os.environ.pop(CALLER_DIR_ENV, "")
    if caller and os.path.isdir(caller):   # back to the caller's folder: its relative paths mean what they say
        os.chdir(caller)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    catch_sigterm()   # SIGTERM takes Ctrl-C's way out (driver/outcome.py)
    try:
        if args.command == "report":
            from report.main import run_report
            run_report(args)
            return EXIT_OK
        if args.command == "labels":
            from training.labels import collect_labels
            storage = load_config(args.config).storage if args.config else None
            print(json.dumps(collect_labels(args.run_url, args.out, storage)))
            return EXIT_OK
        if args.command == "train-tspd":
            from training.tspd_train import train_controller
            result = train_controller(args.labels, args.out, seed=args.seed)
            print(json.dumps(result, indent=2))
            if result["single_class"]:
                every = bool(result["validation"]["positive_rate"])
                print(f"warning: every label in {args.labels} is {every}, so the controller is a constant: "
                      + ("TSPD commits every position at its first step" if every else "TSPD never exits early"),
                      file=sys.stderr)
            return EXIT_OK
        if args.command == "calibrate":
            return calibrate(args)
        return run(args)
    except KeyboardInterrupt as e:   # Ctrl-C or SIGTERM: Ray has shut down its part, committed shards stay
        code, message = interrupted_exit(e)
        print(f"error: {message}", file=sys.stderr)
        return code
    except Exception as e:
        if isinstance(e, ConfigError) and not from_ray(e):   # a user's mistake: one line, exit 2
            print(f"error: {scrub_text(str(e))}", file=sys.stderr)
            return EXIT_CONFIG
        # one line for users, the root cause without Ray's wrapping; the traceback goes to a log file
        print(f"error: {scrub_text(root_cause(e))} (traceback: {write_log(e)})", file=sys.stderr)
        return EXIT_FAILURE


def run(args: argparse.Namespace) -> int:
    """`pipeline.py run`: load and check the config, decode, and turn the error-row count into the exit code."""
    cfg = load_config(args.config, args.overrides, defaults=not args.no_defaults)
    cfg.output.overwrite = cfg.output.overwrite or args.overwrite
    cfg.output.redo_changed = cfg.output.redo_changed or args.redo_changed
    from driver.preflight import preflight
    checked = preflight(cfg)   # checkpoint, input columns, output bucket: exit 2 in seconds, before Ray is imported
    from driver.run import run_pipeline
    with filtered_stderr():   # Ray's C++ core logs one harmless "error" line per run (driver/stderr_filter.py)
        manifest = run_pipeline(cfg, checked)
    code, messages = run_exit(manifest, cfg.run.max_error_fraction)
    empty = manifest.get("empty_shards") or []
    if empty:
        print(f"note: {len(empty)} input shard(s) had no rows and were skipped: {', '.join(empty[:5])}"
              f"{' ...' if len(empty) > 5 else ''} (empty_shards in the manifest)", file=sys.stderr)
    for message in messages:
        print(f"error: {scrub_text(message)}", file=sys.stderr)
    return code


def calibrate(args: argparse.Namespace) -> int:
    """`pipeline.py calibrate`: the pilot, the replayed grid, the table and the config layer."""
    cfg = load_config(args.config, args.overrides, defaults=not args.no_defaults)
    from driver.calibrate import calibrate as run_calibration, print_table
    result = run_calibration(cfg, args.pilot, args.seed, args.target, args.out, args.reference_field,
                             args.price_per_gpu_hour, bound=args.bound, verifier=args.verifier,
                             decode_budget_s=args.decode_budget_s)
    print_table(result)
    out = os.path.abspath(args.out)
    if result["chosen"] is None:
        why = ""
        if args.bound == "lower" and args.target > result["best_provable"]:
            why = (f": a {result['pilot_rows']}-row pilot shows at most {result['best_provable']:.3f} at 95 % "
                   f"confidence; use a larger --pilot or --bound point")
        print(f"error: no setting meets --target {args.target} on this pilot{why} "
              f"(table: {os.path.splitext(out)[0]}.json)", file=sys.stderr)
        return EXIT_FAILURE
    print(f"chosen: {result['chosen']['setting']} -> {out} (table {os.path.splitext(out)[0]}.json, "
          f"plot {os.path.splitext(out)[0]}.png); pilot decoded in {result['decode_s']:.1f} s, "
          f"{len(result['rows'])} settings scored, exit grid replayed in {result['replay_s']:.1f} s"
          + (f", {len(result['commit_decodes'])} commit settings decoded (and the grid replayed on them) in "
             f"{result['commit_s']:.1f} s"
             if result["commit_decodes"] else "")
          + (f" ({len(result['commit_skipped'])} skipped: over --decode-budget-s)" if result["commit_skipped"] else ""))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
