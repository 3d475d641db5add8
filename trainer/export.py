"""Export stage: the trained model as ONNX (fp32 and int8), checked against PyTorch before it ships.

Outputs in ``<run>/stages/export/``:

- ``onnx/``: a sentence-transformers folder (modules.json, pooling, normalize, tokenizer) whose
  ``onnx/`` sub-folder holds ``model.onnx`` (fp32) and the int8 file for this CPU
  (``model_qint8_avx512_vnni.onnx`` or ``model_quint8_avx2.onnx``), plus ``model_O<n>.onnx`` when
  ``export.optimize`` asks for it. Load it with the same pooling and normalization as the original::

      SentenceTransformer(path, backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"})

- ``onnx/openvino/``: OpenVINO IR (``openvino_model.xml`` fp32, ``openvino_model_qint8_static.xml`` int8
  calibrated on 100 passages of the parity source) when the optional packages of requirements-openvino.txt
  are installed (``export.openvino``); without them the stage records why it skipped them.
- ``onnx/serving.json``: what ``trainer.serve`` loads by default and why: the fastest of the candidates
  that passed parity, timed on this CPU (``export.select``): PyTorch fp32 (the reference), PyTorch bf16
  (``export.bf16``, where the CPU has avx512_bf16 or AMX bf16), the ONNX files, the OpenVINO files. It
  names the backend (``pytorch``, ``onnx``, ``openvino``), the dtype, the file, the sentences/s of every
  candidate, the skipped ones with the reason, and the CPU (name and flags). When PyTorch is chosen the
  server runs the trained PyTorch model (in bf16 when that won).
- ``parity.json``: what was compared and the numbers (also in the manifest's counts, with ``serving`` and
  ``candidates``: one row per candidate, measured or skipped).

Checks (``export.on_parity_failure``: fail the stage, or record and warn):

1. fp32: the lowest cosine between ONNX and PyTorch embeddings of ``export.parity_passages`` real
   passages (SciFact's corpus when present, else the run's chunks) is at least ``export.min_cosine``,
   at the full size and at each ``train.matryoshka_dims`` prefix (what the server's ``dimensions`` give).
   OpenVINO fp32 is held to the same bar.
2. lossy candidates (int8, PyTorch bf16, OpenVINO int8): no int8 file reaches 0.999 cosine (quantization
   moves every vector a little), so they are judged by retrieval instead: nDCG@10 on a BEIR task within
   ``export.max_ndcg_drop`` points of PyTorch's. Their cosine is recorded too, for information.
   A failed ONNX check stops the stage (or warns); a failed optional candidate (bf16, OpenVINO) is only
   made ineligible.

3. speed (``export.select=fastest``): PyTorch and each candidate encode the first
   ``export.speed_passages`` parity passages ``export.speed_repeats`` times, interleaved; the median gives
   sentences/s. The fastest that passed 1./2. is served; a candidate merely as fast as PyTorch fp32 does not
   replace it. A lossy candidate whose retrieval check was skipped is not eligible (it was never judged).
   ONNX static int8 and the O1-O3 levels are measured by ``benchmarks/export_bench.py`` only (BENCHMARKS.md).

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
PYTORCH_BF16 = "pytorch:bfloat16"  # what serve's file choice says for the PyTorch model run in bf16
OPENVINO_FILE = "openvino/openvino_model.xml"
OPENVINO_INT8_FILE = "openvino/openvino_model_qint8_static.xml"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # where torch has native bf16 kernels (else it emulates, slowly)
CPU_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
                         "amx_bf16")
LOSSY = ("bf16", "int8", "openvino_int8")  # judged by retrieval (nDCG@10), not by cosine
CALIBRATION_PASSAGES = 100  # static int8 (OpenVINO): passages of the parity source, apart from the parity ones


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


def cpu_features() -> list[str]:
    """The flags that decide which candidate is fast here (VNNI for int8, bf16/AMX), in a fixed order."""
    flags = cpu_flags()
    return [f for f in CPU_FLAGS_OF_INTEREST if f in flags]


def bf16_unavailable() -> str | None:
    """Why PyTorch bf16 is not a candidate on this CPU, or None when it is (avx512_bf16 or AMX bf16)."""
    if cpu_flags() & set(BF16_FLAGS):
        return None
    return f"this CPU has neither {' nor '.join(BF16_FLAGS)} (torch would emulate bf16, slower than fp32)"


def openvino_unavailable(*, int8: bool = False) -> str | None:
    """Why the OpenVINO candidates cannot run here (an optional backend), or None when they can.
    ``int8`` also needs nncf (static quantization)."""
    try:
        import openvino  # noqa: F401
        from optimum.intel.openvino import OVModelForFeatureExtraction  # noqa: F401
        if int8:
            import nncf  # noqa: F401
    except ImportError as exc:
        return (f"optional backend not installed ({type(exc).__name__}: {str(exc)[:120]}); "
                "`pip install -r requirements-openvino.txt` adds it")
    return None


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

    name: str  # PYTORCH, "bf16", "fp32", "optimized", "int8", "openvino", "openvino_int8"
    file: str | None  # its file in the exported folder; None for PyTorch (fp32 or bf16)
    sentences_per_s: float
    passed: bool = True  # its parity check (PyTorch is the reference: always True)
    note: str = ""  # why it failed, when it did


def backend_of(name: str) -> tuple[str, str]:
    """(backend, dtype) of a candidate name: "bf16" -> ("pytorch", "bfloat16"), "int8" -> ("onnx", "int8")."""
    if name in (PYTORCH, "bf16"):
        return PYTORCH, "bfloat16" if name == "bf16" else "float32"
    return ("openvino" if name.startswith("openvino") else "onnx"), ("int8" if name in LOSSY else "float32")


def choose_backend(candidates: Sequence[Candidate], skipped: dict[str, str] | None = None) -> tuple[Candidate, str]:
    """The fastest candidate that passed parity, and why. Only a candidate strictly faster than PyTorch beats
    it, so PyTorch is the answer when nothing else is faster on this CPU. ``skipped``: candidates not run
    here (name -> why), named in the answer."""
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
            f": no candidate passing parity was faster than PyTorch's {torch_sps:.1f} sentences/s")
    if failed:
        why += "; not eligible: " + ", ".join(failed)
    if skipped:
        why += "; not run: " + ", ".join(f"{name} ({reason})" for name, reason in skipped.items())
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


def load_bf16(model_dir: str | Path, **kwargs: Any):
    """The PyTorch model with bfloat16 weights and activations (torch's own CPU kernels)."""
    import torch
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"dtype": torch.bfloat16}, **kwargs)


