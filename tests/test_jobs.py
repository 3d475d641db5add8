"""Background jobs for the Space: one at a time, re-attach from a new manager, cancel leaves a resumable run."""

import json

import pytest

from trainer.config import load_config
from trainer.errors import TrainerError
from trainer.jobs import JobManager


def test_job_runs_to_completion_and_reattaches(tmp_path):
    jobs = JobManager(tmp_path / "state")
    cfg = load_config(None, ["ingest.source=builtin:python-docs", f"run.dir={tmp_path / 'run'}"])
    job = jobs.start(cfg, "ingest")
    again = JobManager(tmp_path / "state").current()  # a reloaded page
    assert again.pid == job.pid and again.to == "ingest"
    done = jobs.wait(timeout=300)
    assert done.status == "finished" and done.returncode == 0
    assert "ingest: ran" in jobs.log_tail()
    assert json.loads((tmp_path / "run/stages/ingest/manifest.json").read_text())["status"] == "complete"


def test_one_job_at_a_time_and_cancel_is_resumable(tmp_path):
    jobs = JobManager(tmp_path / "state")
    cfg = load_config(None, [
        "ingest.source=builtin:python-docs", f"run.dir={tmp_path / 'run'}", "domain=code",
        "generate.generator=smollm2-135m-instruct-q4_1", "generate.server_threads=1", "generate.concurrency=1",
        "generate.sample_documents=20",
    ])
    jobs.start(cfg, "generate")
    with pytest.raises(TrainerError, match="already running"):
        jobs.start(cfg, "generate")
    import time

    manifest = tmp_path / "run/stages/generate/manifest.json"
    deadline = time.time() + 240
    while not manifest.is_file() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # a few answers in
    job = jobs.cancel()
    assert job.status == "cancelled"
    assert json.loads(manifest.read_text())["status"] == "running"  # resumable, not complete
    assert "interrupted" in jobs.log_tail()
    # no generator server left behind
    from trainer._process import pid_alive

    server_pid = int((tmp_path / "run/stages/generate/server.pid").read_text())
    deadline = time.time() + 15
    while pid_alive(server_pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not pid_alive(server_pid)
