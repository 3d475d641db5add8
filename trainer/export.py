"""Export stage: the trained model as ONNX (fp32 and int8), checked against PyTorch before it ships.

Outputs in ``<run>/stages/export/``:

- ``onnx/``: a sentence-transformers folder (modules.json, pooling, normalize, tokenizer) whose
  ``onnx/`` sub-folder holds ``model.onnx`` (fp32) and the int8 file for this CPU
  (``model_qint8_avx512_vnni.onnx`` or ``model_quint8_avx2.onnx``), plus ``model_O<n>.onnx`` when
  ``export.optimize`` asks for it. Load it with the same pooling and normalization as the original::

      SentenceTransformer(path, backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"})

- ``onnx/serving.json``: what ``trainer.serve`` loads by default and why: the fastest of PyTorch and the
  exported files that passed parity, timed on this CPU (``export.select``). When PyTorch was fastest it
  says so (``"backend": "pytorch"``) and the server runs the trained PyTorch model instead of ONNX.
- ``parity.json``: what was compared and the numbers (also in the manifest's counts, with ``serving``).

Checks (``export.on_parity_failure``: fail the stage, or record and warn):

1. fp32: the lowest cosine between ONNX and PyTorch embeddings of ``export.parity_passages`` real
   passages (SciFact's corpus when present, else the run's chunks) is at least ``export.min_cosine``,
   at the full size and at each ``train.matryoshka_dims`` prefix (what the server's ``dimensions`` give).
2. int8: no int8 file reaches 0.999 cosine (dynamic quantization moves every vector a little), so it
   is judged by retrieval instead: nDCG@10 on a BEIR task within ``export.max_ndcg_drop`` points of
   PyTorch's. Its cosine is recorded too, for information.

3. speed (``export.select=fastest``): PyTorch and each exported file encode the first
   ``export.speed_passages`` parity passages ``export.speed_repeats`` times, interleaved; the median gives
   sentences/s. The fastest that passed 1./2. is served; a file merely as fast as PyTorch does not replace it.
   An int8 file whose retrieval check was skipped is not eligible (it was never judged). PyTorch bf16,
   static int8 and OpenVINO are measured by ``benchmarks/export_bench.py`` only (see BENCHMARKS.md).

Finished exports are kept in ``_work/`` so a crash in the (slow) checks does not export again.

Example::

    >>> from trainer.config import load_config
    >>> from trainer.rundir import RunDir, run_stage
    >>> cfg = load_config(None, ["run.dir=runs/scifact"])
    >>> run_stage(STAGE, cfg, RunDir(cfg.run.dir)).manifest["counts"]["fp32_min_cosine"]  # doctest: +SKIP
    0.99999...
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import random
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.beir import BeirData, doc_text, load_beir, read_jsonl, sample
from trainer.chunking import passage_text
from trainer.config import Config
from trainer.domains import get_domain
from trainer.errors import InputError, StageError
from trainer.files import atomic_dir, fingerprint, write_json_atomic
from trainer.metrics import evaluate_run
from trainer.paths import data_dir, data_path, find_local_folder
from trainer.retrieval import encode, search
from trainer.rundir import Input, Stage, StageContext

FP32_FILE = "onnx/model.onnx"
INT8_CONFIGS = ("avx512_vnni", "avx512", "avx2", "arm64")
SERVING_FILE = "serving.json"  # in the exported folder: what the export stage chose to serve on this CPU
PYTORCH = "pytorch"


# ---------------------------------------------------------------------------------------------------
# CPU features and file names


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    """The CPU model (Linux), else what platform knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def pick_int8_config(setting: str = "auto") -> str:
    """The int8 quantization target: the setting, or (auto) avx512_vnni / arm64 / avx2 by this CPU."""
    if setting != "auto":
        if setting not in INT8_CONFIGS:
            raise StageError(f"unknown int8 config {setting!r}; use one of auto, {', '.join(INT8_CONFIGS)}")
        return setting
    if platform.machine().lower() in {"arm64", "aarch64"}:
        return "arm64"
    return "avx512_vnni" if "avx512_vnni" in cpu_flags() else "avx2"