def load_openvino(folder: str | Path, file_name: str = OPENVINO_FILE, **kwargs: Any):
    """A SentenceTransformer running ``file_name`` (an OpenVINO IR .xml) of an exported folder; needs the
    optional packages of requirements-openvino.txt."""
    from sentence_transformers import SentenceTransformer

    folder = Path(folder)
    if not (folder / file_name).is_file():
        raise InputError(f"{folder / file_name} not found; run the export stage with optimum-intel and openvino "
                         "installed (requirements-openvino.txt), or serve an ONNX file")
    missing = openvino_unavailable()
    if missing:
        raise InputError(f"{folder / file_name} needs OpenVINO: {missing}")
    with _quiet_backend():
        return SentenceTransformer(str(folder), backend="openvino", device="cpu",
                                   model_kwargs={"file_name": file_name}, **kwargs)


def export_openvino(model_dir: str | Path, out_dir: str | Path, *, calibration: Sequence[str] = ()) -> dict[str, str]:
    """Export to OpenVINO IR under ``out_dir/openvino/`` (written whole or not at all): fp32, and static int8
    (NNCF post-training quantization, calibrated on ``calibration`` passages) when any are given.

    Returns the files written, relative to ``out_dir``: ``{"openvino": ..., "openvino_int8": ...}``.
    """
    import tempfile

    from sentence_transformers import SentenceTransformer

    out_dir = Path(out_dir)
    with atomic_dir(out_dir / "openvino") as tmp, _quiet_backend(), \
            tempfile.TemporaryDirectory(dir=out_dir.parent) as scratch:
        model = SentenceTransformer(str(model_dir), backend="openvino", device="cpu")
        model.save_pretrained(scratch)  # a whole sentence-transformers folder: keep only its openvino/ files
        for f in Path(scratch, "openvino").iterdir():
            shutil.move(str(f), tmp / f.name)
        files = {"openvino": OPENVINO_FILE}
        if calibration:
            import datasets
            from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer

            enc = model.tokenizer(list(calibration), padding="max_length", truncation=True,
                                  max_length=model.max_seq_length)
            dataset = datasets.Dataset.from_dict({k: list(v) for k, v in enc.items()})
            quantizer = OVQuantizer.from_pretrained(model[0].auto_model)
            qdir = Path(scratch) / "int8"
            quantizer.quantize(dataset, save_directory=qdir,
                               ov_config=OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(dataset))))
            # sentence-transformers' wrapper saves into an openvino/ sub-folder
            xml = next(x for x in (qdir / "openvino" / "openvino_model.xml", qdir / "openvino_model.xml")
                       if x.is_file())
            target = tmp / Path(OPENVINO_INT8_FILE).name
            shutil.move(str(xml), target)
            shutil.move(str(xml.with_suffix(".bin")), target.with_suffix(".bin"))
            files["openvino_int8"] = OPENVINO_INT8_FILE
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
    texts, label = _source_passages(cfg, chunks)
    if len(texts) > n:
        texts = random.Random(cfg.run.seed).sample(texts, n)
    return texts, label


