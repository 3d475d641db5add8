"""Command line: ``python -m trainer <stage>`` runs one stage, ``run --to STAGE`` the chain.

Every command reads the same typed config (``-c config.yaml``), with ``--set section.key=value``
overrides, and works in the run directory ``run.dir``. Errors the user can fix (bad settings or input,
a server's reply, a full disk or a file in the way) are printed as one clear message (exit 2), never as
a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap

from trainer.config import Config, explain, load_config
from trainer.errors import TrainerError, disk_error
from trainer.logs import get_logger, library_warnings, redact, setup_console
from trainer.progress import ConsoleBar
from trainer.rundir import RunDir

EPILOG = """\
examples:
  python -m trainer ingest --source data:scifact --run-dir runs/scifact
  python -m trainer run -c configs/quickstart.yaml
  python -m trainer run -c configs/scifact.yaml --to ingest --set ingest.chunk_sentences=3
  python -m trainer status -c configs/quickstart.yaml
  python -m trainer estimate --preset cpu-quick --source data:scifact --set domain=scientific
  python -m trainer run --preset cpu-quick --source builtin:python-docs --set domain=code
  python -m trainer config --explain        # every setting, its default and meaning

A finished stage is not run again unless its settings or inputs change (then its earlier output is
moved to <run>/archive/, never deleted); a crashed or killed stage resumes where it stopped.
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="YAML", help="config file (default: built-in defaults)")
    parser.add_argument("--run-dir", metavar="DIR", help="run directory (same as --set run.dir=DIR)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.lr=2e-5 (repeatable; see `config --explain`)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    # imported here, like the other commands' modules below: `config` and `--help` skip loading every stage
    # (0.45 s instead of 0.8 s measured for `import trainer.pipeline`)
    from trainer.pipeline import STAGE_NAMES, STAGES

    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Turn a general text-embedding model into a domain specialist: ingest a corpus, "
        "generate synthetic queries, mine hard negatives, fine-tune, evaluate, export, publish.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for name, stage in STAGES.items():
        p = sub.add_parser(name, help=stage.help, description=stage.help)
        _common(p)
        p.add_argument("--force", action="store_true",
                       help="run again even if up to date (the earlier output is archived)")
        if name == "ingest":
            p.add_argument("--source", help="corpus (same as --set ingest.source=...): folder, BEIR folder, "
                           "hub:<id>, builtin:python-docs, data:<name>")
        if name == "mine":
            p.add_argument("--queries", help="your own real queries (same as --set queries.source=...): .jsonl/.csv "
                           "with a query and a document id or text, a BEIR folder, hub:<id>")

    p = sub.add_parser("run", help="run the chain of stages up to --to (finished ones are skipped)",
                       description="Run every stage up to --to; up-to-date stages are no-ops.")
    _common(p)
    p.add_argument("--to", choices=STAGE_NAMES, default=STAGE_NAMES[-1],
                   help=f"last stage to run (default: {STAGE_NAMES[-1]})")
    p.add_argument("--force", action="store_true", help="re-run the --to stage even if up to date")
    p.add_argument("--source", help="corpus (same as --set ingest.source=...)")
    p.add_argument("--queries", help="your own real queries (same as --set queries.source=...)")

    p.add_argument("--preset", help="start from a preset's settings (your -c/--set win): "
                   "cpu-quick, t4, a100 (see `estimate --help`)")

    p = sub.add_parser("estimate", help="how long a run of this config would take (from BENCHMARKS.md's rates)",
                       description="Seconds per stage of a whole run, from the rates measured in BENCHMARKS.md "
                       "and the corpus size (the run's ingest output when there is one). Presets: "
                       "cpu-quick (about 15 minutes on 2 vCPUs), t4, a100 (the recipe).")
    _common(p)
    p.add_argument("--preset", help="estimate with a preset's settings: cpu-quick, t4, a100")
    p.add_argument("--source", help="corpus (same as --set ingest.source=...)")

    sub.add_parser("domains", help="rank the MTEB subcategories by room for improvement (see `domains --help`)",
                   add_help=False)
    sub.add_parser("serve", help="serve an exported model as an OpenAI-compatible /v1/embeddings API "
                   "(see `serve --help`)", add_help=False)

    p = sub.add_parser("status", help="show each stage's state in the run directory (outputs verified)")
    _common(p)
    p.add_argument("--contracts", action="store_true", help="also list what each stage reads and writes")

    p = sub.add_parser("config", help="print the resolved config, or --explain every setting")
    _common(p)
    p.add_argument("--preset", help="with a preset's settings: cpu-quick, t4, a100")
    p.add_argument("--explain", action="store_true", help="list every setting with its default and meaning")
    p.add_argument("--markdown", action="store_true", help="with --explain: a Markdown table (as in the README)")
    return parser


def _config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if getattr(args, "preset", None):
        from trainer.presets import preset

        overrides = [*preset(args.preset).overrides, *overrides]  # the user's own --set win
    if getattr(args, "run_dir", None):
        overrides.append(f"run.dir={args.run_dir}")
    if getattr(args, "source", None):
        overrides.append(f"ingest.source={args.source}")
    if getattr(args, "queries", None):
        overrides.append(f"queries.source={args.queries}")
    return load_config(args.config, overrides)


def explain_table() -> str:
    lines = ["| setting | default | meaning |", "|---|---|---|"]
    for key, default, desc in explain():
        lines.append(f"| `{key}` | `{default}` | {desc} |")
    return "\n".join(lines)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["domains"]:  # its own options (results folder, output), no run config
        from trainer.domain_ranking import main as domains_main

        return domains_main(argv[1:])
    if argv[:1] == ["serve"]:  # a server for an exported model, not a pipeline stage
        from trainer.serve import main as serve_main

        return serve_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    console = setup_console(args.verbose)
    bar = ConsoleBar(sys.stderr)  # one progress line: redrawn on a terminal, every ~10 s in a log file
    console.addFilter(lambda record: bar.clear() or True)  # a log record never lands inside the bar
    signal.signal(signal.SIGTERM, _interrupt)  # clean up (servers, locks) as on Ctrl-C
    try:
        if args.command == "config" and args.explain and args.markdown:
            print(explain_table())
            return 0
        if args.command == "config" and args.explain:
            for key, default, desc in explain():
                print(f"{key} = {default}\n" + textwrap.indent(textwrap.fill(desc, 88), "    "))
            return 0
        cfg = _config(args)
        if args.command == "config":
            print(cfg.to_yaml(), end="")
            return 0
        if args.command == "estimate":
            from trainer.presets import estimate

            print(estimate(cfg).format())
            return 0
        from trainer.pipeline import contracts, run_pipeline, status

        if args.command == "status":
            declared = {c["stage"]: c for c in contracts()}
            for name, state in status(cfg):
                print(f"{name:10s} {state}")
                if args.contracts:
                    c = declared[name]
                    print(f"{'':10s} reads  {', '.join(c['reads']) or '-'}")
                    print(f"{'':10s} writes {', '.join(c['writes'] + [f'{w} (if any)' for w in c['may_write']])}")
            return 0
        lib = None
        try:
            with library_warnings(RunDir(cfg.run.dir).root, args.verbose) as lib:
                if args.command == "run":
                    outcomes = run_pipeline(cfg, to=args.to, force=args.force, progress_sinks=(bar,))
                else:
                    outcomes = run_pipeline(cfg, only=args.command, force=args.force, progress_sinks=(bar,))
        finally:
            bar.clear()
            if lib is not None and lib.count and lib.path is not None:
                get_logger().info("%d library warnings written to %s (--verbose shows them here)", lib.count,
                                  lib.path)
        for o in outcomes:
            print(f"{o.stage}: {o.action} -> {RunDir(cfg.run.dir).stage_dir(o.stage)}  "
                  f"{json.dumps(o.manifest.get('counts', {}), default=str)}")
        return 0
    except TrainerError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:
        error = disk_error(exc)  # a full disk, a file in the way, ...: from outside, and the user can fix it
        if error is None:
            raise  # a bug: its traceback is what a report needs
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
