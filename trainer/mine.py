"""Mine stage: split by document, find hard negatives for the training queries, write training rows.

Reads ``<run>/stages/ingest/chunks`` and ``<run>/stages/generate/queries`` (query_id, query, type,
hops, positive_chunk_ids, positive_doc_ids). Outputs in ``<run>/stages/mine/``:

- ``train/``: a ``datasets`` Dataset whose columns are exactly what sentence-transformers losses
  read, in order: ``anchor`` (the query), ``positive``, ``negative_1`` .. ``negative_<k>``.
  Passages are ``title + " " + text`` (MTEB's BEIR convention, so training sees what evaluation
  embeds); no prompts are baked in (the train stage applies ``model.query_prompt`` /
  ``model.passage_prompt``). A query with several positives (multi-hop) gives one row per positive,
  all sharing the query's negatives.
- ``train_meta/``: row-aligned metadata: query_id, positive_id, positive_score, negative_ids,
  negative_scores (base-model cosine), type, hops.
- ``split/``: (doc_id, split) for every document that has chunks.
- ``test_beir/``: the held-out split for evaluation in BEIR layout: ``corpus.jsonl`` (every chunk:
  _id = chunk_id, title, text), ``queries.jsonl`` (test queries), ``qrels/test.tsv``.
- ``stats.json`` (split and filter counts, negatives found per query, score distributions) and
  ``scores_hist.png``.

How it works:

1. **Split by document** (``mine.test_fraction``, seeded by ``run.seed``). A query goes to the side
   that holds all its positive documents; one whose positives span both sides is dropped (counted).
   Candidates are retrieved from the training documents only, so no text of a test document is
   trained on, not even as a negative.
2. **Candidates**: exact dense search with the base model (normalized embeddings; faiss above
   ``trainer.retrieval.FAISS_MIN_DOCS`` passages) and BM25 (bm25s), ``mine.candidates`` each, fused by reciprocal
   rank (``rrf``) or an alternating ``union`` (``mine.mode=hybrid``); or one of them alone.
3. **False-negative guard**, in this order, every candidate counted under the first rule it fails:
   a positive of the query; a chunk of a positive's document (``mine.exclude_positive_documents``);
   a near-duplicate of a positive (cosine >= ``mine.duplicate_similarity`` or the same normalized
   text) or of an already kept negative; a base-model score above the margin threshold
   (:func:`margin_threshold`, NV-Retriever's TopK-PercPos at 0.95). The first ``mine.num_negatives``
   survivors in fused order are kept.
4. A query left with fewer than k negatives is retried once with 10x the candidates; if still short
   (tiny corpora), its rows are dropped and counted (``queries_short``, ``rows_dropped_short``):
   sentence-transformers needs the same number of negative columns in every row.

Passage and query embeddings are cached in blocks of ``EMBED_BLOCK``: queries in ``_work/``, passages in
the user's embedding cache (``run.embedding_cache``, shared by every run of the same base model: a re-mine of a
corpus skips embedding it) or in ``_work/``. A killed run resumes from the finished blocks and writes
byte-identical outputs.

Example::

    >>> margin_threshold(0.8, 0.95, "perc")  # candidates scoring above this are dropped
    0.76
    >>> select_negatives([(3, 0.768), (4, 0.752), (5, 0.5)], 0.8, k=1, margin=0.95, margin_type="perc")
    ([4], Counter({'margin': 1}))
"""

from __future__ import annotations

import json
import random
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from trainer._faults import crash_point
from trainer.beir import write_beir
from trainer.chunking import passage_text
from trainer.config import Config
from trainer.corpus_pairs import MAKERS as CORPUS_PAIR_MAKERS
from trainer.errors import InputError
from trainer.files import atomic_dir, fingerprint
from trainer.real_queries import (
    REAL_TYPE,
    RealQuery,
    load_real_queries,
    mix_counts,
    refuse_leaks,
    split_queries,
    subsample,
    test_sets,
)
from trainer.retrieval import cached_encode, encode, exact_search, load_model, model_fingerprint
from trainer.rundir import Input, Stage, StageContext

EMBED_BLOCK = 4096  # passages per cached embedding block: the unit a killed run resumes from
RRF_K = 60  # the usual reciprocal-rank-fusion constant
WIDEN_FACTOR = 10  # a query short of negatives is retried once with this many times the candidates
REQUIRED_QUERY_COLUMNS = ("query_id", "query", "positive_chunk_ids")


# ---------------------------------------------------------------- pure helpers (unit-tested)