def calibration_passages(cfg: Config, chunks: Path | None, n: int, exclude: Sequence[str]) -> list[str]:
    """Up to ``n`` passages of the parity source that are not in ``exclude`` (the parity ones): static int8's
    calibration sample, kept apart from the passages its cosine is measured on."""
    skip = set(exclude)
    texts = [t for t in _source_passages(cfg, chunks)[0] if t not in skip]
    return random.Random(cfg.run.seed + 1).sample(texts, min(n, len(texts)))


def _source_passages(cfg: Config, chunks: Path | None) -> tuple[list[str], str]:
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
    chunks = ctx.input("ingest", "chunks")
    passages, source = parity_passages(cfg, chunks, e.parity_passages)

    # 1. export (kept in _work so a crash in the checks does not export again)
    work = ctx.work
    staged = work / "onnx"
    files_json = work / "files.json"
    if ctx.resumed and files_json.is_file() and staged.is_dir():
        saved = json.loads(files_json.read_text())
        files, skipped = (saved["files"], saved["skipped"]) if "files" in saved else (saved, {})
        ctx.log.info("export: reusing the export of the interrupted run")
    else:
        ctx.report("export: exporting to ONNX", 0.0)
        started = time.time()
        files = export_onnx(model_dir, staged, int8_config=int8_config, optimize=optimize)
        skipped = {}
        files.update(_export_openvino(ctx, model_dir, staged, chunks, passages, skipped))
        write_json_atomic(files_json, {"files": files, "skipped": skipped})
        ctx.log.info("export: wrote %s in %.0f s", ", ".join(files.values()), time.time() - started)
    if not e.bf16:
        skipped["bf16"] = "export.bf16 is false"
    elif (why_not := bf16_unavailable()) is not None:
        skipped["bf16"] = why_not

    counts: dict[str, Any] = {"exported": True, "files": files, "int8_config": int8_config,
                              "cpu": cpu_name(), "cpu_flags": cpu_features(),
                              "cpu_avx512_vnni": "avx512_vnni" in cpu_flags()}
    warnings: list[str] = []

    # 2. fp32 parity (and the lossy candidates' cosine, for information) on real passages
    ctx.report("export: parity check", 0.2)
    torch_model = SentenceTransformer(str(model_dir), device="cpu")
    to_check = [(kind, file) for kind, file in files.items()]
    if "bf16" not in skipped:
        to_check.insert(0, ("bf16", None))
    # The bar counts passages encoded: once with PyTorch, once with each candidate.
    parity_total = len(passages) * (1 + len(to_check))

    def parity(offset: int, kind: str):
        return lambda n: ctx.advance(offset + n, parity_total, unit="passages", label="parity",
                                     message=f"parity: {kind}")

    reference = encode(torch_model, passages, batch_size=e.batch_size, on_done=parity(0, "PyTorch"))
    counts.update(parity_passages=len(passages), parity_source=source)
    models: dict[str, Any] = {}  # every candidate but PyTorch fp32: name -> model
    passed: dict[str, tuple[bool, str]] = {}  # name -> (parity passed, why not)
    full_dim = reference.shape[1]
    dims = sorted({d for d in cfg.train.matryoshka_dims if 0 < d < full_dim}, reverse=True)
    for i, (kind, file) in enumerate(to_check, 1):
        models[kind] = (load_bf16(model_dir) if kind == "bf16" else
                        load_openvino(staged, file) if kind.startswith("openvino") else load_onnx(staged, file))
        got = encode(models[kind], passages, batch_size=e.batch_size,
                     on_done=parity(i * len(passages), kind))
        cos = cosines(reference, got)
        counts[f"{kind}_min_cosine"] = round(float(cos.min()), 6)
        counts[f"{kind}_mean_cosine"] = round(float(cos.mean()), 6)
        ctx.log.info("export: %s vs PyTorch on %d passages: min cosine %.6f, mean %.6f", kind, len(passages),
                     cos.min(), cos.mean())
        if kind in LOSSY:
            continue
        # Matryoshka: the server's `dimensions` serve prefixes of the vector; each trained size must match too
        by_dim = {full_dim: cos, **{d: cosines(reference[:, :d], got[:, :d]) for d in dims}}
        if dims:
            counts[f"{kind}_min_cosine_by_dim"] = {str(d): round(float(c.min()), 6) for d, c in by_dim.items()}
        dim, worst_cos = min(by_dim.items(), key=lambda item: float(item[1].min()))
        worst = int(np.argmin(worst_cos))
        at = f" at {dim} dimensions" if dim != full_dim else ""
        message = (f"{'OpenVINO' if kind == 'openvino' else 'ONNX'} {kind} ({file}) does not reproduce PyTorch: "
                   f"min cosine {worst_cos.min():.6f}{at} < export.min_cosine {e.min_cosine} over {len(passages)} "
                   f"passages from {source} (worst: {passages[worst][:80]!r}).")
        ok = bool(worst_cos.min() >= e.min_cosine)
        if kind == "openvino":  # an optional candidate: a miss only makes it ineligible
            if not ok:
                ctx.log.warning("export: %s Not served.", message)
        else:
            ok = _check(ok, message + " Check that onnx, onnxruntime and optimum match requirements.txt.",
                        ctx, warnings)
        passed[kind] = (ok, "" if ok else f"min cosine {worst_cos.min():.6f} < {e.min_cosine}")

    # 3. the lossy candidates (bf16, int8): retrieval quality vs PyTorch
    lossy = [k for k in models if k in LOSSY]
    if lossy:
        _retrieval_check(ctx, torch_model, models, lossy, files, counts, passed, warnings)

    counts["parity_ok"] = not warnings
    counts["warnings"] = warnings

    # 4. what to serve: the fastest candidate that passed parity, timed on this CPU
    serving = _choose(ctx, torch_model, models, files, passed, skipped, passages, model_dir)
    counts["serving"] = {k: v for k, v in serving.items() if k != "pytorch_model"}
    counts["candidates"] = _candidate_table(serving, passed, skipped)

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


