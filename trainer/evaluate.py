"""Evaluate stage: base vs fine-tuned on the held-out synthetic split, your own BEIR folder, and the
domain's MTEB retrieval tasks, against leaderboard references, with a regression guard.

Inputs:

- the base model ``model.name`` and the tuned model ``<run>/stages/train/model`` (sentence-transformers);
- the held-out synthetic split ``<run>/stages/mine/test_beir/`` (BEIR layout), when present;
- ``evaluate.beir_dir``: a BEIR folder of real queries, optional;
- ``evaluate.tasks`` (default: the domain's retrieval tasks, see trainer.domains). A task whose data
  sits in a BEIR folder under ``$DOMAIN_EMBED_DATA`` (scifact, aila_statutes, ...) is fed from there
  into mteb's own task class and evaluator, so its scores equal the leaderboard's; other tasks load
  from the Hub through mteb when online and are reported "not available offline" otherwise;
- ``evaluate.results_dir``: an MTEB results folder for leaderboard references.

Outputs in ``<run>/stages/evaluate/``:

- ``synthetic.json`` / ``beir.json``: nDCG, Recall, Precision, MAP, MRR at ``evaluate.k_values``, base
  and tuned, absolute and relative deltas; nDCG@10 at each Matryoshka dimension (synthetic split);
- ``mteb/results/<model>/<revision>/<Task>.json``: mteb's own result files (``mteb.ResultCache``);
- ``report.json`` / ``report.md`` / ``plots/*.png``: per task base, tuned, deltas, leaderboard
  references, contamination; ``regressions`` and ``improved_everywhere`` for the publish stage.

Core functions work without the stage::

    >>> from trainer.evaluate import evaluate_model_on_beir
    >>> scores = evaluate_model_on_beir("all-MiniLM-L6-v2", "../shared/data/aila_statutes")  # doctest: +SKIP
    >>> round(scores["metrics"]["ndcg_at_10"], 5)  # doctest: +SKIP
    0.20516
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.beir import BeirData, doc_text, load_beir
from trainer.config import Config
from trainer.domains import domain_tasks
from trainer.errors import InputError, StageError, TrainerError
from trainer.files import fingerprint, write_json_atomic
from trainer.leaderboard import compare, default_results_dir, references, task_main_score, write_report
from trainer.metrics import deltas, evaluate_run
from trainer.models import cache_dir as user_cache_dir
from trainer.models import is_offline
from trainer.paths import data_dir, find_local_folder
from trainer.readers import normalized_hash
from trainer.retrieval import as_model, load_model, search
from trainer.rundir import Input, Stage, StageContext

log = logging.getLogger("trainer")

NOT_AVAILABLE_OFFLINE = "not available offline"
YOUR_QUERIES = "your queries"  # the row of queries.source's evaluation part (the mine stage's real_beir)


# ---------------------------------------------------------------------------------- own retrieval


def evaluate_model_on_beir(
    model: Any,
    folder: str | Path | BeirData,
    *,
    k_values: Sequence[int] = (1, 5, 10, 100),
    dims: Sequence[int] = (),
    split: str = "test",
    batch_size: int = 32,
    query_prompt: str = "",
    passage_prompt: str = "",
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Metrics of a model (name, folder or SentenceTransformer) on a BEIR folder.

    Returns ``{"metrics": {"ndcg_at_10": ...}, "matryoshka": {dim: {metric: ...}}, "n_queries", "n_docs"}``.
    """
    data = folder if isinstance(folder, BeirData) else load_beir(folder, split)
    if not data.qrels or not data.corpus:
        raise InputError(
            f"{data.folder}: nothing to evaluate ({len(data.corpus)} documents, {len(data.qrels)} judged queries)"
        )
    wanted: list[int | None] = [None, *[d for d in dims if d]]
    runs = search(model, data, top_k=max(k_values), dims=wanted, batch_size=batch_size,
                  query_prompt=query_prompt, passage_prompt=passage_prompt, cache_dir=cache_dir)
    return {
        "metrics": evaluate_run(runs[None], data.qrels, k_values),
        "matryoshka": {str(d): evaluate_run(runs[d], data.qrels, k_values) for d in wanted if d},
        "n_queries": len(data.qrels),
        "n_docs": len(data.corpus),
    }