def int8_file_name(config: str) -> str:
    """The file sentence-transformers writes for an int8 config: avx2 -> onnx/model_quint8_avx2.onnx."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    qconfig = getattr(AutoQuantizationConfig, config)(is_static=False)
    return f"onnx/model_{qconfig.weights_dtype.name.lower()}_{config}.onnx"


@contextlib.contextmanager
def _quiet_backend() -> Iterator[None]:
    """Silence sentence-transformers' 'save the exported model' advice: this module saves it."""
    logger = logging.getLogger("sentence_transformers.backend")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------------------------
# Choosing what to serve


@dataclass(frozen=True)
class Candidate:
    """One way to serve the model, as measured on this CPU."""

    name: str  # PYTORCH, "fp32", "optimized", "int8"
    file: str | None  # its ONNX file in the exported folder; None for PyTorch
    sentences_per_s: float
    passed: bool = True  # its parity check (PyTorch is the reference: always True)
    note: str = ""  # why it failed, when it did


def choose_backend(candidates: Sequence[Candidate]) -> tuple[Candidate, str]:
    """The fastest candidate that passed parity, and why. Only a candidate strictly faster than PyTorch beats
    it, so PyTorch is the answer when no exported file is faster on this CPU."""
    best = next((c for c in candidates if c.name == PYTORCH), None)
    if best is None:
        raise ValueError("choose_backend needs the PyTorch reference among the candidates")
    for c in candidates:
        if c.passed and c.sentences_per_s > best.sentences_per_s:
            best = c
    torch_sps = best.sentences_per_s if best.name == PYTORCH else next(
        c.sentences_per_s for c in candidates if c.name == PYTORCH)
    failed = [f"{c.name} ({c.note or 'failed parity'})" for c in candidates if not c.passed]
    why = (f"{best.name} ({best.file})" if best.file else best.name)
    why += (f": fastest that passed parity, {best.sentences_per_s:.1f} sentences/s = "
            f"{best.sentences_per_s / max(torch_sps, 1e-9):.2f}x PyTorch" if best.name != PYTORCH else
            f": no exported file passing parity was faster than PyTorch's {torch_sps:.1f} sentences/s")
    if failed:
        why += "; not eligible: " + ", ".join(failed)
    return best, why


def time_encodes(models: dict[str, Any], passages: list[str], *, repeats: int, batch_size: int,
                 on_done: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Sentences/s of each model on ``passages``: the median of ``repeats`` encodes, models interleaved
    round-robin so that load from other processes hits them alike (the caller warms them up first).
    ``on_done(n, total)`` after each timed encode."""
    runs: dict[str, list[float]] = {name: [] for name in models}
    for r in range(repeats):
        for j, (name, model) in enumerate(models.items()):
            started = time.perf_counter()
            model.encode(passages, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
            runs[name].append(time.perf_counter() - started)
            if on_done is not None:
                on_done(r * len(models) + j + 1, repeats * len(models))
    return {name: len(passages) / max(statistics.median(t), 1e-9) for name, t in runs.items()}


# ---------------------------------------------------------------------------------------------------
# Export


def load_onnx(folder: str | Path, file_name: str = FP32_FILE, **kwargs: Any):
    """A SentenceTransformer running ``file_name`` of an exported folder with ONNX Runtime.

    The file is named explicitly: asking for one that is not there would make sentence-transformers
    export again and fail with a misleading error, so a missing file is reported here instead.
    """
    from sentence_transformers import SentenceTransformer

    folder = Path(folder)
    if not (folder / file_name).is_file():
        have = sorted(str(p.relative_to(folder)) for p in folder.glob("onnx/*.onnx"))
        raise InputError(f"{folder / file_name} not found (ONNX files there: {', '.join(have) or 'none'}); "
                         "run the export stage, or name one of those files")
    with _quiet_backend():
        return SentenceTransformer(str(folder), backend="onnx", device="cpu",
                                   model_kwargs={"file_name": file_name}, **kwargs)


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    int8_config: str | None = None,
    optimize: str | None = None,
) -> dict[str, str]:
    """Export a sentence-transformers folder to ``out_dir`` (written whole or not at all).

    Returns the files written, relative to ``out_dir``: ``{"fp32": "onnx/model.onnx", "int8": ...,
    "optimized": ...}`` (int8/optimized only when asked for).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model, export_optimized_onnx_model

    with atomic_dir(Path(out_dir)) as tmp, _quiet_backend():
        model = SentenceTransformer(str(model_dir), backend="onnx", device="cpu", model_kwargs={"export": True})
        model.save_pretrained(str(tmp))
        files = {"fp32": FP32_FILE}
        if int8_config:
            export_dynamic_quantized_onnx_model(model, int8_config, str(tmp))
            files["int8"] = int8_file_name(int8_config)
        if optimize:
            export_optimized_onnx_model(model, optimize, str(tmp))
            files["optimized"] = f"onnx/model_{optimize}.onnx"
        missing = [f for f in files.values() if not (tmp / f).is_file()]
        if missing:
            raise StageError(f"ONNX export of {model_dir} did not write {', '.join(missing)} (found: "
                             f"{', '.join(sorted(p.name for p in tmp.glob('onnx/*')))}); check the optimum and "
                             "sentence-transformers versions against requirements.txt")
    return files


# ---------------------------------------------------------------------------------------------------
# Parity data


def _resolve_location(spec: str) -> Path:
    if spec.startswith("data:"):
        return data_path(spec[len("data:"):])
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"{spec} not found: give a BEIR folder, a .jsonl file or data:<name>")
    return path


