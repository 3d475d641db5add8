"""Background pipeline jobs for the Space: one at a time, survive a page reload, cancel cleanly.

A job is ``python -m trainer run --to STAGE -c <run>/job-config.yaml`` in its own process group,
logging to ``<run>/job.log``. Its state lives in ``<state_dir>/job.json`` so a reloaded page (or a
second browser tab) re-attaches to it. Cancelling sends SIGINT (the CLI stops and the run directory
stays resumable), then SIGTERM/SIGKILL if the process does not exit.

Example::

    >>> from trainer.config import load_config
    >>> jobs = JobManager("/tmp/jobs-doc")
    >>> cfg = load_config(None, ["ingest.source=builtin:python-docs", "run.dir=/tmp/doc-job"])
    >>> job = jobs.start(cfg, "ingest")  # doctest: +SKIP
    >>> jobs.wait(timeout=300).status  # doctest: +SKIP
    'finished'
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from trainer._process import pid_alive
from trainer.config import Config
from trainer.errors import TrainerError
from trainer.files import write_text_atomic
from trainer.logs import redact
from trainer.paths import REPO_ROOT


@dataclass
class Job:
    run_dir: str
    to: str
    pid: int
    started: float
    log_path: str
    status: str = "running"  # running, finished, failed, cancelled
    returncode: int | None = None
    finished: float | None = None


class JobManager:
    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.state_dir / "job.json"
        self._proc: subprocess.Popen | None = None

    # --- state ---------------------------------------------------------------------------------

    def _save(self, job: Job) -> None:
        write_text_atomic(self.state_path, json.dumps(asdict(job)))

    def current(self) -> Job | None:
        """The latest job, its status refreshed (a dead 'running' job becomes finished/failed)."""
        if not self.state_path.is_file():
            return None
        job = Job(**json.loads(self.state_path.read_text()))
        if job.status == "running":
            code = self._proc.poll() if self._proc is not None and self._proc.pid == job.pid else None
            if code is not None or not pid_alive(job.pid):
                if code is None and self._proc is not None and self._proc.pid == job.pid:
                    code = self._proc.wait()
                job.returncode = code
                job.status = "finished" if code == 0 else "failed"
                job.finished = time.time()
                self._save(job)
        return job

    # --- control -------------------------------------------------------------------------------

    def start(self, cfg: Config, to: str, env: dict[str, str] | None = None) -> Job:
        """Start the chain up to ``to``; refuses while another job runs. ``env`` adds variables for the
        job only (e.g. a token from an OAuth login): they are never written to disk."""
        running = self.current()
        if running is not None and running.status == "running":
            raise TrainerError(
                f"a job is already running (up to '{running.to}' in {running.run_dir}, pid {running.pid}); "
                "wait for it or cancel it first"
            )
        run_dir = Path(cfg.run.dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run_dir / "job-config.yaml"
        config_path.write_text(cfg.to_yaml(), encoding="utf-8")
        log_path = run_dir / "job.log"
        log = log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "trainer", "run", "--to", to, "-c", str(config_path)],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=True,
        )
        log.close()
        job = Job(run_dir=str(run_dir), to=to, pid=self._proc.pid, started=time.time(), log_path=str(log_path))
        self._save(job)
        return job

    def cancel(self, grace_s: float = 30.0) -> Job | None:
        job = self.current()
        if job is None or job.status != "running":
            return job
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(job.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.time() + wait_s
            while time.time() < deadline:
                if self._proc is not None and self._proc.pid == job.pid and self._proc.poll() is not None:
                    break
                if not pid_alive(job.pid):
                    break
                time.sleep(0.2)
            else:
                continue
            break
        if self._proc is not None and self._proc.pid == job.pid:
            self._proc.wait(timeout=10)
        job.status, job.finished = "cancelled", time.time()
        job.returncode = self._proc.returncode if self._proc is not None and self._proc.pid == job.pid else None
        self._save(job)
        return job

    def wait(self, timeout: float = 600.0) -> Job | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.current()
            if job is None or job.status != "running":
                return job
            time.sleep(0.5)
        raise TimeoutError(f"job still running after {timeout:.0f} s")

    def log_tail(self, lines: int = 40) -> str:
        job = self.current()
        if job is None or not Path(job.log_path).is_file():
            return ""
        with open(job.log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
        # progress bars rewrite one line with \r: keep the last state of each line
        clean = [line.split("\r")[-1] for line in text.splitlines()]
        return redact("\n".join(clean[-lines:]))