def compare_on_beir(base: Any, tuned: Any, folder: str | Path | BeirData, *, base_cache_dir: Path | None = None,
                    **kwargs: Any) -> dict[str, Any]:
    """Base and tuned on one BEIR folder, with per-metric absolute and relative deltas (the base model's
    embeddings cached in ``base_cache_dir`` when given: every run of a config re-scores the same base)."""
    data = folder if isinstance(folder, BeirData) else load_beir(folder, kwargs.pop("split", "test"))
    b = evaluate_model_on_beir(base, data, cache_dir=base_cache_dir, **kwargs)
    t = evaluate_model_on_beir(tuned, data, **kwargs)
    return {
        "folder": str(data.folder) if data.folder else None,
        "n_queries": b["n_queries"], "n_docs": b["n_docs"],
        "base": b["metrics"], "tuned": t["metrics"], "deltas": deltas(b["metrics"], t["metrics"]),
        "matryoshka": {"base": b["matryoshka"], "tuned": t["matryoshka"]},
    }


# ------------------------------------------------------------------------------------ contamination

_SHINGLE = 8
_SAMPLE = 4  # keep 1 shingle in 4 (by hash), the same ones on both sides
_MIN_SHINGLES = 8


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _shingles(text: str) -> set[int]:
    words = _words(text)
    out = set()
    for i in range(len(words) - _SHINGLE + 1):
        h = zlib.crc32(" ".join(words[i:i + _SHINGLE]).encode())  # stable across processes
        if h % _SAMPLE == 0:
            out.add(h)
    return out


@dataclass
class TrainingIndex:
    """Normalised-text hashes (whole texts) and sampled word 8-gram hashes of the training data."""

    hashes: set[str] = field(default_factory=set)
    shingles: set[int] = field(default_factory=set)
    n_texts: int = 0

    def add(self, text: str) -> None:
        if text and text.strip():
            self.hashes.add(normalized_hash(text))
            self.shingles.update(_shingles(text))
            self.n_texts += 1

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> TrainingIndex:
        index = cls()
        for t in texts:
            index.add(t)
        return index


def training_index(folders: Iterable[Path | None]) -> TrainingIndex | None:
    """The training texts of a run (the ingest stage's documents and chunks; None when there are none)."""
    import datasets

    index = TrainingIndex()
    found = False
    for folder in folders:
        if folder is not None and folder.is_dir():
            found = True
            ds = datasets.load_from_disk(str(folder))
            for row in ds.select_columns([c for c in ("title", "text") if c in ds.column_names]):
                index.add(row["text"])
                if row.get("title"):
                    index.add(f"{row['title']} {row['text']}")
    return index if found else None


def contamination(corpus: Mapping[str, Mapping[str, str] | str], index: TrainingIndex,
                  partial_threshold: float = 0.8) -> dict[str, Any]:
    """How much of an evaluation corpus is in the training data.

    ``exact``: documents whose normalised text (or title + text) hashes to a training text;
    ``partial``: others with >= partial_threshold of their (sampled) word 8-grams in the training data
    (catches a document that was chunked, or lightly edited; short documents, with fewer than
    ``_MIN_SHINGLES`` sampled 8-grams, only count when exact). ``fraction`` = (exact + partial) / documents.
    """
    exact = partial = 0
    examples = []
    for doc_id, doc in corpus.items():
        text = doc if isinstance(doc, str) else (doc.get("text") or "")
        full = text if isinstance(doc, str) else doc_text(doc)
        if normalized_hash(text) in index.hashes or normalized_hash(full) in index.hashes:
            exact += 1
            hit = True
        else:
            sh = _shingles(full)
            hit = len(sh) >= _MIN_SHINGLES and len(sh & index.shingles) / len(sh) >= partial_threshold
            partial += hit
        if hit and len(examples) < 5:
            examples.append(doc_id)
    n = len(corpus)
    return {"n_docs": n, "exact": exact, "partial": partial,
            "fraction": (exact + partial) / n if n else 0.0, "examples": examples}