def normalized(text: str) -> str:
    """Text compared for exact duplicates: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def split_documents(doc_ids: Sequence[str], test_fraction: float, seed: int) -> set[str]:
    """The held-out documents: the first ``round(n * test_fraction)`` of a seeded shuffle of the sorted ids.

    With two or more documents and ``test_fraction > 0`` each side gets at least one document.
    """
    ids = sorted(set(doc_ids))
    n_test = int(len(ids) * test_fraction + 0.5)
    if test_fraction > 0 and len(ids) >= 2:
        n_test = min(max(n_test, 1), len(ids) - 1)
    # A seed of its own: generate samples documents with Random(seed), and the same stream here would
    # hold out exactly the documents generation skipped (no test queries at all).
    random.Random(f"split/{seed}").shuffle(ids)
    return set(ids[:n_test])


def margin_threshold(min_positive: float, margin: float, margin_type: str) -> float:
    """Candidates scoring above this are treated as likely false negatives and dropped.

    ``perc``: ``margin`` x the query's lowest positive score, written as ``pos - |pos| * (1 - margin)``
    so that a negative positive score moves the threshold down, not up (the same as
    sentence-transformers' ``relative_margin = 1 - margin``). ``abs``: ``pos - margin``.
    """
    if margin_type == "perc":
        return round(min_positive - abs(min_positive) * (1.0 - margin), 12)
    if margin_type == "abs":
        return round(min_positive - margin, 12)
    raise ValueError(f"unknown margin_type {margin_type!r}")


def select_negatives(
    candidates: Sequence[tuple[int, float]],
    min_positive: float,
    *,
    k: int,
    margin: float,
    margin_type: str,
    reject: Callable[[int], str | None] | None = None,
    key: Callable[[int], str] | None = None,
) -> tuple[list[int], Counter]:
    """The first ``k`` candidates (in the given order) that pass the guard, and drop counts by reason.

    ``candidates`` are (index, base-model score) pairs; ``reject(index)`` returns a reason to drop a
    candidate before its score is looked at (positive, same document, near-duplicate), or None; a
    survivor whose ``key(index)`` (normalized text) equals an earlier survivor's is dropped as
    ``duplicate_negative``. Every candidate is examined, so the counts describe the whole candidate
    pool, not just the first k.
    """
    threshold = margin_threshold(min_positive, margin, margin_type)
    kept: list[int] = []
    keys: set[str] = set()
    drops: Counter = Counter()
    for index, score in candidates:
        why = reject(index) if reject is not None else None
        if why is None and score > threshold:
            why = "margin"
        if why is None and key is not None:
            text_key = key(index)
            if text_key in keys:
                why = "duplicate_negative"
            keys.add(text_key)
        if why is not None:
            drops[why] += 1
        elif len(kept) < k:
            kept.append(index)
    return kept, drops


def fuse(dense: Sequence[int], lexical: Sequence[int], how: str) -> list[int]:
    """One candidate ranking from a dense and a BM25 ranking.

    ``rrf``: by sum of 1 / (60 + rank), ties by best rank then index. ``union``: alternate between
    the two rankings (dense first), skipping what was already taken, so both kinds of confuser get
    the same share of the top places.
    """
    if how == "rrf":
        score: dict[int, float] = {}
        best: dict[int, int] = {}
        for ranking in (dense, lexical):
            for rank, i in enumerate(ranking):
                score[i] = score.get(i, 0.0) + 1.0 / (RRF_K + rank + 1)
                best[i] = min(best.get(i, rank), rank)
        return sorted(score, key=lambda i: (-score[i], best[i], i))
    if how == "union":
        out: list[int] = []
        seen: set[int] = set()
        for pair in zip_longest(dense, lexical):
            for i in pair:
                if i is not None and i not in seen:
                    seen.add(i)
                    out.append(i)
        return out
    raise ValueError(f"unknown fusion {how!r}")


def dense_search(queries: np.ndarray, passages: np.ndarray, k: int) -> list[list[int]]:
    """Exact top-k passage indices by cosine (normalized embeddings), best first, ties by index."""
    return exact_search(queries, passages, k)[0]


class BM25Index:
    """bm25s over the training passages (English stopwords removed, no stemming)."""

    def __init__(self, passages: Sequence[str]):
        import bm25s

        self.n = len(passages)
        self._bm25s = bm25s
        self._retriever = None
        if self.n:
            self._retriever = bm25s.BM25()
            self._retriever.index(bm25s.tokenize(list(passages), stopwords="en", show_progress=False),
                                  show_progress=False)

    def search(self, queries: Sequence[str], k: int) -> list[list[int]]:
        """Top-k passage indices per query, best first; passages sharing no term are left out."""
        k = min(k, self.n)
        if k <= 0 or not queries or self._retriever is None:
            return [[] for _ in queries]
        tokens = self._bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
        docs, scores = self._retriever.retrieve(tokens, k=k, show_progress=False)
        return [[int(d) for d, s in zip(drow, srow) if s > 0] for drow, srow in zip(docs, scores)]


def distribution(values: Sequence[float]) -> dict[str, float | int]:
    if not len(values):
        return {"count": 0}
    a = np.asarray(values, dtype=np.float64)
    q = np.percentile(a, [10, 50, 90])
    return {
        "count": len(a), "mean": round(float(a.mean()), 4), "std": round(float(a.std()), 4),
        "min": round(float(a.min()), 4), "p10": round(float(q[0]), 4), "median": round(float(q[1]), 4),
        "p90": round(float(q[2]), 4), "max": round(float(a.max()), 4),
    }


# ---------------------------------------------------------------- inputs


@dataclass
class Query:
    query_id: str
    text: str
    type: str
    hops: int
    positives: list[int]  # row indices into the chunk table
    docs: set[str]
    # filled while mining
    negatives: list[int] = field(default_factory=list)
    negative_scores: list[float] = field(default_factory=list)
    positive_scores: list[float] = field(default_factory=list)
    positive_text: str | None = None  # inverse cloze: the positive is its chunk without the query sentence
    round_trip_dropped: bool = False


GENERATED = "generated"  # round-trip filtering applies to generated queries only
CORPUS_TYPE = "corpus"  # the `type` of a corpus-derived pair (suffixed with the method)


def _is_generated(q: Query) -> bool:
    return q.type != REAL_TYPE and not q.type.startswith(CORPUS_TYPE)


def load_inputs(ctx: StageContext):
    import datasets

    chunks_dir = ctx.input("ingest", "chunks")
    queries_dir = ctx.input("generate", "queries")
    chunks = datasets.load_from_disk(str(chunks_dir))
    if queries_dir is None or (ctx.cfg.queries.source and ctx.cfg.queries.ratio == 1
                               and ctx.cfg.queries.use != "eval"):
        if not ctx.cfg.queries.source and ctx.cfg.mine.corpus_pairs == "off":
            raise InputError("mine: no queries to train on: run the generate stage (`python -m trainer run --to "
                             "mine`), or give your own with queries.source, or set mine.corpus_pairs")
        return chunks, datasets.Dataset.from_dict({c: [] for c in REQUIRED_QUERY_COLUMNS})
    queries = datasets.load_from_disk(str(queries_dir))
    missing = [c for c in REQUIRED_QUERY_COLUMNS if c not in queries.column_names]
    if missing:
        raise InputError(f"{queries_dir} lacks the columns {missing} (it has {queries.column_names}); "
                         "it was not written by this version of the generate stage: re-run generate")
    return chunks, queries


def assign_queries(
    rows: Sequence[dict[str, Any]], chunk_row: dict[str, int], chunk_doc: Sequence[str], test_docs: set[str]
) -> tuple[list[Query], list[Query], Counter]:
    """Queries of the train side, of the test side, and drop counts by reason."""
    train: list[Query] = []
    test: list[Query] = []
    dropped: Counter = Counter()
    seen: set[str] = set()
    for row in rows:
        qid, text = str(row["query_id"]), (row.get("query") or "").strip()
        if qid in seen:
            dropped["duplicate_query_id"] += 1
            continue
        seen.add(qid)
        if not text:
            dropped["empty_query"] += 1
            continue
        pos_ids = list(dict.fromkeys(row.get("positive_chunk_ids") or []))
        if not pos_ids:
            dropped["no_positive"] += 1
            continue
        if any(p not in chunk_row for p in pos_ids):
            dropped["unknown_positive"] += 1
            continue
        positives = [chunk_row[p] for p in pos_ids]
        docs = {chunk_doc[i] for i in positives} | {str(d) for d in (row.get("positive_doc_ids") or [])}
        held_out = docs & test_docs
        if held_out and held_out != docs:
            dropped["cross_split"] += 1
            continue
        q = Query(qid, text, str(row.get("type") or ""), int(row.get("hops") or len(positives)), positives, docs)
        (test if held_out else train).append(q)
    return train, test, dropped


def resolve_real(queries: Sequence[RealQuery], chunk_ids: Sequence[str], chunk_doc: Sequence[str],
                 texts: Sequence[str], documents: dict[str, dict[str, str]] | None) -> tuple[list[dict], Counter]:
    """Rows in the generate stage's layout for real queries (positives: every chunk of each relevant document; the
    mine stage keeps the one the base model scores highest), and drop counts. A relevant document given by its
    text is matched to the document or chunk with the same normalized text, or the document containing it."""
    chunks_of: dict[str, list[str]] = {}
    for cid, d in zip(chunk_ids, chunk_doc):
        chunks_of.setdefault(d, []).append(cid)
    by_text: dict[str, str] = {normalized(t): d for t, d in zip(texts, chunk_doc)}
    doc_norm: dict[str, str] = {}
    if documents:
        for d, doc in documents.items():
            by_text.setdefault(normalized(doc["text"]), d)
            doc_norm[d] = normalized(doc["text"])
    rows, dropped = [], Counter()
    for q in queries:
        docs = [d for d in q.doc_ids if d in chunks_of]
        if not q.doc_ids and q.doc_text:
            want = normalized(q.doc_text)
            hit = by_text.get(want) or next((d for d, t in doc_norm.items() if want and want in t), None)
            docs = [hit] if hit else []
        if not docs:
            dropped["unknown_document"] += 1
            continue
        rows.append({"query_id": f"real/{q.query_id}", "query": q.text, "type": REAL_TYPE, "hops": 1,
                     "positive_chunk_ids": [c for d in docs for c in chunks_of[d]], "positive_doc_ids": docs})
    return rows, dropped


def write_real_beir(dest: Path, documents: dict[str, dict[str, str]], rows: Sequence[dict]) -> int:
    """Your evaluation queries as BEIR over the ingest documents (as MTEB scores a task: whole documents)."""
    queries = {r["query_id"]: r["query"] for r in rows}
    qrels = {r["query_id"]: {d: 1 for d in r["positive_doc_ids"]} for r in rows}
    return write_beir(dest, documents, queries, qrels)


def _documents(ctx: StageContext, chunks) -> dict[str, dict[str, str]]:
    """doc_id -> {title, text} from the ingest documents (else the chunks joined, in order)."""
    import datasets

    folder = ctx.input("ingest", "documents")
    if folder is not None:
        ds = datasets.load_from_disk(str(folder)).select_columns(["doc_id", "title", "text"])
        return {r["doc_id"]: {"title": r["title"] or "", "text": r["text"]} for r in ds}
    docs: dict[str, dict[str, str]] = {}
    for d, title, text in zip(chunks["doc_id"], chunks["title"], chunks["text"]):
        entry = docs.setdefault(d, {"title": title or "", "text": ""})
        entry["text"] = (entry["text"] + " " + text).strip()
    return docs


# ---------------------------------------------------------------- embeddings (cached in _work)


class Encoder:
    """The base model, loaded on first use (a fully cached resume never loads it)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.cfg.model.name, self.cfg.model.max_seq_length)
        return self._model

    def encode(self, texts: list[str], kind: str, prompt: str,
               on_done: Callable[[int], None] | None = None) -> np.ndarray:
        return encode(self.model, texts, kind, batch_size=self.cfg.mine.batch_size, prompt=prompt, normalize=True,
                      on_done=on_done)


