"""The embedded generator: a real llama.cpp server speaking TGI's Messages API: llama.cpp's own ``llama-server``
(continuous batching over ``slots`` requests in flight) when a built binary is found (``llama_server_binary``),
else llama-cpp-python's server (one request at a time).

Started on 127.0.0.1 on a free port, polled until healthy, and stopped on exit, on an exception, on
Ctrl-C, and (Linux) when the parent process dies, so no server outlives its run.

Example::

    >>> from trainer.models import resolve_generator
    >>> with LocalLLMServer(resolve_generator("smollm2-135m-instruct-q4_1")) as server:  # doctest: +SKIP
    ...     server.base_url
    'http://127.0.0.1:...'
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from trainer._process import stop_group
from trainer.errors import TrainerError
from trainer.files import free_port
from trainer.logs import get_logger


class ServerError(TrainerError):
    """The embedded LLM server could not start or died."""


def cuda_available() -> bool:
    """A CUDA GPU is visible (torch's view; False when torch has no CUDA)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver is no GPU
        return False


def llama_gpu_build() -> bool:
    """The installed llama-cpp-python can offload layers to a GPU (built with CUDA: scripts/setup.sh builds it
    with CMAKE_ARGS=-DGGML_CUDA=on where nvcc exists)."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:  # noqa: BLE001 - not installed, or a library that fails to load
        return False


def gpu_layers(setting: str | int, *, cuda: bool | None = None, gpu_build: bool | None = None) -> int:
    """llama.cpp's n_gpu_layers for generate.gpu_layers: 'auto' is -1 (every layer on the GPU) when CUDA is
    present and llama-cpp-python was built for it, else 0 (CPU); a number is used as given.

        >>> gpu_layers("auto", cuda=True, gpu_build=True), gpu_layers("auto", cuda=True, gpu_build=False)
        (-1, 0)
        >>> gpu_layers(20, cuda=False, gpu_build=False)
        20
    """
    if setting != "auto":
        return int(setting)
    cuda = cuda_available() if cuda is None else cuda
    if not cuda:
        return 0
    build = llama_gpu_build() if gpu_build is None else gpu_build
    if not build:
        from trainer.logs import get_logger

        get_logger().warning("a CUDA GPU is present but llama-cpp-python was built for the CPU only: the embedded "
                             "generator runs on the CPU. Rebuild it with `bash scripts/setup.sh` where nvcc exists "
                             "(CMAKE_ARGS=-DGGML_CUDA=on)")
        return 0
    return -1



def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


LLAMA_SERVER_ENV = "DOMAIN_EMBED_LLAMA_SERVER"
LLAMA_SERVER_SLOTS = 16  # 1.57x one-at-a-time on 2 cores (BENCHMARKS.md, "requests in flight")


def built_llama_server() -> Path:
    """Where ``scripts/build_llama_server.sh`` puts llama-server."""
    return Path.home() / ".cache" / "domain-embed" / "llama-server" / "build" / "bin" / "llama-server"


def llama_server_binary() -> str | None:
    """llama.cpp's ``llama-server``: $DOMAIN_EMBED_LLAMA_SERVER (a path, or ``off`` for llama-cpp-python's server),
    else the one ``scripts/build_llama_server.sh`` builds, else one on PATH; None when there is none."""
    env = os.environ.get(LLAMA_SERVER_ENV, "").strip()
    if env.lower() in ("off", "0", "false", "none"):
        return None
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise ServerError(f"{LLAMA_SERVER_ENV}={env} is not an executable llama-server binary: build one with "
                              "`bash scripts/build_llama_server.sh`, or unset it to use llama-cpp-python's server")
        return env
    built = built_llama_server()
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    return shutil.which("llama-server")


class LocalLLMServer:
    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        log_path: Path | None = None,
        start_timeout: float = 180.0,
        n_gpu_layers: int = 0,
        binary: str | None = None,
        slots: int = LLAMA_SERVER_SLOTS,
    ):
        self.model_path = Path(model_path)
        self.binary = binary  # llama-server; None: llama-cpp-python's server
        self.slots = slots if binary else 1  # requests in flight it serves at once
        self.n_gpu_layers = n_gpu_layers
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2))
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._recovering = threading.Lock()

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise ServerError("server not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        if self.binary:  # every slot gets n_ctx tokens of context
            return [
                self.binary, "-m", str(self.model_path), "--host", "127.0.0.1", "--port", str(self.port),
                "--parallel", str(self.slots), "--cont-batching", "-c", str(self.n_ctx * self.slots),
                "-t", str(self.n_threads), "-tb", str(self.n_threads), "--n-gpu-layers", str(self.n_gpu_layers),
            ]
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads),
            "--n_gpu_layers", str(self.n_gpu_layers),
            "--verbose", "false",
        ]

    def start(self) -> LocalLLMServer:
        try:
            if not self.binary:
                import llama_cpp  # noqa: F401
        except ImportError:
            raise ServerError(
                "the embedded generator needs llama-cpp-python: run `bash scripts/setup.sh` (it builds the "
                "pinned wheel once), or set generate.endpoint to a TGI-compatible server"
            ) from None
        if not self.model_path.is_file():
            raise ServerError(f"generator weights not found: {self.model_path}")
        if self.port is None or not _port_free(self.port):  # a restart keeps its port if it can
            self.port = free_port()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_TOKEN", "HUGGING"))}
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, preexec_fn=_die_with_parent, start_new_session=True,
        )
        if log is not subprocess.DEVNULL:
            log.close()
            Path(self.log_path).with_suffix(".pid").write_text(str(self.proc.pid))
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"llama.cpp server exited with code {self.proc.returncode} at start"
                                  f"{self._log_tail()}")
            if self.healthy():
                get_logger().info("generator server up at %s (%s, %s)", self.base_url, self.model_path.name,
                                  f"llama-server, {self.slots} slots" if self.binary else "llama-cpp-python")
                return self
            time.sleep(0.25)
        self.stop()
        raise ServerError(f"llama.cpp server not healthy after {self.start_timeout:.0f} s{self._log_tail()}")

    def _log_tail(self) -> str:
        if not self.log_path or not Path(self.log_path).is_file():
            return ""
        tail = Path(self.log_path).read_text(errors="replace").splitlines()[-10:]
        return "; server log:\n  " + "\n  ".join(tail)

    def healthy(self, timeout: float = 2.0) -> bool:
        if self.port is None:
            return False
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=timeout) as resp:
                return resp.status == 200 and "data" in json.loads(resp.read())
        except (OSError, ValueError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_alive(self) -> bool:
        """Restart the server if it died or stopped answering; True when a restart happened.

        One caller at a time: concurrent requests that fail together restart it once, and a server that is
        merely busy (a slow answer on a loaded machine) gets a patient health check, not a restart.
        """
        with self._recovering:
            if self.alive() and self.healthy(timeout=15.0):
                return False
            get_logger().warning("generator server is down; restarting it")
            self.stop()
            self.restarts += 1
            self.start()
            return True

    def recover(self) -> str:
        """``ensure_alive``, then the base URL to use (a restart moves to a new port if the old one is taken)."""
        self.ensure_alive()
        return self.base_url

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_group(proc)

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