# ------------------------------------------------------------------------------------- MTEB tasks


def local_task(task_name: str, folder: str | Path):
    """mteb's registered task ``task_name`` with its data read from a local BEIR folder.

    The task class, metadata (name, revision, main score, splits) and evaluator are mteb's own; only
    ``load_data`` changes, so the result file is the one mteb would write after a Hub download.
    """
    import mteb
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    registered = mteb.get_task(task_name)
    if not isinstance(registered, AbsTaskRetrieval):
        raise InputError(f"{task_name} is a {registered.metadata.type} task; only retrieval tasks can be read from "
                         "a BEIR folder")
    if registered.metadata.is_multilingual:
        raise InputError(f"{task_name} has several subsets; a single local BEIR folder cannot stand in for it")
    folder = Path(folder)

    class LocalTask(type(registered)):  # type: ignore[misc, valid-type]
        local_folder = folder

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            self.dataset = {"default": {}}
            for split in self.eval_splits:
                data = load_beir(self.local_folder, split)
                corpus = Dataset.from_list(
                    [{"id": i, "title": d["title"], "text": d["text"]} for i, d in data.corpus.items()])
                queries = Dataset.from_list([{"id": i, "text": t} for i, t in data.queries.items()])
                self.dataset["default"][split] = {
                    "corpus": corpus, "queries": queries, "relevant_docs": data.qrels, "top_ranked": None}
            self.dataset_transform(num_proc=num_proc)
            self.data_loaded = True

    LocalTask.__name__ = type(registered).__name__
    LocalTask.__qualname__ = type(registered).__qualname__
    return LocalTask()


def _task_corpora(task: Any) -> dict[str, dict[str, str]]:
    """Every corpus document of a loaded retrieval task; ids prefixed subset/split/ when there are several."""
    parts = [(subset, split, data.get("corpus")) for subset, splits in (task.dataset or {}).items()
             for split, data in splits.items() if isinstance(data, dict) and data.get("corpus") is not None]
    corpus: dict[str, dict[str, str]] = {}
    for subset, split, rows in parts:
        prefix = f"{subset}/{split}/" if len(parts) > 1 else ""
        for row in rows:
            corpus[prefix + str(row["id"])] = {"title": row.get("title") or "", "text": row.get("text") or ""}
    return corpus


def mteb_encoder(model: Any, model_name: str, revision: str = "local"):
    """Wrap a SentenceTransformer for mteb with a stable name/revision (its results folder)."""
    import mteb

    wrapper = mteb.SentenceTransformerEncoderWrapper(as_model(model))
    name = model_name if "/" in model_name else f"local/{model_name}"
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(update={"name": name, "revision": revision})
    return wrapper


