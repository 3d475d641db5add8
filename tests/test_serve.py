"""The OpenAI-compatible embeddings server, called with the real ``openai`` client.

The base model (all-MiniLM-L6-v2) is exported once to ONNX (fp32 + int8) and served by
``python -m trainer.serve`` on 127.0.0.1 and a free port, stopped after the module.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from trainer.errors import InputError
from trainer.export import cosines, export_onnx, load_onnx, pick_int8_config
from trainer.models import resolve_model
from trainer.serve import (
    ApiError,
    EmbeddingServer,
    build_app,
    default_model_name,
    encode_base64,
    find_model_folder,
    parse_request,
    release_memory,
)

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["What lowers LDL cholesterol?", "Statins inhibit HMG-CoA reductase in the liver.", "x"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The base model exported like the stage does it: runs/<name>/stages/export/onnx."""
    out = tmp_path_factory.mktemp("serve") / "tiny-run" / "stages" / "export" / "onnx"
    out.parent.mkdir(parents=True)
    export_onnx(resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True), out,
                int8_config=pick_int8_config())
    return out


@pytest.fixture(scope="module")
def server(exported):
    with EmbeddingServer(exported) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(exported) -> np.ndarray:
    return load_onnx(exported).encode(TEXTS, convert_to_numpy=True)


