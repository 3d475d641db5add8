"""Strong generators: Inference Providers through huggingface_hub's own InferenceClient and router, and dedicated
Inference Endpoints created, resumed and paused through huggingface_hub, against loopback servers only: the
Hub-protocol test server (provider mapping, Inference Endpoints API) and a fault-injecting proxy in front of a
real llama.cpp server (SmolLM2-135M) standing in for the router and the endpoint."""

from __future__ import annotations

import json
import time

import datasets
import pytest

from trainer.config import load_config
from trainer.errors import ConfigError
from trainer.generators import ENDPOINTS_API_ENV, ROUTER_ENV, format_plan, generator_plan
from trainer.llm_client import ChatClient, EndpointError
from trainer.llm_server import LocalLLMServer
from trainer.models import resolve_generator

from .fault_proxy import FaultProxy
from .hub_server import HubServer, cleanup

HUB_TOKEN = "hf_PlantedGeneratorsToken0123456789ab"
MODEL = "test-org/tiny-instruct"
MSGS = [{"role": "user", "content": "Write one word: hello"}]


@pytest.fixture(scope="module")
def llm():
    with LocalLLMServer(resolve_generator("smollm2-135m-instruct-q4_1"), n_threads=1) as srv:
        yield srv


@pytest.fixture
def hf(monkeypatch, llm):
    """(hub server, proxy): the Hub, its Inference Endpoints API and its router, all on 127.0.0.1."""
    from huggingface_hub import constants
    from huggingface_hub.inference._providers._common import _fetch_inference_provider_mapping

    hub = HubServer.start(token=HUB_TOKEN)
    hub.provider_mappings[MODEL] = {"together": {"providerId": "tiny-on-together", "status": "live",
                                                 "task": "conversational"}}
    proxy = FaultProxy(llm.base_url).__enter__()
    hub.endpoint_url = proxy.base_url.rsplit("/v1", 1)[0]
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # what HF_ENDPOINT sets when huggingface_hub is imported
    monkeypatch.setenv(ROUTER_ENV, hub.endpoint_url)
    monkeypatch.setenv(ENDPOINTS_API_ENV, f"{hub.url}/v2")
    for name in ("INFERENCE_PROXY_TEMPLATE", "INFERENCE_ENDPOINTS_ENDPOINT"):  # restored after the test
        monkeypatch.setattr(constants, name, getattr(constants, name))
    _fetch_inference_provider_mapping.cache_clear()
    yield hub, proxy
    proxy.__exit__()
    cleanup(hub)


def _provider_client(**kw):
    return ChatClient("Inference Providers", model=MODEL, provider="auto", token=HUB_TOKEN, **kw)


# --- Inference Providers: the client ---------------------------------------------------------------


def test_provider_requests_go_through_the_router_with_the_hub_token(hf):
    hub, proxy = hf
    text = _provider_client(max_retries=0).chat(MSGS, max_tokens=8, temperature=0.0, seed=1)
    assert text.strip()
    assert proxy.paths == ["/together/v1/chat/completions"]  # "auto" -> the first provider mapped on the Hub
    assert proxy.auth_headers == [f"Bearer {HUB_TOKEN}"]
    assert json.loads(proxy.bodies[0])["model"] == "tiny-on-together"  # the provider's id for the model
    assert ("GET", f"/api/models/{MODEL}") in hub.requests


def test_provider_402_stops_at_once_with_one_message(hf):
    _, proxy = hf
    proxy.fail, proxy.status = 5, 402
    with pytest.raises(EndpointError) as info:
        _provider_client(max_retries=3, backoff_s=0.01).chat(MSGS, max_tokens=4)
    assert info.value.exhausted and proxy.requests == 1
    assert "402 Payment Required" in str(info.value) and "settings/billing" in str(info.value)
    assert HUB_TOKEN not in str(info.value)


@pytest.mark.parametrize("case", ["429-retry-after", "503-loading"])
def test_provider_429_retry_after_and_503_loading_are_waited_out(hf, case):
    _, proxy = hf
    if case == "429-retry-after":
        proxy.fail, proxy.status, proxy.retry_after = 1, 429, "1.5"
    else:  # a model loading: no Retry-After, the wait is in the body
        proxy.fail, proxy.status, proxy.retry_after = 1, 503, None
        proxy.fail_body = b'{"error": "Model test-org/tiny-instruct is currently loading", "estimated_time": 1.5}'
    client = _provider_client(max_retries=2, backoff_s=0.01)
    started = time.monotonic()
    assert client.chat(MSGS, max_tokens=4)
    assert time.monotonic() - started >= 1.5  # the announced wait, not the 10 ms backoff
    assert client.stats["retries"] == 1 and proxy.requests == 2


