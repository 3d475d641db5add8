"""A loopback HTTP proxy in front of a real LLM server that injects faults on demand (tests only).

It forwards every request unchanged, except: the next ``fail`` requests get HTTP ``status`` (with
Retry-After), and the next ``garbage`` chat completions get a well-formed response whose content
is not a usable query, and the next ``copies`` get a query that copies the first words of the prompt's
passage (the easiness filter's case). The next ``bad_replies`` chat completions get HTTP 200 with
``bad_body`` (``bad_type`` as Content-Type): a reply that is not a chat completion. ``answers`` records
each forwarded chat answer with its passage. ``upstream`` can be swapped while running (a restarted server).
A path prefix before ``/v1/`` (the Inference Providers router's ``/{provider}``) is dropped when forwarding;
after ``budget`` forwarded chat completions every later one gets HTTP 402 (credits spent).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.fail = 0
        self.status = 503
        self.garbage = 0
        self.copies = 0
        self.bad_replies = 0
        self.bad_body = b'{"object": "chat.completion"}'  # a 200 without choices
        self.bad_type = "application/json"
        self.copied: list[str] = []  # the injected copies, in order
        self.answers: list[tuple[str, str]] = []  # (passage, content) of each forwarded chat completion
        self.always_stream = False  # answer non-streaming chat requests as a stream (transformers serve 4.x)
        self.requests = 0
        self.auth_headers: list[str] = []
        self.fail_chat_only = False  # injected failures hit chat completions only (health checks pass)
        self.retry_after = "0"  # the Retry-After header of injected failures (None: no header)
        self.fail_body = b'{"error": "injected"}'
        self.budget: int | None = None  # chat completions forwarded before every later one gets HTTP 402
        self.paths: list[str] = []  # every request path, as received (a router's /{provider}/v1/... included)
        self.bodies: list[bytes] = []  # every chat completion request forwarded upstream
        self.paid: list[bytes] = []  # those the upstream answered with HTTP 200 (what a provider bills)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None,
                      content_type: str = "application/json"):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.requests += 1
                    proxy.auth_headers.append(self.headers.get("Authorization", ""))
                    proxy.paths.append(self.path)
                    if proxy.fail > 0 and (not proxy.fail_chat_only or self.path.endswith("/chat/completions")):
                        proxy.fail -= 1
                        headers = {"Retry-After": proxy.retry_after} if proxy.retry_after is not None else {}
                        return self._send(proxy.status, proxy.fail_body, headers)
                    chat = self.path.endswith("/chat/completions")
                    if chat and proxy.budget is not None and len(proxy.bodies) >= proxy.budget:
                        return self._send(402, b'{"error": "You have exceeded your monthly included credits"}')
                    if chat and proxy.bad_replies > 0:
                        proxy.bad_replies -= 1
                        return self._send(200, proxy.bad_body, content_type=proxy.bad_type)
                    content = None
                    if chat and proxy.garbage > 0:
                        proxy.garbage -= 1
                        content = "{\"q\": 1} ??"
                    elif chat and proxy.copies > 0:
                        proxy.copies -= 1
                        prompt = json.loads(body)["messages"][-1]["content"]
                        passage = prompt.split("Text:\n", 1)[-1].split("\n\nWrite", 1)[0]
                        proxy.copied.append(" ".join(passage.split()[:12]))
                        content = json.dumps({"query": proxy.copied[-1]})
                if content is not None:
                    out = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                    return self._send(200, json.dumps(out).encode())
                if chat:
                    with proxy._lock:
                        proxy.bodies.append(body or b"")
                path = self.path[self.path.index("/v1/"):] if "/v1/" in self.path else self.path  # a router prefix
                url = proxy.upstream.rsplit("/v1", 1)[0] + path
                req = urllib.request.Request(url, data=body, method=method,
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=120) as resp:
                        payload = resp.read()
                        if self.path.endswith("/chat/completions") and resp.status == 200:
                            with proxy._lock:
                                proxy.paid.append(body or b"")
                        if self.path.endswith("/chat/completions") and resp.status == 200:
                            try:
                                prompt = json.loads(body)["messages"][-1]["content"]
                                text = json.loads(payload)["choices"][0]["message"]["content"]
                            except (ValueError, KeyError, IndexError, TypeError):
                                pass  # streamed or unusual: not recorded
                            else:
                                passage = prompt.split("Text:\n", 1)[-1].split("\n\nWrite", 1)[0]
                                with proxy._lock:
                                    proxy.answers.append((passage, text))
                        wants_stream = body is not None and json.loads(body).get("stream") is True
                        if proxy.always_stream and self.path.endswith("/chat/completions") and not wants_stream:
                            text = json.loads(payload)["choices"][0]["message"]["content"]
                            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]}
                            payload = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
                        return self._send(resp.status, payload)
                except urllib.error.HTTPError as exc:
                    return self._send(exc.code, exc.read())
                except OSError:
                    return self._send(502, b'{"error": "upstream down"}')

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
