"""The embedded generator's server: which llama.cpp server runs (llama-server when built, else
llama-cpp-python's), how it is started, and the generate stage batching over llama-server's slots."""

import os
import stat

import datasets
import pytest

from trainer.llm_server import (
    LLAMA_SERVER_ENV,
    LocalLLMServer,
    ServerError,
    built_llama_server,
    llama_server_binary,
)

from .test_generate import _cfg, _run


def _executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_which_server_binary(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv(LLAMA_SERVER_ENV, raising=False)
    assert llama_server_binary() is None  # nothing built: llama-cpp-python's server
    built = _executable(built_llama_server())
    assert built.is_relative_to(tmp_path)
    assert llama_server_binary() == str(built)  # what scripts/build_llama_server.sh builds
    monkeypatch.setenv(LLAMA_SERVER_ENV, "off")
    assert llama_server_binary() is None
    mine = _executable(tmp_path / "bin/my-llama-server")
    monkeypatch.setenv(LLAMA_SERVER_ENV, str(mine))
    assert llama_server_binary() == str(mine)
    not_exe = tmp_path / "llama-server.txt"
    not_exe.write_text("x")
    monkeypatch.setenv(LLAMA_SERVER_ENV, str(not_exe))
    with pytest.raises(ServerError, match=r"build_llama_server\.sh"):
        llama_server_binary()


def test_server_commands(tmp_path):
    batching = LocalLLMServer(tmp_path / "m.gguf", n_ctx=2048, n_threads=2, binary="/opt/llama-server", slots=4)
    batching.port = 8123
    cmd = batching.command()
    assert cmd[0] == "/opt/llama-server" and batching.slots == 4
    assert cmd[cmd.index("--parallel") + 1] == "4" and cmd[cmd.index("-c") + 1] == str(4 * 2048)  # n_ctx per slot
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    python = LocalLLMServer(tmp_path / "m.gguf", n_threads=2, slots=4)
    python.port = 8124
    assert python.slots == 1 and python.command()[1:3] == ["-m", "llama_cpp.server"]  # one at a time


BUILT = os.environ.get("DOMAIN_EMBED_TEST_LLAMA_SERVER") or str(built_llama_server())


@pytest.mark.skipif(not os.access(BUILT, os.X_OK), reason="no llama-server built (bash scripts/build_llama_server.sh); "
                    "the stage then uses llama-cpp-python's server, tested in test_generate.py")
def test_generate_stage_batches_on_llama_server(tmp_path, monkeypatch):
    monkeypatch.setenv(LLAMA_SERVER_ENV, BUILT)
    cfg = _cfg(tmp_path, "generate.concurrency=3")
    out = _run(cfg)[-1]
    counts = out.manifest["counts"]
    assert counts["embedded_server"] == "llama-server" and counts["concurrency"] == 3
    assert counts["tasks_done"] == 6 and counts["queries"] + counts["rejected"] == 6 and counts["queries"] >= 1
    queries = datasets.load_from_disk(str(tmp_path / "stages/generate/queries"))
    assert all(q["query"] for q in queries)