def test_provider_reply_without_choices_is_a_clear_error(hf):
    _, proxy = hf
    proxy.bad_replies, proxy.bad_body = 1, b'{"object": "chat.completion", "usage": {}}'
    with pytest.raises(EndpointError, match=r"Inference Providers \(auto, test-org/tiny-instruct\) answered HTTP 200"):
        _provider_client(max_retries=0).chat(MSGS, max_tokens=4)


def test_provider_without_a_token_or_unknown_says_what_to_do(hf):
    with pytest.raises(EndpointError, match="need a Hugging Face token"):
        ChatClient("x", model=MODEL, provider="auto", token=None)
    with pytest.raises(Exception, match="not an Inference Provider"):
        ChatClient("x", model=MODEL, provider="no-such-provider", token=HUB_TOKEN)


# --- the stage ----------------------------------------------------------------------------------------


def _cfg(run_dir, *extra):
    return load_config(None, [
        f"run.dir={run_dir}", "ingest.source=builtin:python-docs", "domain=code",
        "generate.sample_documents=2", "generate.max_chunks_per_document=1", "generate.questions_per_chunk=1",
        "generate.max_new_tokens=48",
        "generate.concurrency=2", "generate.max_retries=1", *extra,
    ])


def _run(cfg):
    from trainer.pipeline import run_pipeline

    return run_pipeline(cfg, to="generate")[-1]


def _assert_no_token_under(root):
    for path in root.rglob("*"):
        if path.is_file():
            assert HUB_TOKEN.encode() not in path.read_bytes(), path


def test_provider_stage_402_keeps_the_cache_and_the_rerun_does_not_pay_twice(hf, tmp_path, caplog):
    _, proxy = hf
    proxy.budget = 1  # one answer, then the credits are spent
    # the judge (on by default with a provider) is the same tiny model here: off, so that queries are kept
    cfg = _cfg(tmp_path, "generate.provider=auto", f"generate.model={MODEL}", "generate.concurrency=1",
               "generate.judge=off")
    with pytest.raises(Exception, match="402 Payment Required") as info:
        _run(cfg)
    assert "Traceback" not in str(info.value)
    first = list(proxy.paid)
    assert len(first) == 1
    proxy.budget = None
    out = _run(cfg)
    counts = out.manifest["counts"]
    again = proxy.paid[len(first):]
    assert not set(first) & set(again)  # nothing answered before was asked (and billed) again
    assert counts["cache_hits"] >= len(first) and counts["tasks_done"] == 2
    assert counts["generator"] == f"provider:auto|{MODEL}" and counts["generator_kind"] == "provider"
    card = (tmp_path / "stages/generate/README.md").read_text()
    assert f"provider:auto|{MODEL}" in card and "Inference Providers" in card
    _assert_no_token_under(tmp_path)
    assert HUB_TOKEN not in caplog.text


def _endpoint_cfg(run_dir, *extra):
    return _cfg(run_dir, "generate.inference_endpoint.name=gen-test",
                "generate.inference_endpoint.repository=test-org/tiny-instruct",
                "generate.inference_endpoint.poll_seconds=0.05", "generate.structured_output=llama.cpp",
                "generate.judge_threshold=1", *extra)


def test_inference_endpoint_is_created_used_and_paused(hf, tmp_path, caplog):
    hub, proxy = hf
    caplog.set_level("INFO")
    out = _run(_endpoint_cfg(tmp_path))
    ep = hub.endpoints[("tester", "gen-test")]
    assert hub.endpoint_events == [("create", "gen-test"), ("pause", "gen-test")] and ep["state"] == "paused"
    assert ep["image"]["custom"]["url"].startswith("ghcr.io/huggingface/text-generation-inference")
    counts = out.manifest["counts"]
    assert counts["inference_endpoint"] == {"name": "gen-test", "namespace": "tester", "repository": MODEL,
                                            "created_by_run": True, "state_before": "absent"}
    assert counts["generator"] == f"inference-endpoint:gen-test|{MODEL}" and counts["judge"] == "on"
    assert counts["tasks_done"] == 2 and counts["concurrency"] == 2
    assert "created by this run" in caplog.text and "paused" in caplog.text
    card = (tmp_path / "stages/generate/README.md").read_text()
    assert "gen-test" in card
    # the endpoint's URL came from the Endpoints API: the Hub token went to it (a private endpoint needs it)
    assert set(proxy.auth_headers) == {f"Bearer {HUB_TOKEN}"}
    _assert_no_token_under(tmp_path)
    assert HUB_TOKEN not in caplog.text
    queries = datasets.load_from_disk(str(tmp_path / "stages/generate/queries"))
    assert len(queries) >= 1