def test_models_and_health(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-run"]  # named after the run
    health = httpx.get(f"http://127.0.0.1:{server.port}/health").json()
    assert health["status"] == "ok" and health["precision"] == "float32" and health["dimensions"] == 384
    assert health["file"] == "onnx/model.onnx" and health["normalized"] is True


def test_embeddings_match_the_model(client, reference, exported):
    # openai-python asks for base64 by default and decodes it: the round trip is exercised here
    resp = client.embeddings.create(model="tiny-run", input=TEXTS)
    got = np.array([d.embedding for d in resp.data])
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert resp.model == "tiny-run" and resp.object == "list"
    np.testing.assert_allclose(got, reference, atol=1e-5)
    tokenizer = load_onnx(exported).tokenizer
    expected = sum(len(ids) for ids in tokenizer(TEXTS)["input_ids"])
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == expected


def test_float_and_base64_agree(client, server, reference):
    floats = client.embeddings.create(model="tiny-run", input=TEXTS[0], encoding_format="float")
    assert len(floats.data) == 1 and len(floats.data[0].embedding) == 384
    raw = httpx.post(f"{server.base_url}/embeddings",
                     json={"model": "tiny-run", "input": TEXTS[0], "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, np.array(floats.data[0].embedding, dtype=np.float32))
    np.testing.assert_allclose(decoded, reference[0], atol=1e-5)


def test_dimensions_truncate_and_renormalize(client, reference):
    resp = client.embeddings.create(model="tiny-run", input=TEXTS, dimensions=128, encoding_format="float")
    got = np.array([d.embedding for d in resp.data])
    assert got.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cut = reference[:, :128] / np.linalg.norm(reference[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(got, cut, atol=1e-5)
    full = client.embeddings.create(model="tiny-run", input=TEXTS, dimensions=384, encoding_format="float")
    np.testing.assert_allclose(np.array([d.embedding for d in full.data]), reference, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"input": ""}, "'input' is empty"),
    ({"input": []}, "must not be an empty list"),
    ({"input": ["ok", "  "]}, r"'input\[1\]' is empty"),
    ({"input": ["x"] * 10_000}, "10000 items; at most 2048 inputs"),
    ({"input": 42}, "'input' is int"),
    ({"input": ["ok", 3.5]}, r"'input\[1\]' is float"),
    ({"input": [{"text": "nested"}]}, r"'input\[0\]' is dict"),
    ({"input": {"text": "nested"}}, "'input' is dict"),
    ({"input": [101, 2023, 102]}, "token-id arrays are not supported"),
    ({"input": [[101, 2023], [102]]}, "token-id arrays are not supported"),
    ({"input": "ok", "dimensions": 0}, "'dimensions' must be an integer from 1 to 384"),
    ({"input": "ok", "dimensions": 385}, "'dimensions' must be an integer from 1 to 384"),
    ({"input": "ok", "encoding_format": "int8"}, "'encoding_format' must be 'float' or 'base64'"),
    ({"input": "x" * 50_001}, "50001 characters; the limit is 50000"),
])
def test_bad_requests_are_openai_style_400s(client, kwargs, message):
    with pytest.raises(openai.BadRequestError, match=message) as info:
        client.embeddings.create(model="tiny-run", **kwargs)
    err = info.value.body
    assert info.value.status_code == 400
    assert err["type"] == "invalid_request_error" and "param" in err and "code" in err


def test_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError, match="does not exist; this server serves 'tiny-run'") as info:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert info.value.body["code"] == "model_not_found"


def test_raw_http_errors_have_openai_shape(server):
    bad_json = httpx.post(f"{server.base_url}/embeddings", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["message"] == "the request body is not valid JSON"
    missing = httpx.post(f"{server.base_url}/embeddings", json={"model": "tiny-run"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"
    nowhere = httpx.get(f"{server.base_url}/chat/completions")
    assert nowhere.status_code == 404 and "no such endpoint" in nowhere.json()["error"]["message"]
    # the server is still healthy after all of that
    assert httpx.get(f"http://127.0.0.1:{server.port}/health").status_code == 200


def test_int8_server(exported, reference):
    with EmbeddingServer(exported, int8=True) as srv:
        health = httpx.get(f"http://127.0.0.1:{srv.port}/health").json()
        assert health["precision"] == "int8" and health["file"].endswith(f"_{pick_int8_config()}.onnx")
        client = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0)
        got = np.array([d.embedding for d in client.embeddings.create(model="tiny-run", input=TEXTS).data])
    assert cosines(got, reference).min() > 0.95  # int8: close, not identical


def test_the_stages_bf16_choice_is_served_in_bf16(exported, reference, tmp_path):
    """serving.json saying PyTorch bf16 (what the export stage writes when bf16 won on an avx512_bf16 CPU):
    the server runs the trained PyTorch model in bfloat16 and answers with its vectors."""
    import json
    import shutil

    from trainer.export import SERVING_FILE, cpu_name, load_bf16

    folder = tmp_path / "bf16-run" / "stages" / "export" / "onnx"
    shutil.copytree(exported, folder)
    base = resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True)
    (folder / SERVING_FILE).write_text(json.dumps({
        "backend": "pytorch", "dtype": "bfloat16", "file": "onnx/model.onnx", "pytorch_model": str(base),
        "cpu": cpu_name(), "why": "bf16: fastest that passed parity"}))
    with EmbeddingServer(folder) as srv:
        health = httpx.get(f"http://127.0.0.1:{srv.port}/health").json()
        assert (health["backend"], health["precision"], health["file"]) == ("pytorch", "bfloat16", "pytorch:bfloat16")
        client = openai.OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0)
        got = np.array([d.embedding for d in client.embeddings.create(model="bf16-run", input=TEXTS).data])
    np.testing.assert_allclose(got, load_bf16(base).encode(TEXTS), atol=1e-5)  # what the stage measured
    assert 0.99 < cosines(got, reference).min() < 1.0  # bf16: close to fp32, not identical


def test_api_key_and_body_limit_in_process(exported):
    from fastapi.testclient import TestClient

    app = build_app(exported, api_key="s3cret", max_request_bytes=2_000, model_name="m")
    with TestClient(app) as http:
        denied = http.post("/v1/embeddings", json={"input": "hi"})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        auth = {"Authorization": "Bearer s3cret"}
        ok = http.post("/v1/embeddings", json={"input": "hi", "model": "m"}, headers=auth)
        assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == 384
        big = http.post("/v1/embeddings", json={"input": "x" * 5_000}, headers=auth)
        assert big.status_code == 413 and "over the limit" in big.json()["error"]["message"]
        assert http.get("/health").status_code == 200  # health needs no key


def test_parse_request_unit():
    texts, dims, fmt, model = parse_request({"input": "a", "model": "m"}, dim=8)
    assert (texts, dims, fmt, model) == (["a"], None, "float", "m")
    with pytest.raises(ApiError, match="at most 3 inputs"):
        parse_request({"input": ["a"] * 4}, dim=8, max_batch=3)
    with pytest.raises(ApiError, match="'dimensions' must be an integer"):
        parse_request({"input": "a", "dimensions": True}, dim=8)
    with pytest.raises(ApiError, match="JSON object"):
        parse_request(["a"], dim=8)
    assert base64.b64decode(encode_base64(np.array([1.0, -2.0]))) == np.array([1, -2], dtype="<f4").tobytes()


def test_model_folder_resolution(exported, tmp_path):
    run_dir = exported.parents[2]
    assert find_model_folder(run_dir) == exported  # a run directory works
    assert find_model_folder(exported.parent) == exported  # so does the stage folder
    assert default_model_name(exported) == "tiny-run"
    with pytest.raises(InputError, match=r"holds no exported ONNX model.*--to export"):
        find_model_folder(tmp_path)


def test_cli_reports_a_missing_model_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainer.serve", "--model", str(tmp_path / "nope")],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert "holds no exported ONNX model" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_reports_a_damaged_onnx_file_and_exits_2(tmp_path, cli):
    """A folder that looks exported (config, tokenizer, modules.json) but whose ONNX file is not a model."""
    import shutil

    src = Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True))
    folder = tmp_path / "broken"
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "onnx", "openvino"))
    (folder / "onnx").mkdir()
    (folder / "onnx/model.onnx").write_bytes(b"\x08\x07" + b"a file cut short" * 64)
    res = cli("serve", "--model", str(folder))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert f"{folder / 'onnx/model.onnx'} cannot be loaded (InvalidProtobuf" in res.stderr
    assert "export --force" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_deep_json_and_invalid_unicode_are_400s(server):
    """A 100k-deep body used to exhaust the parser's recursion and a lone surrogate the tokenizer: 500s."""
    url = f"{server.base_url}/embeddings"
    deep = httpx.post(url, content=b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                      headers={"content-type": "application/json"})
    assert deep.status_code == 400, deep.text
    assert "nests arrays/objects 100001 levels deep; the limit is 16" in deep.json()["error"]["message"]
    brackets = httpx.post(url, json={"input": "[" * 5_000 + "{" * 5_000})  # brackets in a string are text
    assert brackets.status_code == 200
    for body, where in ((b'{"input": "caf\\u00e9 \\ud800 x"}', "'input'"),
                        (b'{"input": ["ok", "\\udc00"]}', "'input[1]'")):
        lone = httpx.post(url, content=body, headers={"content-type": "application/json"})
        assert lone.status_code == 400, lone.text
        err = lone.json()["error"]
        assert err["message"].startswith(f"{where} is not valid Unicode: a lone surrogate")
        assert err["code"] == "invalid_unicode"
    bad_utf8 = httpx.post(url, content=b'{"input": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert bad_utf8.status_code == 400 and "not valid UTF-8" in bad_utf8.json()["error"]["message"]
    assert httpx.get(f"http://127.0.0.1:{server.port}/health").status_code == 200


def test_a_small_request_is_not_starved_by_a_big_one(server):
    """Micro-batches are served round-robin: a one-input request sent while a 256-input request is being
    embedded is answered before the big one is half done (it used to wait for all of it)."""
    url = f"{server.base_url}/embeddings"
    big_inputs = [f"{i} " + "statins lower cholesterol in the liver and blood " * 12 for i in range(256)]
    finished: dict[str, float] = {}

    def big() -> None:
        r = httpx.post(url, json={"input": big_inputs}, timeout=600)
        assert r.status_code == 200 and len(r.json()["data"]) == 256
        finished["big"] = time.monotonic()

    thread = threading.Thread(target=big)
    started = time.monotonic()
    thread.start()
    time.sleep(1.0)  # the big request is in the server's hands (it takes far longer than this)
    small = httpx.post(url, json={"input": "What lowers LDL cholesterol?"}, timeout=600)
    finished["small"] = time.monotonic()
    thread.join(timeout=600)
    assert small.status_code == 200 and len(small.json()["data"]) == 1
    assert "big" in finished, "the big request failed"
    assert finished["small"] - started < (finished["big"] - started) / 2, "the small request waited for the big one"


def test_release_memory_hands_freed_heap_back():
    """What the server runs after a big request: freed heap pages go back to the OS (glibc malloc_trim)."""
    import platform

    def rss_mb() -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    keep, chunks = [], []
    for i in range(2_000):  # 64 KiB blocks (under the mmap threshold) pinned apart by small live objects
        chunks.append(bytes([i % 251]) * 65_536)
        keep.append(bytes([i % 7]) * 600)
    held = rss_mb()
    chunks.clear()
    freed = rss_mb()  # glibc keeps the holes between live blocks
    release_memory()
    trimmed = rss_mb()
    # glibc may hand back the top of the heap by itself; most of it comes back only with malloc_trim
    assert freed - trimmed > 60 and freed - trimmed > held - freed, (held, freed, trimmed)
    assert len(keep) == 2_000
