"""Your own real queries (``queries:`` in the config): read them, keep evaluation test queries out, split
them between training and evaluation, and mix them with the synthetic ones.

Sources (``queries.source``): a ``.jsonl`` / ``.csv`` file with a query and the id or the text of a relevant
document, a BEIR folder (``queries.jsonl`` + ``qrels/<queries.split>.tsv``), ``hub:<dataset id>`` or
``data:<name>``. The mine stage reads them (it mines their hard negatives like the synthetic ones and
writes the evaluation part as ``real_beir/``, which the evaluate stage scores as "your queries").

The leakage guard: a query whose normalized text equals a test query of an evaluation task (the domain's
tasks and ``evaluate.tasks`` whose BEIR folders are local, ``evaluate.beir_dir``), or whose id and
relevant document form one of that task's test judgements, is refused with the task named and counted.

Example::

    >>> qs = [RealQuery("a", "x", ["d1"]), RealQuery("b", "y", ["d2"]), RealQuery("c", "z", ["d3"])]
    >>> train, held = split_queries(qs, "both", 0.34, seed=1)
    >>> sorted(q.query_id for q in train + held)
    ['a', 'b', 'c']
    >>> mix_counts(real=100, synthetic=300, ratio=0.5)  # keep (real, synthetic)
    (100, 100)
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.beir import load_qrels, read_jsonl
from trainer.errors import InputError
from trainer.paths import data_path, find_local_folder

QUERY_FIELDS = ("query", "question", "text", "anchor")
QUERY_ID_FIELDS = ("query_id", "query-id", "qid", "_id", "id")
DOC_ID_FIELDS = ("doc_id", "corpus_id", "corpus-id", "document_id", "positive_id", "pos_id")
DOC_TEXT_FIELDS = ("document", "passage", "positive", "doc_text")
REAL_TYPE = "real"  # the `type` of a real query in the mine stage's rows and stats


@dataclass
class RealQuery:
    query_id: str
    text: str
    doc_ids: list[str] = field(default_factory=list)  # relevant documents (ids of the ingest stage)
    doc_text: str | None = None  # or the relevant document's text, matched to a document by the mine stage


def normalized(text: str) -> str:
    return " ".join(text.casefold().split())


# ------------------------------------------------------------------------------------------ reading


def _pick(columns: Iterable[str], wanted: str | None, candidates: Sequence[str]) -> str | None:
    cols = list(columns)
    if wanted:
        return wanted if wanted in cols else None
    lower = {c.lower(): c for c in cols}
    return next((lower[c] for c in candidates if c in lower), None)


def _from_rows(rows: Iterable[Mapping[str, Any]], where: str, cfg: Any) -> list[RealQuery]:
    """One RealQuery per row; rows of the same query id (or text) are merged (several relevant documents)."""
    out: dict[str, RealQuery] = {}
    cols = None
    for n, row in enumerate(rows, 1):
        if cols is None:
            names = list(row)
            q = _pick(names, cfg.query_column, QUERY_FIELDS)
            d = _pick(names, cfg.doc_id_column, DOC_ID_FIELDS)
            t = _pick(names, cfg.doc_text_column, DOC_TEXT_FIELDS)
            if q is None or (d is None and t is None):
                raise InputError(
                    f"{where}: need a query column ({cfg.query_column or ' / '.join(QUERY_FIELDS)}) and the relevant "
                    f"document's id ({cfg.doc_id_column or ' / '.join(DOC_ID_FIELDS)}) or text "
                    f"({cfg.doc_text_column or ' / '.join(DOC_TEXT_FIELDS)}); the columns are {names}. Set "
                    "queries.query_column / queries.doc_id_column / queries.doc_text_column")
            cols = (q, d, t, _pick(names, None, [c for c in QUERY_ID_FIELDS if c != q]))
        qcol, dcol, tcol, idcol = cols
        text = str(row.get(qcol) or "").strip()
        if not text:
            raise InputError(f"{where}: row {n} has an empty {qcol!r}")
        doc_id = str(row.get(dcol) or "").strip() if dcol else ""
        doc_text = str(row.get(tcol) or "").strip() if tcol else ""
        if not doc_id and not doc_text:
            raise InputError(f"{where}: row {n} names no relevant document ({dcol or tcol!r} is empty)")
        qid = str(row.get(idcol) or "").strip() if idcol else ""
        qid = qid or "real-" + hashlib.sha256(normalized(text).encode()).hexdigest()[:12]
        entry = out.setdefault(qid, RealQuery(qid, text))
        if doc_id and doc_id not in entry.doc_ids:
            entry.doc_ids.append(doc_id)
        elif not doc_id and entry.doc_text is None:
            entry.doc_text = doc_text
    return list(out.values())


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            sample = fh.read(4096)
            fh.seek(0)
            dialect = csv.Sniffer().sniff(sample, delimiters=",\t;") if sample else csv.excel
            return list(csv.DictReader(fh, dialect=dialect))
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text: save it as UTF-8") from None
    except csv.Error as exc:
        raise InputError(f"{path} is not a readable CSV file: {exc}") from None


def load_real_queries(cfg: Any) -> list[RealQuery]:
    """The queries of ``cfg`` (a QueriesConfig), in file order."""
    src = cfg.source
    if not src:
        return []
    if src.startswith("hub:"):
        from trainer.models import is_offline

        name = src.split(":", 1)[1]
        if is_offline():
            raise InputError(f"queries.source={src}: the Hub is not reachable (offline); export the dataset's rows "
                             "to a .jsonl file on a connected machine and give its path")
        import datasets

        try:
            ds = datasets.load_dataset(name, split=cfg.hub_split)
        except Exception as exc:  # noqa: BLE001 - surfaced as an actionable input error
            raise InputError(f"queries.source={src}: cannot load split {cfg.hub_split!r}: {exc}") from None
        return _from_rows(ds, src, cfg)
    path = data_path(src.split(":", 1)[1]) if src.startswith("data:") else Path(src).expanduser()
    if path.is_dir():
        qrels_file = path / "qrels" / f"{cfg.split}.tsv"
        if not (path / "queries.jsonl").is_file() or not qrels_file.is_file():
            raise InputError(f"queries.source={src}: a folder must be BEIR (queries.jsonl and qrels/{cfg.split}.tsv; "
                             "set queries.split to another qrels file)")
        qrels = load_qrels(qrels_file)
        texts = {str(r.get("_id")): str(r.get("text") or "") for r in read_jsonl(path / "queries.jsonl")}
        missing = [q for q in qrels if q not in texts]
        if missing:
            raise InputError(f"{path}: {len(missing)} judged queries are not in queries.jsonl, e.g. {missing[:3]}")
        return [RealQuery(q, texts[q], [d for d, r in rels.items() if r > 0])
                for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not path.is_file():
        raise InputError(f"queries.source={src}: no such file or folder")
    if path.suffix.lower() in (".jsonl", ".json"):
        return _from_rows(read_jsonl(path), str(path), cfg)
    if path.suffix.lower() in (".csv", ".tsv"):
        return _from_rows(_read_csv(path), str(path), cfg)
    raise InputError(f"queries.source={src}: use a .jsonl or .csv file, a BEIR folder or hub:<dataset id>")


# ------------------------------------------------------------------------------------ leakage guard


def test_sets(cfg: Any) -> dict[str, tuple[dict[str, str], dict[str, dict[str, int]]]]:
    """name -> (test queries, test qrels) of every evaluation set whose data is local: the MTEB tasks the
    evaluate stage runs (``evaluate.tasks`` or the domain's) with a BEIR folder under the data dir, and
    ``evaluate.beir_dir``."""
    from trainer.domains import domain_tasks

    folders: dict[str, tuple[Path, str]] = {}
    names = list(cfg.evaluate.tasks) if cfg.evaluate.tasks is not None else domain_tasks(cfg.domain)
    for name in names:
        folder = find_local_folder(name)
        if folder is not None:
            folders[name] = (folder, "test")
    if cfg.evaluate.beir_dir:
        folders[f"evaluate.beir_dir ({Path(cfg.evaluate.beir_dir).name})"] = (Path(cfg.evaluate.beir_dir),
                                                                               cfg.evaluate.beir_split)
    out = {}
    for name, (folder, split) in folders.items():
        qrels_file = folder / "qrels" / f"{split}.tsv"
        if not qrels_file.is_file() or not (folder / "queries.jsonl").is_file():
            continue
        qrels = load_qrels(qrels_file)
        queries = {str(r.get("_id")): str(r.get("text") or "") for r in read_jsonl(folder / "queries.jsonl")
                   if str(r.get("_id")) in qrels}
        out[name] = (queries, qrels)
    return out


def leaks(queries: Sequence[RealQuery],
          sets: Mapping[str, tuple[Mapping[str, str], Mapping[str, Mapping[str, int]]]]) -> dict[str, int]:
    """name -> how many of ``queries`` are one of its test queries: the same normalized text, or the same id
    with a relevant document judged for that id (an id alone is not enough: numbering is often shared)."""
    found = {}
    for name, (test_queries, qrels) in sets.items():
        texts = {normalized(t) for t in test_queries.values() if t.strip()}
        n = sum(1 for q in queries
                if normalized(q.text) in texts or any(d in (qrels.get(q.query_id) or {}) for d in q.doc_ids))
        if n:
            found[name] = n
    return found


def refuse_leaks(queries: Sequence[RealQuery], sets: Mapping[str, Any], source: str) -> None:
    """An InputError naming each evaluation set whose test queries are among ``queries`` (to be trained on)."""
    found = leaks(queries, sets)
    if found:
        what = "; ".join(f"{n} of them are test queries of {name}" for name, n in found.items())
        raise InputError(
            f"queries.source={source}: {what}. Test queries of an evaluation task must never reach training "
            "(its scores would be meaningless). Remove them from the file, use its training split "
            "(queries.split=train for a BEIR folder), or set queries.use=eval to only score them.")


# --------------------------------------------------------------------------------- split and mix


def _unit(query_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}/{query_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_queries(queries: Sequence[RealQuery], use: str, eval_fraction: float,
                  seed: int) -> tuple[list[RealQuery], list[RealQuery]]:
    """(training queries, evaluation queries): all to one side for use=train/eval; for use=both the queries whose
    seeded hash of the id falls under ``eval_fraction`` are evaluated (stable when queries are added)."""
    if use == "train":
        return list(queries), []
    if use == "eval":
        return [], list(queries)
    held = [q for q in queries if _unit(q.query_id, seed) < eval_fraction]
    kept = {q.query_id for q in held}
    return [q for q in queries if q.query_id not in kept], held


def mix_counts(real: int, synthetic: int, ratio: float | None) -> tuple[int, int]:
    """How many real and synthetic training queries to keep so that real / (real + synthetic) = ``ratio``
    (the larger side is cut); None keeps both whole."""
    if ratio is None or real == 0:
        return real, synthetic
    if ratio >= 1:
        return real, 0
    if synthetic == 0:
        return real, 0
    want_synth = round(real * (1 - ratio) / ratio)
    if want_synth <= synthetic:
        return real, want_synth
    return min(real, round(synthetic * ratio / (1 - ratio))), synthetic


def subsample(items: Sequence[Any], n: int, seed: int | str) -> list[Any]:
    """``n`` of ``items`` chosen with a seeded RNG, in their original order."""
    if n >= len(items):
        return list(items)
    keep = set(random.Random(seed).sample(range(len(items)), n))
    return [x for i, x in enumerate(items) if i in keep]