def _domain_folder(cfg: Config) -> Path | None:
    """The local BEIR folder of the domain's parity task (trainer.domains), when it is present."""
    task = get_domain(cfg.domain).parity_task
    return find_local_folder(task) if task else None


def _parity_source(cfg: Config) -> Path | None:
    """Where parity passages come from: the setting, else the domain's parity task corpus, else None (the
    run's chunks)."""
    if cfg.export.parity_corpus:
        return _resolve_location(cfg.export.parity_corpus)
    folder = _domain_folder(cfg)
    return folder / "corpus.jsonl" if folder is not None else None


def parity_passages(cfg: Config, chunks: Path | None, n: int) -> tuple[list[str], str]:
    """``n`` real passages (seeded sample) and where they came from: ``export.parity_corpus``, the domain's
    parity corpus, else the run's ingest ``chunks``."""
    source = _parity_source(cfg)
    if source is not None:
        file = source / "corpus.jsonl" if source.is_dir() else source
        if not file.is_file():
            raise InputError(f"export.parity_corpus {source}: no corpus.jsonl there")
        texts = [doc_text({"title": r.get("title") or "", "text": str(r.get("text") or "")}) for r in read_jsonl(file)]
        label = str(file)
    else:
        import datasets

        if chunks is None:
            raise InputError(
                f"no passages for the ONNX parity check: the {cfg.domain} domain has no local evaluation corpus "
                f"under {data_dir()} and the run has no ingest chunks; set export.parity_corpus to a BEIR folder "
                "or .jsonl file"
            )
        ds = datasets.load_from_disk(str(chunks))
        texts = [passage_text(t, x) for t, x in zip(ds["title"], ds["text"], strict=True)]
        label = str(chunks)
    texts = [t for t in texts if t]
    if not texts:
        raise InputError(f"no non-empty passages in {label} for the ONNX parity check")
    if len(texts) > n:
        texts = random.Random(cfg.run.seed).sample(texts, n)
    return texts, label


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(denom, 1e-12)


# ---------------------------------------------------------------------------------------------------
# Retrieval check


def load_retrieval_task(
    folder: str | Path, split: str = "test", *, max_queries: int = 300, max_corpus: int = 2000, seed: int = 42
) -> BeirData:
    """A BEIR folder, sub-sampled (:func:`trainer.beir.sample`) for the int8 check."""
    try:
        data = load_beir(folder, split)
    except InputError as exc:
        raise InputError(f"{exc}; set export.retrieval_check to such a folder, or to 'off'") from None
    return sample(data, max_queries=max_queries, max_corpus=max_corpus, seed=seed)


def retrieval_ndcg(
    model: Any, task: BeirData, *, batch_size: int = 32, query_prompt: str = "", passage_prompt: str = "",
    top_k: int = 100,
) -> float:
    """nDCG@10 of ``model`` on ``task`` (cosine similarity, exact search)."""
    run = search(model, task, top_k=top_k, batch_size=batch_size, query_prompt=query_prompt,
                 passage_prompt=passage_prompt)[None]
    return evaluate_run(run, task.qrels, k_values=(10,)).get("ndcg_at_10", 0.0)


