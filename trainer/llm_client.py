"""Chat client for TGI's Messages API (/v1/chat/completions) through huggingface_hub's InferenceClient.

Works against TGI, Inference Endpoints, vLLM, llama.cpp and ``transformers serve``: retries with
exponential backoff on 429/5xx, timeouts and connection errors; the token is passed to the client
and never logged or put in an error message.

Where the token goes (:func:`token_for`): the Hub token (the value of HF_TOKEN or its aliases, or the
token saved by ``hf auth login``) only to Hugging Face hosts (huggingface.co and its subdomains,
*.hf.space, *.endpoints.huggingface.cloud, the host of HF_ENDPOINT); a token the user named for the
endpoint (``generate.token_env=MY_TOKEN``) to that endpoint; either only over https, or plain http to
this machine (loopback). No token: none is sent, not even the one huggingface_hub would find itself.

Example::

    >>> client = ChatClient("http://127.0.0.1:8080/v1", max_retries=0)  # doctest: +SKIP
    >>> client.chat([{"role": "user", "content": "Say hi"}], max_tokens=8)  # doctest: +SKIP
    'Hi!'
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import requests

from trainer.errors import TrainerError
from trainer.logs import HUB_TOKEN_ENVS, get_logger, redact, register_secret
from trainer.retry import RetryPolicy, is_retryable_status

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
HF_DOMAINS = ("huggingface.co", "hf.space", "endpoints.huggingface.cloud")  # the hosts and their subdomains


def is_hf_host(url: str) -> bool:
    """Whether ``url`` is served by Hugging Face (or is the configured HF_ENDPOINT)."""
    parts = urlparse(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if any(host == d or host.endswith("." + d) for d in HF_DOMAINS):
        return True
    from trainer.generators import configured_hf_hosts

    custom = [u for u in [os.environ.get("HF_ENDPOINT", ""), *configured_hf_hosts()] if u]
    return any((urlparse(u).hostname, urlparse(u).port) == (parts.hostname, parts.port) for u in custom)


def _hub_tokens() -> set[str]:
    """The Hub token's values: the token variables and the token saved by ``hf auth login``."""
    values = {os.environ.get(n, "").strip() for n in HUB_TOKEN_ENVS}
    try:
        from huggingface_hub import get_token

        values.add((get_token() or "").strip())
    except ImportError:
        pass
    return {v for v in values if v}


def public_url(url: str) -> str:
    """``url`` without userinfo, query or fragment (what may be stored, logged and published)."""
    parts = urlparse(url.strip())
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return redact(parts._replace(netloc=netloc, query="", fragment="").geturl().rstrip("/"))


def token_for(base_url: str, token: str | None, *, hf_managed: bool = False) -> str | None:
    """The token to send to ``base_url``: None for the Hub token and a host that is not Hugging Face's
    (logged); EndpointError for any token over plain http to another machine. ``hf_managed``: the URL came
    from the Inference Endpoints API (the user's own endpoint), so the Hub token goes to it."""
    if not token:
        return None
    parts = urlparse(base_url)
    host = parts.hostname or base_url
    if token.strip() in _hub_tokens() and not (hf_managed or is_hf_host(base_url)):
        get_logger().warning(
            "not sending the Hub token (HF_TOKEN) to %s: it goes only to Hugging Face hosts. If this endpoint "
            "needs a token, put it in another environment variable and name it with generate.token_env", host)
        return None
    if parts.scheme != "https" and host not in _LOOPBACK:
        raise EndpointError(
            f"refusing to send a token to {host} over plain {parts.scheme or 'http'}: anyone on the way could read "
            "it. Use the endpoint's https URL, or reach it through a tunnel to 127.0.0.1 (ssh -L)")
    return token


class EndpointError(TrainerError):
    """The generation endpoint failed, refused the request, or answered something that is not a chat completion.

    ``exhausted``: asking again cannot help, whatever the request: the retries ran out, or the server
    rejected the token (so the caller must not take it for a refusal of this particular request).
    """

    def __init__(self, message: str, *, exhausted: bool = False):
        super().__init__(message)
        self.exhausted = exhausted


def _estimated_time(response) -> str | None:
    """The wait a loading model announces (``{"error": "... is currently loading", "estimated_time": 20.0}``)."""
    try:
        value = response.json().get("estimated_time")
    except (ValueError, AttributeError):
        return None
    return str(float(value)) if isinstance(value, int | float) and value > 0 else None


