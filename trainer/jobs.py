"""Background pipeline jobs for the Space: one per owner, survive a page reload, cancel cleanly, and a
pool that caps how many run at once on the machine (the rest wait in a queue).

A job is ``python -m trainer run --to STAGE -c <run>/job-config.yaml`` (or ``python -m trainer STAGE``
for one stage) in its own process group, logging to ``<run>/job.log``. Its state lives in
``<state_dir>/job.json`` so a reloaded page (or a second browser tab) re-attaches to it. Cancelling sends
SIGINT (the CLI stops and the run directory stays resumable), then SIGTERM/SIGKILL if the process does
not exit.

:class:`JobPool` keeps one :class:`JobManager` per owner under ``<root>/<owner>/`` and starts queued jobs
when a slot frees, from its own thread (so a queued job starts even when its browser is closed). A queued
job's extra environment (an OAuth token) is held in memory only, never written.

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
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
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
    status: str = "running"  # queued, running, finished, failed, cancelled
    returncode: int | None = None
    finished: float | None = None
    only: bool = False  # True: this one stage (``python -m trainer STAGE``), else the chain up to it
    queued: float | None = None  # when it entered the queue (queued jobs have pid 0)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    @classmethod
    def from_json(cls, text: str) -> Job:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


def job_environment(extra: dict[str, str | None] | None) -> dict[str, str]:
    """The server's environment plus ``extra``; a None value removes that variable (a visitor's job does not
    get the Space's own HF_TOKEN secret)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


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
        try:
            job = Job.from_json(self.state_path.read_text())
        except (OSError, ValueError, TypeError):
            return None
        if job.status == "running":
            code = self._proc.poll() if self._proc is not None and self._proc.pid == job.pid else None
            if code is not None or not pid_alive(job.pid):
                if code is None and self._proc is not None and self._proc.pid == job.pid:
                    code = self._proc.wait()
                try:  # the CLI's own exit code, as the launching shell recorded it
                    code = int((self.state_dir / "job.exit").read_text().strip())
                except (OSError, ValueError):
                    pass
                job.returncode = code
                job.status = "finished" if code == 0 else "failed"
                job.finished = time.time()
                self._save(job)
        return job

    # --- control -------------------------------------------------------------------------------

    def _refuse_if_active(self) -> None:
        job = self.current()
        if job is not None and job.status == "running":
            raise TrainerError(f"a job is already running (up to '{job.to}' in {job.run_dir}, pid {job.pid}); "
                               "wait for it or cancel it first")
        if job is not None and job.status == "queued":
            raise TrainerError(f"a job is already queued (up to '{job.to}'); wait for it or cancel it first")

    @staticmethod
    def _write_config(cfg: Config) -> tuple[Path, Path]:
        run_dir = Path(cfg.run.dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run_dir / "job-config.yaml"
        write_text_atomic(config_path, cfg.to_yaml())
        return run_dir, config_path

    def start(self, cfg: Config, to: str, env: dict[str, str | None] | None = None, *, only: bool = False) -> Job:
        """Start the chain up to ``to`` (``only``: that one stage); refuses while another job runs. ``env``
        adds variables for the job only (e.g. a token from an OAuth login): they are never written to disk."""
        self._refuse_if_active()
        run_dir, _ = self._write_config(cfg)
        return self._launch(Job(run_dir=str(run_dir), to=to, pid=0, started=time.time(),
                                log_path=str(run_dir / "job.log"), only=only), env)

    def enqueue(self, cfg: Config, to: str, *, only: bool = False) -> Job:
        """Record a job that waits for a free slot (:meth:`launch` starts it); its config is written now."""
        self._refuse_if_active()
        run_dir, _ = self._write_config(cfg)
        now = time.time()
        job = Job(run_dir=str(run_dir), to=to, pid=0, started=now, log_path=str(run_dir / "job.log"),
                  status="queued", only=only, queued=now)
        self._save(job)
        return job

    def launch(self, env: dict[str, str | None] | None = None) -> Job | None:
        """Start the queued job (None when there is none)."""
        job = self.current()
        if job is None or job.status != "queued":
            return None
        return self._launch(job, env)

    def _launch(self, job: Job, env: dict[str, str | None] | None) -> Job:
        config_path = Path(job.run_dir) / "job-config.yaml"
        args = [job.to] if job.only else ["run", "--to", job.to]
        exit_path = self.state_dir / "job.exit"
        exit_path.unlink(missing_ok=True)
        # a small shell records the exit code, so any manager (another process, a restarted server) can
        # tell finished from failed; SIGINT to the group reaches the CLI
        script = '"$@"; echo $? > "$0"'
        with open(job.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", script, str(exit_path), sys.executable, "-m", "trainer", *args,
                 "-c", str(config_path)],
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=job_environment(env), start_new_session=True,
            )
        job.pid, job.started, job.status = self._proc.pid, time.time(), "running"
        self._save(job)
        return job

    def cancel(self, grace_s: float = 30.0) -> Job | None:
        job = self.current()
        if job is not None and job.status == "queued":
            job.status, job.finished = "cancelled", time.time()
            self._save(job)
            return job
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
            if job is None or not job.active:
                return job
            time.sleep(0.5)
        raise TimeoutError(f"job still running after {timeout:.0f} s")

    def log_tail(self, lines: int = 40) -> str:
        """The job log's last ``lines`` lines as a reader wants them: progress bars' last state, each line
        once, library warnings left out (they stay in job.log), secrets redacted."""
        job = self.current()
        if job is None or not Path(job.log_path).is_file():
            return ""
        with open(job.log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
        return redact("\n".join(clean_log(text.splitlines())[-lines:]))


# A Python warning ("path.py:12: FutureWarning: ...") and the source line printed under it.
_WARNING_RE = re.compile(r"^\S+:\d+: \w*Warning: |^\s+warnings\.warn\(|^\w*Warning: ")
_STAMP_RE = re.compile(r"^(\d\d:\d\d:\d\d )?(DEBUG|INFO|WARNING|ERROR)[ :]+(\w+:)?")


def clean_log(raw: list[str]) -> list[str]:
    r"""Log lines for a live view: the last state of each carriage-return progress line, no library
    warnings, and no line repeated (the same message from two handlers shows once).

    >>> clean_log(["a", "x.py:3: FutureWarning: old", "  warnings.warn(", "10:00:00 INFO b", "INFO:trainer:b",
    ...            "bar 1%\rbar 100%"])
    ['a', '10:00:00 INFO b', 'bar 100%']
    """
    out: list[str] = []
    recent: list[str] = []
    for line in raw:
        line = line.split("\r")[-1]
        if _WARNING_RE.search(line):
            continue
        key = _STAMP_RE.sub("", line).strip()
        if key and key in recent:
            continue
        recent = [*recent[-4:], key]
        out.append(line)
    return out


class JobPool:
    """One job per owner, at most ``max_running`` at once on this machine; the others wait in a queue.

    Owners are path components (``spaces.sessions.owner_key`` makes them safe); each one's job state and
    run directory live under ``<root>/<owner>/``. :meth:`start_scheduler` runs :meth:`tick` every few
    seconds in a daemon thread: queued jobs start when a slot frees, and old anonymous folders go.
    """

    def __init__(self, root: str | Path, max_running: int = 1):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_running = max(1, int(max_running))
        self._managers: dict[str, JobManager] = {}
        self._env: dict[str, dict[str, str]] = {}  # queued jobs' extra environment, memory only
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def owner_dir(self, owner: str) -> Path:
        if not owner or owner in (".", "..") or "/" in owner or "\x00" in owner:
            raise TrainerError(f"not a safe owner key: {owner!r}")
        return self.root / owner

    def manager(self, owner: str) -> JobManager:
        with self._lock:
            if owner not in self._managers:
                self._managers[owner] = JobManager(self.owner_dir(owner))
            return self._managers[owner]

    def owners(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "job.json").is_file())

    def jobs(self) -> dict[str, Job]:
        """Every owner's latest job, statuses refreshed."""
        out = {}
        for owner in self.owners():
            job = self.manager(owner).current()
            if job is not None:
                out[owner] = job
        return out

    def queue(self) -> list[str]:
        """Owners with a queued job, first in line first."""
        queued = [(j.queued or j.started, o) for o, j in self.jobs().items() if j.status == "queued"]
        return [o for _, o in sorted(queued)]

    def position(self, owner: str) -> int | None:
        """1 for the next job to start, None when the owner has nothing queued."""
        q = self.queue()
        return q.index(owner) + 1 if owner in q else None

    def submit(self, owner: str, cfg: Config, to: str, env: dict[str, str | None] | None = None, *,
               only: bool = False) -> Job:
        """Start the owner's job now when a slot is free, else queue it (refused while one is active)."""
        with self._lock:
            running = sum(1 for j in self.jobs().values() if j.status == "running")
            manager = self.manager(owner)
            if running < self.max_running and not self.queue():
                return manager.start(cfg, to, env, only=only)
            job = manager.enqueue(cfg, to, only=only)
            self._env[owner] = dict(env or {})
            return job

    def cancel(self, owner: str) -> Job | None:
        with self._lock:
            self._env.pop(owner, None)
        job = self.manager(owner).cancel()
        self.tick()
        return job

    def tick(self) -> list[Job]:
        """Start queued jobs while slots are free; returns the ones started."""
        started = []
        with self._lock:
            jobs = self.jobs()
            free = self.max_running - sum(1 for j in jobs.values() if j.status == "running")
            for owner in self.queue()[:max(0, free)]:
                job = self.manager(owner).launch(self._env.pop(owner, None))
                if job is not None:
                    started.append(job)
        return started

    def clean(self, prefix: str, max_age_s: float, now: float | None = None) -> list[str]:
        """Remove owners' folders named ``prefix...`` untouched for ``max_age_s`` (none with an active job)."""
        now = time.time() if now is None else now
        removed = []
        with self._lock:
            for path in self.root.iterdir():
                if not path.is_dir() or not path.name.startswith(prefix):
                    continue
                job = self.manager(path.name).current()
                if job is not None and job.active:
                    continue
                newest = max((p.stat().st_mtime for p in (path, *path.glob("*"), *path.glob("run/*"))),
                             default=0.0)
                if now - newest > max_age_s:
                    shutil.rmtree(path, ignore_errors=True)
                    self._managers.pop(path.name, None)
                    removed.append(path.name)
        return removed

    def start_scheduler(self, every_s: float = 2.0, clean: tuple[str, float] | None = None,
                        clean_every_s: float = 600.0) -> None:
        """Run :meth:`tick` (and :meth:`clean` with ``clean=(prefix, max_age_s)``) in a daemon thread."""
        if self._thread is not None:
            return

        def loop() -> None:
            last_clean = 0.0
            while not self._stop.wait(every_s):
                try:
                    self.tick()
                    if clean and time.time() - last_clean > clean_every_s:
                        last_clean = time.time()
                        self.clean(*clean)
                except (OSError, TrainerError, ValueError) as exc:  # keep scheduling; the next tick retries
                    print(f"job scheduler: {redact(str(exc))}", file=sys.stderr)

        self._thread = threading.Thread(target=loop, name="job-scheduler", daemon=True)
        self._thread.start()

    def stop_scheduler(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