def embed_cached(texts: list[str], folder: Path, encode: Callable[..., np.ndarray],
                 advance: Callable[[int], None] | None = None, *, name: str | None = None,
                 key: str | None = None) -> tuple[np.ndarray, int]:
    """Embed in blocks of EMBED_BLOCK cached under ``folder``; returns (embeddings, blocks reused). ``key``: what
    besides the texts decides the vectors (default the folder's name: in _work the base model and prompts are part
    of the stage key); ``name``: for crash points (default the folder's name). ``advance(n)``: texts embedded (or
    reused) so far. ``encode(texts, on_done=None)``: the encoder, calling ``on_done(n)`` as it goes."""
    name = name or folder.name
    before = 0  # texts in the blocks already done

    def block_done(b: int) -> None:
        nonlocal before
        before = min(b * EMBED_BLOCK, len(texts))
        if advance is not None:
            advance(before)
        crash_point(f"mine.embed.{name}.{b}")

    def encode_block(chunk: list[str]) -> np.ndarray:
        return encode(chunk, on_done=(lambda n: advance(before + n)) if advance is not None else None)

    return cached_encode(texts, encode_block, folder, key or folder.name, block=EMBED_BLOCK, on_block=block_done)


def passage_cache(cfg: Config, ctx: StageContext, encoder: Encoder) -> tuple[Path, str | None]:
    """(folder, key) of the passage embeddings: the user's cache, keyed by the model's fingerprint (weights,
    max_seq_length, pooling), the prompt and normalisation; or the stage's _work folder."""
    if not cfg.run.embedding_cache:
        return ctx.work / "passages", None
    from trainer.models import cache_dir

    fp = model_fingerprint(encoder.model)
    return cache_dir() / "embeddings", f"{fp}|document|{cfg.model.passage_prompt}|normalized|block{EMBED_BLOCK}"