class _NotACompletion(Exception):
    """A 200 reply that is not a chat completion; its message quotes what the server sent."""


def _quote(body: object, limit: int = 200) -> str:
    """The start of a server's reply, on one line, secrets redacted (for an error message)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    text = " ".join(text.split())
    return repr(redact(text[:limit] + ("..." if len(text) > limit else "")))


def allow_loopback_when_offline() -> None:
    """With HF_HUB_OFFLINE=1, huggingface_hub refuses every HTTP call, loopback included. Keep the Hub
    blocked but let the client reach a server on this machine (the embedded generator)."""
    from huggingface_hub import configure_http_backend, constants
    from huggingface_hub.utils._http import OfflineAdapter, UniqueRequestIdAdapter

    if not constants.HF_HUB_OFFLINE:
        return

    def factory() -> requests.Session:
        session = requests.Session()
        session.mount("http://", OfflineAdapter())
        session.mount("https://", OfflineAdapter())
        for host in ("127.0.0.1", "localhost", "[::1]"):
            session.mount(f"http://{host}", UniqueRequestIdAdapter())
            session.mount(f"https://{host}", UniqueRequestIdAdapter())
        return session

    configure_http_backend(factory)


class ChatClient:
    def __init__(
        self,
        base_url: str,
        *,
        model: str = "tgi",
        token: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        on_connection_error: Callable[[], Any] | None = None,  # may return a new base URL to use
        provider: str | None = None,  # Inference Providers: base_url is then only a label
        hf_managed: bool = False,  # the URL of the user's Inference Endpoint (see token_for)
    ):
        self.provider, self.hf_managed = provider, hf_managed
        if provider is not None:
            if not token:
                raise EndpointError("Inference Providers need a Hugging Face token: set HF_TOKEN (hf auth login), "
                                    "or sign in on the Space; usage is billed to that account", exhausted=True)
            from trainer.generators import check_provider, configure_hf_urls

            check_provider(provider)
            configure_hf_urls()
        elif urlparse(base_url).hostname in _LOOPBACK:
            allow_loopback_when_offline()
        if urlparse(base_url).username is not None or urlparse(base_url).password is not None:
            raise EndpointError("the endpoint URL holds credentials (user:password@); remove them and pass the "
                                "token in an environment variable named by generate.token_env")
        register_secret(token)
        self.model = model
        self.max_retries = max_retries
        self.retry = RetryPolicy(max_retries, backoff_s, max_backoff_s)
        self.on_connection_error = on_connection_error
        self._token, self._timeout = token or None, timeout
        self._connect(base_url)
        self.stats = {"requests": 0, "retries": 0, "errors": 0}
        # Some servers (transformers serve 4.x) stream even when asked not to: switch to streaming then.
        self.stream = False

    def _connect(self, base_url: str) -> None:
        from huggingface_hub import InferenceClient

        self.base_url = base_url.rstrip("/")
        if self.provider is not None:
            # The real client: it asks the Hub which provider serves the model (provider "auto") and its id there,
            # then sends an hf_ token to the router (billed to the Hugging Face account), a provider's own key
            # (generate.token_env) straight to that provider.
            self._client = InferenceClient(provider=self.provider, model=self.model, api_key=self._token,
                                           timeout=self._timeout)  # type: ignore[arg-type]
            return
        token = token_for(self.base_url, self._token, hf_managed=self.hf_managed)
        # Given no token, huggingface_hub sends the one it finds (HF_TOKEN, the saved login) to any URL; a None
        # header makes requests leave Authorization out.
        headers = None if token else {"authorization": None}
        self._client = InferenceClient(base_url=self.base_url, token=token, timeout=self._timeout,
                                       headers=headers)  # type: ignore[arg-type]

    def _complete(self, messages, **params: Any) -> str:
        if not self.stream:
            out = self._client.chat_completion(messages=messages, model=self.model, **params)
            choices = getattr(out, "choices", None)
            if not choices or getattr(choices[0], "message", None) is None:  # e.g. {"error": ...} with a 200
                sent = {k: v for k, v in out.items() if v is not None} if isinstance(out, dict) else out
                raise _NotACompletion(f"a reply without 'choices': {_quote(json.dumps(sent, default=str))}")
            return choices[0].message.content or ""
        parts, chunks = [], 0
        for chunk in self._client.chat_completion(messages=messages, model=self.model, stream=True, **params):
            chunks += 1
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        if not chunks:  # huggingface_hub skips lines without "data:": a reply that is no stream at all
            raise _NotACompletion("a reply with no 'data:' line, asked to stream")
        return "".join(parts)

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
        stop: list[str] | None = None,
    ) -> str:
        """One chat completion; the assistant's text. Raises EndpointError after the retries."""
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

        log = get_logger()
        last = ""
        for attempt in range(self.max_retries + 1):
            self.stats["requests"] += 1
            params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed,
                      "response_format": response_format, "stop": stop}
            try:
                try:
                    return self._complete(messages, **params)
                except json.JSONDecodeError as exc:  # not JSON: a stream (switch to streaming), or junk
                    if self.stream or not exc.doc.lstrip().startswith("data:"):
                        raise _NotACompletion(f"a reply that is not JSON: {_quote(exc.doc)}") from None
                    get_logger().info("%s answers with a stream; switching to streaming", self.base_url)
                    self.stream = True
                    return self._complete(messages, **params)
            except HfHubHTTPError as exc:  # BadRequestError is a ValueError too: caught here first
                status = exc.response.status_code if exc.response is not None else None
                last = f"HTTP {status}: {redact(str(exc).splitlines()[0])}"
                if status in (401, 403):  # no retry and no other request can help
                    self.stats["errors"] += 1
                    said = "rejected the token" if self._token else "requires a token (none was sent)"
                    body = exc.response.text.strip() if exc.response is not None else ""
                    raise EndpointError(
                        f"{self.base_url} {said} ({last}{f'; it said {_quote(body, 150)}' if body else ''}): "
                        "put a valid token with access to this endpoint in the "
                        "environment variable named by generate.token_env (default HF_TOKEN)", exhausted=True,
                    ) from None
                if status == 402:  # no credits left: no retry, no other request can help
                    self.stats["errors"] += 1
                    raise EndpointError(
                        f"{self.base_url} answered HTTP 402 Payment Required: the account has no credits left for "
                        "this model. Add credits or a payment method at https://huggingface.co/settings/billing "
                        "(or pick a cheaper model or the embedded generator), then run again: the answers received "
                        "so far are kept in the run's response cache and are not paid for twice", exhausted=True,
                    ) from None
                if status is None or not is_retryable_status(status):
                    self.stats["errors"] += 1
                    raise EndpointError(f"{self.base_url} refused the request ({last})") from None
                retry_after = exc.response.headers.get("Retry-After") if exc.response is not None else None
                if status == 503 and retry_after is None:  # a model loading: {"estimated_time": seconds}
                    retry_after = _estimated_time(exc.response)
            except (_NotACompletion, ValueError) as exc:  # a 200 that is not a chat completion, streamed or not
                self.stats["errors"] += 1
                if self.provider is not None and not isinstance(exc, _NotACompletion):  # the client's own check
                    raise EndpointError(f"Inference Providers ({self.provider}, {self.model}): {redact(str(exc))[:300]}"
                                        "; pick another model or provider (generate.provider=auto chooses one that "
                                        "serves the model)", exhausted=True) from None
                if self.provider is not None:
                    raise EndpointError(f"Inference Providers ({self.provider}, {self.model}) answered HTTP 200 but "
                                        f"not with a chat completion ({str(exc)[:300]}); try another "
                                        "provider") from None
                raise EndpointError(
                    f"{self.base_url} answered HTTP 200 but not with a chat completion ({str(exc)[:300]}): check "
                    "that the endpoint URL is the server's OpenAI-compatible base ending in /v1 (TGI, vLLM, "
                    "llama.cpp, Inference Endpoints), e.g. https://<host>/v1"
                ) from None
            except (requests.ConnectionError, requests.Timeout, InferenceTimeoutError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {redact(str(exc))[:200]}"
                retry_after = None
                if self.on_connection_error is not None:
                    moved = self.on_connection_error()
                    if isinstance(moved, str) and moved.rstrip("/") != self.base_url:  # a restart on a new port
                        self._connect(moved)
            if attempt < self.max_retries:
                self.stats["retries"] += 1
                log.debug("endpoint retry %d/%d after %s", attempt + 1, self.max_retries, last)
                time.sleep(self.retry.delay(attempt, retry_after))
        self.stats["errors"] += 1
        raise EndpointError(f"{self.base_url} failed after {self.max_retries + 1} attempts ({last})",
                            exhausted=True)
