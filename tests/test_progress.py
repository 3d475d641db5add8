"""Progress: the stages' own counters reach <run>/progress.json (the Space's bar) and the CLI's bar line."""

from __future__ import annotations

import io
import threading
import time

from trainer.config import load_config
from trainer.progress import ConsoleBar, Progress, ProgressHook, format_bar, read_progress

# A real chain on a tiny corpus: 8 CPython doc topics, 2 of them asked 3 questions each by the tiny generator.
TINY_RUN = [
    "ingest.source=builtin:python-docs", "domain=code", "ingest.max_documents=8",
    "generate.generator=smollm2-135m-instruct-q4_1", "generate.server_threads=1", "generate.sample_documents=2",
    "generate.max_chunks_per_document=2", "generate.questions_per_chunk=3", "mine.test_fraction=0.1",
    "mine.num_negatives=1", "train.max_seq_length=32", "train.batch_size=2", "train.epochs=1",
    "train.val_fraction=0", "train.matryoshka_dims=[384, 64]",
]


def _watch(run_dir, stop: threading.Event, seen: list[Progress]) -> None:
    """What a reader (the Space) sees: progress.json polled every 0.1 s."""
    last = None
    while not stop.is_set():
        p = read_progress(run_dir)
        if p is not None and (p.stage, p.done, p.label) != last:
            seen.append(p)
            last = (p.stage, p.done, p.label)
        time.sleep(0.1)


def test_a_real_run_shows_generate_queries_then_train_steps_with_loss(tmp_path):
    from trainer.pipeline import run_pipeline

    cfg = load_config(None, [f"run.dir={tmp_path}", *TINY_RUN])
    seen: list[Progress] = []
    bars: list[Progress] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(tmp_path, stop, seen), daemon=True)
    watcher.start()
    try:
        run_pipeline(cfg, to="train", progress_sinks=(bars.append,))
    finally:
        stop.set()
        watcher.join()

    gen = [p for p in seen if p.stage == "generate" and p.unit == "queries"]
    assert gen and gen[-1].total == gen[-1].done == 12, [format_bar(p) for p in seen]
    assert any(0 < p.done < p.total for p in gen)  # seen while it ran, not only at the end
    train = [p for p in seen if p.stage == "train" and p.unit == "steps"]
    assert train and train[-1].done == train[-1].total > 0, [format_bar(p) for p in seen]
    assert "loss" in train[-1].extra and train[-1].extra["loss"] > 0
    # order: generate's count before train's, as the stages ran
    assert seen.index(gen[-1]) < seen.index(train[0])
    # the sinks (the CLI's bar) got every update, the file only the throttled ones
    stages = [p.stage for p in bars]
    assert {"ingest", "generate", "mine", "train"} <= set(stages)
    assert [p for p in bars if p.stage == "mine" and p.label == "passages embedded"]
    assert read_progress(tmp_path).stage == "train"


def test_console_bar_in_a_log_file_prints_a_line_per_interval_not_per_update():
    out = io.StringIO()
    bar = ConsoleBar(out, tty=False, every_s=10)
    for done in range(1, 101):
        bar(Progress("generate", "queries", done, 100, "queries", 0.0, 0.0))
    lines = out.getvalue().splitlines()
    assert lines == ["generate [" + "." * 24 + "] 1/100 queries", "generate [" + "#" * 24 + "] 100/100 queries"]
    bar(Progress("generate", "queries", 100, 100, "queries", 0.0, 0.0))  # the same final state: once
    assert len(out.getvalue().splitlines()) == 2


def test_console_bar_on_a_terminal_redraws_one_line_and_clears_for_log_records():
    out = io.StringIO()
    bar = ConsoleBar(out, tty=True)
    bar(Progress("train", "steps", 1, 4, "steps", 0.0, 0.0, extra={"loss": 0.5}))
    assert out.getvalue().startswith("\r") and "\n" not in out.getvalue() and "loss 0.5" in out.getvalue()
    bar.clear()
    assert out.getvalue().endswith("\r") and "\n" not in out.getvalue()


def test_hook_flushes_the_state_the_throttle_held_back(tmp_path):
    hook = ProgressHook(tmp_path, "mine")
    hook.start()
    assert read_progress(tmp_path).label == "" and format_bar(read_progress(tmp_path)) == "mine: starting"
    hook.update(1, 10, unit="passages")
    hook.update(2, 10, unit="passages")  # within 0.5 s: not written yet
    assert read_progress(tmp_path).done == 1
    hook.flush()
    assert read_progress(tmp_path).done == 2


def test_the_cli_prints_the_bar_as_lines_in_a_log_file(cli, tmp_path):
    res = cli("ingest", "--source", "builtin:python-docs", "--run-dir", str(tmp_path),
              "--set", "ingest.max_documents=8")
    assert res.returncode == 0, res.stderr[-2000:]
    bars = [line for line in res.stderr.splitlines() if line.startswith("ingest ")]
    assert bars[-1].startswith("ingest [" + "#" * 24 + "] 8/8 documents · skipped "), res.stderr[-2000:]
    assert len(bars) <= 3 and "\r" not in res.stderr  # not a line per document
