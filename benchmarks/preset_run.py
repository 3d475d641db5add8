"""Wall time of a run preset, stage by stage, and what it gains on the run's own held-out split.

Runs the CLI as a user would (``python -m trainer run --preset NAME``) in a fresh run directory, then reads
each stage's manifest (duration) and the evaluate report. Run it alone on the machine (generation and
training want both cores):

    python benchmarks/preset_run.py --preset cpu-quick --set domain=scientific --set ingest.source=data:scifact

Writes benchmarks/results/preset-<preset>-<source>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from trainer.pipeline import STAGE_NAMES, output_path
from trainer.presets import estimate
from trainer.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--to", default="publish")
    ap.add_argument("--report-only", action="store_true", help="read a finished run again; run nothing")
    args = ap.parse_args()

    source = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("ingest.source=")), "default")
    label = source.replace(":", "-").replace("/", "-")
    run_dir = Path(args.run_dir or ROOT / "runs" / f"preset-{args.preset}-{label}")
    out = ROOT / "benchmarks" / "results" / f"preset-{args.preset}-{label}.json"
    sets = [x for o in [*args.overrides, f"run.dir={run_dir}"] for x in ("--set", o)]
    cmd = [sys.executable, "-m", "trainer", "run", "--to", args.to, "--preset", args.preset, *sets]
    if args.report_only:
        returncode, wall = 0, json.loads(out.read_text())["wall_s"]
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        print(" ".join(cmd), flush=True)
        t0 = time.time()
        returncode = subprocess.run(cmd, cwd=ROOT).returncode
        wall = time.time() - t0

    from trainer.config import load_config

    cfg = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    rd = RunDir(run_dir)
    stages = {}
    for name in STAGE_NAMES:
        m = rd.manifest(name)
        if m and m.get("status") == "complete":
            stages[name] = round(m.get("duration_s", 0.0), 1)
    est = None
    if cfg is not None:
        ingest = (rd.manifest("ingest") or {}).get("counts") or {}
        e = estimate(cfg, n_chunks=ingest.get("chunks"), n_documents=ingest.get("documents"))
        est = {"total_s": round(e.total_s, 1), "seconds": {k: round(v, 1) for k, v in e.seconds.items()}}
    report_path = output_path(run_dir, "evaluate", "report.json")
    rows = json.loads(report_path.read_text()).get("tasks", []) if report_path.is_file() else []
    held_out = next((r for r in rows if r.get("kind") == "synthetic"), None)
    result = {"preset": args.preset, "overrides": args.overrides, "returncode": returncode,
              "wall_s": round(wall, 1), "stage_s": stages, "estimate": est, "held_out": held_out,
              "cpu": platform.processor() or platform.machine(),
              "counts": {n: (rd.manifest(n) or {}).get("counts") for n in ("ingest", "generate", "mine", "train")}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    print("\n| stage | measured | estimated |\n|---|---|---|")
    for name in STAGE_NAMES:
        if name in stages:
            guess = (est or {}).get("seconds", {}).get(name)
            print(f"| {name} | {stages[name]:.0f} s | {'' if guess is None else f'{guess:.0f} s'} |")
    print(f"| **wall** | **{wall:.0f} s** | {(est or {}).get('total_s', 0):.0f} s |")
    if held_out:
        print(f"\nheld-out split nDCG@10: base {held_out['base']:.4f} -> tuned {held_out['tuned']:.4f} "
              f"({100 * (held_out['tuned'] - held_out['base']):+.2f} points, {held_out.get('n_queries')} queries)")
    print(f"written: {out}")
    sys.exit(returncode)


if __name__ == "__main__":
    main()