# ---------------------------------------------------------------- outputs


def _save_dataset(columns: dict[str, list], features, dest: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_dict(columns, features=features)
    with atomic_dir(dest) as tmp:
        # num_shards=1: datasets 5 writes an empty dataset with no shard at all, which load_from_disk rejects
        ds.save_to_disk(str(tmp), num_shards=1 if len(ds) == 0 else None)


def write_test_beir(dest: Path, chunks, test: list[Query], chunk_ids: Sequence[str]) -> int:
    """The held-out split as BEIR: every chunk, the test queries and their positives; returns the number of qrels."""
    corpus = {cid: {"title": title or "", "text": text}
              for cid, title, text in zip(chunks["chunk_id"], chunks["title"], chunks["text"])}
    queries = {q.query_id: q.text for q in test}
    qrels = {q.query_id: {chunk_ids[p]: 1 for p in q.positives} for q in test}
    meta = {q.query_id: {"type": q.type, "hops": q.hops} for q in test}
    return write_beir(dest, corpus, queries, qrels, query_metadata=meta)


def plot_scores(path: Path, positive: Sequence[float], negative: Sequence[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(-0.2, 1.0, 49)
    if len(positive):
        ax.hist(np.clip(positive, -0.2, 1.0), bins=bins, alpha=0.6, label=f"positives (n={len(positive)})")
    if len(negative):
        ax.hist(np.clip(negative, -0.2, 1.0), bins=bins, alpha=0.6, label=f"kept negatives (n={len(negative)})")
    ax.set_xlabel("base-model cosine to the query")
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=10)
    if len(positive) or len(negative):
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no training rows", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


# ---------------------------------------------------------------- the stage


def real_queries(ctx: StageContext, chunks, train: list[Query], test: list[Query], test_docs: set[str],
                 chunk_row: dict[str, int]) -> dict[str, Any]:
    """Your queries (``queries:``): the training ones as Query objects (after the leakage guard), the evaluation
    ones written to ``real_beir/``, and their counts."""
    qc = ctx.cfg.queries
    if not qc.source:
        return {"train": [], "stats": {}}
    loaded = load_real_queries(qc)
    train_q, eval_q = split_queries(loaded, qc.use, qc.eval_fraction, ctx.cfg.run.seed)
    if train_q:  # test queries of an evaluation task, or of this run's held-out split, never reach training
        sets = test_sets(ctx.cfg)
        if test:
            sets["this run's held-out synthetic split"] = ({q.query_id: q.text for q in test}, {})
        refuse_leaks(train_q, sets, qc.source)
    documents = _documents(ctx, chunks)
    ids, docs, texts = chunks["chunk_id"], chunks["doc_id"], chunks["text"]
    train_rows, dropped = resolve_real(train_q, ids, docs, texts, documents)
    eval_rows, eval_dropped = resolve_real(eval_q, ids, docs, texts, documents)
    if loaded and not train_rows and not eval_rows:
        raise InputError(f"queries.source={qc.source}: none of the {len(loaded)} queries' documents is in the "
                         "corpus (ids are the ingest stage's doc_id; a BEIR corpus keeps its _id)")
    kept, held_out, _ = assign_queries(train_rows, chunk_row, docs, test_docs)
    if held_out:  # on a document of the synthetic held-out split: not trained on
        dropped["on_held_out_document"] += len(held_out)
    if eval_rows:
        write_real_beir(ctx.output("real_beir"), documents, eval_rows)
    stats = {"source": qc.source, "use": qc.use, "loaded": len(loaded), "train": len(kept), "eval": len(eval_rows),
             "dropped": dict(sorted((dropped + eval_dropped).items()))}
    ctx.log.info("mine: your queries: %s", stats)
    return {"train": kept, "stats": stats}


def run(ctx: StageContext) -> dict[str, Any]:
    import datasets

    datasets.disable_progress_bars()
    cfg, mc, log = ctx.cfg, ctx.cfg.mine, ctx.log
    k = mc.num_negatives
    chunks, queries_ds = load_inputs(ctx)

    # 1. split by document
    chunk_ids: list[str] = chunks["chunk_id"]
    chunk_doc: list[str] = chunks["doc_id"]
    titles: list[str] = chunks["title"]
    texts: list[str] = chunks["text"]
    chunk_row = {cid: i for i, cid in enumerate(chunk_ids)}
    test_docs = split_documents(chunk_doc, mc.test_fraction, cfg.run.seed)
    all_docs = sorted(set(chunk_doc))
    train, test, dropped = assign_queries(queries_ds.to_list(), chunk_row, chunk_doc, test_docs)
    if dropped.get("unknown_positive") == len(queries_ds) and len(queries_ds):
        raise InputError("no query's positive_chunk_ids match the ingest chunks: the generate output belongs to "
                         "another corpus or chunking; re-run generate (`python -m trainer run --to mine`)")
    real = real_queries(ctx, chunks, train, test, test_docs, chunk_row)
    n_synthetic = len(train)
    keep_real, keep_synth = mix_counts(len(real["train"]), n_synthetic, cfg.queries.ratio)
    train = (subsample(train, keep_synth, f"mix/synthetic/{cfg.run.seed}")
             + subsample(real["train"], keep_real, f"mix/real/{cfg.run.seed}"))
    _save_dataset({"doc_id": all_docs, "split": ["test" if d in test_docs else "train" for d in all_docs]},
                  datasets.Features({"doc_id": datasets.Value("string"), "split": datasets.Value("string")}),
                  ctx.output("split"))
    n_qrels = write_test_beir(ctx.output("test_beir"), chunks, test, chunk_ids)
    ctx.report(f"mine: {len(train)} train / {len(test)} test queries", 0.05)

    # 2. candidates over the training documents' chunks
    pool = [i for i, d in enumerate(chunk_doc) if d not in test_docs]  # pool position -> chunk row
    pool_pos = {row: p for p, row in enumerate(pool)}
    passages = [passage_text(titles[i], texts[i]) for i in pool]
    norm = [normalized(texts[i]) for i in pool]
    pool_doc = [chunk_doc[i] for i in pool]
    n_pairs = 0
    if mc.corpus_pairs != "off":
        n_pairs = mc.corpus_pairs_count or round(len(train) * mc.corpus_pairs_share / (1 - mc.corpus_pairs_share))
        if not n_pairs:
            raise InputError("mine.corpus_pairs: no other training queries to set the share against; set "
                             "mine.corpus_pairs_count")
        made = CORPUS_PAIR_MAKERS[mc.corpus_pairs]([texts[i] for i in pool], pool_doc, n_pairs, cfg.run.seed)
        for n, pair in enumerate(made):
            src, row = pool[pair.source], pool[pair.positive]
            train.append(Query(f"{CORPUS_TYPE}/{mc.corpus_pairs}/{n}", pair.query, f"{CORPUS_TYPE}:{mc.corpus_pairs}",
                               1, [row], {chunk_doc[src], chunk_doc[row]},
                               positive_text=passage_text(titles[row], pair.positive_text)
                               if pair.positive_text is not None else None))
        if len(made) < n_pairs:
            log.warning("mine: %d corpus-derived pairs asked for, %d chunks qualified", n_pairs, len(made))
    encoder = Encoder(cfg)
    p_folder, p_key = passage_cache(cfg, ctx, encoder)
    p_emb, p_reused = embed_cached(
        passages, p_folder, lambda t, on_done: encoder.encode(t, "document", cfg.model.passage_prompt, on_done),
        lambda n: ctx.advance(n, len(passages), unit="passages", label="passages embedded"),
        name="passages", key=p_key)
    ctx.report("mine: passages embedded", 0.6)
    q_emb, q_reused = embed_cached(
        [q.text for q in train], ctx.work / "queries",
        lambda t, on_done: encoder.encode(t, "query", cfg.model.query_prompt, on_done),
        lambda n: ctx.advance(n, len(train), unit="queries", label="queries embedded"))
    custom = [i for i, q in enumerate(train) if q.positive_text is not None]
    custom_emb = dict(zip(custom, encoder.encode([train[i].positive_text for i in custom], "document",
                                                 cfg.model.passage_prompt))) if custom else {}
    for i, q in enumerate(train):  # a real query's positive: its documents' chunk the base model scores highest
        if q.type == REAL_TYPE and len(q.positives) > 1:
            best: dict[str, tuple[float, int]] = {}
            for r in q.positives:
                score = float(p_emb[pool_pos[r]] @ q_emb[i])
                if chunk_doc[r] not in best or score > best[chunk_doc[r]][0]:
                    best[chunk_doc[r]] = (score, r)
            q.positives = [r for _, r in best.values()]
    use_dense, use_bm25 = mc.mode in ("hybrid", "dense"), mc.mode in ("hybrid", "bm25")
    need_dense = use_dense or mc.round_trip in ("dense", "hybrid")
    need_bm25 = use_bm25 or mc.round_trip in ("bm25", "hybrid")
    bm25 = BM25Index(passages) if need_bm25 and train else None

    def candidates(idx: list[int], depth: int) -> list[tuple[list[int], list[int], list[int]]]:
        dense = dense_search(q_emb[idx], p_emb, depth) if need_dense else [[] for _ in idx]
        lexical = bm25.search([train[i].text for i in idx], depth) if bm25 else [[] for _ in idx]
        out = []
        for d, b in zip(dense, lexical):
            d_, b_ = (d if use_dense else []), (b if use_bm25 else [])
            order = fuse(d_, b_, mc.fusion) if use_dense and use_bm25 else (d_ or b_)
            out.append((order, d, b))
        return out

    def round_trip_ok(q: Query, d: list[int], b: list[int]) -> bool:
        ranking = {"dense": d, "bm25": b, "hybrid": fuse(d, b, "rrf") if d and b else (d or b)}[mc.round_trip]
        top = set(ranking[:mc.round_trip_k])
        return any(pool_pos[r] in top for r in q.positives)

    # 3. guard and keep the first k survivors
    drops_by_query: dict[int, Counter] = {}
    sources: Counter = Counter()

    def mine(i: int, found: tuple[list[int], list[int], list[int]]) -> None:
        q = train[i]
        order, d_list, b_list = found
        if mc.round_trip != "off" and _is_generated(q) and not round_trip_ok(q, d_list, b_list):
            q.round_trip_dropped = True
            return
        from_dense, from_bm25 = set(d_list) if use_dense else set(), set(b_list) if use_bm25 else set()
        pos = [pool_pos[r] for r in q.positives]
        pos_set, pos_norm = set(pos), {norm[p] for p in pos}
        qv = q_emb[i]
        pos_vecs = custom_emb[i][None, :] if i in custom_emb else p_emb[pos]
        if q.positive_text is not None:
            pos_norm = {normalized(q.positive_text)}
        pos_scores = pos_vecs @ qv
        cand = np.asarray(order, dtype=np.int64)
        cand_scores = (p_emb[cand] @ qv) if len(cand) else np.zeros(0)
        dup_sim = (p_emb[cand] @ pos_vecs.T).max(axis=1) if len(cand) else np.zeros(0)
        dup_at = {int(c): float(s) for c, s in zip(cand, dup_sim)}

        def reject(c: int) -> str | None:
            if c in pos_set:
                return "positive"
            if mc.exclude_positive_documents and pool_doc[c] in q.docs:
                return "same_document"
            if norm[c] in pos_norm or dup_at[c] >= mc.duplicate_similarity:
                return "near_duplicate"
            return None

        pairs = [(int(c), float(s)) for c, s in zip(cand, cand_scores)]
        kept, drops = select_negatives(pairs, float(pos_scores.min()), k=k, margin=mc.margin,
                                       margin_type=mc.margin_type, reject=reject, key=norm.__getitem__)
        score_of = dict(pairs)
        q.negatives = kept
        q.negative_scores = [score_of[c] for c in kept]
        q.positive_scores = [float(s) for s in pos_scores]
        drops_by_query[i] = drops
        if len(kept) == k:
            for c in kept:
                sources["both" if c in from_dense and c in from_bm25 else "dense" if c in from_dense else "bm25"] += 1

    depth = min(mc.candidates, len(pool))
    everyone = list(range(len(train)))
    for start in range(0, len(everyone), 1024):
        batch = everyone[start:start + 1024]
        for i, found in zip(batch, candidates(batch, depth)):
            mine(i, found)
        ctx.report(f"mine: {min(start + 1024, len(train))}/{len(train)} queries", 0.6 + 0.3 * start / len(train))
        ctx.advance(min(start + 1024, len(train)), len(train), unit="queries", label="queries mined")
    short = [i for i in everyone if len(train[i].negatives) < k and not train[i].round_trip_dropped]
    wide = min(len(pool), mc.candidates * WIDEN_FACTOR)
    widened = short if wide > depth else []
    for start in range(0, len(widened), 256):
        batch = widened[start:start + 256]
        for i, found in zip(batch, candidates(batch, wide)):
            mine(i, found)

    # 4. rows: one per (query, positive), only for queries with k negatives
    cols: dict[str, list] = {"anchor": [], "positive": [], **{f"negative_{j + 1}": [] for j in range(k)}}
    meta: dict[str, list] = {n: [] for n in ("query_id", "positive_id", "positive_score", "negative_ids",
                                             "negative_scores", "type", "hops")}
    queries_short = rows_short = 0
    found_hist: Counter = Counter()
    pos_for_stats, neg_for_stats, gaps = [], [], []
    round_trip_dropped: Counter = Counter()
    for q in train:
        if q.round_trip_dropped:
            round_trip_dropped[q.type] += 1
            continue
        found_hist[len(q.negatives)] += 1
        if len(q.negatives) < k:
            queries_short += 1
            rows_short += len(q.positives)
            continue
        pos_for_stats.extend(q.positive_scores)
        neg_for_stats.extend(q.negative_scores)
        gaps.append(min(q.positive_scores) - max(q.negative_scores))
        for p, ps in zip(q.positives, q.positive_scores):
            cols["anchor"].append(q.text)
            cols["positive"].append(q.positive_text if q.positive_text is not None else passages[pool_pos[p]])
            for j, c in enumerate(q.negatives):
                cols[f"negative_{j + 1}"].append(passages[c])
            meta["query_id"].append(q.query_id)
            meta["positive_id"].append(chunk_ids[p])
            meta["positive_score"].append(round(ps, 6))
            meta["negative_ids"].append([chunk_ids[pool[c]] for c in q.negatives])
            meta["negative_scores"].append([round(s, 6) for s in q.negative_scores])
            meta["type"].append(q.type)
            meta["hops"].append(q.hops)
    string = datasets.Value("string")
    _save_dataset(cols, datasets.Features({c: string for c in cols}), ctx.output("train"))
    _save_dataset(meta, datasets.Features({
        "query_id": string, "positive_id": string, "positive_score": datasets.Value("float32"),
        "negative_ids": datasets.List(string), "negative_scores": datasets.List(datasets.Value("float32")),
        "type": string, "hops": datasets.Value("int32"),
    }), ctx.output("train_meta"))

    filter_counts: Counter = Counter()
    for c in drops_by_query.values():
        filter_counts.update(c)
    rows = len(cols["anchor"])
    stats = {
        "mode": mc.mode, "fusion": mc.fusion if mc.mode == "hybrid" else None, "num_negatives": k,
        "margin": mc.margin, "margin_type": mc.margin_type, "candidates": mc.candidates,
        "documents": {"train": len(all_docs) - len(test_docs), "test": len(test_docs)},
        "chunks": {"total": len(chunk_ids), "train_pool": len(pool)},
        "queries": {"input": len(queries_ds), "train": len(train), "test": len(test),
                    "dropped": dict(sorted(dropped.items())), "widened": len(widened),
                    "short": queries_short, "round_trip_dropped": sum(round_trip_dropped.values()),
                    "by_type": dict(sorted(Counter(q.type for q in train).items()))},
        "round_trip": {"mode": mc.round_trip, "k": mc.round_trip_k,
                       "checked": sum(1 for q in train if _is_generated(q)) if mc.round_trip != "off" else 0,
                       "dropped": sum(round_trip_dropped.values())},
        "corpus_pairs": {"method": mc.corpus_pairs, "asked": n_pairs,
                         "made": sum(1 for q in train if q.type.startswith(CORPUS_TYPE))},
        "real_queries": real["stats"],
        "rows": {"train": rows, "dropped_short": rows_short, "test_qrels": n_qrels},
        "negatives_found_per_query": {str(n): found_hist[n] for n in range(k + 1)},
        "candidates_dropped": dict(sorted(filter_counts.items())),
        "negative_sources": {s: sources[s] for s in ("dense", "bm25", "both")},
        "scores": {"positive": distribution(pos_for_stats), "negative": distribution(neg_for_stats),
                   "gap_min_positive_minus_hardest_negative": distribution(gaps)},
    }
    ctx.output("stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    plot_scores(ctx.output("scores_hist.png"), pos_for_stats, neg_for_stats,
                f"mine ({mc.mode}): {rows} rows, {k} negatives, margin {mc.margin} ({mc.margin_type})")

    if queries_short:
        log.warning("mine: %d of %d training queries found fewer than %d negatives and were left out (%d rows); "
                    "the corpus may be too small: lower mine.num_negatives, raise mine.candidates, or set "
                    "mine.exclude_positive_documents=false", queries_short, len(train), k, rows_short)
    if not test:
        log.warning("mine: the test split has no queries (test_fraction=%s, %d documents)",
                    mc.test_fraction, len(all_docs))
    if dropped:
        log.info("mine: queries dropped: %s", dict(dropped))
    return {
        "documents_train": len(all_docs) - len(test_docs), "documents_test": len(test_docs),
        "queries_in": len(queries_ds), "queries_train": len(train), "queries_test": len(test),
        "queries_dropped": dict(sorted(dropped.items())), "queries_short": queries_short,
        "queries_widened": len(widened), "train_rows": rows, "rows_dropped_short": rows_short,
        "test_qrels": n_qrels, "candidates_dropped": dict(sorted(filter_counts.items())),
        "negatives_mean": round(sum(len(q.negatives) for q in train) / len(train), 3) if train else 0,
        "embedding_blocks_reused": p_reused + q_reused,
        "queries_synthetic": n_synthetic, "queries_real_train": keep_real,
        "queries_real_eval": real["stats"].get("eval", 0),
        "round_trip_dropped": sum(round_trip_dropped.values()),
        "corpus_pairs": sum(1 for q in train if q.type.startswith(CORPUS_TYPE)),
    }


def _inputs(cfg: Config) -> dict[str, str]:
    """Your query file's fingerprint (a changed file re-runs the stage)."""
    src = cfg.queries.source
    if not src or src.startswith(("hub:", "data:")):
        return {}
    path = Path(src).expanduser()
    return {"queries": fingerprint(path)} if path.exists() else {}


STAGE = Stage(
    name="mine",
    run=run,
    sections=("run.seed", "model.name", "model.max_seq_length", "model.query_prompt", "model.passage_prompt",
              "mine", "queries"),
    reads=(Input("ingest", "chunks"), Input("generate", "queries", optional=True),
           Input("ingest", "documents", optional=True)),
    writes=("train", "train_meta", "split", "test_beir", "stats.json", "scores_hist.png"),
    may_write=("real_beir",),
    external=_inputs,
    version="1",
    help="Split by document, mine hard negatives (BM25 + dense, false-negative guard), write training rows.",
)
