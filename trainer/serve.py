"""An OpenAI-compatible embeddings server for the exported ONNX model (FastAPI + uvicorn).

Endpoints:

- ``POST /v1/embeddings``: ``{"input": str | [str, ...], "model": ..., "dimensions": int,
  "encoding_format": "float" | "base64"}`` -> ``{"object": "list", "data": [{"object": "embedding",
  "index": i, "embedding": [...] | "<base64 little-endian float32>"}], "model": ..., "usage":
  {"prompt_tokens": n, "total_tokens": n}}``. ``dimensions`` truncates (Matryoshka) and renormalizes.
  Tokens are counted with the model's tokenizer, as the model sees them (truncated at its limit).
- ``GET /v1/models``, ``GET /health``.

Bad requests get OpenAI's error shape with a 4xx status::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "input", "code": null}}

Served from ``onnx/model.onnx`` (fp32) by default, or the int8 file (``int8=True``); bound to
127.0.0.1 unless told otherwise. Set ``api_key`` (``--api-key-env NAME`` on the command line) before
binding anywhere else.

Example::

    $ python -m trainer.serve --model runs/scifact/stages/export/onnx --port 8000

    >>> from openai import OpenAI  # doctest: +SKIP
    >>> client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")  # doctest: +SKIP
    >>> client.embeddings.create(model="scifact", input=["a query"], dimensions=128)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from trainer._process import stop_group
from trainer.errors import InputError, TrainerError, disk_error
from trainer.export import load_onnx, pick_int8_config
from trainer.files import free_port
from trainer.llm_server import _die_with_parent
from trainer.logs import get_logger
from trainer.pipeline import output_path

MAX_BATCH = 2048  # inputs per request (OpenAI's limit)
MAX_INPUT_CHARS = 50_000  # per input; text past the model's token limit is truncated anyway
MAX_REQUEST_BYTES = 32 * 1024 * 1024
FP32_FILE = "onnx/model.onnx"


class ApiError(Exception):
    """A request error, answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---------------------------------------------------------------------------------------------------
# The model


def find_model_folder(path: str | Path) -> Path:
    """An exported folder from what a user may give: the folder itself, the export stage's folder, or a run."""
    p = Path(path).expanduser()
    for candidate in (p, p / "onnx", output_path(p, "export", "onnx")):
        if (candidate / "modules.json").is_file() and any(candidate.glob("onnx/*.onnx")):
            return candidate
    raise InputError(
        f"{p} holds no exported ONNX model (a sentence-transformers folder with onnx/model.onnx). Run the export "
        "stage first (`python -m trainer run --to export`), then give its output, e.g. "
        "runs/<name>/stages/export/onnx, or the run directory"
    )


def pick_onnx_file(folder: Path, *, int8: bool = False, file_name: str | None = None) -> str:
    """The ONNX file to serve: the one named, the int8 file for this CPU, or onnx/model.onnx."""
    if file_name:
        if not (folder / file_name).is_file():
            raise InputError(f"{folder / file_name} not found")
        return file_name
    if not int8:
        if not (folder / FP32_FILE).is_file():
            raise InputError(f"{folder / FP32_FILE} not found; re-run the export stage")
        return FP32_FILE
    candidates = sorted(str(p.relative_to(folder)) for p in folder.glob("onnx/model_*int8*.onnx"))
    if not candidates:
        raise InputError(f"no int8 file in {folder / 'onnx'}: export with export.int8=true, or serve fp32 "
                         "(without --int8)")

    preferred = pick_int8_config()
    return next((c for c in candidates if c.endswith(f"_{preferred}.onnx")), candidates[0])


def _damaged(path: Path, exc: BaseException) -> InputError:
    said = (str(exc).strip().splitlines() or [""])[0][:300]
    return InputError(f"{path} cannot be loaded ({type(exc).__name__}: {said}): the exported model is damaged or "
                      "incomplete; export it again (`python -m trainer export --force`), or serve another file "
                      "(--file onnx/<name>.onnx)")


