"""Run presets sized to the hardware, and a time estimate of a run before it starts.

A :class:`Preset` is a named list of ``section.key=value`` overrides (the same strings as ``--set``)
applied under the user's own settings: ``python -m trainer run --preset cpu-quick -c cfg.yaml``.
:func:`estimate` adds up per-stage seconds from the rates measured in BENCHMARKS.md (table ``RATES``
below); ``python -m trainer estimate -c cfg.yaml`` prints it.

Example::

    >>> from trainer.config import load_config
    >>> [p.name for p in presets_for("cpu")]
    ['cpu-quick']
    >>> cfg = load_config(None, ["ingest.source=builtin:python-docs", "domain=code", *PRESETS["cpu-quick"].overrides])
    >>> from unittest import mock
    >>> with mock.patch.dict("os.environ", {"DOMAIN_EMBED_LLAMA_SERVER": "off"}):  # as measured: llama-cpp-python
    ...     est = estimate(cfg, n_chunks=968, n_documents=78)
    >>> 10 * 60 < est.total_s < 20 * 60
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from trainer.config import Config

# --------------------------------------------------------------------------------------------------
# Measured rates. Every figure is from BENCHMARKS.md (the section named), on the project's quiet 2-core
# x86_64 CPU (AMD EPYC) unless it says "assumed". Re-measure there and update here together.

RATES: dict[str, tuple[float, str]] = {
    # "Quickstart: the whole chain offline": 115 generation tasks in ~330 s with Qwen2.5-Coder-0.5B
    # (2.9 s per question); "Synthetic query generation" gives 21.8 outputs/min (2.75 s) on SciFact.
    "gen_s.qwen2.5-coder-0.5b-instruct-q4_k_m": (2.9, "Quickstart: 115 questions in ~330 s, 0.5B generator"),
    # MODELS.md (shared): ~6-8 s/query on a loaded box; not in BENCHMARKS.md.
    "gen_s.qwen2.5-coder-1.5b-instruct-q4_k_m": (7.0, "MODELS.md: ~6-8 s per query, 1.5B generator (loaded box)"),
    # Not measured as a benchmark: the test suite's tiny generator answers in about a second.
    "gen_s.smollm2-135m-instruct-q4_1": (1.0, "assumed ~1 s per query for the 135M test generator (not benchmarked)"),
    "gen_s.endpoint": (1.0, "assumed ~1 s per query per concurrent request for an endpoint (not benchmarked)"),
    # "Synthetic query generation", the server's prompt cache: a chunk's next question costs 0.24x the first.
    # "Query style on two dev sets": llama-server's 16 slots, 1,000 SciFact claim tasks in 20.1 min vs 36.4.
    "gen_llama_server_speedup": (1.8, "embedded llama-server (16 slots): 20.1 min vs 36.4 for 1,000 claim tasks"),
    "gen_repeat_ratio": (0.24, "prompt cache: a chunk's next question costs 0.24x its first"),
    "gen_keep": (0.86, "Quickstart: 99 queries kept of 115"),
    # "End-to-end": SciFact's mine stage 6.7 min for 11,565 chunks (quickstart: 30 s for 968 chunks).
    "mine_s_per_chunk": (0.035, "End-to-end: mine 6.7 min for 11,565 SciFact chunks"),
    # "Training throughput": cpu profile, batch 16, 128 tokens, 3 negatives.
    "train_rows_per_s": (4.74, "Training throughput: 4.74 rows/s (cpu profile, 3 negatives)"),
    # "CPU inference candidates": PyTorch fp32, ONNX fp32, int8 sentences/s in a real export stage run.
    "encode_torch_per_s": (23.6, "export stage run: PyTorch 23.6 sentences/s"),
    "encode_onnx_per_s": (23.1, "ONNX fp32 23.1 sentences/s"),
    "encode_int8_per_s": (47.3, "int8 47.3 sentences/s"),
    # "End-to-end": SciFact evaluate 5.8 min base and tuned for its 7.8 MB corpus.jsonl.
    "mteb_s_per_mb": (45.0, "End-to-end: MTEB SciFact base+tuned 5.8 min for 7.8 MB of corpus"),
    # "Quickstart": evaluate 61 s for the held-out split of ~190 chunks, 14 queries: ~40 s of model loading.
    "evaluate_overhead_s": (40.0, "Quickstart: evaluate 61 s for a 14-query held-out split"),
    # "Ingest": ~2,500 chunks/s once the tokenizer is loaded (8 s).
    "ingest_chunks_per_s": (2500.0, "Ingest: ~2,500 chunks/s"),
    # Assumed, not measured (no GPU numbers in BENCHMARKS.md yet): a T4/A100 embeds and trains this size of
    # model this many times faster than the 2-core CPU. Generation stays on the CPU (llama.cpp, CPU build).
    "gpu_speedup": (15.0, "assumed 15x the CPU for embedding and training on a GPU (not measured)"),
}

# Corpus sizes measured in BENCHMARKS.md ("Ingest" and "Quickstart"): (documents, chunks).
KNOWN_CORPORA: dict[str, tuple[int, int]] = {
    "data:scifact": (5183, 11565),
    "data:aila_casedocs": (186, 7480),
    "data:legalbench_corporate_lobbying": (319, 547),
    "builtin:python-docs": (78, 968),
}
UNKNOWN_CORPUS = (200, 440)  # a guess used when nothing is known (said so in the basis)
GPU_PROFILES = ("t4", "a100", "multi-gpu")


def rate(name: str) -> float:
    return RATES[name][0]


# --------------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    name: str
    label: str  # what a button or menu shows
    profile: str  # the hardware it is sized for: cpu, t4, a100
    overrides: tuple[str, ...]  # section.key=value, as --set takes them
    summary: str


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "cpu-quick", "CPU quick (~15 min)", "cpu",
        (
            "train.profile=cpu",
            "ingest.max_documents=1000",  # mining embeds every training chunk: bound the corpus
            "generate.generator=qwen2.5-coder-0.5b-instruct-q4_k_m",
            "generate.sample_documents=100", "generate.max_chunks_per_document=2", "generate.questions_per_chunk=1",
            "generate.max_minutes=10",  # a hard cap on the largest stage, whatever the CPU
            "train.epochs=1",
            "evaluate.mteb=false", "evaluate.synthetic_split=true",  # the run's own held-out split
            "export.parity_passages=200", "export.on_parity_failure=warn",
            "export.retrieval_max_queries=100", "export.retrieval_max_corpus=500",
        ),
        "A whole run in about 15 minutes on 2 vCPUs: 100 sampled documents, one question for each of their "
        "first two chunks (0.5B generator, capped at 10 minutes), the cpu training profile for one epoch, scored "
        "on the run's own held-out split.",
    ),
    Preset(
        "t4", "T4 recipe", "t4",
        ("train.profile=t4", "generate.sample_documents=500", "generate.max_chunks_per_document=2",
         "generate.questions_per_chunk=3"),
        "The recipe on one T4: 3 questions for each of the first 2 chunks of 500 documents, 5 hard negatives, "
        "3 epochs in fp16, the domain's MTEB tasks.",
    ),
    Preset(
        "a100", "A100 recipe", "a100",
        ("train.profile=a100", "generate.sample_documents=1000", "generate.max_chunks_per_document=3",
         "generate.questions_per_chunk=3"),
        "The recipe on one A100: 3 questions for each of the first 3 chunks of 1,000 documents, 3 epochs in bf16 "
        "with large batches, the domain's MTEB tasks.",
    ),
)}


def presets_for(profile: str) -> list[Preset]:
    """The presets for a hardware profile ('cpu', 't4', 'a100', 'multi-gpu'), the best fit first; the CPU
    preset always fits."""
    fit = [p for p in PRESETS.values() if p.profile == profile]
    if profile == "multi-gpu":
        fit = [PRESETS["a100"]]
    return fit + [p for p in PRESETS.values() if p.profile == "cpu" and p not in fit]


def preset(name: str) -> Preset:
    from trainer.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]


# --------------------------------------------------------------------------------------------------
# Estimate


@dataclass
class Estimate:
    seconds: dict[str, float]  # per stage, pipeline order
    basis: str  # the rates used and the assumptions made
    notes: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    def format(self) -> str:
        lines = [f"{stage:10s} {_minutes(s)}" for stage, s in self.seconds.items()]
        lines.append(f"{'total':10s} {_minutes(self.total_s)}")
        return "\n".join([*lines, "", "basis: " + self.basis, *self.notes])


def _minutes(seconds: float) -> str:
    return f"{seconds:6.0f} s" if seconds < 90 else f"{seconds / 60:6.1f} min"


def _corpus(cfg: Config, n_chunks: int | None, n_documents: int | None) -> tuple[int, int, str]:
    """(documents, chunks, where the numbers come from): given, the run's ingest output, or BENCHMARKS.md."""
    if n_chunks is not None:
        docs = n_documents or max(1, round(n_chunks / (UNKNOWN_CORPUS[1] / UNKNOWN_CORPUS[0])))
        return docs, n_chunks, f"{n_chunks} chunks of {docs} documents"
    from trainer.rundir import RunDir

    m = RunDir(cfg.run.dir).manifest("ingest")
    counts = (m or {}).get("counts") or {}
    if m and m.get("status") == "complete" and counts.get("chunks"):
        return counts["documents"], counts["chunks"], f"the run's ingest output ({counts['chunks']} chunks)"
    source = cfg.ingest.source or ""
    if source in KNOWN_CORPORA:
        docs, chunks = KNOWN_CORPORA[source]
        if cfg.ingest.max_documents and cfg.ingest.max_documents < docs:
            chunks, docs = round(chunks * cfg.ingest.max_documents / docs), cfg.ingest.max_documents
        return docs, chunks, f"{source}: {docs} documents, {chunks} chunks (BENCHMARKS.md)"
    docs, chunks = UNKNOWN_CORPUS
    if cfg.ingest.max_documents:
        docs = min(docs, cfg.ingest.max_documents)
        chunks = round(docs * UNKNOWN_CORPUS[1] / UNKNOWN_CORPUS[0])
    return docs, chunks, f"corpus size unknown: assumed {docs} documents, {chunks} chunks (run ingest first for a " \
                         "better estimate)"


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def estimate(cfg: Config, n_chunks: int | None = None, n_documents: int | None = None) -> Estimate:
    """Seconds per stage of a whole run of ``cfg`` (ingest to publish), from the rates in :data:`RATES`.

    ``n_chunks`` (and ``n_documents``): the corpus size when known (after ingest); else the run's ingest
    output, else the sizes BENCHMARKS.md measured for known sources, else a stated guess.
    """
    from trainer.generate import _judge_enabled
    from trainer.generators import concurrency, generator_kind

    g, mc, t, ev, e = cfg.generate, cfg.mine, cfg.train, cfg.evaluate, cfg.export
    gpu = t.profile in GPU_PROFILES
    speed = rate("gpu_speedup") if gpu else 1.0
    used: list[str] = []
    notes: list[str] = []
    secs: dict[str, float] = {}

    docs, chunks, where = _corpus(cfg, n_chunks, n_documents)
    used.append(where)
    secs["ingest"] = 8 + chunks / rate("ingest_chunks_per_s")

    # generate: questions asked = sampled documents x chunks used each x questions per chunk
    sampled = min(g.sample_documents or docs, docs)
    per_doc = min(g.max_chunks_per_document or math.inf, chunks / max(docs, 1))
    gen_chunks = sampled * per_doc
    tasks = gen_chunks * g.questions_per_chunk
    embedded = generator_kind(cfg) == "embedded"
    key = f"gen_s.{g.generator}" if embedded else "gen_s.endpoint"
    if key not in RATES:
        key = "gen_s.qwen2.5-coder-1.5b-instruct-q4_k_m"
        notes.append(f"generator {g.generator!r} not measured: timed as the 1.5B one")
    workers = concurrency(cfg)
    first = rate(key) / (1 if embedded else workers)
    if embedded and not gpu and workers > 1:  # a built llama-server
        first /= rate("gen_llama_server_speedup")
    repeat = first * rate("gen_repeat_ratio")
    per_chunk = first + (g.questions_per_chunk - 1) * repeat
    per_chunk *= 1 + (g.candidates - 1) * rate("gen_repeat_ratio")
    if _judge_enabled(cfg):
        per_chunk *= 2
        notes.append("the judge doubles the generation time (one more call per question)")
    gen_s = gen_chunks * per_chunk
    kept = tasks * rate("gen_keep")
    if g.max_queries is not None and kept > g.max_queries:
        gen_s *= g.max_queries / kept
        kept = g.max_queries
    if g.max_minutes is not None and gen_s > g.max_minutes * 60:
        kept *= g.max_minutes * 60 / gen_s
        gen_s = g.max_minutes * 60
        notes.append(f"generation stops at generate.max_minutes={g.max_minutes:g}: about {kept:.0f} queries")
    secs["generate"] = 10 + gen_s
    used += [RATES[key][1], RATES["gen_repeat_ratio"][1] if g.questions_per_chunk > 1 else "",
             RATES["gen_keep"][1]]

    # mine: embedding every training-document chunk dominates
    train_chunks = chunks * (1 - mc.test_fraction)
    secs["mine"] = 10 + train_chunks * rate("mine_s_per_chunk") / speed
    used.append(RATES["mine_s_per_chunk"][1])

    # train: rows x epochs at the cpu profile's rate, scaled by the sequences per row (2 + negatives)
    rows = kept * (1 - mc.test_fraction) * (1 - t.val_fraction)
    negatives = t.num_negatives if t.num_negatives is not None else mc.num_negatives
    rows_per_s = rate("train_rows_per_s") * 5 / (2 + negatives) * speed
    secs["train"] = (20 + rows * t.epochs / rows_per_s) * max(1, len(t.lr_sweep))
    used.append(RATES["train_rows_per_s"][1])

    # evaluate: the held-out split (base and tuned) and each MTEB task available
    ev_s = rate("evaluate_overhead_s")
    if ev.synthetic_split and mc.test_fraction > 0:
        ev_s += 2 * (chunks * mc.test_fraction + kept * mc.test_fraction) / rate("encode_torch_per_s") / speed
    if ev.mteb:
        from trainer.domains import domain_tasks
        from trainer.models import is_offline
        from trainer.paths import find_local_folder

        try:
            task_names = list(ev.tasks) if ev.tasks is not None else domain_tasks(cfg.domain)
        except Exception:  # noqa: BLE001 - an unknown domain is the config's error, not the estimate's
            task_names = []
        for name in task_names:
            folder = find_local_folder(name)
            if folder is not None:
                ev_s += 10 + (folder / "corpus.jsonl").stat().st_size / 1e6 * rate("mteb_s_per_mb") / speed
            elif is_offline():
                notes.append(f"MTEB {name}: no local data offline, not evaluated")
            else:
                ev_s += 300 / speed
                notes.append(f"MTEB {name}: corpus size unknown (downloaded at run time), assumed 5 min")
        used.append(RATES["mteb_s_per_mb"][1])
    secs["evaluate"] = ev_s
    used.append(RATES["evaluate_overhead_s"][1])

    # export (on the CPU): parity passages through PyTorch, ONNX fp32 and int8, the int8 retrieval check, timing
    ex = 0.0
    if e.onnx:
        per_text = 1 / rate("encode_torch_per_s") + 1 / rate("encode_onnx_per_s")
        both = 1 / rate("encode_torch_per_s") + (1 / rate("encode_int8_per_s") if e.int8 else 0)
        per_text += 1 / rate("encode_int8_per_s") if e.int8 else 0
        passages = min(e.parity_passages, chunks)
        ex = 20 + passages * per_text
        if e.int8 and e.retrieval_check != "off":
            texts = _retrieval_texts(cfg, kept * mc.test_fraction, chunks * mc.test_fraction)
            ex += texts * both
        if e.select == "fastest":
            ex += min(e.speed_passages, passages) * e.speed_repeats * per_text
        used.append(f"{RATES['encode_torch_per_s'][1]}, {RATES['encode_onnx_per_s'][1]}, "
                    f"{RATES['encode_int8_per_s'][1]}")
    secs["export"] = ex
    secs["publish"] = 5.0
    notes.append("publish: upload time not included")
    if gpu:
        used.append(RATES["gpu_speedup"][1])
        notes.append("generation runs on the CPU (the embedded llama.cpp server): use generate.endpoint for a "
                     "GPU-served generator")
    basis = "BENCHMARKS.md rates on a quiet 2-core CPU: " + "; ".join(u for u in dict.fromkeys(used) if u)
    return Estimate({k: round(v, 1) for k, v in secs.items()}, basis, notes)


def _retrieval_texts(cfg: Config, synthetic_queries: float, synthetic_docs: float) -> float:
    """Queries + documents the export stage's int8 retrieval check encodes (twice: PyTorch and int8)."""
    e = cfg.export
    from trainer.export import _retrieval_folder

    folder, split, _ = _retrieval_folder(cfg, None)
    if folder is None:
        return min(synthetic_queries, e.retrieval_max_queries) + min(synthetic_docs, e.retrieval_max_corpus)
    queries = _lines(folder / "qrels" / f"{split}.tsv")
    return min(queries, e.retrieval_max_queries) + min(_lines(folder / "corpus.jsonl"), e.retrieval_max_corpus)