def run_mteb_tasks(
    model: Any,
    task_names: Sequence[str],
    *,
    output_dir: str | Path,
    model_name: str,
    revision: str = "local",
    offline: bool | None = None,
    data_root: str | Path | None = None,
    batch_size: int = 32,
    overwrite: str = "only-missing",
    index: TrainingIndex | None = None,
    on_task: Callable[[int, str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate a model on MTEB tasks with mteb's evaluator; results saved in mteb's format.

    Per task: ``{"status": "ok" | "not available offline" | "error", "main_score", "metric", "source",
    "result_file", "contamination"}``. Results go to ``output_dir/results/<model>/<revision>/<Task>.json``
    (an ``mteb.ResultCache``); with ``overwrite="only-missing"`` a finished task is read back, not re-run.
    ``on_task(i, name)`` is called before task i (0-based) and ``on_task(len(task_names), "")`` at the end.
    """
    import mteb

    offline = is_offline() if offline is None else offline
    encoder = mteb_encoder(model, model_name, revision)
    cache = mteb.ResultCache(cache_path=Path(output_dir))
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(task_names):
        if on_task is not None:
            on_task(i, name)
        try:
            registered = mteb.get_task(name)
        except Exception as exc:  # noqa: BLE001 - unknown name: reported, not fatal
            out[name] = {"status": "error", "error": f"unknown MTEB task: {exc}"}
            continue
        folder = find_local_folder(name, data_root)
        entry: dict[str, Any] = {"metric": registered.metadata.main_score}
        try:
            if folder is not None and not registered.metadata.is_multilingual:
                task, entry["source"] = local_task(name, folder), str(folder)
            elif offline:
                out[name] = {**entry, "status": NOT_AVAILABLE_OFFLINE,
                             "note": f"no BEIR folder for {name} under {data_root or data_dir()}"}
                continue
            else:
                task, entry["source"] = registered, f"hub:{registered.metadata.dataset['path']}"
            started = time.monotonic()
            if index is not None:
                task.load_data()
                entry["contamination"] = contamination(_task_corpora(task), index)
            result = mteb.evaluate(encoder, task, cache=cache, overwrite_strategy=overwrite, co2_tracker=False,
                                   encode_kwargs={"batch_size": batch_size, "show_progress_bar": False},
                                   show_progress_bar=False)
            if result.exceptions:
                raise RuntimeError(str(result.exceptions[0]))
            tr = result.task_results[0]
            entry.update(status="ok", main_score=task_main_score(tr), seconds=round(time.monotonic() - started, 1),
                         result_file=str(cache.get_task_result_path(name, encoder.mteb_model_meta)))
            if index is not None:  # loaded here, so mteb left it loaded
                with contextlib.suppress(Exception):
                    task.unload_data()
        except TrainerError:
            raise
        except Exception as exc:  # noqa: BLE001 - one failing task must not lose the others
            log.warning("evaluate: %s failed: %s", name, exc)
            entry.update(status="error", error=f"{type(exc).__name__}: {exc}")
        out[name] = entry
    if on_task is not None:
        on_task(len(task_names), "")
    return out


# ------------------------------------------------------------------------------------------ stage


def _model_label(name: str) -> str:
    path = Path(name).expanduser()
    return f"local/{path.name}" if path.exists() else name


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    ev = cfg.evaluate
    tuned_dir = ctx.input("train", "model")
    if not (tuned_dir / "modules.json").is_file() and not (tuned_dir / "config.json").is_file():
        raise StageError(f"no fine-tuned model at {tuned_dir}; run `python -m trainer train` first")
    ctx.report("evaluate: loading models", 0.0)
    base = load_model(cfg.model.name, cfg.model.max_seq_length)
    tuned = load_model(tuned_dir, cfg.model.max_seq_length)
    k_values = sorted(set(ev.k_values))
    dims = sorted(set(cfg.train.matryoshka_dims), reverse=True) if ev.matryoshka else []
    kw = {"k_values": k_values, "batch_size": ev.batch_size,
          "query_prompt": cfg.model.query_prompt, "passage_prompt": cfg.model.passage_prompt,
          "base_cache_dir": user_cache_dir() / "embeddings" if ev.embedding_cache else None}
    rows: list[dict[str, Any]] = []
    counts: dict[str, Any] = {}
    matryoshka = None

    synthetic = ctx.input("mine", "test_beir")
    task_names = list(ev.tasks) if ev.tasks is not None else domain_tasks(cfg.domain)
    # The bar counts evaluations: the held-out split and your BEIR folder (base and tuned in one), then each
    # MTEB task once with the base model and once with the tuned one.
    plan = {"synthetic": bool(ev.synthetic_split and synthetic is not None), "beir": bool(ev.beir_dir),
            "mteb": 2 * len(task_names) if ev.mteb else 0}
    total = int(plan["synthetic"]) + int(plan["beir"]) + plan["mteb"]
    done = 0

    def advance(n: int, phase: str, task: str = "") -> None:
        ctx.advance(n, total, unit="tasks", message=f"{phase}{': ' + task if task else ''}")

    if not ev.synthetic_split:
        ctx.log.info("evaluate: held-out synthetic split not scored (evaluate.synthetic_split=false)")
    elif synthetic is None:
        ctx.log.warning("evaluate: no held-out synthetic split (the mine stage writes it)")
    elif len((synthetic / "qrels" / "test.tsv").read_text().splitlines()) <= 1:
        ctx.log.warning("evaluate: the held-out synthetic split has no queries (see the mine stage's counts); "
                        "skipping it")
    else:
        ctx.report("evaluate: held-out synthetic split", 0.1)
        advance(done, "base and tuned", "held-out synthetic split")
        res = compare_on_beir(base, tuned, synthetic, dims=dims, **kw)
        write_json_atomic(ctx.output("synthetic.json"), res)
        rows.append({"task": "synthetic held-out", "kind": "synthetic", "metric": "ndcg_at_10",
                     "base": res["base"].get("ndcg_at_10"), "tuned": res["tuned"].get("ndcg_at_10"),
                     "n_queries": res["n_queries"]})
        done += 1
        if dims:
            matryoshka = {who: {d: m.get("ndcg_at_10") for d, m in res["matryoshka"][who].items()}
                          for who in ("base", "tuned")}
        counts["synthetic_ndcg_at_10"] = {"base": rows[-1]["base"], "tuned": rows[-1]["tuned"]}

    if ev.beir_dir:
        ctx.report("evaluate: your BEIR folder", 0.2)
        advance(done, "base and tuned", Path(ev.beir_dir).name)
        res = compare_on_beir(base, tuned, ev.beir_dir, split=ev.beir_split, **kw)
        done += 1
        write_json_atomic(ctx.output("beir.json"), res)
        rows.append({"task": f"own: {Path(ev.beir_dir).name}", "kind": "own BEIR", "metric": "ndcg_at_10",
                     "base": res["base"].get("ndcg_at_10"), "tuned": res["tuned"].get("ndcg_at_10"),
                     "n_queries": res["n_queries"]})

    real = ctx.input("mine", "real_beir")
    if real is not None:
        ctx.report("evaluate: your queries", 0.25)
        res = compare_on_beir(base, tuned, real, **kw)
        write_json_atomic(ctx.output("real.json"), res)
        rows.append({"task": YOUR_QUERIES, "kind": "your queries", "metric": "ndcg_at_10",
                     "base": res["base"].get("ndcg_at_10"), "tuned": res["tuned"].get("ndcg_at_10"),
                     "n_queries": res["n_queries"]})
        counts["your_queries_ndcg_at_10"] = {"base": rows[-1]["base"], "tuned": rows[-1]["tuned"]}

    mteb_rows = []
    if ev.mteb and task_names:
        ctx.report(f"evaluate: {len(task_names)} MTEB tasks, base model", 0.3)
        index = training_index([ctx.input("ingest", "documents"), ctx.input("ingest", "chunks")])
        common = {"output_dir": ctx.output("mteb"), "batch_size": ev.batch_size}
        n = len(task_names)
        base_res = run_mteb_tasks(base, task_names, model_name=_model_label(cfg.model.name), revision="base",
                                  index=index, on_task=lambda i, name: advance(done + i, "base model", name),
                                  **common)
        ctx.report(f"evaluate: {len(task_names)} MTEB tasks, tuned model", 0.6)
        tuned_res = run_mteb_tasks(tuned, task_names, model_name=f"domain-embed/{Path(ctx.run_dir.root).name}",
                                   revision="tuned", on_task=lambda i, name: advance(done + n + i, "tuned model", name),
                                   **common)
        for name in task_names:
            b, t = base_res[name], tuned_res[name]
            row = {"task": name, "kind": "MTEB", "metric": b.get("metric", ""), "base": b.get("main_score"),
                   "tuned": t.get("main_score"), "status": b["status"] if b["status"] != "ok" else t["status"],
                   "source": b.get("source")}
            if b.get("contamination") is not None:
                row["contamination"] = b["contamination"]
            if row["status"] != "ok":
                row["note"] = b.get("note") or b.get("error") or t.get("error") or row["status"]
            mteb_rows.append(row)
        rows.extend(mteb_rows)

    if total:
        advance(total, "done")
    refs: dict[str, Any] = {}
    try:
        refs = references([r["task"] for r in mteb_rows], base_model=cfg.model.name, results_dir=ev.results_dir)
    except InputError as exc:
        ctx.log.warning("evaluate: no leaderboard references: %s", exc)
    report = compare(rows, refs, ev.regression_tolerance)
    report["matryoshka"] = matryoshka
    report["unavailable"] = [r["task"] for r in mteb_rows if r["status"] == NOT_AVAILABLE_OFFLINE]
    report["contaminated"] = {r["task"]: r["contamination"]["fraction"] for r in mteb_rows
                              if r.get("contamination") and r["contamination"]["fraction"] > 0}
    report["models"] = {"base": cfg.model.name, "tuned": str(tuned_dir)}
    if ev.mteb and task_names:  # the tuned model's mteb result files, for the leaderboard submission
        mteb_dir = ctx.output("mteb").resolve()
        report["result_files"] = {
            name: str(Path(tuned_res[name]["result_file"]).resolve().relative_to(mteb_dir))
            for name in task_names if tuned_res[name].get("result_file")}
    write_report(report, ctx.dir, title=f"Evaluation: {cfg.domain}")
    if report["regressions"]:
        ctx.log.warning("evaluate: tuned model is worse than its base on %s",
                        ", ".join(r["task"] for r in report["regressions"]))
    counts.update(
        tasks=len(task_names) if ev.mteb else 0,
        tasks_evaluated=sum(1 for r in mteb_rows if r["status"] == "ok"),
        tasks_unavailable=len(report["unavailable"]),
        compared=report["compared"],
        regressions=len(report["regressions"]),
        improved_everywhere=report["improved_everywhere"],
        contaminated_tasks=len(report["contaminated"]),
    )
    return counts


def _folder_key(path: Path) -> str:
    """A cheap fingerprint of a large read-only folder: relative paths and sizes."""
    digest = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            digest.update(f"{p.relative_to(path)}\0{p.stat().st_size}\0".encode())
    return digest.hexdigest()


def _inputs(cfg: Config) -> dict[str, str]:
    out = {"data_dir": str(data_dir())}
    if cfg.evaluate.beir_dir and Path(cfg.evaluate.beir_dir).is_dir():
        out["beir_dir"] = fingerprint(Path(cfg.evaluate.beir_dir))
    results = default_results_dir(cfg.evaluate.results_dir) / "results"
    if results.is_dir():
        out["results_dir"] = _folder_key(results)
    return out


STAGE = Stage(
    name="evaluate",
    run=run,
    sections=("domain", "model", "train.matryoshka_dims", "evaluate"),
    reads=(Input("train", "model"), Input("mine", "test_beir", optional=True),
           Input("mine", "real_beir", optional=True),
           Input("ingest", "documents", optional=True), Input("ingest", "chunks", optional=True)),
    writes=("report.json", "report.md"),
    may_write=("synthetic.json", "beir.json", "real.json", "mteb", "plots"),
    external=_inputs,
    version="1",
    help="Base vs tuned: held-out synthetic split, your BEIR folder, MTEB tasks, leaderboard references.",
)