def _export_openvino(ctx: StageContext, model_dir: Path, staged: Path, chunks: Path | None, passages: list[str],
                     skipped: dict[str, str]) -> dict[str, str]:
    """The OpenVINO files when the optional backend is installed (else the reasons go to ``skipped``)."""
    e = ctx.cfg.export
    if not e.openvino:
        skipped["openvino"] = skipped["openvino_int8"] = "export.openvino is false"
        return {}
    missing = openvino_unavailable()
    if missing:
        ctx.log.info("export: OpenVINO candidates skipped: %s", missing)
        skipped["openvino"] = skipped["openvino_int8"] = missing
        return {}
    calibration: list[str] = []
    if not e.int8:
        skipped["openvino_int8"] = "export.int8 is false"
    elif (missing := openvino_unavailable(int8=True)) is not None:
        skipped["openvino_int8"] = missing
    else:
        calibration = calibration_passages(ctx.cfg, chunks, CALIBRATION_PASSAGES, passages)
    try:
        return export_openvino(model_dir, staged, calibration=calibration)
    except Exception as exc:  # noqa: BLE001 -- an optional backend: the ONNX candidates still run
        why = f"OpenVINO export failed ({type(exc).__name__}: {str(exc)[:160]})"
        ctx.log.warning("export: %s; its candidates are skipped", why)
        skipped["openvino"] = why
        skipped.setdefault("openvino_int8", why)
        return {}


