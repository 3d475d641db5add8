"""Which LLM writes the synthetic queries, and what it will cost: the embedded llama.cpp server (offline, CPU
or GPU), Hugging Face Inference Providers, a dedicated Inference Endpoint (TGI), or a hand-typed endpoint URL.

- :func:`generator_kind` names the choice a config makes; :func:`generator_plan` estimates requests,
  minutes and cost before a run (the CLI prints it, the Space shows it); :data:`PROVIDER_MODELS` is the
  Space picker's default list of strong open instruct models.
- :func:`launch_endpoint` creates or resumes a dedicated Inference Endpoint through huggingface_hub and
  :func:`release_endpoint` pauses it (or scales it to zero) when generation ends, fails or is cancelled.
  An endpoint the user already had is resumed and paused, never deleted or changed; one this tool
  created is paused too (delete it on hf.co/endpoints when done).
- :func:`configure_hf_urls` points huggingface_hub's Inference Providers router and Inference Endpoints
  API at other URLs (``DOMAIN_EMBED_HF_ROUTER``, ``DOMAIN_EMBED_HF_ENDPOINTS_API``): for private
  deployments and the loopback test servers. Unset, the real ones are used.

Example::

    >>> from trainer.config import load_config
    >>> cfg = load_config(None, ["generate.provider=auto", "generate.model=Qwen/Qwen2.5-72B-Instruct"])
    >>> plan = generator_plan(cfg, n_chunks=100)
    >>> plan["kind"], plan["requests"], plan["concurrency"]
    ('provider', 675, 16)
    >>> endpoint_price("aws", "nvidia-l4", "x1")
    0.8
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from trainer.config import Config, InferenceEndpointSpec
from trainer.errors import TrainerError
from trainer.logs import get_logger, redact

ROUTER_ENV = "DOMAIN_EMBED_HF_ROUTER"  # e.g. http://127.0.0.1:8123 -> {url}/{provider}/v1/chat/completions
ENDPOINTS_API_ENV = "DOMAIN_EMBED_HF_ENDPOINTS_API"  # e.g. http://127.0.0.1:8124/v2 -> {url}/endpoint/{ns}/{name}

# The Space's picker: strong open instruct models that Inference Providers served in 2025 (the Hub's provider
# mapping decides at run time; generate.provider_models overrides the list). Largest first.
PROVIDER_MODELS: tuple[tuple[str, str], ...] = (
    ("meta-llama/Llama-3.3-70B-Instruct", "Llama 3.3 70B Instruct"),
    ("Qwen/Qwen2.5-72B-Instruct", "Qwen2.5 72B Instruct"),
    ("Qwen/Qwen3-32B", "Qwen3 32B"),
    ("google/gemma-3-27b-it", "Gemma 3 27B"),
    ("meta-llama/Llama-3.1-8B-Instruct", "Llama 3.1 8B Instruct (fast, cheap)"),
)

# Inference Endpoints list prices in USD per hour and replica (hf.co/pricing#endpoints, 2025; check before
# relying on them, or set generate.inference_endpoint.price_per_hour). Key: (vendor, instance_type, size).
ENDPOINT_PRICES: dict[tuple[str, str, str], float] = {
    ("aws", "nvidia-t4", "x1"): 0.5, ("aws", "nvidia-t4", "x4"): 3.0,
    ("aws", "nvidia-l4", "x1"): 0.8, ("aws", "nvidia-l4", "x4"): 3.8,
    ("aws", "nvidia-a10g", "x1"): 1.0, ("aws", "nvidia-a10g", "x4"): 5.0,
    ("aws", "nvidia-l40s", "x1"): 1.8, ("aws", "nvidia-l40s", "x4"): 8.3, ("aws", "nvidia-l40s", "x8"): 23.5,
    ("aws", "nvidia-a100", "x1"): 2.5, ("aws", "nvidia-a100", "x2"): 5.0, ("aws", "nvidia-a100", "x4"): 10.0,
    ("aws", "nvidia-a100", "x8"): 20.0, ("aws", "nvidia-h200", "x1"): 5.0,
    ("gcp", "nvidia-t4", "x1"): 0.5, ("gcp", "nvidia-l4", "x1"): 0.7, ("gcp", "nvidia-a100", "x1"): 3.6,
    ("gcp", "nvidia-h100", "x1"): 10.0,
}

# Planning assumptions (seconds per request one at a time; how much of N requests in flight turns into
# throughput; start-up minutes). Rough: the plan is an estimate shown before Run, not a promise.
SECONDS_PER_REQUEST = {"embedded": 3.0, "embedded_gpu": 0.5, "endpoint": 2.5, "inference_endpoint": 2.5,
                       "provider": 2.0}
CONCURRENCY_EFFICIENCY = 0.6  # 16 in flight ~ 10x one at a time on a batching server (measure yours:
                              # benchmarks/generate_concurrency.py)
START_MINUTES = {"create": 10.0, "resume": 5.0, "running": 0.0}
TOKENS_PER_REQUEST = 600  # prompt (a ~250-token chunk, instructions) + a short answer
PROVIDER_USD_PER_M_TOKENS = 0.6  # a rough middle of providers' 8B-70B prices; billed by the provider
DEFAULT_CONCURRENCY = 16

CHOICES: tuple[tuple[str, str], ...] = (
    ("provider", "Inference Providers (billed to your Hugging Face account)"),
    ("inference_endpoint", "Dedicated Inference Endpoint (TGI, billed per hour; paused when done)"),
    ("embedded", "Offline embedded model (llama.cpp on this machine: free, weaker queries)"),
)


class EndpointLaunchError(TrainerError):
    """The Inference Endpoint could not be created, resumed or reached."""


def generator_kind(cfg: Config) -> str:
    """'provider', 'inference_endpoint', 'endpoint' (a URL) or 'embedded'."""
    g = cfg.generate
    if g.provider:
        return "provider"
    if g.inference_endpoint is not None:
        return "inference_endpoint"
    if g.endpoint:
        return "endpoint"
    return "embedded"


def concurrency(cfg: Config) -> int:
    """Requests in flight: for the embedded generator llama-server's slots (generate.concurrency or 16) when
    llama-server is built, else 1 (llama-cpp-python's server, cache-friendly order); else generate.concurrency
    or 16."""
    if generator_kind(cfg) == "embedded":
        from trainer.llm_server import LLAMA_SERVER_SLOTS, ServerError, llama_server_binary

        try:
            built = llama_server_binary() is not None
        except ServerError:  # a bad DOMAIN_EMBED_LLAMA_SERVER: the generate stage says so; plan without it
            built = False
        return (cfg.generate.concurrency or LLAMA_SERVER_SLOTS) if built else 1
    return cfg.generate.concurrency or DEFAULT_CONCURRENCY


def provider_models(cfg: Config) -> list[str]:
    return list(cfg.generate.provider_models or [m for m, _ in PROVIDER_MODELS])


def endpoint_price(vendor: str, instance_type: str, instance_size: str) -> float | None:
    return ENDPOINT_PRICES.get((vendor.lower(), instance_type.lower(), instance_size.lower()))


def _hub_url(url: str) -> str:
    return url.rstrip("/")


def configure_hf_urls() -> None:
    """Point huggingface_hub's Inference Providers router / Inference Endpoints API at ``$DOMAIN_EMBED_HF_ROUTER`` /
    ``$DOMAIN_EMBED_HF_ENDPOINTS_API`` when set (both are module constants huggingface_hub reads at each call)."""
    from huggingface_hub import constants

    router = os.environ.get(ROUTER_ENV, "").strip()
    if router:
        constants.INFERENCE_PROXY_TEMPLATE = _hub_url(router) + "/{provider}"
    api = os.environ.get(ENDPOINTS_API_ENV, "").strip()
    if api:
        constants.INFERENCE_ENDPOINTS_ENDPOINT = _hub_url(api)
    if any(urlparse(u).hostname in ("127.0.0.1", "localhost", "::1") for u in (router, api) if u):
        from trainer.llm_client import allow_loopback_when_offline

        allow_loopback_when_offline()


def configured_hf_hosts() -> list[str]:
    """The router / Endpoints API URLs configured by environment (they count as Hugging Face hosts)."""
    return [u for u in (os.environ.get(ROUTER_ENV, "").strip(), os.environ.get(ENDPOINTS_API_ENV, "").strip()) if u]


def check_provider(name: str) -> None:
    """A clear error for a provider name huggingface_hub does not know."""
    from huggingface_hub.inference._providers import PROVIDERS

    if name != "auto" and name not in PROVIDERS:
        known = ", ".join(sorted(p for p, tasks in PROVIDERS.items() if "conversational" in tasks))
        raise TrainerError(f"generate.provider={name!r} is not an Inference Provider huggingface_hub knows; use "
                           f"'auto' or one of: {known}")


# --- the plan shown before Run ---------------------------------------------------------------------


def planned_tasks(cfg: Config, n_chunks: int) -> int:
    g = cfg.generate
    tasks = n_chunks * g.questions_per_chunk
    if g.max_queries is not None:
        tasks = min(tasks, math.ceil(g.max_queries / 0.7))  # about 70% of tasks give a kept query
    return tasks


def _judge_on(cfg: Config) -> bool:
    g = cfg.generate
    if g.judge == "auto":
        return generator_kind(cfg) != "embedded" or bool(g.judge_endpoint)
    return g.judge == "on"


def generator_plan(cfg: Config, n_chunks: int, *, endpoint_state: str | None = None,
                   gpu: bool | None = None) -> dict[str, Any]:
    """What Run will do with the generator: the choice, model, requests, minutes and cost (USD, None: free).

    ``endpoint_state``: 'running', 'paused' or None (unknown: assume it is created); ``gpu``: the embedded
    server runs on a GPU (default: detected).
    """
    g = cfg.generate
    kind = generator_kind(cfg)
    tasks = planned_tasks(cfg, n_chunks)
    judge = _judge_on(cfg)
    requests = math.ceil(tasks * (g.candidates * 1.25 + (1 if judge else 0)))
    workers = concurrency(cfg)
    speedup = 1 + (workers - 1) * CONCURRENCY_EFFICIENCY
    plan: dict[str, Any] = {"kind": kind, "label": dict(CHOICES).get(kind, "Your endpoint URL"), "tasks": tasks,
                            "requests": requests, "judge": judge, "concurrency": workers, "cost_usd": None,
                            "price_per_hour": None, "start_minutes": 0.0, "notes": []}
    if kind == "embedded":
        from trainer.llm_server import cuda_available

        on_gpu = cuda_available() if gpu is None else gpu
        plan["model"] = g.generator
        per = SECONDS_PER_REQUEST["embedded_gpu" if on_gpu else "embedded"]
        if workers > 1 and not on_gpu:  # measured: the 2 cores bound llama-server, not its slots
            from trainer.presets import rate

            speedup = rate("gen_llama_server_speedup")
        server = f"llama-server, {workers} slots" if workers > 1 else "llama-cpp-python's server"
        plan["notes"].append(f"embedded llama.cpp server ({server}) on the {'GPU' if on_gpu else 'CPU'}, free")
    elif kind == "provider":
        plan["model"] = f"{g.model} ({g.provider})"
        per = SECONDS_PER_REQUEST["provider"]
        tokens = requests * TOKENS_PER_REQUEST
        plan["tokens"] = tokens
        plan["cost_usd"] = round(tokens / 1e6 * PROVIDER_USD_PER_M_TOKENS, 2)
        plan["notes"].append(f"about {tokens:,} tokens billed per token by the provider to your account (rough: "
                             f"${PROVIDER_USD_PER_M_TOKENS}/M tokens)")
    elif kind == "inference_endpoint":
        spec = g.inference_endpoint
        assert spec is not None
        plan["model"] = spec.repository
        per = SECONDS_PER_REQUEST["inference_endpoint"]
        price = spec.price_per_hour or endpoint_price(spec.vendor, spec.instance_type, spec.instance_size)
        plan["price_per_hour"] = price
        plan["start_minutes"] = START_MINUTES.get(endpoint_state or "create", START_MINUTES["create"])
        plan["notes"].append(f"endpoint {spec.name} on {spec.vendor}/{spec.region} {spec.instance_type} "
                             f"{spec.instance_size}, paused when generation ends")
        if price is None:
            plan["notes"].append("no list price known for this instance: set generate.inference_endpoint."
                                 "price_per_hour for a cost estimate")
    else:
        plan["model"] = g.model
        per = SECONDS_PER_REQUEST["endpoint"]
        plan["notes"].append("your endpoint's cost is not known here")
    minutes = requests * per / speedup / 60
    if g.max_minutes is not None:
        minutes = min(minutes, g.max_minutes)
    plan["minutes"] = round(minutes + plan["start_minutes"], 1)
    if plan["price_per_hour"] is not None:
        plan["cost_usd"] = round(plan["price_per_hour"] * plan["minutes"] / 60, 2)
    return plan


def format_plan(plan: dict[str, Any]) -> str:
    """One paragraph for the CLI and the Space."""
    cost = "free" if plan["cost_usd"] is None and plan["kind"] == "embedded" else (
        "unknown" if plan["cost_usd"] is None else f"about ${plan['cost_usd']:.2f}")
    if plan["price_per_hour"] is not None:
        cost += f" (${plan['price_per_hour']:.2f}/h)"
    lines = [f"generator: {plan['label']}: {plan['model']}",
             f"  {plan['tasks']:,} questions, about {plan['requests']:,} requests "
             f"({plan['concurrency']} at a time{', judge on' if plan['judge'] else ''}), "
             f"about {plan['minutes']:.0f} min, cost {cost}"]
    lines += [f"  {n}" for n in plan["notes"]]
    return "\n".join(lines)


def choices(cfg: Config | None = None) -> list[dict[str, Any]]:
    """The Space's Generator choices: value, label, and the models offered for each."""
    from trainer.models import GENERATORS

    models = provider_models(cfg) if cfg is not None else [m for m, _ in PROVIDER_MODELS]
    return [
        {"value": "provider", "label": CHOICES[0][1], "models": models, "default_model": models[0]},
        {"value": "inference_endpoint", "label": CHOICES[1][1],
         "models": ["Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-32B-Instruct"],
         "default_model": "Qwen/Qwen2.5-7B-Instruct",
         "instances": sorted({f"{v}/{t}/{s}" for v, t, s in ENDPOINT_PRICES})},
        {"value": "embedded", "label": CHOICES[2][1], "models": sorted(GENERATORS),
         "default_model": "qwen2.5-coder-0.5b-instruct-q4_k_m"},
    ]


# --- dedicated Inference Endpoints ----------------------------------------------------------------


@dataclass
class LaunchedEndpoint:
    endpoint: Any  # huggingface_hub.InferenceEndpoint
    created: bool  # this run created it (it is paused at the end, like one the user had)
    state_before: str  # 'absent', 'paused', 'running', 'scaledToZero', ...

    @property
    def base_url(self) -> str:
        return self.endpoint.url.rstrip("/") + "/v1"

    def record(self) -> dict[str, Any]:
        """What the manifest and the dataset card say about it (no URL: it may carry nothing secret, but
        the name and model are what matters)."""
        ep = self.endpoint
        return {"name": ep.name, "namespace": ep.namespace, "repository": ep.repository,
                "created_by_run": self.created, "state_before": self.state_before}


def _status(exc: BaseException) -> int | None:
    from trainer.retry import http_status

    return http_status(exc)


def endpoint_state(spec: InferenceEndpointSpec, token: str | None) -> str:
    """'absent', or the endpoint's state ('running', 'paused', ...), for the plan."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    configure_hf_urls()
    try:
        ep = HfApi(token=token).get_inference_endpoint(spec.name, namespace=spec.namespace, token=token)
    except HfHubHTTPError as exc:
        if _status(exc) == 404:
            return "absent"
        raise
    return str(ep.status)


def launch_endpoint(spec: InferenceEndpointSpec, token: str | None) -> LaunchedEndpoint:
    """Get ``spec.name`` (resume it if paused or scaled to zero) or create it, then wait until it answers."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, InferenceEndpointError, InferenceEndpointTimeoutError

    if not token:
        raise EndpointLaunchError("a dedicated Inference Endpoint needs a Hugging Face token with billing: set "
                                  "HF_TOKEN (or sign in on the Space)")
    configure_hf_urls()
    log = get_logger()
    api = HfApi(token=token)
    created, before = False, "absent"
    try:
        try:
            ep = api.get_inference_endpoint(spec.name, namespace=spec.namespace, token=token)
            before = str(ep.status)
            log.info("inference endpoint %s exists (%s): using it; it is paused again at the end, never deleted",
                     spec.name, before)
        except HfHubHTTPError as exc:
            if _status(exc) != 404:
                raise
            log.info("creating inference endpoint %s (%s on %s/%s %s %s)", spec.name, spec.repository, spec.vendor,
                     spec.region, spec.instance_type, spec.instance_size)
            try:
                ep = api.create_inference_endpoint(
                    spec.name, repository=spec.repository, framework=spec.framework, accelerator=spec.accelerator,
                    instance_size=spec.instance_size, instance_type=spec.instance_type, region=spec.region,
                    vendor=spec.vendor, namespace=spec.namespace, task="text-generation", token=token,
                    custom_image={"health_route": "/health", "url": spec.image_url, "env": {"MODEL_ID": "/repository"}},
                )
                created = True
            except HfHubHTTPError as exc2:
                if _status(exc2) != 409:  # 409: created meanwhile (another run): use it
                    raise
                ep = api.get_inference_endpoint(spec.name, namespace=spec.namespace, token=token)
                before = str(ep.status)
        if str(ep.status) in ("paused", "scaledToZero"):
            log.info("resuming inference endpoint %s", spec.name)
            ep.resume(running_ok=True)
        launched = LaunchedEndpoint(ep, created, before)
    except HfHubHTTPError as exc:
        raise EndpointLaunchError(_explain(exc, spec)) from None
    try:
        ep.wait(timeout=int(spec.wait_minutes * 60), refresh_every=spec.poll_seconds)
    except (InferenceEndpointError, InferenceEndpointTimeoutError, HfHubHTTPError) as exc:
        release_endpoint(launched, spec)
        raise EndpointLaunchError(f"inference endpoint {spec.name} did not start ({redact(str(exc))[:300]}); it was "
                                  f"{'paused' if spec.on_finish == 'pause' else 'scaled to zero'}. See its logs on "
                                  "https://endpoints.huggingface.co") from None
    except BaseException:  # Ctrl-C / SIGTERM while it starts: do not leave it running
        release_endpoint(launched, spec)
        raise
    log.info("inference endpoint %s is running", spec.name)
    return launched


def _explain(exc: BaseException, spec: InferenceEndpointSpec) -> str:
    status = _status(exc)
    first = redact(str(exc).splitlines()[0])[:300]
    if status == 402:
        return (f"creating inference endpoint {spec.name} was refused: HTTP 402 Payment Required. Add a payment "
                "method at https://huggingface.co/settings/billing (or use the namespace of an organisation with "
                "billing: generate.inference_endpoint.namespace)")
    if status in (401, 403):
        return (f"the token cannot manage inference endpoints ({first}): use a token with write access to "
                f"{spec.namespace or 'your namespace'}")
    return f"inference endpoint {spec.name}: {first}"


def release_endpoint(launched: LaunchedEndpoint, spec: InferenceEndpointSpec) -> bool:
    """Pause (or scale to zero) the endpoint; True when done. Never raises: a failure is logged loudly."""
    log = get_logger()
    ep = launched.endpoint
    what = "paused" if spec.on_finish == "pause" else "scaled to zero"
    for attempt in range(3):
        try:
            ep.pause() if spec.on_finish == "pause" else ep.scale_to_zero()
            note = (" (created by this run: it is kept, paused; delete it on https://endpoints.huggingface.co when "
                    "you no longer need it)") if launched.created else ""
            log.info("inference endpoint %s %s%s", ep.name, what, note)
            return True
        except Exception as exc:  # noqa: BLE001 - a failed pause must never hide the run's own error
            last = redact(str(exc))[:200]
            if attempt < 2:
                import time

                time.sleep(1.0 * (attempt + 1))
    log.error("could not pause inference endpoint %s (%s): PAUSE IT YOURSELF on https://endpoints.huggingface.co, "
              "it bills while running", ep.name, last)
    return False


@contextlib.contextmanager
def running_endpoint(spec: InferenceEndpointSpec, token: str | None) -> Iterator[LaunchedEndpoint]:
    """The endpoint, running inside the block; paused on exit, whatever the exit (error, Ctrl-C, SIGTERM)."""
    launched = launch_endpoint(spec, token)
    try:
        yield launched
    finally:
        release_endpoint(launched, spec)


# --- the embedded generator on a GPU Space -------------------------------------------------------------

DEFAULT_GENERATOR = "qwen2.5-coder-0.5b-instruct-q4_k_m"
# Larger GGUF generators for the GPU profiles, fetched from the Hub when online (Q4_K_M: 4.7 GB and 9.0 GB,
# in a T4's 16 GB and an A100's 40-80 GB with room for the context). Offline or on the CPU: the default.
GPU_GENERATORS: dict[str, tuple[str, str]] = {
    "t4": ("bartowski/Qwen2.5-7B-Instruct-GGUF", "Qwen2.5-7B-Instruct-Q4_K_M.gguf"),
    "a100": ("bartowski/Qwen2.5-14B-Instruct-GGUF", "Qwen2.5-14B-Instruct-Q4_K_M.gguf"),
}


def embedded_generator(cfg: Config, *, online: bool | None = None, cuda: bool | None = None) -> str:
    """The embedded server's weights: generate.generator as set, except the default on a t4/a100 profile with
    CUDA and the Hub reachable: the profile's larger GGUF, as ``hf://<repo>/<file>``.

        >>> from trainer.config import load_config
        >>> embedded_generator(load_config(None, ["train.profile=t4"]), online=True, cuda=True)
        'hf://bartowski/Qwen2.5-7B-Instruct-GGUF/Qwen2.5-7B-Instruct-Q4_K_M.gguf'
        >>> embedded_generator(load_config(None, ["train.profile=t4"]), online=False, cuda=True)
        'qwen2.5-coder-0.5b-instruct-q4_k_m'
    """
    g = cfg.generate
    profile = cfg.train.profile
    if g.generator != DEFAULT_GENERATOR or profile not in GPU_GENERATORS:
        return g.generator
    if cuda is None:
        from trainer.llm_server import cuda_available

        cuda = cuda_available()
    if not cuda:
        return g.generator
    if online is None:
        from trainer.models import hub_reachable, is_offline

        online = not is_offline() and hub_reachable()
    if not online:
        return g.generator
    repo, filename = GPU_GENERATORS[profile]
    return f"hf://{repo}/{filename}"


def resolve_embedded(name: str):
    """A local GGUF path for ``embedded_generator``'s answer (``hf://`` files downloaded once to the HF cache)."""
    from trainer.models import resolve_generator

    if name.startswith("hf://"):
        from pathlib import Path

        from huggingface_hub import hf_hub_download

        repo, filename = name[len("hf://"):].rsplit("/", 1)
        return Path(hf_hub_download(repo, filename))
    return resolve_generator(name)
