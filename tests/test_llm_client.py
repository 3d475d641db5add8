"""The Messages API client and the embedded llama.cpp server, against a real server (SmolLM2-135M)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from trainer._process import pid_alive
from trainer.llm_client import ChatClient, EndpointError, token_for
from trainer.llm_server import LocalLLMServer
from trainer.models import resolve_generator

from .fault_proxy import FaultProxy

MSGS = [{"role": "user", "content": "Write one word: hello"}]
TOKEN = "hf_PlantedFakeTokenForTests0123456789"
HUB_TOKEN = "hf_PlantedHubTokenNotForEndpoints0123"
ENDPOINT_TOKEN = "tgi-Zx9Qm2LpR7tVbN4cKw8YjH3sDf6GaE1uW5"


@pytest.fixture(scope="module")
def server():
    with LocalLLMServer(resolve_generator("smollm2-135m-instruct-q4_1"), n_threads=1) as srv:
        yield srv


def test_chat_round_trip(server):
    client = ChatClient(server.base_url, max_retries=0)
    text = client.chat(MSGS, max_tokens=8, temperature=0.0, seed=1)
    assert isinstance(text, str) and text.strip()
    assert client.chat(MSGS, max_tokens=8, temperature=0.0, seed=1) == text  # seeded: reproducible


def test_json_mode_output_parses(server):
    import json

    client = ChatClient(server.base_url, max_retries=0)
    fmt = {"type": "json_object", "schema": {"type": "object", "properties": {"word": {"type": "string"}},
                                             "required": ["word"]}}
    out = json.loads(client.chat(MSGS, max_tokens=32, temperature=0.0, response_format=fmt))
    assert isinstance(out["word"], str)


def test_token_is_sent_but_never_shown(server):
    with FaultProxy(server.base_url) as proxy:
        client = ChatClient(proxy.base_url, token=TOKEN, max_retries=1, backoff_s=0.01)
        assert client.chat(MSGS, max_tokens=4)
        assert proxy.auth_headers[-1] == f"Bearer {TOKEN}"
        proxy.fail, proxy.status = 5, 503
        with pytest.raises(EndpointError) as info:
            client.chat(MSGS, max_tokens=4)
        assert TOKEN not in str(info.value) and "failed after 2 attempts" in str(info.value)


@pytest.mark.parametrize("status", [429, 503, 502])
def test_retries_with_backoff(server, status):
    with FaultProxy(server.base_url) as proxy:
        proxy.fail, proxy.status = 2, status
        client = ChatClient(proxy.base_url, max_retries=3, backoff_s=0.01)
        assert client.chat(MSGS, max_tokens=4)
        assert client.stats["retries"] == 2 and proxy.requests == 3


def test_client_errors_are_not_retried(server):
    with FaultProxy(server.base_url) as proxy:
        proxy.fail, proxy.status = 1, 400
        client = ChatClient(proxy.base_url, max_retries=3, backoff_s=0.01)
        with pytest.raises(EndpointError, match="refused the request"):
            client.chat(MSGS, max_tokens=4)
        assert proxy.requests == 1


def test_connection_refused_gives_up_cleanly():
    client = ChatClient("http://127.0.0.1:9/v1", max_retries=1, backoff_s=0.01, timeout=2)
    with pytest.raises(EndpointError, match="failed after 2 attempts"):
        client.chat(MSGS, max_tokens=4)


def test_hub_stays_blocked_offline_while_loopback_works(server):
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.utils import get_session

    ChatClient(server.base_url).chat(MSGS, max_tokens=2)
    with pytest.raises(OfflineModeIsEnabled):
        get_session().get("https://huggingface.co/api/models")


def test_dead_server_is_restarted_by_the_client_hook():
    with LocalLLMServer(resolve_generator("smollm2-135m-instruct-q4_1"), n_threads=1) as srv:
        client = ChatClient(srv.base_url, max_retries=3, backoff_s=0.05, on_connection_error=srv.ensure_alive)
        assert client.chat(MSGS, max_tokens=4)
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
        assert client.chat(MSGS, max_tokens=4)  # connection refused -> hook restarts it -> retry succeeds
        assert srv.restarts == 1 and client.stats["retries"] >= 1


def test_concurrent_failures_restart_once_and_the_client_follows_a_new_port():
    import socket
    from concurrent.futures import ThreadPoolExecutor

    with LocalLLMServer(resolve_generator("smollm2-135m-instruct-q4_1"), n_threads=1) as srv:
        client = ChatClient(srv.base_url, max_retries=3, backoff_s=0.05, timeout=3, on_connection_error=srv.recover)
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
        with ThreadPoolExecutor(2) as pool:  # two requests fail together: one restart, one server
            urls = list(pool.map(lambda _: srv.recover(), range(2)))
        assert srv.restarts == 1 and urls[0] == urls[1] == srv.base_url

        old = srv.port
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
        with socket.socket() as squatter:  # another program takes the old port: requests there time out
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", old))
            squatter.listen()
            assert client.chat(MSGS, max_tokens=4)
        assert srv.port != old and client.base_url == srv.base_url and srv.restarts == 2


def test_server_is_stopped_on_exit_and_with_its_parent(tmp_path):
    with LocalLLMServer(resolve_generator("smollm2-135m-instruct-q4_1"), n_threads=1) as srv:
        pid = srv.proc.pid
    assert srv.proc is None and not pid_alive(pid)

    # a parent killed with SIGKILL takes its server with it (PR_SET_PDEATHSIG)
    code = (
        "import os, signal, sys\n"
        "from trainer.llm_server import LocalLLMServer\n"
        "from trainer.models import resolve_generator\n"
        "s = LocalLLMServer(resolve_generator('smollm2-135m-instruct-q4_1'), n_threads=1).start()\n"
        "print(s.proc.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    child = int(out.stdout.split()[0])
    deadline = time.time() + 15
    while pid_alive(child) and time.time() < deadline:
        time.sleep(0.2)
    assert not pid_alive(child)


def test_streaming_mode_collects_the_same_text(server):
    plain = ChatClient(server.base_url, max_retries=0)
    streamed = ChatClient(server.base_url, max_retries=0)
    streamed.stream = True  # what the client switches to for servers that always stream
    kw = {"max_tokens": 8, "temperature": 0.0, "seed": 3}
    assert streamed.chat(MSGS, **kw) == plain.chat(MSGS, **kw)


def test_switches_to_streaming_for_servers_that_always_stream(server):
    with FaultProxy(server.base_url) as proxy:
        proxy.always_stream = True
        client = ChatClient(proxy.base_url, max_retries=0)
        kw = {"max_tokens": 8, "temperature": 0.0, "seed": 3}
        assert client.chat(MSGS, **kw) == ChatClient(server.base_url, max_retries=0).chat(MSGS, **kw)
        assert client.stream is True


# --- replies that are not chat completions (the proxy answers them itself: no upstream needed) ------

NOWHERE = "http://127.0.0.1:9/v1"  # the proxy's upstream, never reached in these tests


def test_a_200_without_choices_is_an_endpoint_error_quoting_the_reply():
    with FaultProxy(NOWHERE) as proxy:
        proxy.bad_replies, proxy.bad_body = 1, b'{"error": {"message": "model is loading"}}'
        client = ChatClient(proxy.base_url, max_retries=2, backoff_s=0.01)
        with pytest.raises(EndpointError) as info:
            client.chat(MSGS, max_tokens=4)
    msg = str(info.value)
    assert "not with a chat completion" in msg and "model is loading" in msg and "/v1" in msg
    assert proxy.requests == 1  # a server that answers junk is not asked again


def test_a_200_that_is_not_json_is_not_taken_for_a_stream():
    with FaultProxy(NOWHERE) as proxy:
        proxy.bad_replies, proxy.bad_type = 2, "text/html"
        proxy.bad_body = b"<html><body>Sign in to continue</body></html>"
        client = ChatClient(proxy.base_url, max_retries=0)
        with pytest.raises(EndpointError, match=r"not JSON: '<html><body>Sign in to continue"):
            client.chat(MSGS, max_tokens=4)
        assert client.stream is False and proxy.requests == 1


@pytest.mark.parametrize(("status", "token", "said"), [
    (401, TOKEN, "rejected the token"), (403, TOKEN, "rejected the token"), (401, None, "requires a token"),
])
def test_401_and_403_say_the_token_is_rejected(status, token, said):
    with FaultProxy(NOWHERE) as proxy:
        proxy.fail, proxy.status = 3, status
        client = ChatClient(proxy.base_url, token=token, max_retries=2, backoff_s=0.01)
        with pytest.raises(EndpointError) as info:
            client.chat(MSGS, max_tokens=4)
    msg = str(info.value)
    assert said in msg and f"HTTP {status}" in msg and "HF_TOKEN" in msg and TOKEN not in msg
    assert info.value.exhausted and proxy.requests == 1  # no retry: the same token fails again


def test_the_hub_token_is_sent_to_hugging_face_only(monkeypatch):
    """HF_TOKEN used to go as Bearer to any endpoint: passed (generate.token_env=HF_TOKEN, the default) or
    found by huggingface_hub itself. A down upstream answers 502: the header sent is what counts."""
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    with FaultProxy("http://127.0.0.1:9/v1") as proxy:
        for token in (HUB_TOKEN, None):
            with pytest.raises(EndpointError):
                ChatClient(proxy.base_url, token=token, max_retries=0).chat(MSGS, max_tokens=4)
        assert proxy.auth_headers == ["", ""]
        with pytest.raises(EndpointError):  # a token the user named for this endpoint is sent to it
            ChatClient(proxy.base_url, token=ENDPOINT_TOKEN, max_retries=0).chat(MSGS, max_tokens=4)
        assert proxy.auth_headers[-1] == f"Bearer {ENDPOINT_TOKEN}"
        monkeypatch.setenv("HF_ENDPOINT", proxy.base_url.rsplit("/v1", 1)[0])  # the configured Hub
        with pytest.raises(EndpointError):
            ChatClient(proxy.base_url, token=HUB_TOKEN, max_retries=0).chat(MSGS, max_tokens=4)
        assert proxy.auth_headers[-1] == f"Bearer {HUB_TOKEN}"


def test_which_hosts_get_the_hub_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    for url in ("https://huggingface.co/v1", "https://router.huggingface.co/v1",
                "https://x1y2.us-east-1.aws.endpoints.huggingface.cloud/v1", "https://me-my-space.hf.space/v1"):
        assert token_for(url, HUB_TOKEN) == HUB_TOKEN, url
    for url in ("https://evilhuggingface.co/v1", "https://huggingface.co.evil.example/v1",
                "https://tgi.example.com/v1", "http://127.0.0.1:8080/v1"):
        assert token_for(url, HUB_TOKEN) is None, url
    assert token_for("https://tgi.example.com/v1", ENDPOINT_TOKEN) == ENDPOINT_TOKEN


def test_no_token_crosses_plain_http_to_another_machine(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    with pytest.raises(EndpointError, match=r"refusing to send a token to tgi\.example\.com over plain http") as info:
        ChatClient("http://tgi.example.com/v1", token=ENDPOINT_TOKEN)
    assert ENDPOINT_TOKEN not in str(info.value)
    with pytest.raises(EndpointError, match="over plain http"):
        ChatClient("http://huggingface.co/v1", token=ENDPOINT_TOKEN)
    ChatClient("http://tgi.example.com/v1")  # without a token: fine (nothing is contacted here)
    ChatClient("http://localhost:8080/v1", token=ENDPOINT_TOKEN)  # loopback: fine
