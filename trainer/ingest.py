"""Ingest stage: read a corpus, drop what cannot be used (counted, with reasons), chunk the rest.

Outputs in ``<run>/stages/ingest/``:

- ``documents/``: a ``datasets`` Dataset (doc_id, title, text, source, sha256)
- ``chunks/``: a Dataset (chunk_id, doc_id, chunk_index, title, text, start, end, n_tokens,
  n_sentences); ``text == document.text[start:end]``
- ``skipped.jsonl``: one line per skipped input (source, reason, detail); the run directory itself,
  when it lies inside the corpus folder, is one skip (``run_dir``) and never read
- ``README.md``: a dataset card for the chunked corpus

Work is done in shards of ``ingest.shard_size`` documents saved under ``_work/``; a killed run
re-uses finished shards and produces byte-identical outputs.

Example::

    >>> from trainer.config import load_config
    >>> from trainer.rundir import RunDir, run_stage
    >>> cfg = load_config(None, ["ingest.source=builtin:python-docs", "run.dir=/tmp/doc-run"])
    >>> run_stage(STAGE, cfg, RunDir(cfg.run.dir)).manifest["counts"]["documents"] > 50  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from hub_cards.corpus import corpus_card
from trainer._faults import crash_point
from trainer.chunking import Chunker
from trainer.config import Config
from trainer.dataset_io import save_dataset, save_rows
from trainer.errors import InputError
from trainer.models import model_max_length, resolve_model
from trainer.readers import Document, Skip, iter_documents, normalized_hash, source_fingerprint
from trainer.rundir import Stage, StageContext

_DOC_FEATURES = {"doc_id": "string", "title": "string", "text": "string", "source": "string", "sha256": "string"}
_CHUNK_FEATURES = {
    "chunk_id": "string", "doc_id": "string", "chunk_index": "int32", "title": "string", "text": "string",
    "start": "int64", "end": "int64", "n_tokens": "int32", "n_sentences": "int32",
}


def build_chunker(cfg: Config) -> Chunker:
    from transformers import AutoTokenizer

    path = resolve_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    limit = cfg.model.max_seq_length or model_max_length(path)
    max_tokens = cfg.ingest.max_chunk_tokens or max(16, limit - 2)  # [CLS] and [SEP]
    if max_tokens > limit:
        raise InputError(f"ingest.max_chunk_tokens={max_tokens} is over the model's limit of {limit} tokens")
    return Chunker(
        tokenizer,
        max_tokens=max_tokens,
        sentences=cfg.ingest.chunk_sentences,
        overlap=cfg.ingest.chunk_overlap_sentences,
        min_chars=cfg.ingest.min_chunk_chars,
        title_in_budget=cfg.ingest.title_in_budget,
    )


def _chunk_rows(chunker: Chunker, docs: list[Document]) -> list[dict[str, Any]]:
    rows = []
    for doc in docs:
        for i, chunk in enumerate(chunker.chunk(doc.text, doc.title)):
            rows.append({
                "chunk_id": f"{doc.doc_id}#{i}", "doc_id": doc.doc_id, "chunk_index": i, "title": doc.title,
                "text": chunk.text, "start": chunk.start, "end": chunk.end, "n_tokens": chunk.n_tokens,
                "n_sentences": chunk.n_sentences,
            })
    return rows


def _summary(skips: list[Skip]) -> str:
    by_reason = Counter(s.reason for s in skips)
    lines = [f"  {reason}: {n}" for reason, n in by_reason.most_common()]
    examples = [f"  e.g. {s.source}: {s.detail}" for s in skips[:5]]
    return "\n".join(lines + examples)


def run(ctx: StageContext) -> dict[str, Any]:
    import datasets

    datasets.disable_progress_bars()  # one bar for the stage (ctx.advance), not one per shard save
    cfg = ctx.cfg
    chunker = build_chunker(cfg)
    work = ctx.work
    skips: list[Skip] = []
    shard: list[Document] = []
    shards: list[Path] = []
    reused = 0

    def flush() -> None:
        nonlocal reused
        dest = work / f"shard-{len(shards):05d}"
        if (dest / "chunks").is_dir() and (dest / "documents").is_dir():
            reused += 1
        else:
            dest.mkdir(exist_ok=True)
            docs = [{"doc_id": d.doc_id, "title": d.title, "text": d.text, "source": d.source,
                     "sha256": normalized_hash(d.text)} for d in shard]
            save_rows(docs, dest / "documents", _DOC_FEATURES)
            save_rows(_chunk_rows(chunker, shard), dest / "chunks", _CHUNK_FEATURES)
        shards.append(dest)
        shard.clear()
        crash_point(f"ingest.shard.{len(shards)}")

    n_docs = 0
    for item in iter_documents(cfg.ingest, exclude=(cfg.run.dir,)):  # never our own outputs
        if isinstance(item, Skip):
            skips.append(item)
            continue
        shard.append(item)
        n_docs += 1
        ctx.advance(n_docs, unit="documents", skipped=len(skips))  # the total is known only at the end
        if len(shard) >= cfg.ingest.shard_size:
            flush()
            ctx.report(f"ingest: {n_docs} documents", None)
    if shard:
        flush()
    ctx.advance(n_docs, n_docs, unit="documents", skipped=len(skips))

    with (ctx.dir / "skipped.jsonl").open("w", encoding="utf-8") as fh:
        for s in skips:
            fh.write(json.dumps({"source": s.source, "reason": s.reason, "detail": s.detail}) + "\n")
    if not shards:
        raise InputError(
            f"no usable documents in {cfg.ingest.source}: {len(skips)} inputs skipped\n{_summary(skips)}\n"
            f"the full list is in {ctx.dir / 'skipped.jsonl'}"
        )

    documents = datasets.concatenate_datasets([datasets.load_from_disk(str(s / "documents")) for s in shards])
    chunks = datasets.concatenate_datasets([datasets.load_from_disk(str(s / "chunks")) for s in shards])
    save_dataset(documents, ctx.dir / "documents")
    save_dataset(chunks, ctx.dir / "chunks")

    tokens = chunks["n_tokens"]
    counts = {
        "documents": len(documents),
        "chunks": len(chunks),
        "skipped": len(skips),
        "skipped_by_reason": dict(sorted(Counter(s.reason for s in skips).items())),
        "docs_without_chunks": len(documents) - len(set(chunks["doc_id"])),
        "chunk_tokens_mean": round(sum(tokens) / len(tokens), 1) if tokens else 0,
        "chunk_tokens_max": max(tokens) if tokens else 0,
        "max_chunk_tokens": chunker.max_tokens,
        "shards": len(shards),
        "shards_reused": reused,
    }
    if skips:
        ctx.log.warning(
            "ingest: %d inputs skipped (see %s):\n%s", len(skips), ctx.dir / "skipped.jsonl", _summary(skips)
        )


    card = corpus_card(cfg, {k: v for k, v in counts.items() if k not in ("shards", "shards_reused")})
    (ctx.dir / "README.md").write_text(str(card), encoding="utf-8")
    return counts


def _inputs(cfg: Config) -> dict[str, str]:
    return source_fingerprint(cfg.ingest, exclude=(cfg.run.dir,))


STAGE = Stage(
    name="ingest",
    run=run,
    sections=("domain", "model.name", "model.max_seq_length", "ingest"),
    writes=("documents", "chunks", "skipped.jsonl", "README.md"),
    external=_inputs,
    version="1",
    help="Read the corpus (folder, BEIR, saved dataset, Hub, built-in), skip bad input, chunk by sentences.",
)