def test_an_endpoint_the_user_had_is_resumed_and_paused_never_deleted(hf, tmp_path):
    hub, _ = hf
    hub.add_endpoint("tester", "gen-test", MODEL, state="paused")
    counts = _run(_endpoint_cfg(tmp_path)).manifest["counts"]
    assert hub.endpoint_events == [("resume", "gen-test"), ("pause", "gen-test")]
    assert counts["inference_endpoint"]["created_by_run"] is False
    assert counts["inference_endpoint"]["state_before"] == "paused"


def test_a_failing_endpoint_is_paused(hf, tmp_path):
    hub, proxy = hf
    proxy.fail, proxy.status, proxy.fail_chat_only = 1000, 500, True
    with pytest.raises(Exception, match="failed after 2 attempts"):
        _run(_endpoint_cfg(tmp_path))
    assert hub.endpoints[("tester", "gen-test")]["state"] == "paused"
    assert ("delete", "gen-test") not in hub.endpoint_events


def test_an_endpoint_that_fails_to_start_is_paused_with_a_clear_error(hf, tmp_path):
    hub, _ = hf
    hub.endpoint_fails_to_start = True
    with pytest.raises(Exception, match="gen-test did not start"):
        _run(_endpoint_cfg(tmp_path))
    assert hub.endpoints[("tester", "gen-test")]["state"] == "paused"


def test_402_creating_an_endpoint_says_to_add_billing(hf, tmp_path):
    hub, proxy = hf
    hub.fail_next["endpoint_create"] = 1
    with pytest.raises(Exception, match=r"402 Payment Required.*settings/billing"):
        _run(_endpoint_cfg(tmp_path))
    assert hub.endpoints == {} and proxy.requests == 0


def test_cancel_pauses_the_endpoint(hf):
    """Ctrl-C (and SIGTERM, which the CLI turns into the same KeyboardInterrupt) while the stage holds the
    endpoint (the stage runs inside ``running_endpoint``: see the tests above for its pause on finish)."""
    from trainer.generators import running_endpoint

    hub, _ = hf
    spec = _endpoint_cfg("unused").generate.inference_endpoint
    with pytest.raises(KeyboardInterrupt), running_endpoint(spec, HUB_TOKEN) as launched:
        assert hub.endpoints[("tester", "gen-test")]["state"] == "running" and launched.created
        raise KeyboardInterrupt
    assert hub.endpoints[("tester", "gen-test")]["state"] == "paused"
    assert hub.endpoint_events == [("create", "gen-test"), ("pause", "gen-test")]


# --- plan and config ------------------------------------------------------------------------------------


def test_the_judge_turns_on_with_a_strong_generator():
    from trainer.generate import _judge_enabled

    assert not _judge_enabled(load_config(None, []))
    for extra in (["generate.provider=auto", f"generate.model={MODEL}"], ["generate.inference_endpoint.name=g"],
                  ["generate.endpoint=http://127.0.0.1:1/v1"]):
        assert _judge_enabled(load_config(None, extra)), extra
    assert not _judge_enabled(load_config(None, ["generate.inference_endpoint.name=g", "generate.judge=off"]))