class Embedder:
    """The exported model behind a lock (tokenizers are not safe to share across threads)."""

    def __init__(self, folder: Path, file_name: str, batch_size: int = 32):

        self.folder, self.file_name, self.batch_size = folder, file_name, batch_size
        try:
            self.model = load_onnx(folder, file_name)
        except (OSError, ValueError) as exc:  # a damaged config/tokenizer file, or the disk
            raise disk_error(exc) or _damaged(folder / file_name, exc) from None
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):  # InvalidProtobuf, Fail, ...: a bad file
                raise
            raise _damaged(folder / file_name, exc) from None
        dim_of = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim_of())
        self.max_tokens = int(self.model.max_seq_length)
        self.lock = threading.Lock()
        self.normalized = any(type(m).__name__ == "Normalize" for m in self.model)

    def count_tokens(self, texts: list[str]) -> int:
        ids = self.model.tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]
        return sum(len(x) for x in ids)

    def embed(self, texts: list[str], dimensions: int | None = None) -> tuple[np.ndarray, int]:
        with self.lock:
            tokens = self.count_tokens(texts)
            emb = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                    show_progress_bar=False)
        emb = np.asarray(emb, dtype=np.float32)
        if dimensions is not None and dimensions < self.dim:
            emb = emb[:, :dimensions]
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb.astype(np.float32), tokens


# ---------------------------------------------------------------------------------------------------
# Request validation


def parse_request(body: Any, *, dim: int, max_batch: int = MAX_BATCH,
                  max_input_chars: int = MAX_INPUT_CHARS) -> tuple[list[str], int | None, str, Any]:
    """Validate an embeddings request: (texts, dimensions, encoding_format, model) or an ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if "input" not in body:
        raise ApiError(400, "you must provide 'input' (a string or a list of strings)", "input",
                       "missing_required_parameter")
    raw = body["input"]
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list):
        if not raw:
            raise ApiError(400, "'input' must not be an empty list", "input")
        if len(raw) > max_batch:
            raise ApiError(400, f"'input' has {len(raw)} items; at most {max_batch} inputs per request", "input")
        if all(isinstance(x, int) and not isinstance(x, bool) for x in raw) or all(isinstance(x, list) for x in raw):
            raise ApiError(400, "token-id arrays are not supported by this server: send 'input' as text "
                           "(a string or a list of strings)", "input")
        for i, x in enumerate(raw):
            if not isinstance(x, str):
                raise ApiError(400, f"'input[{i}]' is {type(x).__name__}; every input must be a string", "input")
        texts = raw
    else:
        raise ApiError(400, f"'input' is {type(raw).__name__ if raw is not None else 'null'}; it must be a string or "
                       "a list of strings", "input")
    for i, text in enumerate(texts):
        where = "'input'" if isinstance(raw, str) else f"'input[{i}]'"
        if not text.strip():
            raise ApiError(400, f"{where} is empty (or only whitespace); every input must be a non-empty string",
                           "input")
        if len(text) > max_input_chars:
            raise ApiError(400, f"{where} has {len(text)} characters; the limit is {max_input_chars}", "input")

    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= dim):
        raise ApiError(400, f"'dimensions' must be an integer from 1 to {dim} (this model's size), got {dims!r}",
                       "dimensions")
    fmt = body.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, f"'encoding_format' must be 'float' or 'base64', got {fmt!r}", "encoding_format")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", "model")
    return texts, dims, fmt, model


def encode_base64(vector: np.ndarray) -> str:
    """As OpenAI sends it: little-endian float32 bytes, base64."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


# ---------------------------------------------------------------------------------------------------
# The app


def default_model_name(folder: Path) -> str:
    """A run's export is named after the run (runs/scifact/stages/export/onnx -> 'scifact')."""
    if len(folder.parents) > 2 and folder == output_path(folder.parents[2], "export", "onnx"):
        return folder.parents[2].name
    return folder.name


