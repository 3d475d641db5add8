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

Requests are cut into micro-batches (at most ``batch_size`` inputs, about ``MICRO_BATCH_TOKENS`` tokens)
that one worker serves round-robin across the requests in flight, so a 2,048-input request delays a
one-input request by at most one micro-batch per request ahead of it. Memory goes back to the OS:
ONNX Runtime's arena after every run, and after a big request the freed heap (gc, then glibc's
``malloc_trim``). Bodies nested deeper than ``MAX_JSON_DEPTH`` and text that is not valid
Unicode (a lone surrogate such as ``"\\ud800"``) get a 400.

Served by default from what the export stage chose as fastest on its CPU (the folder's ``serving.json``:
an ONNX file, an OpenVINO file, or the PyTorch model, in bfloat16 when that won), else ``onnx/model.onnx``;
``int8=True`` serves the ONNX int8 file for this CPU and ``file_name`` any file of the folder (``.onnx``,
OpenVINO ``.xml``, or ``pytorch`` / ``pytorch:bfloat16``). Bound to
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
import asyncio
import base64
import concurrent.futures
import contextlib
import ctypes
import gc
import hmac
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from trainer._process import stop_group
from trainer.errors import InputError, TrainerError, disk_error
from trainer.export import (
    PYTORCH,
    PYTORCH_BF16,
    SERVING_FILE,
    cpu_name,
    load_bf16,
    load_onnx,
    load_openvino,
    openvino_unavailable,
    pick_int8_config,
)
from trainer.files import free_port
from trainer.llm_server import _die_with_parent
from trainer.logs import get_logger
from trainer.pipeline import output_path

MAX_BATCH = 2048  # inputs per request (OpenAI's limit)
MAX_INPUT_CHARS = 50_000  # per input; text past the model's token limit is truncated anyway
MAX_REQUEST_BYTES = 32 * 1024 * 1024
MICRO_BATCH_TOKENS = 2048  # model work per turn (~8 inputs at 256 tokens): what a small request waits per request
MAX_JSON_DEPTH = 16  # a request is 2 deep ({"input": [...]}); deeper bodies only cost parsing time
TRIM_AFTER_BYTES = 1024 * 1024  # a request body this large hands its memory back to the OS when answered
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


def serving_choice(folder: Path) -> dict[str, Any]:
    """What the export stage chose to serve (the folder's serving.json); empty when it chose nothing."""
    path = folder / SERVING_FILE
    if not path.is_file():
        return {}
    try:
        choice = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        get_logger().warning("embeddings server: %s unreadable (%s); serving %s", path, exc, FP32_FILE)
        return {}
    return choice if isinstance(choice, dict) else {}