def _retrieval_check(ctx: StageContext, torch_model: Any, models: dict[str, Any], lossy: list[str],
                     files: dict[str, str], counts: dict[str, Any], passed: dict[str, tuple[bool, str]],
                     warnings: list[str]) -> None:
    """nDCG@10 of each lossy candidate vs PyTorch fp32 (export.max_ndcg_drop points at most)."""
    cfg, e = ctx.cfg, ctx.cfg.export
    folder, split, why = _retrieval_folder(cfg, ctx.input("mine", "test_beir"))
    if folder is None:
        ctx.log.warning("export: retrieval check of %s skipped: %s", ", ".join(lossy), why)
        counts["retrieval_check"] = f"skipped: {why}"
        passed.update({k: (False, "retrieval check skipped, so not judged") for k in lossy})
        return
    ctx.report(f"export: {', '.join(lossy)} retrieval check on {folder.name}", 0.6)
    task = load_retrieval_task(folder, split, max_queries=e.retrieval_max_queries,
                               max_corpus=e.retrieval_max_corpus, seed=cfg.run.seed)
    prompts = {"batch_size": e.batch_size, "query_prompt": cfg.model.query_prompt,
               "passage_prompt": cfg.model.passage_prompt}
    check = {"unit": "models", "label": "retrieval check", "message": f"nDCG@10 on {folder.name}"}
    ctx.advance(0, 1 + len(lossy), **check)
    torch_ndcg = retrieval_ndcg(torch_model, task, **prompts)
    ctx.advance(1, 1 + len(lossy), **check)
    counts.update(retrieval_check=f"{folder} ({why})", retrieval_split=split,
                  retrieval_queries=len(task.queries), retrieval_corpus=len(task.corpus),
                  **{"torch_ndcg@10": round(torch_ndcg, 5)})
    for kind in lossy:
        ndcg = retrieval_ndcg(models[kind], task, **prompts)
        ctx.advance(2 + lossy.index(kind), 1 + len(lossy), **check)
        drop = round((torch_ndcg - ndcg) * 100, 3)
        counts.update({f"{kind}_ndcg@10": round(ndcg, 5), f"{kind}_ndcg_drop_points": drop})
        ctx.log.info("export: nDCG@10 on %s (%d queries, %d docs): PyTorch %.4f, %s %.4f (drop %.2f points)",
                     folder.name, len(task.queries), len(task.corpus), torch_ndcg, kind, ndcg, drop)
        ok = drop <= e.max_ndcg_drop
        message = (f"{kind} ({files.get(kind) or 'PyTorch bfloat16'}) loses {drop:.2f} nDCG@10 points vs PyTorch on "
                   f"{folder.name} (more than export.max_ndcg_drop={e.max_ndcg_drop}).")
        if kind == "int8":  # the exported int8 file: its check may stop the stage
            ok = _check(ok, message + " Try another export.int8_config or set export.int8=false.", ctx, warnings)
        elif not ok:  # bf16, OpenVINO int8: optional candidates, only made ineligible
            ctx.log.warning("export: %s Not served.", message)
        passed[kind] = (ok, "" if ok else f"nDCG@10 drop {drop:.2f} > {e.max_ndcg_drop} points")


