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


def _ingest_cfg(run_dir):
    return load_config(None, ["ingest.source=builtin:python-docs", f"run.dir={run_dir}"])


def test_pool_queues_past_the_cap_and_keeps_owners_apart(tmp_path):
    """Two owners, one slot: the second waits (1st in line) and starts by itself when the first is
    cancelled; neither owner's cancel touches the other's job; a queued job's env never reaches disk."""
    import time

    from trainer.jobs import JobPool

    pool = JobPool(tmp_path / "root", max_running=1)
    pool.start_scheduler(every_s=0.3)
    try:
        a = pool.submit("anon-a", _ingest_cfg(tmp_path / "root/anon-a/run"), "ingest")
        b = pool.submit("user-b", _ingest_cfg(tmp_path / "root/user-b/run"), "ingest",
                        env={"HF_TOKEN": "hf_QueuedSecretNeverOnDisk0000"})
        assert a.status == "running" and b.status == "queued"
        assert pool.position("user-b") == 1 and pool.position("anon-a") is None
        with pytest.raises(TrainerError, match="already queued"):
            pool.submit("user-b", _ingest_cfg(tmp_path / "root/user-b/run"), "ingest")
        assert b"hf_QueuedSecret" not in (tmp_path / "root/user-b/job.json").read_bytes()
        assert pool.manager("user-b").cancel() is not None  # b's own manager cancels only b's job ...
        assert pool.manager("anon-a").current().status == "running"  # ... a runs on
        pool.submit("user-b", _ingest_cfg(tmp_path / "root/user-b/run"), "ingest")
        assert pool.cancel("anon-a").status == "cancelled"
        deadline = time.time() + 30
        while pool.manager("user-b").current().status == "queued" and time.time() < deadline:
            time.sleep(0.2)
        assert pool.manager("user-b").current().status == "running"  # started by the scheduler thread
        assert pool.manager("user-b").wait(timeout=300).status == "finished"
        assert "ingest: ran" in pool.manager("user-b").log_tail()
    finally:
        pool.stop_scheduler()


def test_pool_cleans_old_anonymous_folders_only(tmp_path):
    import os
    import time

    from trainer.jobs import JobPool

    pool = JobPool(tmp_path, max_running=1)
    for owner in ("anon-old", "anon-new", "user-old"):
        (tmp_path / owner / "run").mkdir(parents=True)
        (tmp_path / owner / "run" / "x.txt").write_text("x")
    old = time.time() - 3 * 86400
    for owner in ("anon-old", "user-old"):
        for p in (tmp_path / owner / "run" / "x.txt", tmp_path / owner / "run", tmp_path / owner):
            os.utime(p, (old, old))
    assert pool.clean("anon-", max_age_s=86400) == ["anon-old"]
    assert not (tmp_path / "anon-old").exists()
    assert (tmp_path / "anon-new").is_dir() and (tmp_path / "user-old").is_dir()
    with pytest.raises(TrainerError, match="safe owner"):
        pool.owner_dir("../escape")