def pytorch_weights(folder: Path) -> Path | None:
    """The PyTorch model behind an exported folder: the folder itself when it holds the weights (a Hub
    download), else the trained model its serving.json names (a run's export)."""
    named = serving_choice(folder).get("pytorch_model")
    for candidate in (folder, *([Path(named)] if isinstance(named, str) else [])):
        if (candidate / "modules.json").is_file() and any(
                (candidate / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
            return candidate
    return None


def _chosen_file(folder: Path) -> str | None:
    """The export stage's choice for this folder (PYTORCH, PYTORCH_BF16, an ONNX or OpenVINO file), or None to
    serve ONNX fp32."""
    choice, log = serving_choice(folder), get_logger()
    if not choice:
        return None
    measured_on, why = choice.get("cpu") or "?", choice.get("why") or "recorded by the export stage"
    if measured_on != cpu_name():
        log.warning("embeddings server: the export stage timed the candidates on %s, this is %s: its choice may "
                    "not be the fastest here; re-run `python -m trainer export --force` on this machine, or pass "
                    "--file / --int8", measured_on, cpu_name())
    if choice.get("backend") == PYTORCH:
        if pytorch_weights(folder) is not None:
            bf16 = choice.get("dtype") == "bfloat16"
            log.info("embeddings server: serving the PyTorch model%s, not ONNX: %s", " in bfloat16" if bf16 else "",
                     why)
            return PYTORCH_BF16 if bf16 else PYTORCH
        log.warning("embeddings server: the export stage found PyTorch fastest on %s, but its weights are not "
                    "here (%s); serving %s, which may be slower (pass --file to choose another)",
                    measured_on, choice.get("pytorch_model"), FP32_FILE)
        return None
    file = choice.get("file")
    if choice.get("backend") == "openvino" and (missing := openvino_unavailable()) is not None:
        log.warning("embeddings server: the export stage chose OpenVINO (%s), but it is not installed here: %s; "
                    "serving %s", file, missing, FP32_FILE)
        return None
    if isinstance(file, str) and (folder / file).is_file():
        log.info("embeddings server: serving %s: %s", file, why)
        return file
    log.warning("embeddings server: %s names %s, which is not in %s; serving %s", SERVING_FILE, file, folder,
                FP32_FILE)
    return None


def pick_onnx_file(folder: Path, *, int8: bool = False, file_name: str | None = None) -> str:
    """The file to serve: the one named, the int8 file for this CPU, else the export stage's choice
    (serving.json: an ONNX file, or PYTORCH when PyTorch was fastest), else onnx/model.onnx."""
    if file_name in (PYTORCH, PYTORCH_BF16):
        return file_name
    if file_name:
        if not (folder / file_name).is_file():
            raise InputError(f"{folder / file_name} not found")
        return file_name
    if not int8:
        chosen = _chosen_file(folder)
        if chosen is not None:
            return chosen
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
            self.model = _load(folder, file_name)
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
        _shrink_arena_after_each_run(self.model)

    def count_tokens(self, texts: list[str]) -> int:
        ids = self.model.tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]
        return sum(len(x) for x in ids)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Full-size embeddings of ``texts`` (float32) and their token count."""
        with self.lock:
            tokens = self.count_tokens(texts)
            emb = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                    show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32), tokens

    def embed(self, texts: list[str], dimensions: int | None = None) -> tuple[np.ndarray, int]:
        emb, tokens = self.encode(texts)
        return truncate(emb, dimensions, self.dim), tokens


def _load(folder: Path, file_name: str) -> Any:
    """The model behind ``file_name``: PYTORCH / PYTORCH_BF16, an OpenVINO .xml, else an ONNX file."""
    if file_name.endswith(".xml"):
        return load_openvino(folder, file_name)
    if file_name not in (PYTORCH, PYTORCH_BF16):
        return load_onnx(folder, file_name)
    from sentence_transformers import SentenceTransformer

    weights = pytorch_weights(folder)
    if weights is None:
        raise InputError(f"no PyTorch weights for {folder} (neither there nor where its {SERVING_FILE} says); "
                         "serve an ONNX file with --file onnx/model.onnx")
    return load_bf16(weights) if file_name == PYTORCH_BF16 else SentenceTransformer(str(weights), device="cpu")


def backend_and_precision(file_name: str) -> tuple[str, str]:
    """What /health reports for a served file: ("onnx", "int8"), ("pytorch", "bfloat16"), ..."""
    if file_name in (PYTORCH, PYTORCH_BF16):
        return PYTORCH, "bfloat16" if file_name == PYTORCH_BF16 else "float32"
    return "openvino" if file_name.endswith(".xml") else "onnx", "int8" if "int8" in file_name else "float32"


class _ShrinkingSession:
    """An ONNX Runtime session whose every run hands its CPU arena back: without it the arena keeps the
    largest batch's activations for good (+500 MB after 32 inputs of 256 tokens with all-MiniLM-L6-v2)."""

    def __init__(self, session: Any):
        import onnxruntime

        self._session = session
        self._options = onnxruntime.RunOptions()
        self._options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, input_feed, run_options or self._options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _shrink_arena_after_each_run(model: Any) -> None:
    ort_model = getattr(model[0], "auto_model", None)  # optimum's ORTModel behind sentence-transformers
    session = getattr(ort_model, "session", None)
    if session is not None and hasattr(session, "run") and not isinstance(session, _ShrinkingSession):
        ort_model.session = _ShrinkingSession(session)


def truncate(emb: np.ndarray, dimensions: int | None, dim: int) -> np.ndarray:
    """Matryoshka: the first ``dimensions`` values, renormalized."""
    if dimensions is not None and dimensions < dim:
        emb = emb[:, :dimensions]
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb.astype(np.float32)


def release_memory() -> None:
    """Hand freed memory back to the OS: glibc keeps the heap pages of a big request's body, texts and
    vectors after they are freed unless asked to trim."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


@dataclass(eq=False)
class _Job:
    """One request's inputs, longest first (less padding per micro-batch), and what is done of them."""

    texts: list[str]
    order: list[int]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    done: int = 0
    tokens: int = 0
    parts: list[np.ndarray] = field(default_factory=list)


class FairScheduler:
    """One worker thread runs the model; each request is cut into micro-batches (at most ``batch_size``
    inputs and about ``token_budget`` tokens of padded work) served round-robin across the requests
    waiting, so a small request waits one micro-batch per request ahead of it, never a big one's end."""

    def __init__(self, embedder: Embedder, batch_size: int, token_budget: int = MICRO_BATCH_TOKENS):
        self.embedder, self.batch_size, self.token_budget = embedder, max(1, batch_size), token_budget
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="embedder", daemon=True)
        self._thread.start()

    def submit(self, texts: list[str]) -> concurrent.futures.Future:
        """A future of (embeddings in input order, token count); cancelling it drops the rest of the work."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        job = _Job(texts, order)
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def _take(self, job: _Job) -> int:
        """How many of the job's next inputs make a micro-batch: the longest comes first and sets the padding
        (about 4 characters a token, capped at the model's limit)."""
        longest = min(self.embedder.max_tokens, len(job.texts[job.order[job.done]]) // 4 + 2)
        return max(1, min(self.batch_size, self.token_budget // longest))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                job = self._jobs.popleft()
            if job.future.cancelled():  # the client went away
                continue
            batch = [job.texts[i] for i in job.order[job.done:job.done + self._take(job)]]
            try:
                emb, tokens = self.embedder.encode(batch)
            except Exception as exc:  # noqa: BLE001 - the worker lives on; the request gets a 500
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    job.future.set_exception(exc)
                continue
            job.parts.append(emb)
            job.done += len(batch)
            job.tokens += tokens
            if job.done < len(job.texts):
                with self._cond:
                    self._jobs.append(job)  # back of the line: every other request gets a turn first
                continue
            out = np.empty((len(job.texts), emb.shape[1]), dtype=np.float32)
            out[job.order] = np.concatenate(job.parts)
            job.parts.clear()
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                job.future.set_result((out, job.tokens))


# ---------------------------------------------------------------------------------------------------
# Request validation

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep the arrays and objects of the JSON text ``raw`` nest (brackets inside strings do not count);
    any value up to ``limit`` when fewer brackets than that are in the text at all (the common case, free)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return min(limit, raw.count(b"[") + raw.count(b"{"))
    chars = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    steps = np.isin(chars, (ord("["), ord("{"))).astype(np.int32) - np.isin(chars, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def _lone_surrogate(text: str) -> int | None:
    """Where ``text`` holds a lone surrogate (not Unicode text: it cannot be encoded), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


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
        at = _lone_surrogate(text)
        if at is not None:
            raise ApiError(400, f"{where} is not valid Unicode: a lone surrogate (U+{ord(text[at]):04X}) at "
                           f"character {at}. Send UTF-8 text; a \\u escape of a surrogate must come in a "
                           "high+low pair", "input", "invalid_unicode")

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
    if model is not None and (not isinstance(model, str) or _lone_surrogate(model) is not None):
        raise ApiError(400, "'model' must be a string of valid Unicode", "model")
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
    backend, precision = backend_and_precision(embedder.file_name)
    app = FastAPI(title="domain-embed embeddings", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.embedder = embedder
    app.state.scheduler = scheduler = FairScheduler(embedder, batch_size)
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
    async def embeddings(request: Request) -> Response:
        _authorize(request)
        raw = await _read_body(request)
        depth = json_depth(raw)
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, f"the request body nests arrays/objects {depth} levels deep; the limit is "
                           f"{MAX_JSON_DEPTH} (an embeddings request needs 2)")
        try:
            body = json.loads(raw)
        except UnicodeDecodeError:
            raise ApiError(400, "the request body is not valid UTF-8") from None
        except (json.JSONDecodeError, RecursionError):
            raise ApiError(400, "the request body is not valid JSON") from None
        texts, dims, fmt, model = parse_request(body, dim=embedder.dim, max_batch=max_batch,
                                                max_input_chars=max_input_chars)
        if model is not None and model != name:
            raise ApiError(404, f"the model {model!r} does not exist; this server serves {name!r}", "model",
                           "model_not_found")
        big = len(raw) >= TRIM_AFTER_BYTES
        del raw, body  # not kept alive while the request waits its turns
        emb, tokens = await asyncio.wrap_future(scheduler.submit(texts))
        content = await run_in_threadpool(_render, truncate(emb, dims, embedder.dim), fmt, tokens)
        return Response(content, media_type="application/json",
                        background=BackgroundTask(release_memory) if big else None)

    def _render(emb: np.ndarray, fmt: str, tokens: int) -> bytes:
        data = [{"object": "embedding", "index": i,
                 "embedding": encode_base64(v) if fmt == "base64" else v.tolist()} for i, v in enumerate(emb)]
        return json.dumps({"object": "list", "data": data, "model": name,
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")

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
                "backend": backend,
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
    parser.add_argument("--int8", action="store_true", help="serve the int8 file for this CPU instead of the "
                        "export stage's choice (serving.json) or fp32")
    parser.add_argument("--file", default=None, help="serve this file of the folder (e.g. onnx/model_O2.onnx, "
                        "openvino/openvino_model.xml), or 'pytorch' / 'pytorch:bfloat16' for the PyTorch model")
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