def _retrieval_folder(cfg: Config, synthetic: Path | None) -> tuple[Path | None, str, str]:
    """(folder, split, why) for the int8 retrieval check; folder None when there is none (or 'off')."""
    e = cfg.export
    if e.retrieval_check == "off":
        return None, e.retrieval_split, "export.retrieval_check is 'off'"
    if e.retrieval_check:
        return _resolve_location(e.retrieval_check), e.retrieval_split, "export.retrieval_check"
    if cfg.evaluate.beir_dir:
        return _resolve_location(cfg.evaluate.beir_dir), cfg.evaluate.beir_split, "evaluate.beir_dir"
    shared = _domain_folder(cfg)
    if shared is not None and (shared / "qrels" / f"{e.retrieval_split}.tsv").is_file():
        return shared, e.retrieval_split, f"the {cfg.domain} domain's shared set"
    if synthetic is not None and (synthetic / "qrels" / "test.tsv").is_file():
        return synthetic, "test", "the run's synthetic test split"
    return None, e.retrieval_split, (f"no BEIR folder found (the {cfg.domain} domain has no local set under "
                                     f"{data_dir()}, and the run has no synthetic test split)")


# ---------------------------------------------------------------------------------------------------
# The stage


def _model_dir(ctx: StageContext) -> Path:
    path = ctx.input("train", "model")
    if not (path / "modules.json").is_file():
        raise StageError(f"the train stage left no sentence-transformers model at {path} (no modules.json); "
                         "re-run it with `python -m trainer train --force`")
    return path


def _check(ok: bool, message: str, ctx: StageContext, warnings: list[str]) -> bool:
    if ok:
        return True
    if ctx.cfg.export.on_parity_failure == "fail":
        raise StageError(message + " To keep the export anyway, set export.on_parity_failure=warn.")
    ctx.log.warning("export: %s", message)
    warnings.append(message)
    return False


