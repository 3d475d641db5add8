"""The one BEIR reader and writer: ``corpus.jsonl`` (_id, title, text), ``queries.jsonl`` (_id, text),
``qrels/<split>.tsv`` (header ``query-id corpus-id score``). Mine writes its held-out split with it;
evaluate, export, the benchmarks and mteb's local tasks read with it.

One policy for bad input: a line that is not JSON, a row without ``_id``, a qrels line without three
fields or with a non-numeric score, an id with a tab or newline: an :class:`InputError` naming the
file and line. Blank lines are ignored.

Example::

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_beir(d, {"d1": {"title": "T", "text": "x"}}, {"q1": "what?"}, {"q1": {"d1": 1}})  # qrels written
    1
    >>> data = load_beir(d)
    >>> data.queries, data.qrels, doc_text(data.corpus["d1"])
    ({'q1': 'what?'}, {'q1': {'d1': 1}}, 'T x')
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.chunking import passage_text
from trainer.errors import InputError
from trainer.files import atomic_dir

# characters that end or split a TSV/JSONL line: C0/C1 controls (tab, newline, ...), U+2028, U+2029
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control_chars(text: str) -> bool:
    """True when text holds a character that would break a TSV or JSONL line (tab, newline, ...)."""
    return _LINE_BREAKING.search(text) is not None


def shown(text: str) -> str:
    """text with its control characters escaped (\\t, \\n, \\x1b), safe to print on one line."""
    return _LINE_BREAKING.sub(lambda m: repr(m.group())[1:-1], text)


@dataclass
class BeirData:
    corpus: dict[str, dict[str, str]]  # id -> {"title", "text"}
    queries: dict[str, str]  # only the queries judged in the split
    qrels: dict[str, dict[str, int]]
    folder: Path | None = None


def doc_text(doc: Mapping[str, str]) -> str:
    """A document as mteb embeds it: title and text joined by a space."""
    return passage_text(doc.get("title"), doc.get("text"))


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a .jsonl file; a line that is not a JSON object is an InputError."""
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n} is not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n} is not a JSON object")
            yield row


def _rows_by_id(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for n, row in enumerate(read_jsonl(path), 1):
        if "_id" not in row:
            raise InputError(f"{path}: row {n} has no _id")
        yield str(row["_id"]), row


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (header ``query-id corpus-id score``) -> query -> {doc: relevance}."""
    qrels: dict[str, dict[str, int]] = {}
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if n == 1 and parts[0] in ("query-id", "query_id", "qid"):
                continue
            if not line.strip():
                continue
            if len(parts) < 3:
                raise InputError(f"{path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score', got {line!r}")
            try:
                qrels.setdefault(parts[0], {})[parts[1]] = int(float(parts[2]))
            except ValueError:
                raise InputError(f"{path}:{n}: score {parts[2]!r} is not a number") from None
    return qrels


def load_beir(folder: str | Path, split: str = "test") -> BeirData:
    """Read a BEIR folder; ``queries`` keeps only the queries judged in ``qrels/<split>.tsv``."""
    folder = Path(folder).expanduser()
    missing = [p for p in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv") if not (folder / p).is_file()]
    if missing:
        raise InputError(
            f"{folder} is not a BEIR folder: missing {', '.join(missing)} (expected corpus.jsonl with _id/title/text, "
            f"queries.jsonl with _id/text and qrels/{split}.tsv with query-id, corpus-id, score)"
        )
    corpus = {i: {"title": r.get("title") or "", "text": r.get("text") or ""}
              for i, r in _rows_by_id(folder / "corpus.jsonl")}
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    queries = {i: r.get("text") or "" for i, r in _rows_by_id(folder / "queries.jsonl")}
    missing_q = [q for q in qrels if q not in queries]
    if missing_q:
        raise InputError(f"{folder}: {len(missing_q)} judged queries are not in queries.jsonl, e.g. {missing_q[:3]}")
    return BeirData(corpus, {q: queries[q] for q in qrels}, qrels, folder)


def sample(data: BeirData, *, max_queries: int, max_corpus: int, seed: int = 42) -> BeirData:
    """A seeded sub-sample: up to ``max_queries`` judged queries that have a relevant document, their
    judged documents, and other documents up to ``max_corpus`` in all."""
    judged = sorted(q for q, rels in data.qrels.items()
                    if data.queries.get(q) and any(v > 0 and d in data.corpus for d, v in rels.items()))
    if not judged:
        raise InputError(f"{data.folder}: no judged query has a relevant document in corpus.jsonl")
    rng = random.Random(seed)
    if len(judged) > max_queries:
        judged = sorted(rng.sample(judged, max_queries))
    keep = {d for q in judged for d in data.qrels[q] if d in data.corpus}
    others = sorted(set(data.corpus) - keep)
    keep |= set(rng.sample(others, min(max(0, max_corpus - len(keep)), len(others))))
    return BeirData(
        corpus={d: data.corpus[d] for d in sorted(keep)},
        queries={q: data.queries[q] for q in judged},
        qrels={q: {d: v for d, v in data.qrels[q].items() if d in keep} for q in judged},
        folder=data.folder,
    )


def check_id(value: str, dest: Path) -> str:
    """An id that can go into a TSV or JSONL line unchanged (no control character), else an InputError."""
    if has_control_chars(value):
        raise InputError(
            f"cannot write {dest}: the id '{shown(value)}' holds a control character (tab, newline, ...) that "
            "would break its line; re-run ingest, which skips such ids (reason bad_id)"
        )
    return value


def write_beir(
    dest: Path,
    corpus: Mapping[str, Mapping[str, str]],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    split: str = "test",
    query_metadata: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """Write a BEIR folder atomically (replacing ``dest`` once complete); returns the number of qrels."""
    n = 0
    with atomic_dir(Path(dest)) as tmp:
        (tmp / "qrels").mkdir()
        with (tmp / "corpus.jsonl").open("w", encoding="utf-8") as fh:
            for cid, doc in corpus.items():
                row = {"_id": check_id(cid, dest), "title": doc.get("title") or "", "text": doc.get("text")}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        with (tmp / "queries.jsonl").open("w", encoding="utf-8") as qf, \
                (tmp / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as rf:
            rf.write("query-id\tcorpus-id\tscore\n")
            for qid, text in queries.items():
                row = {"_id": check_id(qid, dest), "text": text}
                if query_metadata and qid in query_metadata:
                    row["metadata"] = dict(query_metadata[qid])
                qf.write(json.dumps(row, ensure_ascii=False) + "\n")
                for did, score in (qrels.get(qid) or {}).items():
                    rf.write(f"{qid}\t{check_id(did, dest)}\t{int(score)}\n")
                    n += 1
    return n
