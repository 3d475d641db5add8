"""Generate stage: synthetic queries for the corpus's chunks from an LLM behind a TGI-compatible endpoint.

With no ``generate.endpoint`` the stage starts the embedded llama.cpp server (``generate.generator``
weights, offline) and stops it at the end. For each selected chunk it asks ``questions_per_chunk``
questions, cycling factual, contextual and multi-hop types (multi-hop draws on 2-3 chunks: the
document's neighbouring chunks, else the nearest chunks of other documents by BM25). Outputs are
validated; invalid ones, and ones that copy their passage or title (the easiness filter), are retried
with a new seed and then counted. Then the LLM judge (when on) and near-duplicates
(cosine >= ``dedupe_similarity``). The embedded server gets one request at a time, in task order, so a
chunk's questions and retries re-use its cached prompt.

Every answer is stored as it arrives in ``<run>/cache/llm/<generator>.jsonl`` keyed by the request,
so a killed run resumes without asking again and a larger cap re-uses earlier answers.

Outputs in ``<run>/stages/generate/``: ``queries`` (query_id, query, type, hops, positive_chunk_ids,
positive_doc_ids, hop_contexts, judge_* scores, generator, prompt_version), the rejected outputs (task_id,
type, query, reason) as ``rejected.jsonl`` and ``README.md`` (dataset card).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from hub_cards.synthetic import synthetic_card
from trainer._faults import crash_point
from trainer.config import QUERY_TYPES, Config
from trainer.dataset_io import save_rows
from trainer.errors import StageError
from trainer.files import sha256_file
from trainer.generators import (
    concurrency,
    embedded_generator,
    format_plan,
    generator_kind,
    generator_plan,
    resolve_embedded,
    running_endpoint,
)
from trainer.llm_client import ChatClient, EndpointError, public_url
from trainer.llm_server import LLAMA_SERVER_SLOTS, LocalLLMServer, gpu_layers, llama_server_binary
from trainer.logs import redact
from trainer.models import GENERATORS, resolve_generator, resolve_model
from trainer.prompts import JUDGE_FIELDS, JUDGE_SCHEMA, PROMPT_VERSION, QUERY_SCHEMA, judge_messages, query_messages
from trainer.rundir import Input, Stage, StageContext

_FORBIDDEN = re.compile(
    r"\b(the|this|that|above|given|following|provided)\s+(passage|text|article|document|excerpt|paragraph|"
    r"abstract|context|snippet)s?\b|\bas an ai\b|\bi('m| am) sorry\b|\bi cannot\b",
    re.I,
)
_PREFIX = re.compile(r"^\s*(?:[-*\d.)]+\s*)?(?:query|question|claim|search query)\s*[:\-]\s*", re.I)
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][a-z]+)?")


@dataclass(frozen=True)
class Task:
    task_id: str
    qtype: str
    chunk_ids: tuple[str, ...]


# --- planning -------------------------------------------------------------------------------------


def plan_tasks(chunks: list[dict[str, Any]], cfg: Config) -> list[Task]:
    """Which questions to ask, deterministically from the config and seed."""
    g = cfg.generate
    rng = random.Random(cfg.run.seed)
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for c in chunks:
        by_doc.setdefault(c["doc_id"], []).append(c)
    for rows in by_doc.values():
        rows.sort(key=lambda r: r["chunk_index"])
    docs = sorted(by_doc)
    if g.sample_documents is not None and g.sample_documents < len(docs):
        docs = sorted(rng.sample(docs, g.sample_documents))
    if g.query_types is not None:
        types = list(g.query_types)
    elif g.min_hops >= 2:
        types = ["multi_hop"]
    elif g.max_hops < 2:
        types = ["factual", "contextual"]
    else:
        types = list(QUERY_TYPES)

    neighbours = _OtherDocNeighbours(chunks)
    tasks = []
    n_chunk = 0  # types rotate across chunks too, so one question per chunk still mixes them
    for doc in docs:
        rows = by_doc[doc][: g.max_chunks_per_document]
        for pos, row in enumerate(rows):
            n_chunk += 1
            for j in range(g.questions_per_chunk):
                qtype = types[(j + n_chunk - 1) % len(types)]
                ids = [row["chunk_id"]]
                if qtype == "multi_hop":
                    hops = rng.randint(max(2, g.min_hops), g.max_hops)
                    same_doc = [r["chunk_id"] for r in by_doc[doc] if r["chunk_id"] != row["chunk_id"]]
                    same_doc.sort(key=lambda cid: abs(_index_of(by_doc[doc], cid) - pos))
                    ids += same_doc[: hops - 1]
                    if len(ids) < hops:
                        ids += neighbours.nearest(row, exclude_doc=doc, k=hops - len(ids))
                    if len(ids) < 2:
                        qtype = "contextual"
                tasks.append(Task(f"{row['chunk_id']}/{j}", qtype, tuple(ids)))
    return tasks


def _index_of(rows: list[dict[str, Any]], chunk_id: str) -> int:
    return next(i for i, r in enumerate(rows) if r["chunk_id"] == chunk_id)


class _OtherDocNeighbours:
    """Nearest chunks of other documents by BM25, built lazily (only multi-hop on 1-chunk docs needs it)."""

    def __init__(self, chunks: list[dict[str, Any]]):
        self.chunks = chunks
        self._index = None

    def nearest(self, row: dict[str, Any], exclude_doc: str, k: int) -> list[str]:
        if len(self.chunks) < 2:
            return []
        import bm25s

        if self._index is None:
            self._index = bm25s.BM25()
            self._index.index(bm25s.tokenize([c["text"] for c in self.chunks], stopwords="en", show_progress=False),
                              show_progress=False)
        n = min(len(self.chunks), k + 20)
        docs, _ = self._index.retrieve(bm25s.tokenize([row["text"][:2000]], stopwords="en", show_progress=False),
                                       k=n, show_progress=False)
        out = []
        for i in docs[0]:
            c = self.chunks[int(i)]
            if c["doc_id"] != exclude_doc and c["chunk_id"] not in out:
                out.append(c["chunk_id"])
            if len(out) == k:
                break
        return out


# --- parsing and filters --------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def parse_query(raw: str, min_words: int = 3, max_words: int = 60) -> tuple[str | None, str | None]:
    """(query, None) when the output is a usable query, else (None, reason)."""
    text = raw.strip()
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text).strip()
    query = None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            value = data.get("query")
            if value is None:
                value = next((v for v in data.values() if isinstance(v, str)), None)
            query = value if isinstance(value, str) else None
        if query is None:
            return None, "invalid_json"
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        query = lines[0] if lines else ""
    query = _PREFIX.sub("", query).strip().strip("\"'“”").strip()
    query = " ".join(query.split())
    n = len(_words(query))
    if n < min_words:
        return None, "too_short"
    if n > max_words:
        return None, "too_long"
    if _FORBIDDEN.search(query):
        return None, "refers_to_passage"
    if sum(ch.isalpha() for ch in query) < 0.5 * len(query):
        return None, "not_text"
    return query, None


def longest_copied_run(words: list[str], texts: list[str]) -> int:
    """Length, in words, of the longest run of ``words`` (see ``_words``) found verbatim in one of ``texts``."""
    longest = 0
    for text in texts:
        w = _words(text)
        m = SequenceMatcher(None, words, w, autojunk=False).find_longest_match(0, len(words), 0, len(w))
        longest = max(longest, m.size)
    return longest


def copy_reason(query: str, texts: list[str], titles: list[str], max_fraction: float) -> str | None:
    """Easiness filter: a query that repeats its title or copies a run of its passage teaches nothing."""
    q = _words(query)
    for title in titles:
        t = _words(title)
        if t and (q == t or (len(t) >= 4 and " ".join(t) in " ".join(q))):
            return "copies_title"
    longest = longest_copied_run(q, texts)
    if longest >= 5 and longest >= max_fraction * len(q):
        return "copies_passage"
    return None


_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "do", "does", "for", "from", "had",
    "has", "have", "how", "in", "into", "is", "it", "its", "may", "might", "no", "not", "of", "on", "or", "than",
    "that", "the", "their", "these", "this", "those", "to", "was", "were", "what", "when", "which", "while", "who",
    "why", "will", "with", "without",
})


def word_overlap(query: str, texts: list[str]) -> float:
    """Share of the query's content words (stopwords aside) that occur in its passages (0: none, 1: all).

    Real SciFact claims share 0.50 of their content words with the cited abstract (dev split); claims the
    0.5B generator writes share 0.76 (BENCHMARKS.md, SciFact fourth round).

        >>> word_overlap("Mice lacking FOXP2 cannot vocalise", ["FOXP2 knockout mice were silent."])
        0.4
    """
    words = [w for w in _words(query) if w not in _STOPWORDS]
    if not words:
        return 1.0
    seen = {w for text in texts for w in _words(text)}
    return sum(w in seen for w in words) / len(words)


def parse_judge(raw: str) -> dict[str, float] | None:
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", raw.strip()).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        m = re.search(r"\{.*\}", text, re.S)
        if not m:
            return None
        try:
            data = json.loads(m.group(0))
        except json.JSONDecodeError:
            return None
    if not isinstance(data, dict):
        return None
    scores = {}
    for field in JUDGE_FIELDS:
        value = data.get(field)
        if not isinstance(value, int | float) or not 1 <= value <= 10:
            return None
        scores[field] = float(value)
    return scores


def near_duplicates(embeddings, threshold: float) -> list[bool]:
    """Greedy in order: True for rows whose cosine to an earlier kept row is >= threshold."""
    import numpy as np

    emb = np.asarray(embeddings, dtype=np.float32)
    keep_idx: list[int] = []
    dup = []
    for i in range(len(emb)):
        if keep_idx and float(np.max(emb[keep_idx] @ emb[i])) >= threshold:
            dup.append(True)
        else:
            dup.append(False)
            keep_idx.append(i)
    return dup


# --- the response cache ---------------------------------------------------------------------------


class ResponseCache:
    """Append-only JSONL of request key -> response text; safe to kill at any point."""

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.data: dict[str, str] = {}
        if path.is_file():
            with path.open("rb") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        self.data[row["key"]] = row["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line torn by a kill
        self.hits = 0

    def get(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None:
            self.hits += 1
        return value

    def put(self, key: str, text: str) -> None:
        with self._lock:
            self.data[key] = text
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": key, "text": text}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())


def request_key(identity: str, messages: list[dict[str, str]], **params: Any) -> str:
    blob = json.dumps({"id": identity, "m": messages, "p": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- the stage ------------------------------------------------------------------------------------


def generator_identity(cfg: Config) -> str:
    """Names the generator in the cache key, the manifest and every published row: never a credential."""
    g = cfg.generate
    if g.provider:
        return f"provider:{g.provider}|{g.model}"
    if g.inference_endpoint is not None:
        ep = g.inference_endpoint
        return f"inference-endpoint:{ep.namespace + '/' if ep.namespace else ''}{ep.name}|{ep.repository}"
    if g.endpoint:
        return redact(f"endpoint:{public_url(g.endpoint)}|{g.model}")
    name = embedded_generator(cfg)
    if name.startswith("hf://"):  # a GPU profile's larger generator from the Hub (repo and file name it)
        return f"gguf:{name[len('hf://'):]}"
    if name in GENERATORS:
        return f"gguf:{name}:{GENERATORS[name][1][:16]}"
    return f"gguf:{Path(name).name}:{sha256_file(resolve_generator(name))[:16]}"


def _judge_enabled(cfg: Config) -> bool:
    g = cfg.generate
    if g.judge == "auto":  # on with any strong (remote) generator or a judge endpoint
        return generator_kind(cfg) != "embedded" or bool(g.judge_endpoint)
    return g.judge == "on"


class _Generator:
    """Runs requests through the cache with bounded concurrency and the caps."""

    def __init__(self, ctx: StageContext, client: ChatClient, judge_client: ChatClient | None,
                 cache: ResponseCache, identity: str, kind: str, judge_kind: str, judge_identity: str | None = None):
        self.ctx, self.cfg = ctx, ctx.cfg
        self.client, self.judge_client = client, judge_client
        self.cache, self.identity = cache, identity
        self.fmt = response_format(kind, QUERY_SCHEMA)
        self.judge_kind = judge_kind
        self.judge_identity = judge_identity
        self.calls = 0
        self._count = threading.Lock()  # requests run in parallel on a batching server

    def ask(self, client: ChatClient, messages: list[dict[str, str]], seed: int, schema_fmt: dict | None,
            max_tokens: int, temperature: float) -> str:
        if client is not self.client:  # the judge
            identity = self.judge_identity or f"judge:{client.base_url}|{client.model}"
        else:
            identity = self.identity
        key = request_key(identity, messages, seed=seed, t=temperature, n=max_tokens, fmt=schema_fmt)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        try:
            text = client.chat(messages, max_tokens=max_tokens, temperature=temperature, seed=seed,
                               response_format=schema_fmt)
        except EndpointError as exc:
            if schema_fmt is None or self.calls or exc.exhausted:  # down or overloaded: not a refusal
                raise
            # The very first request failed with structured output: the server may not support it.
            self.ctx.log.warning("endpoint rejected structured output (response_format); continuing with plain "
                                 "text, every output is still validated")
            self.fmt = None
            text = client.chat(messages, max_tokens=max_tokens, temperature=temperature, seed=seed)
        with self._count:
            self.calls += 1
            n = self.calls
        self.cache.put(key, text)
        crash_point(f"generate.call.{n}")
        return text

    def one(self, task: Task, texts: list[str], titles: list[str]) -> dict[str, Any]:
        """One query for ``task``: ``generate.candidates`` valid answers (new seeds), the least copied kept.

        An invalid output or a copy of the passage is asked again with a new seed, up to
        ``invalid_retries`` extra attempts. Every attempt resends the same prompt, which a llama.cpp server
        answers from its cached prompt (about a quarter of the first call's time on CPU).
        """
        g = self.cfg.generate
        messages = query_messages(self.cfg.domain, task.qtype, texts)
        attempts = g.candidates + g.invalid_retries
        good: list[tuple[float, int, str]] = []
        for attempt in range(attempts):
            seed = int(hashlib.sha256(f"{self.cfg.run.seed}/{task.task_id}/{attempt}".encode()).hexdigest()[:8], 16)
            raw = self.ask(self.client, messages, seed, self.fmt, g.max_new_tokens, g.temperature)
            query, reason = parse_query(raw, g.min_query_words, g.max_query_words)
            if query is not None:
                reason = copy_reason(query, texts, titles, g.max_copy_fraction)
                if reason is None:
                    good.append((word_overlap(query, texts), attempt, query))
                    if len(good) == g.candidates:
                        break
        if good:
            overlap, _, best = min(good)
            return {"query": best, "reason": None, "attempts": attempt + 1, "overlap": overlap}
        if query is not None:  # the last answer parsed but copied its passage or title
            return {"query": query, "reason": reason, "attempts": attempts}
        return {"query": raw.strip()[:500], "reason": f"invalid_output:{reason}", "attempts": attempts}

    def judge(self, query: str, texts: list[str]) -> dict[str, float] | None:
        fmt = response_format(self.judge_kind, JUDGE_SCHEMA)
        raw = self.ask(self.judge_client, judge_messages(self.cfg.domain, query, texts), 0, fmt, 96, 0.0)
        return parse_judge(raw)


def structured_kind(cfg: Config, embedded: bool) -> str:
    kind = cfg.generate.structured_output
    if kind == "auto":
        if embedded:
            return "llama.cpp"
        return "openai" if generator_kind(cfg) == "provider" else "tgi"
    return kind


def response_format(kind: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON-output request in the server's dialect (None: plain text)."""
    if kind == "tgi":  # TGI's grammar, enforced by the server
        return {"type": "json", "value": schema}
    if kind == "llama.cpp":  # llama.cpp's JSON mode with a schema
        return {"type": "json_object", "schema": schema}
    if kind == "openai":  # OpenAI's structured outputs (Inference Providers; huggingface_hub adapts it per provider)
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
    return None


def _bounded(executor: ThreadPoolExecutor, fn, items: list, limit: int, stop) -> Iterator[tuple[Any, Future]]:
    """Submit at most ``limit`` items ahead; stop submitting when ``stop()`` says so."""
    pending: dict[Future, Any] = {}
    it = iter(items)
    exhausted = False
    while True:
        while not exhausted and len(pending) < limit and not stop():
            try:
                item = next(it)
            except StopIteration:
                exhausted = True
                break
            pending[executor.submit(fn, item)] = item
        if not pending:
            return
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            yield pending.pop(fut), fut


def run(ctx: StageContext) -> dict[str, Any]:
    import datasets

    datasets.disable_progress_bars()
    cfg, g = ctx.cfg, ctx.cfg.generate
    chunks = datasets.load_from_disk(str(ctx.input("ingest", "chunks"))).to_list()
    by_id = {c["chunk_id"]: c for c in chunks}
    tasks = plan_tasks(chunks, cfg)
    if not tasks:
        raise StageError("no chunks to generate queries for (is the ingest output empty?)")
    identity = generator_identity(cfg)
    cache_name = hashlib.sha256(identity.encode()).hexdigest()[:16]
    cache = ResponseCache(ctx.run_dir.root / "cache" / "llm" / f"{cache_name}.jsonl")
    token = os.environ.get(g.token_env) or None
    judge_on = _judge_enabled(cfg)
    gen_kind = generator_kind(cfg)
    ctx.log.info("%s", format_plan(generator_plan(cfg, len({c for t in tasks for c in t.chunk_ids[:1]}))))
    started = time.monotonic()
    server = None
    launched = None
    with contextlib.ExitStack() as stack:
        if gen_kind == "provider":
            client = ChatClient(f"Inference Providers ({g.provider}, {g.model})", model=g.model, token=token,
                                provider=g.provider, timeout=g.timeout_s, max_retries=g.max_retries)
        elif gen_kind == "inference_endpoint":
            # paused (or scaled to zero) when this block exits: finished, failed, Ctrl-C or SIGTERM
            launched = stack.enter_context(running_endpoint(g.inference_endpoint, token))
            client = ChatClient(launched.base_url, model=g.model, token=token, hf_managed=True, timeout=g.timeout_s,
                                max_retries=g.max_retries)
        elif gen_kind == "endpoint":
            client = ChatClient(g.endpoint, model=g.model, token=token, timeout=g.timeout_s, max_retries=g.max_retries)
        else:
            binary = llama_server_binary()
            server = LocalLLMServer(resolve_embedded(embedded_generator(cfg)), n_threads=g.server_threads,
                                    n_gpu_layers=gpu_layers(g.gpu_layers), log_path=ctx.dir / "server.log",
                                    binary=binary, slots=g.concurrency or LLAMA_SERVER_SLOTS)
            stack.callback(server.stop)
            server.start()
            client = ChatClient(server.base_url, model=g.model, timeout=g.timeout_s, max_retries=g.max_retries,
                                on_connection_error=server.recover)
        kind = structured_kind(cfg, embedded=server is not None)
        judge_kind = kind
        judge_client = None
        judge_identity = None
        if judge_on:
            if g.judge_endpoint:
                judge_client = ChatClient(g.judge_endpoint, model=g.judge_model or g.model, token=token,
                                          timeout=g.timeout_s, max_retries=g.max_retries)
                judge_kind = structured_kind(cfg, embedded=False)
            else:
                judge_client = client
                if gen_kind in ("provider", "inference_endpoint"):  # stable across resumes (the URL may change)
                    judge_identity = f"judge:{identity}"
        gen = _Generator(ctx, client, judge_client, cache, identity, kind, judge_kind, judge_identity)

        results: dict[str, dict[str, Any]] = {}
        valid = 0

        def stop() -> bool:
            if g.max_queries is not None and valid >= g.max_queries:
                return True
            return g.max_minutes is not None and (time.monotonic() - started) / 60 >= g.max_minutes

        def work(task: Task) -> dict[str, Any]:
            texts = [by_id[c]["text"] for c in task.chunk_ids]
            titles = sorted({by_id[c]["title"] for c in task.chunk_ids if by_id[c]["title"]})
            out = gen.one(task, texts, titles)
            if out["reason"] is None and judge_on:
                scores = gen.judge(out["query"], texts)
                out["judge"] = scores
                if scores is None:
                    out["reason"] = "judge_unparsed"
                elif scores["overall"] < g.judge_threshold:
                    out["reason"] = "judge_below_threshold"
            return out

        # llama-cpp-python's server answers one request at a time and reuses the previous prompt's cache: in
        # order, a chunk's questions (and retries) follow each other and pay for the passage once. llama-server
        # batches its slots.
        workers = server.slots if server is not None else concurrency(cfg)
        # The bar counts questions asked (a rejected one counts too: it took the time) toward the planned
        # number, or kept queries toward generate.max_queries when that stops the stage first.
        capped = g.max_queries is not None and g.max_queries < len(tasks)
        ctx.advance(0, g.max_queries if capped else len(tasks), unit="queries", kept=0)
        pool = ThreadPoolExecutor(max_workers=workers)
        # Not waiting for requests in flight on an error or Ctrl-C: the endpoint is paused at once (their answers,
        # if any arrive, still go to the cache).
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        for task, fut in _bounded(pool, work, tasks, workers * 2, stop):
            results[task.task_id] = fut.result()
            if results[task.task_id]["reason"] is None:
                valid += 1
            ctx.report(f"generate: {len(results)}/{len(tasks)} tasks, {valid} queries", len(results) / len(tasks))
            if capped:
                ctx.advance(valid, g.max_queries, unit="queries", asked=len(results))
            else:
                ctx.advance(len(results), len(tasks), unit="queries", kept=valid)

    # Near-duplicates, among the queries that passed every other filter, in task order.
    ordered = [t for t in tasks if t.task_id in results]
    kept = [t for t in ordered if results[t.task_id]["reason"] is None]
    if kept:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(resolve_model(cfg.model.name), device="cpu")
        emb = model.encode([cfg.model.query_prompt + results[t.task_id]["query"] for t in kept],
                           normalize_embeddings=True, batch_size=64, show_progress_bar=False)
        for t, dup in zip(kept, near_duplicates(emb, g.dedupe_similarity), strict=True):
            if dup:
                results[t.task_id]["reason"] = "near_duplicate"

    rows, rejected, overlaps = [], [], []
    for t in ordered:
        r = results[t.task_id]
        if r["reason"] is not None:
            rejected.append({"task_id": t.task_id, "type": t.qtype, "query": r["query"], "reason": r["reason"]})
            continue
        overlaps.append(r["overlap"])
        judge = r.get("judge") or {}
        rows.append({
            "query_id": f"q{len(rows):06d}",
            "query": r["query"],
            "type": t.qtype,
            "hops": len(t.chunk_ids),
            "positive_chunk_ids": list(t.chunk_ids),
            "positive_doc_ids": sorted({by_id[c]["doc_id"] for c in t.chunk_ids}),
            "hop_contexts": [by_id[c]["text"] for c in t.chunk_ids],
            **{f"judge_{f}": judge.get(f) for f in JUDGE_FIELDS},
            "generator": identity,
            "prompt_version": PROMPT_VERSION,
            "task_id": t.task_id,
        })
    with ctx.output("rejected.jsonl").open("w", encoding="utf-8") as fh:
        for r in rejected:
            fh.write(json.dumps(r) + "\n")
    reasons = Counter(r["reason"].split(":")[0] if r["reason"].startswith("invalid_output") else r["reason"]
                      for r in rejected)
    counts = {
        "tasks_planned": len(tasks),
        "tasks_done": len(results),
        "capped": len(results) < len(tasks),
        "queries": len(rows),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "invalid_detail": dict(sorted(Counter(r["reason"] for r in rejected
                                              if r["reason"].startswith("invalid_output")).items())),
        "by_type": dict(sorted(Counter(r["type"] for r in rows).items())),
        "judge": "on" if judge_on else "off",
        "judge_model": (g.judge_model or g.model if g.judge_endpoint else identity) if judge_on else None,
        "generator": identity,
        "generator_kind": gen_kind,
        **({"provider": g.provider, "provider_model": g.model} if gen_kind == "provider" else {}),
        **({"inference_endpoint": launched.record()} if launched is not None else {}),
        "concurrency": workers,
        "gpu_layers": server.n_gpu_layers if server is not None else None,
        **({"embedded_server": "llama-server" if server.binary else "llama-cpp-python"} if server is not None else {}),
        "prompt_version": PROMPT_VERSION,
        "llm_calls": gen.calls,
        "mean_word_overlap": round(sum(overlaps) / len(overlaps), 3) if overlaps else None,
        "cache_hits": cache.hits,
        "server_restarts": server.restarts if server else 0,
        "minutes": round((time.monotonic() - started) / 60, 2),
    }
    if not rows:
        raise StageError(
            f"no usable queries: all {len(rejected)} outputs were rejected "
            f"({', '.join(f'{k}: {v}' for k, v in counts['rejected_by_reason'].items())}); see "
            f"{ctx.output('rejected.jsonl')}. Try a larger generator (generate.generator) or an endpoint."
        )
    save_rows(rows, ctx.output("queries"), _QUERY_FEATURES)
    for row in rows[:5]:
        passage = " ".join(row["hop_contexts"][0].split())[:120]
        ctx.log.info("sample [%s] %s  <-  %s", row["type"], row["query"], passage)

    ctx.output("README.md").write_text(str(synthetic_card(cfg, counts)), encoding="utf-8")
    return counts


_QUERY_FEATURES = {
    "query_id": "string", "query": "string", "type": "string", "hops": "int32",
    "positive_chunk_ids": ["string"], "positive_doc_ids": ["string"], "hop_contexts": ["string"],
    **{f"judge_{f}": "float32" for f in JUDGE_FIELDS},
    "generator": "string", "prompt_version": "string", "task_id": "string",
}


def _inputs(cfg: Config) -> dict[str, str]:
    return {"generator": generator_identity(cfg), "prompt_version": PROMPT_VERSION}


STAGE = Stage(
    name="generate",
    run=run,
    sections=(
        "domain", "run.seed", "model.name", "model.query_prompt", "generate.questions_per_chunk",
        "generate.query_types", "generate.min_hops", "generate.max_hops", "generate.sample_documents",
        "generate.max_chunks_per_document",
        "generate.temperature", "generate.max_new_tokens", "generate.structured_output", "generate.invalid_retries",
        "generate.candidates",
        "generate.judge", "generate.judge_endpoint", "generate.judge_model", "generate.judge_threshold",
        "generate.dedupe_similarity", "generate.max_copy_fraction", "generate.min_query_words",
        "generate.max_query_words", "generate.max_queries", "generate.max_minutes",
    ),
    reads=(Input("ingest", "chunks"),),
    writes=("queries", "rejected.jsonl", "README.md"),
    external=_inputs,
    version="2",
    help="Write synthetic queries for the chunks with an LLM (TGI endpoint, or the embedded llama.cpp server).",
)