def run(ctx: StageContext) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    cfg, e = ctx.cfg, ctx.cfg.export
    if not e.onnx:
        ctx.log.info("export: export.onnx is false; nothing exported")
        return {"exported": False}
    model_dir = _model_dir(ctx)
    int8_config = pick_int8_config(e.int8_config) if e.int8 else None
    optimize = None if e.optimize == "none" else e.optimize

    # 1. export (kept in _work so a crash in the checks does not export again)
    work = ctx.work
    staged = work / "onnx"
    files_json = work / "files.json"
    if ctx.resumed and files_json.is_file() and staged.is_dir():
        files = json.loads(files_json.read_text())
        ctx.log.info("export: reusing the ONNX export of the interrupted run")
    else:
        ctx.report("export: exporting to ONNX", 0.0)
        started = time.time()
        files = export_onnx(model_dir, staged, int8_config=int8_config, optimize=optimize)
        write_json_atomic(files_json, files)
        ctx.log.info("export: wrote %s in %.0f s", ", ".join(files.values()), time.time() - started)

    counts: dict[str, Any] = {"exported": True, "files": files, "int8_config": int8_config,
                              "cpu": cpu_name(),
                              "cpu_avx512_vnni": "avx512_vnni" in cpu_flags()}
    warnings: list[str] = []

    # 2. fp32 parity (and int8 / optimized cosine, for information) on real passages
    ctx.report("export: parity check", 0.2)
    passages, source = parity_passages(cfg, ctx.input("ingest", "chunks"), e.parity_passages)
    torch_model = SentenceTransformer(str(model_dir), device="cpu")
    # The bar counts passages encoded: once with PyTorch, once with each exported file.
    parity_total = len(passages) * (1 + len(files))

    def parity(offset: int, kind: str):
        return lambda n: ctx.advance(offset + n, parity_total, unit="passages", label="parity",
                                     message=f"parity: {kind}")

    reference = encode(torch_model, passages, batch_size=e.batch_size, on_done=parity(0, "PyTorch"))
    counts.update(parity_passages=len(passages), parity_source=source)
    onnx_models = {}
    passed: dict[str, tuple[bool, str]] = {}  # kind -> (parity passed, why not)
    full_dim = reference.shape[1]
    dims = sorted({d for d in cfg.train.matryoshka_dims if 0 < d < full_dim}, reverse=True)
    for i, (kind, file) in enumerate(files.items(), 1):
        onnx_models[kind] = load_onnx(staged, file)
        got = encode(onnx_models[kind], passages, batch_size=e.batch_size,
                     on_done=parity(i * len(passages), f"ONNX {kind}"))
        cos = cosines(reference, got)
        counts[f"{kind}_min_cosine"] = round(float(cos.min()), 6)
        counts[f"{kind}_mean_cosine"] = round(float(cos.mean()), 6)
        ctx.log.info("export: %s vs PyTorch on %d passages: min cosine %.6f, mean %.6f", kind, len(passages),
                     cos.min(), cos.mean())
        if kind not in ("fp32", "optimized"):
            continue
        # Matryoshka: the server's `dimensions` serve prefixes of the vector; each trained size must match too
        by_dim = {full_dim: cos, **{d: cosines(reference[:, :d], got[:, :d]) for d in dims}}
        if dims:
            counts[f"{kind}_min_cosine_by_dim"] = {str(d): round(float(c.min()), 6) for d, c in by_dim.items()}
        dim, worst_cos = min(by_dim.items(), key=lambda item: float(item[1].min()))
        worst = int(np.argmin(worst_cos))
        at = f" at {dim} dimensions" if dim != full_dim else ""
        ok = _check(bool(worst_cos.min() >= e.min_cosine),
               f"ONNX {kind} ({file}) does not reproduce PyTorch: min cosine {worst_cos.min():.6f}{at} < "
               f"export.min_cosine {e.min_cosine} over {len(passages)} passages from {source} (worst: "
               f"{passages[worst][:80]!r}). Check that onnx, onnxruntime and optimum match requirements.txt.",
               ctx, warnings)
        passed[kind] = (ok, "" if ok else f"min cosine {worst_cos.min():.6f} < {e.min_cosine}")

    # 3. int8 retrieval quality vs PyTorch
    if "int8" in files:
        folder, split, why = _retrieval_folder(cfg, ctx.input("mine", "test_beir"))
        if folder is None:
            ctx.log.warning("export: int8 retrieval check skipped: %s", why)
            counts["retrieval_check"] = f"skipped: {why}"
            passed["int8"] = (False, "retrieval check skipped, so not judged")
        else:
            ctx.report(f"export: int8 retrieval check on {folder.name}", 0.6)
            task = load_retrieval_task(folder, split, max_queries=e.retrieval_max_queries,
                                       max_corpus=e.retrieval_max_corpus, seed=cfg.run.seed)
            prompts = {"batch_size": e.batch_size, "query_prompt": cfg.model.query_prompt,
                       "passage_prompt": cfg.model.passage_prompt}
            check = {"unit": "models", "label": "int8 retrieval check", "message": f"nDCG@10 on {folder.name}"}
            ctx.advance(0, 2, **check)
            torch_ndcg = retrieval_ndcg(torch_model, task, **prompts)
            ctx.advance(1, 2, **check)
            int8_ndcg = retrieval_ndcg(onnx_models["int8"], task, **prompts)
            ctx.advance(2, 2, **check)
            drop = round((torch_ndcg - int8_ndcg) * 100, 3)
            counts.update(retrieval_check=f"{folder} ({why})", retrieval_split=split,
                          retrieval_queries=len(task.queries), retrieval_corpus=len(task.corpus),
                          **{"torch_ndcg@10": round(torch_ndcg, 5), "int8_ndcg@10": round(int8_ndcg, 5)},
                          int8_ndcg_drop_points=drop)
            ctx.log.info("export: nDCG@10 on %s (%d queries, %d docs): PyTorch %.4f, int8 %.4f (drop %.2f points)",
                         folder.name, len(task.queries), len(task.corpus), torch_ndcg, int8_ndcg, drop)
            ok = _check(drop <= e.max_ndcg_drop,
                   f"int8 ({files['int8']}) loses {drop:.2f} nDCG@10 points vs PyTorch on {folder.name} (more than "
                   f"export.max_ndcg_drop={e.max_ndcg_drop}). Try another export.int8_config or set export.int8=false.",
                   ctx, warnings)
            passed["int8"] = (ok, "" if ok else f"nDCG@10 drop {drop:.2f} > {e.max_ndcg_drop} points")

    counts["parity_ok"] = not warnings
    counts["warnings"] = warnings

    # 4. what to serve: the fastest candidate that passed parity, timed on this CPU
    serving = _choose(ctx, torch_model, onnx_models, files, passed, passages, model_dir)
    counts["serving"] = {k: v for k, v in serving.items() if k != "pytorch_model"}

    # 5. publish the outputs
    write_json_atomic(staged / SERVING_FILE, serving)
    dest = ctx.output("onnx")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(staged, dest)
    write_json_atomic(ctx.output("parity.json"), {"model": str(model_dir), **counts})
    ctx.log.info("export: %s ready; load it with SentenceTransformer(%r, backend='onnx', "
                 "model_kwargs={'file_name': 'onnx/model.onnx'}) or serve it with `python -m trainer.serve --model %s`",
                 dest, str(dest), dest)
    return counts


