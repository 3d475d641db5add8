"""The one encode and exact-search path: mine (negative candidates), evaluate (base vs tuned), export
(int8 vs PyTorch) and the benchmarks all embed and rank through here.

- :func:`encode`: float32 embeddings of texts as queries or documents (a model's ``encode_query`` /
  ``encode_document`` when it has them), unnormalised unless asked.
- :func:`cached_encode`: the embedding cache as a wrapper around any encode function (as mteb's
  cache wrapper does): blocks of texts saved as ``<hash of key and texts>.npy``, so a killed run
  resumes from finished blocks and a re-scored base model is not encoded again.
- :func:`exact_search`: top-k by inner product (faiss from ``FAISS_MIN_DOCS`` documents on), best
  first, ties by index.
- :func:`search`: every query of a :class:`~trainer.beir.BeirData` against its corpus, at each
  Matryoshka dimension, as a ``{query: {doc: score}}`` run for :func:`trainer.metrics.evaluate_run`.

Example::

    >>> import numpy as np
    >>> exact_search(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0], [0.7, 0.7]]), 2)[0]
    [[1, 2]]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.beir import BeirData, doc_text
from trainer.errors import InputError
from trainer.models import resolve_model

FAISS_MIN_DOCS = 50_000  # from this many documents on, exact search runs on a faiss IndexFlatIP
CACHE_BLOCK = 4096  # texts per cached embedding block: the unit a killed run resumes from


def load_model(name_or_path: str | Path, max_seq_length: int | None = None, device: str | None = None):
    """A SentenceTransformer from a Hub id or folder (offline: see trainer.models.resolve_model)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model(str(name_or_path)), device=device)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def as_model(model: Any, max_seq_length: int | None = None):
    return load_model(model, max_seq_length) if isinstance(model, str | Path) else model


def model_fingerprint(model: Any) -> str:
    """A hash of a SentenceTransformer's weights, module settings (its repr: max_seq_length, pooling,
    normalization) and tokenizer size: two models with the same fingerprint embed text identically."""
    import torch

    tok = getattr(model, "tokenizer", None)
    h = hashlib.sha256(f"{model!r}|{type(tok).__name__}|{len(tok) if tok is not None else 0}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def encode(model: Any, texts: list[str], kind: str = "document", *, batch_size: int = 32, prompt: str = "",
           normalize: bool = False, on_done: Callable[[int], None] | None = None, step: int = 256) -> np.ndarray:
    """float32 embeddings of ``texts`` (``kind``: 'query' or 'document'). With ``on_done``, encoded in slices
    of ``step`` texts and ``on_done(n)`` called after each with the number encoded so far (a progress bar)."""
    import torch

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    if on_done is not None and len(texts) > step:
        parts = []
        for start in range(0, len(texts), step):
            parts.append(encode(model, texts[start:start + step], kind, batch_size=batch_size, prompt=prompt,
                                normalize=normalize))
            on_done(min(start + step, len(texts)))
        return np.concatenate(parts)
    fn = getattr(model, "encode_query" if kind == "query" else "encode_document", None) or model.encode
    with torch.inference_mode():
        emb = fn(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False,
                 prompt=prompt or None, normalize_embeddings=normalize)
    if on_done is not None:
        on_done(len(texts))
    return np.asarray(emb, dtype=np.float32)


def cached_encode(
    texts: list[str],
    encode_fn: Callable[[list[str]], np.ndarray],
    folder: Path,
    key: str,
    *,
    block: int = CACHE_BLOCK,
    on_block: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """``encode_fn`` over ``texts`` in blocks cached under ``folder``; returns (embeddings, blocks reused).

    ``key`` names everything besides the texts that decides the vectors (model fingerprint, kind,
    prompt). ``on_block(i)`` runs after block i (1-based) is saved: the point a killed run resumes from.
    """
    folder.mkdir(parents=True, exist_ok=True)
    parts, reused = [], 0
    for b, start in enumerate(range(0, len(texts), block), 1):
        chunk = texts[start:start + block]
        h = hashlib.sha256(f"{key}|{len(chunk)}".encode())
        for t in chunk:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        path = folder / f"{h.hexdigest()[:32]}.npy"
        arr = None
        if path.is_file():
            try:
                arr = np.load(path)
            except (OSError, ValueError):  # a damaged entry is recomputed
                arr = None
        if arr is not None and arr.shape[0] == len(chunk):
            reused += 1
        else:
            arr = np.asarray(encode_fn(chunk), dtype=np.float32)
            tmp = path.with_name(f"{path.stem}.partial.npy")
            np.save(tmp, arr)
            tmp.replace(path)
        parts.append(arr)
        if on_block is not None:
            on_block(b)
    return (np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)), reused