def build_app(
    model_path: str | Path,
    *,
    int8: bool = False,
    file_name: str | None = None,
    model_name: str | None = None,
    api_key: str | None = None,
    max_batch: int = MAX_BATCH,
    max_input_chars: int = MAX_INPUT_CHARS,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    batch_size: int = 32,
):
    """The FastAPI app serving the exported model at ``model_path`` (loaded now, not on the first request)."""
    folder = find_model_folder(model_path)
    embedder = Embedder(folder, pick_onnx_file(folder, int8=int8, file_name=file_name), batch_size=batch_size)
    name = model_name or default_model_name(folder)
    created = int(time.time())
    precision = "int8" if "int8" in embedder.file_name else "fp32"
    app = FastAPI(title="domain-embed embeddings", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.embedder = embedder
    log = get_logger()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path} (try POST /v1/embeddings)"
        err = ApiError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse(ApiError(400, f"invalid request: {problems}").body(), status_code=400)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("embeddings server: %s", exc)
        err = ApiError(500, f"internal error: {type(exc).__name__}", type="server_error")
        return JSONResponse(err.body(), status_code=500)

    def _authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer <key>)", code="invalid_api_key")

    async def _read_body(request: Request) -> bytes:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_request_bytes:
            raise ApiError(413, f"request body of {int(length)} bytes is over the limit of {max_request_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_request_bytes:
                raise ApiError(413, f"request body is over the limit of {max_request_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        _authorize(request)
        raw = await _read_body(request)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not valid JSON") from None
        texts, dims, fmt, model = parse_request(body, dim=embedder.dim, max_batch=max_batch,
                                                max_input_chars=max_input_chars)
        if model is not None and model != name:
            raise ApiError(404, f"the model {model!r} does not exist; this server serves {name!r}", "model",
                           "model_not_found")
        emb, tokens = await run_in_threadpool(embedder.embed, texts, dims)
        data = [{"object": "embedding", "index": i,
                 "embedding": encode_base64(v) if fmt == "base64" else v.tolist()} for i, v in enumerate(emb)]
        return JSONResponse({"object": "list", "data": data, "model": name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _authorize(request)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                            "owned_by": "domain-embed"}]}

    @app.get("/v1/models/{model_id}")
    async def model_info(model_id: str, request: Request) -> dict[str, Any]:
        _authorize(request)
        if model_id != name:
            raise ApiError(404, f"the model {model_id!r} does not exist; this server serves {name!r}", "model",
                           "model_not_found")
        return {"id": name, "object": "model", "created": created, "owned_by": "domain-embed"}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, "file": embedder.file_name, "precision": precision,
                "dimensions": embedder.dim, "max_tokens": embedder.max_tokens, "normalized": embedder.normalized}

    log.info("embeddings server: %s (%s, %s, %d dimensions)", name, folder, embedder.file_name, embedder.dim)
    return app


def serve(
    model_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    **app_kwargs: Any,
) -> None:
    """Serve the exported model at ``model_path`` until interrupted (blocking)."""
    import uvicorn

    if host not in {"127.0.0.1", "localhost", "::1"} and not app_kwargs.get("api_key"):
        get_logger().warning("embeddings server: binding to %s without an API key: anyone who can reach this port "
                             "can use it (set --api-key-env)", host)
    app = build_app(model_path, **app_kwargs)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")


# ---------------------------------------------------------------------------------------------------
# A server in a child process (tests, benchmarks)


class EmbeddingServer:
    """``python -m trainer.serve`` on 127.0.0.1 and a free port, stopped on exit (and if the parent dies)."""

    def __init__(self, model_path: str | Path, *, int8: bool = False, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, start_timeout: float = 180.0):
        self.model_path = Path(model_path)
        self.int8 = int8
        self.extra_args = extra_args or []
        self.env = env or {}
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_file: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> EmbeddingServer:

        self.port = free_port()
        cmd = [sys.executable, "-m", "trainer.serve", "--model", str(self.model_path), "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning", *(["--int8"] if self.int8 else []),
               *self.extra_args]
        self.log_file = tempfile.TemporaryFile()  # noqa: SIM115  (a file, not a pipe: a full pipe blocks the server)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env}, preexec_fn=_die_with_parent,
                                     start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TrainerError(f"embeddings server exited with code {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError, ValueError), \
                    urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return self
            time.sleep(0.25)
        self.stop()
        raise TrainerError(f"embeddings server not healthy after {self.start_timeout:.0f} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_group(proc, timeout=15)

    def output(self, limit: int = 3000) -> str:
        """The end of the server's output (stdout and stderr)."""
        if self.log_file is None:
            return ""
        self.log_file.seek(0)
        return self.log_file.read().decode(errors="replace")[-limit:]

    def __enter__(self) -> EmbeddingServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="exported folder (runs/<name>/stages/export/onnx) or a run dir")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--int8", action="store_true", help="serve the int8 file for this CPU instead of fp32")
    parser.add_argument("--file", default=None, help="serve this ONNX file of the folder (e.g. onnx/model_O2.onnx)")
    parser.add_argument("--name", default=None, help="model id in responses (default: the run's name)")
    parser.add_argument("--api-key-env", default=None, help="environment variable holding the API key clients "
                        "must send as 'Authorization: Bearer <key>'")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help="most inputs per request")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"error: --api-key-env {args.api_key_env}: that environment variable is not set", file=sys.stderr)
            return 2
    try:
        serve(args.model, args.host, args.port, log_level=args.log_level, int8=args.int8, file_name=args.file,
              model_name=args.name, api_key=api_key, max_batch=args.max_batch)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        error = disk_error(exc)  # a full disk, a file in the way, ...: from outside, and the user can fix it
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