def test_generator_plan_estimates_requests_minutes_and_cost():
    emb = generator_plan(load_config(None, ["generate.questions_per_chunk=2"]), 100, gpu=False)
    assert emb["kind"] == "embedded" and emb["concurrency"] == 1 and not emb["judge"] and emb["cost_usd"] is None
    assert emb["requests"] == 250 and emb["minutes"] == pytest.approx(250 * 3.0 / 60, abs=0.1)
    ep = generator_plan(load_config(None, ["generate.inference_endpoint.name=gen",
                                           "generate.inference_endpoint.instance_type=nvidia-a100"]), 100)
    assert ep["judge"] and ep["price_per_hour"] == 2.5 and ep["start_minutes"] == 10.0
    assert ep["cost_usd"] == pytest.approx(2.5 * ep["minutes"] / 60, abs=0.01)
    assert generator_plan(load_config(None, ["generate.inference_endpoint.name=gen"]), 100,
                          endpoint_state="running")["start_minutes"] == 0.0
    prov = generator_plan(load_config(None, ["generate.provider=together", f"generate.model={MODEL}"]), 100)
    assert prov["concurrency"] == 16 and prov["tokens"] == prov["requests"] * 600 and prov["cost_usd"] > 0
    assert "about" in format_plan(prov) and MODEL in format_plan(prov)


def test_plan_and_estimate_know_the_embedded_llama_server(tmp_path, monkeypatch):
    """With llama-server built, the embedded generator runs its slots in parallel: the plan and the estimate
    say so and use the measured 1.8x (2 CPU cores), not a batching server's 16-slot speed-up."""
    from trainer.presets import estimate

    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    cfg = load_config(None, ["generate.questions_per_chunk=2", "ingest.source=builtin:python-docs"])
    off = generator_plan(cfg, 100, gpu=False)
    est_off = estimate(cfg, n_chunks=968, n_documents=78).seconds["generate"]
    binary.chmod(0o755)
    monkeypatch.setenv("DOMAIN_EMBED_LLAMA_SERVER", str(binary))
    on = generator_plan(cfg, 100, gpu=False)
    assert (off["concurrency"], on["concurrency"]) == (1, 16)
    assert "llama-server, 16 slots" in format_plan(on) and "llama-cpp-python" in format_plan(off)
    assert on["minutes"] == pytest.approx(off["minutes"] / 1.8, abs=0.1)
    assert estimate(cfg, n_chunks=968, n_documents=78).seconds["generate"] == pytest.approx(est_off / 1.8, rel=0.01)
    assert generator_plan(load_config(None, ["generate.concurrency=4"]), 100, gpu=False)["concurrency"] == 4
    monkeypatch.setenv("DOMAIN_EMBED_LLAMA_SERVER", str(tmp_path / "missing"))  # the stage says why; plan for 1
    assert generator_plan(cfg, 100, gpu=False)["concurrency"] == 1


@pytest.mark.parametrize(("overrides", "message"), [
    (["generate.provider=auto", "generate.endpoint=http://127.0.0.1:1/v1"], "choose one generator"),
    (["generate.provider=auto"], "needs generate.model set to a Hub model id"),
    (["generate.inference_endpoint.name=Bad_Name"], "lowercase letters"),
])
def test_config_refuses_ambiguous_or_incomplete_generators(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


# --- the embedded generator on a GPU (what can be checked on a CPU) --------------------------------------


def test_gpu_choice_and_server_command():
    from trainer.generators import embedded_generator
    from trainer.llm_server import gpu_layers

    assert gpu_layers("auto", cuda=True, gpu_build=True) == -1
    assert gpu_layers("auto", cuda=True, gpu_build=False) == 0  # a CPU-only wheel: CPU, with a warning
    assert gpu_layers("auto", cuda=False, gpu_build=True) == 0
    assert gpu_layers(12, cuda=False, gpu_build=False) == 12
    server = LocalLLMServer(resolve_generator("smollm2-135m-instruct-q4_1"), n_gpu_layers=-1)
    server.port = 1
    cmd = server.command()
    assert cmd[cmd.index("--n_gpu_layers") + 1] == "-1"
    a100 = load_config(None, ["train.profile=a100"])
    assert embedded_generator(a100, online=True, cuda=True).startswith("hf://bartowski/Qwen2.5-14B-Instruct-GGUF/")
    assert embedded_generator(a100, online=True, cuda=False) == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert embedded_generator(load_config(None, ["train.profile=cpu"]), online=True, cuda=True) \
        == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    chosen = load_config(None, ["train.profile=t4", "generate.generator=smollm2-135m-instruct-q4_1"])
    assert embedded_generator(chosen, online=True, cuda=True) == "smollm2-135m-instruct-q4_1"  # yours wins
    # offline (the test suite, a Space without the Hub) the identity, hence the stage key, is unchanged
    from trainer.generate import generator_identity

    assert generator_identity(load_config(None, ["train.profile=t4"])).startswith(
        "gguf:qwen2.5-coder-0.5b-instruct-q4_k_m:")