def normalize(emb: np.ndarray) -> np.ndarray:
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def exact_search(queries: np.ndarray, docs: np.ndarray, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Top-k documents per query by inner product (cosine for normalized rows), best first, ties by index."""
    k = min(k, len(docs))
    if k <= 0 or len(queries) == 0:
        return [[] for _ in range(len(queries))], [[] for _ in range(len(queries))]
    if len(docs) >= FAISS_MIN_DOCS:
        import faiss

        index = faiss.IndexFlatIP(docs.shape[1])
        index.add(np.ascontiguousarray(docs, dtype=np.float32))
        scores, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        keep = [[j for j, i in enumerate(row) if i >= 0] for row in idx]
        return ([[int(row[j]) for j in ks] for row, ks in zip(idx, keep)],
                [[float(row[j]) for j in ks] for row, ks in zip(scores, keep)])
    ids: list[list[int]] = []
    vals: list[list[float]] = []
    for start in range(0, len(queries), 256):
        sims = queries[start:start + 256] @ docs.T
        if k < sims.shape[1]:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape).copy()
        top = np.take_along_axis(sims, part, axis=1)
        order = np.lexsort((part, -top), axis=1)
        ids.extend(np.take_along_axis(part, order, axis=1).tolist())
        vals.extend(np.take_along_axis(top, order, axis=1).tolist())
    return ids, vals


def search(
    model: Any,
    data: BeirData,
    *,
    top_k: int = 100,
    dims: Sequence[int | None] = (None,),
    batch_size: int = 32,
    query_prompt: str = "",
    passage_prompt: str = "",
    cache_dir: Path | None = None,
) -> dict[int | None, dict[str, dict[str, float]]]:
    """Cosine retrieval of every query's top_k documents, at each dimension (None: full).

    The corpus and queries are encoded once; a Matryoshka dimension d keeps the first d components
    and re-normalises, which is what sentence-transformers' ``truncate_dim`` + cosine does. With
    ``cache_dir``, embeddings are cached there by model fingerprint and texts (:func:`cached_encode`).
    """
    model = as_model(model)
    doc_ids, query_ids = list(data.corpus), list(data.queries)
    fp = model_fingerprint(model) if cache_dir is not None else ""

    def embed(texts: list[str], kind: str, prompt: str) -> np.ndarray:
        def fn(t: list[str]) -> np.ndarray:
            return encode(model, t, kind, batch_size=batch_size, prompt=prompt)

        if cache_dir is None:
            return fn(texts)
        return cached_encode(texts, fn, Path(cache_dir), f"{fp}|{kind}|{prompt}")[0]

    d_full = embed([doc_text(data.corpus[i]) for i in doc_ids], "document", passage_prompt)
    q_full = embed([data.queries[i] for i in query_ids], "query", query_prompt)
    runs: dict[int | None, dict[str, dict[str, float]]] = {}
    for dim in dims:
        if dim is not None and dim > d_full.shape[1]:
            raise InputError(f"Matryoshka dimension {dim} is larger than the model's {d_full.shape[1]}")
        d = normalize(d_full[:, :dim] if dim else d_full)
        q = normalize(q_full[:, :dim] if dim else q_full)
        idx, scores = exact_search(q, d, top_k)
        runs[dim] = {qid: {doc_ids[j]: s for j, s in zip(idx[r], scores[r])} for r, qid in enumerate(query_ids)}
    return runs