def _choose(ctx: StageContext, torch_model: Any, models: dict[str, Any], files: dict[str, str],
            passed: dict[str, tuple[bool, str]], skipped: dict[str, str], passages: list[str],
            model_dir: Path) -> dict[str, Any]:
    """What ``serve`` loads by default (written to the exported folder's serving.json): with export.select
    'fastest', each candidate timed on the first export.speed_passages parity passages; else fp32."""
    e = ctx.cfg.export
    info: dict[str, Any] = {"select": e.select, "cpu": cpu_name(), "cpu_flags": cpu_features(),
                            "pytorch_model": str(model_dir)}
    if e.select == "fp32":
        ok = passed.get("fp32", (False, ""))[0]
        return {**info, "backend": "onnx" if ok else PYTORCH, "dtype": "float32", "file": FP32_FILE,
                "why": "export.select is 'fp32'" + ("" if ok else "; fp32 failed parity, so PyTorch")}
    ctx.report("export: timing the candidates on this CPU", 0.8)
    sample_ = passages[: e.speed_passages]
    speeds = time_encodes({PYTORCH: torch_model, **models}, sample_, repeats=e.speed_repeats,
                          batch_size=e.batch_size,
                          on_done=lambda n, total: ctx.advance(n, total, unit="encodes", label="timing",
                                                               message="timing the candidates"))
    candidates = [Candidate(PYTORCH, None, speeds[PYTORCH])] + [
        Candidate(kind, files.get(kind), speeds[kind], *passed.get(kind, (False, "not checked"))) for kind in models]
    best, why = choose_backend(candidates, skipped)
    backend, dtype = backend_of(best.name)
    ctx.log.info("export: serving %s on %s (%s)", best.file or f"PyTorch {dtype}", info["cpu"], why)
    return {**info, "backend": backend, "dtype": dtype, "file": best.file or FP32_FILE, "why": why,
            "sentences_per_s": {c.name: round(c.sentences_per_s, 1) for c in candidates},
            "skipped": dict(skipped), "speed_passages": len(sample_), "speed_repeats": e.speed_repeats}


def _candidate_table(serving: dict[str, Any], passed: dict[str, tuple[bool, str]],
                     skipped: dict[str, str]) -> list[dict[str, Any]]:
    """One row per candidate for the manifest: measured speed, parity, or why it was not run."""
    rows = []
    speeds = serving.get("sentences_per_s") or {}
    for name in [PYTORCH, *passed, *skipped]:
        if name in skipped and name not in passed:
            rows.append({"name": name, "run": False, "why": skipped[name]})
            continue
        ok, note = passed.get(name, (True, ""))
        rows.append({"name": name, "run": True, "sentences_per_s": speeds.get(name), "passed_parity": ok,
                     **({"why": note} if note else {})})
    return rows


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
    version="3",  # 2: serving.json, the fastest candidate on this CPU; 3: PyTorch bf16 and OpenVINO candidates
    help="Export the trained model to ONNX (fp32 + int8 for this CPU; OpenVINO when installed), check parity with "
    "PyTorch (cosine on real passages for fp32, nDCG@10 on a retrieval task for int8 and bf16) and pick the fastest "
    "passing candidate to serve.",
)

__all__ = [
    "FP32_FILE", "OPENVINO_FILE", "OPENVINO_INT8_FILE", "PYTORCH", "PYTORCH_BF16", "SERVING_FILE", "STAGE",
    "Candidate", "backend_of", "bf16_unavailable", "calibration_passages", "choose_backend", "cosines",
    "cpu_features", "export_onnx", "export_openvino", "int8_file_name", "load_bf16", "load_onnx", "load_openvino",
    "load_retrieval_task", "openvino_unavailable", "parity_passages", "pick_int8_config", "retrieval_ndcg",
    "time_encodes",
]