def _choose(ctx: StageContext, torch_model: Any, onnx_models: dict[str, Any], files: dict[str, str],
            passed: dict[str, tuple[bool, str]], passages: list[str], model_dir: Path) -> dict[str, Any]:
    """What ``serve`` loads by default (written to the exported folder's serving.json): with export.select
    'fastest', each candidate timed on the first export.speed_passages parity passages; else fp32."""
    e = ctx.cfg.export
    info: dict[str, Any] = {"select": e.select, "cpu": cpu_name(), "pytorch_model": str(model_dir)}
    if e.select == "fp32":
        ok = passed.get("fp32", (False, ""))[0]
        return {**info, "backend": "onnx" if ok else PYTORCH, "file": FP32_FILE,
                "why": "export.select is 'fp32'" + ("" if ok else "; fp32 failed parity, so PyTorch")}
    ctx.report("export: timing the candidates on this CPU", 0.8)
    sample_ = passages[: e.speed_passages]
    speeds = time_encodes({PYTORCH: torch_model, **onnx_models}, sample_, repeats=e.speed_repeats,
                          batch_size=e.batch_size,
                          on_done=lambda n, total: ctx.advance(n, total, unit="encodes", label="timing",
                                                               message="timing the candidates"))
    candidates = [Candidate(PYTORCH, None, speeds[PYTORCH])] + [
        Candidate(kind, files[kind], speeds[kind], *passed.get(kind, (False, "not checked"))) for kind in onnx_models]
    best, why = choose_backend(candidates)
    ctx.log.info("export: serving %s on %s (%s)", best.file or "PyTorch", info["cpu"], why)
    return {**info, "backend": "onnx" if best.file else PYTORCH, "file": best.file or FP32_FILE, "why": why,
            "sentences_per_s": {c.name: round(c.sentences_per_s, 1) for c in candidates},
            "speed_passages": len(sample_), "speed_repeats": e.speed_repeats}


def _inputs(cfg: Config) -> dict[str, str]:
    """Fingerprints of the parity passages and the retrieval folder outside the run (the run's own chunks
    and synthetic split are declared reads)."""
    out: dict[str, str] = {}
    with contextlib.suppress(InputError):
        source = _parity_source(cfg)
        if source is not None:
            out["parity_corpus"] = f"{source}:{fingerprint(source)}"
        with contextlib.suppress(OSError):
            folder, split, _ = _retrieval_folder(cfg, None)
            if folder is not None:
                out["retrieval"] = f"{folder}:{split}:{fingerprint(folder)}"
    return out


STAGE = Stage(
    name="export",
    run=run,
    sections=("export", "domain", "run.seed", "model.query_prompt", "model.passage_prompt",
              "train.matryoshka_dims", "evaluate.beir_dir", "evaluate.beir_split"),
    reads=(Input("train", "model"), Input("ingest", "chunks", optional=True),
           Input("mine", "test_beir", optional=True)),
    may_write=("onnx", "parity.json"),  # nothing when export.onnx is false
    external=_inputs,
    version="2",  # 2: serving.json, the fastest candidate on this CPU
    help="Export the trained model to ONNX (fp32 + int8 for this CPU), check parity with PyTorch (cosine on real "
    "passages for fp32, nDCG@10 on a retrieval task for int8) and pick the fastest passing one to serve.",
)

__all__ = [
    "FP32_FILE", "PYTORCH", "SERVING_FILE", "STAGE", "Candidate", "choose_backend", "cosines", "export_onnx",
    "int8_file_name", "load_onnx", "load_retrieval_task", "parity_passages", "pick_int8_config", "retrieval_ndcg",
    "time_encodes",
]
