"""Train stage: contrastive fine-tuning on the mined (anchor, positive, negative_1..k) rows.

The recipe (NVIDIA's domain-specific embedding recipe): MultipleNegativesRankingLoss at temperature 0.02
(scale 50) over in-batch plus mined hard negatives, or over the mined negatives only
(``train.hard_negatives_only``, the Nemotron setting); its GradCache form for large batches on small
GPUs (``train.loss=cached_mnrl``); MatryoshkaLoss over ``train.matryoshka_dims``; the NO_DUPLICATES
batch sampler; lr 1e-5 for 3 epochs (``train.large_set_epochs`` for large sets) with 10% warmup.

Validation: ``train.val_fraction`` of the training *queries* (not rows) is held out as an
InformationRetrievalEvaluator (queries -> their positives; corpus = the slice's positives and
negatives). The best checkpoint by nDCG@10 is kept (on a tie, the later one: a saturated validation set must not
keep a barely trained model) and training stops early when it stops improving.

Inputs: ``<run>/stages/mine/train`` (a Dataset: anchor, positive, negative_1..k[, metadata]).
Outputs in ``<run>/stages/train/``:

- ``model/``: the trained model in sentence-transformers format, with ``training_args.json``
- ``train_log.json``: the trainer's log history, the plan (batch, epochs, steps) and any lr sweep

Checkpoints go to ``_work/``; a killed run resumes from its last complete checkpoint and reaches the
same final weights. With ``publish.push_checkpoints`` and a token, each one is also pushed as it is saved
to ``<owner>/<name>-checkpoints`` (:func:`trainer.hub.checkpoint_hub_kwargs`).
``train.num_processes > 1`` launches workers through ``accelerate launch`` (or
``torchrun``) running ``python -m trainer.train JOB.json``; the stage itself stays one process.

Example::

    >>> from trainer.config import load_config
    >>> from trainer.rundir import RunDir, run_stage
    >>> cfg = load_config(None, ["train.profile=cpu", "run.dir=runs/quickstart"])
    >>> run_stage(STAGE, cfg, RunDir(cfg.run.dir)).manifest["counts"]["best_val_ndcg@10"]  # doctest: +SKIP
    0.71
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer._faults import crash_point
from trainer.config import ACCELERATE_DIR, Config
from trainer.errors import ConfigError, InputError, StageError
from trainer.files import atomic_dir, free_port, write_json_atomic
from trainer.hub import checkpoint_hub_kwargs, hub_token_env
from trainer.logs import get_logger, redact
from trainer.models import model_max_length, resolve_model
from trainer.progress import ProgressHook
from trainer.rundir import Input, Stage, StageContext

REPO = Path(__file__).resolve().parents[1]
SMALL_SET_ROWS = 2_000  # below this the automatic batch is rows/32 clamped to 16-64 (recipe)
VAL_NAME = "val"
_NEG_RE = re.compile(r"negative_(\d+)")


# ----------------------------------------------------------------------------------------------- data


def select_columns(ds, num_negatives: int | None):
    """Keep anchor, positive and the first ``num_negatives`` negative_i columns (all by default)."""
    cols = ds.column_names
    missing = [c for c in ("anchor", "positive") if c not in cols]
    if missing:
        raise InputError(
            f"the mine stage's output has no {' or '.join(missing)} column (columns: {cols}); "
            "re-run `python -m trainer mine`"
        )
    negs = sorted((c for c in cols if _NEG_RE.fullmatch(c)), key=lambda c: int(c.split("_")[1]))
    if num_negatives is not None:
        if num_negatives > len(negs):
            raise ConfigError(
                f"train.num_negatives={num_negatives} but the mine stage wrote {len(negs)} negatives per row; "
                f"lower train.num_negatives or re-run mining with mine.num_negatives={num_negatives}"
            )
        negs = negs[:num_negatives]
    return ds.select_columns(["anchor", "positive", *negs]), negs


def _doc_id(text: str) -> str:
    return "d" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def split_by_query(ds, fraction: float, max_queries: int, seed: int, group_column: str | None = None):
    """Hold out ``fraction`` of the queries (all rows of a held-out query go): (train, val rows)."""
    groups = ds[group_column] if group_column else ds["anchor"]
    unique = sorted(set(groups))
    n_val = 0
    if fraction > 0 and len(unique) >= 2:
        n_val = min(max_queries, len(unique) - 1, max(1, round(len(unique) * fraction)))
    held = set(random.Random(seed).sample(unique, n_val)) if n_val else set()
    train_idx = [i for i, g in enumerate(groups) if g not in held]
    val_idx = [i for i, g in enumerate(groups) if g in held]
    return ds.select(train_idx), ds.select(val_idx)


def validation_set(val_rows) -> dict[str, Any]:
    """IR evaluator inputs from held-out rows: queries -> positives; corpus = positives + negatives."""
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    neg_cols = [c for c in val_rows.column_names if _NEG_RE.fullmatch(c)]
    for row in val_rows:
        qid = "q" + hashlib.sha1(row["anchor"].encode("utf-8")).hexdigest()[:16]
        queries[qid] = row["anchor"]
        pid = _doc_id(row["positive"])
        corpus[pid] = row["positive"]
        relevant.setdefault(qid, [])
        if pid not in relevant[qid]:
            relevant[qid].append(pid)
        for c in neg_cols:
            corpus.setdefault(_doc_id(row[c]), row[c])
    return {"queries": queries, "corpus": corpus, "relevant": relevant}


# ------------------------------------------------------------------------------------------- planning


@dataclass
class Plan:
    rows: int
    batch_size: int
    epochs: float
    steps_per_epoch: int
    total_steps: int
    eval_steps: int
    world_size: int


def auto_batch_size(rows: int, cfg_train) -> int:
    """train.batch_size, else rows/32 clamped to 16-64 under 2,000 rows, else train.max_batch_size."""
    if cfg_train.batch_size:
        return cfg_train.batch_size
    if rows < SMALL_SET_ROWS:
        return min(cfg_train.max_batch_size, max(16, min(64, rows // 32)))
    return cfg_train.max_batch_size


def make_plan(rows: int, cfg_train, world_size: int = 1) -> Plan:
    per_device_rows = max(1, math.ceil(rows / world_size))
    batch = max(1, min(auto_batch_size(rows, cfg_train), per_device_rows))
    epochs = cfg_train.epochs
    if rows >= cfg_train.large_set_rows:
        epochs = min(epochs, cfg_train.large_set_epochs)
    steps_per_epoch = math.ceil(rows / (batch * world_size))
    total = math.ceil(steps_per_epoch * epochs)
    eval_steps = cfg_train.eval_steps or max(1, steps_per_epoch // 4)
    return Plan(rows, batch, epochs, steps_per_epoch, total, min(eval_steps, max(1, total)), world_size)


def resolve_precision(requested: str, log=None) -> str:
    """fp32/fp16/bf16 for this machine: mixed precision only with CUDA (else fp32, with a warning)."""
    import torch

    log = log or get_logger()
    cuda = torch.cuda.is_available()
    if requested == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested in ("fp16", "bf16") and not cuda:
        log.warning("train.precision=%s needs a CUDA GPU and none is available: training in fp32 instead", requested)
        return "fp32"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("train.precision=bf16: this GPU does not support bf16 (e.g. a T4); using fp16 instead")
        return "fp16"
    return requested


def build_loss(model, cfg_train, world_size: int = 1):
    """MNRL / cached MNRL (or their hard-negatives-only forms), wrapped in MatryoshkaLoss when dims are set."""
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    from trainer.losses import CachedHardNegativesOnlyLoss, HardNegativesOnlyLoss  # imports sentence-transformers

    dim = model.get_embedding_dimension()
    dims = list(cfg_train.matryoshka_dims)
    too_big = [d for d in dims if dim is not None and d > dim]
    if too_big or any(d <= 0 for d in dims):
        raise ConfigError(
            f"train.matryoshka_dims={dims}: {too_big or 'non-positive values'} exceed the model's embedding "
            f"dimension of {dim}; use dimensions between 1 and {dim}, e.g. train.matryoshka_dims="
            f"[{', '.join(str(d) for d in (dim, dim // 2, dim // 4) if d)}], or [] to turn Matryoshka off"
        )
    cached = cfg_train.loss == "cached_mnrl"
    kwargs: dict[str, Any] = {"scale": 1.0 / cfg_train.temperature}
    if cached:
        kwargs["mini_batch_size"] = cfg_train.mini_batch_size
    if cfg_train.hard_negatives_only:
        cls = CachedHardNegativesOnlyLoss if cached else HardNegativesOnlyLoss
    else:
        cls = CachedMultipleNegativesRankingLoss if cached else MultipleNegativesRankingLoss
        kwargs["gather_across_devices"] = bool(cfg_train.gather_across_devices and world_size > 1)
    loss = cls(model, **kwargs)
    return MatryoshkaLoss(model, loss, dims) if dims else loss


# ---------------------------------------------------------------------------------------- checkpoints


def last_checkpoint(folder: Path, log: logging.Logger | None = None, archive: Path | None = None) -> Path | None:
    """The newest checkpoint to resume from: complete (trainer_state.json is written last; half-written ones
    are removed) and readable. A damaged one (a truncated weights file: full disk, bad copy) is moved to
    ``archive`` (default: ``damaged-checkpoints/`` beside ``folder``), never deleted, and the one before it is
    used, or training starts over; one log line says so."""
    if not folder.is_dir():
        return None
    found = sorted(
        (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    resume: Path | None = None
    moved: list[str] = []
    for ckpt in reversed(found):
        if not (ckpt / "trainer_state.json").is_file():
            shutil.rmtree(ckpt, ignore_errors=True)  # a save cut short by the kill
            continue
        why = checkpoint_damage(ckpt)
        if why is None:
            resume = ckpt
            break
        dest = _move_aside(ckpt, archive or folder.parent / "damaged-checkpoints")
        moved.append(f"{ckpt.name} ({why}) moved to {dest}")
    if moved:
        (log or get_logger()).warning("train: damaged checkpoint %s; %s", "; ".join(moved),
                                      f"resuming from {resume.name}" if resume else "starting over")
    return resume


def checkpoint_damage(ckpt: Path) -> str | None:
    """Why a complete checkpoint cannot be resumed from (a truncated or unreadable file), or None."""
    from safetensors import SafetensorError, safe_open

    for f in sorted(ckpt.rglob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as fh:  # checks the header and the size it announces
                fh.keys()
        except (SafetensorError, OSError) as exc:
            return f"{f.relative_to(ckpt)}: {str(exc).splitlines()[0][:200]}"
    for f in sorted(p for p in ckpt.rglob("*") if p.suffix in (".pt", ".pth", ".bin")):
        if not zipfile.is_zipfile(f):  # torch.save writes a zip archive; a cut one has no central directory
            return f"{f.relative_to(ckpt)}: not a complete torch archive"
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return "trainer_state.json: not valid JSON"
    return None


def _move_aside(ckpt: Path, archive: Path) -> Path:
    """Move a damaged checkpoint into ``archive`` (the run's archive/ is kept after the stage ends, unlike
    _work/). Another rank of a multi-process run may have moved it already."""
    name = f"train-{ckpt.parent.parent.name}-{ckpt.name}-damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    dest, n = archive / name, 1
    while dest.exists():
        dest, n = archive / f"{name}.{n}", n + 1
    archive.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(ckpt, dest)
    except FileNotFoundError:
        pass
    return dest


def _callbacks(report, log, advance=None):
    from transformers import TrainerCallback

    class Faults(TrainerCallback):
        """Fault injection after each checkpoint save (DOMAIN_EMBED_CRASH_AT=train.step.N)."""

        def on_save(self, args, state, control, **kwargs):
            crash_point(f"train.step.{state.global_step}")

    class Meter(TrainerCallback):
        """Wall time and steps of this attempt (resumed runs included) and progress reports."""

        def __init__(self) -> None:
            self.start_step = 0
            self.started = 0.0
            self.seconds = 0.0
            self.steps = 0
            self.loss: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_step, self.started = state.global_step, time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                self.loss = float(logs["loss"])
                log.info("train: step %d/%d loss %.4f lr %.2e", state.global_step, state.max_steps, logs["loss"],
                         logs.get("learning_rate", 0.0))
            scores = {k[len("eval_" + VAL_NAME) + 1:]: v for k, v in logs.items() if k.startswith("eval_" + VAL_NAME)}
            if scores:
                log.info("train: step %d validation nDCG@10 %.4f MRR@10 %.4f Recall@10 %.4f", state.global_step,
                         scores.get("cosine_ndcg@10", 0), scores.get("cosine_mrr@10", 0),
                         scores.get("cosine_recall@10", 0))

        def on_step_end(self, args, state, control, **kwargs):
            if report is not None and state.max_steps:
                report(f"train: step {state.global_step}/{state.max_steps}", state.global_step / state.max_steps)
            if advance is not None and state.max_steps:
                extra = {"loss": round(self.loss, 4)} if self.loss is not None else {}
                advance(state.global_step, state.max_steps, unit="steps", epoch=round(state.epoch or 0, 2), **extra)

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.started
            self.steps = state.global_step - self.start_step

    return Faults(), Meter()


# -------------------------------------------------------------------------------------------- fitting


def fit(
    cfg: Config,
    train_ds,
    val: dict[str, Any] | None,
    out: Path,
    lr: float,
    *,
    report=None,
    advance=None,
    log=None,
    archive: Path | None = None,
) -> dict[str, Any]:
    """Train once at ``lr`` into ``out`` (checkpoints in out/checkpoints, the model in out/final).

    ``advance(step, max_steps, unit="steps", loss=..., epoch=...)`` gets the counter after each step
    (``StageContext.advance``; a worker of a multi-process run writes the run's progress.json itself).

    Resumes from the last complete checkpoint (a damaged one is moved to ``archive``). Returns (and writes to
    out/result.json) the counts.
    """
    import torch
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers import EarlyStoppingCallback, PrinterCallback
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_warning()
    log = log or get_logger()
    t = cfg.train
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    plan = make_plan(len(train_ds), t, world)
    precision = resolve_precision(t.precision, log)
    cuda = torch.cuda.is_available()

    path = resolve_model(cfg.model.name)
    model = SentenceTransformer(path, device="cuda" if cuda else "cpu")
    inference_len = cfg.model.max_seq_length or model.max_seq_length or model_max_length(path)
    train_len = t.max_seq_length or inference_len
    model.max_seq_length = train_len
    loss = build_loss(model, t, world)

    neg_cols = [c for c in train_ds.column_names if _NEG_RE.fullmatch(c)]
    prompts: dict[str, str] = {}
    if cfg.model.query_prompt:
        prompts["anchor"] = cfg.model.query_prompt
    if cfg.model.passage_prompt:
        prompts.update({c: cfg.model.passage_prompt for c in ("positive", *neg_cols)})

    class LaterOnTies(InformationRetrievalEvaluator):
        """Adds ``<name>_selection``: nDCG@10 plus 1e-12 per step, so that when the validation set saturates
        (every checkpoint ties, often at the first one) the later checkpoint, not the barely trained one, wins."""

        def __call__(self, model, output_path=None, epoch=-1, steps=-1, *args, **kwargs):
            metrics = super().__call__(model, output_path, epoch, steps, *args, **kwargs)
            metrics[f"{self.name}_selection"] = metrics[f"{self.name}_cosine_ndcg@10"] + 1e-12 * max(steps, 0)
            return metrics

    evaluator = None
    metric = f"eval_{VAL_NAME}_selection"
    if val and val["queries"]:
        evaluator = LaterOnTies(
            queries=val["queries"],
            corpus=val["corpus"],
            relevant_docs={q: set(ids) for q, ids in val["relevant"].items()},
            mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 5, 10], precision_recall_at_k=[1, 5, 10],
            map_at_k=[100], batch_size=plan.batch_size, name=VAL_NAME, write_csv=False,
            query_prompt=cfg.model.query_prompt or None, corpus_prompt=cfg.model.passage_prompt or None,
        )
    validate = evaluator is not None

    ckpt_dir = out / "checkpoints"
    try:
        hub = checkpoint_hub_kwargs(cfg)  # publish.push_checkpoints: each save also goes to <name>-checkpoints
    except OSError as exc:  # huggingface_hub's HTTP and connection errors
        raise _push_error(cfg, exc) from None
    if hub["push_to_hub"] and rank == 0:
        log.info("train: pushing each checkpoint to %s (last-checkpoint/)", hub["hub_model_id"])
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=plan.epochs,
        per_device_train_batch_size=plan.batch_size,
        per_device_eval_batch_size=plan.batch_size,
        learning_rate=lr,
        warmup_ratio=t.warmup_ratio,
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        use_cpu=not cuda,
        batch_sampler=BatchSamplers.BATCH_SAMPLER if t.hard_negatives_only else BatchSamplers.NO_DUPLICATES,
        prompts=prompts or None,
        eval_strategy="steps" if validate else "no",
        eval_steps=plan.eval_steps if validate else None,
        save_strategy="steps",
        save_steps=plan.eval_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=validate,
        metric_for_best_model=metric if validate else None,
        greater_is_better=True if validate else None,
        logging_steps=max(1, min(plan.eval_steps, 50)),
        logging_first_step=True,
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_drop_last=False,
        **hub,
    )
    faults, meter = _callbacks(report if rank == 0 else None, log, advance if rank == 0 else None)
    callbacks = [faults, meter]
    if validate and t.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    resume = last_checkpoint(ckpt_dir, log, archive)
    if resume is not None:
        log.info("train: resuming from %s", resume)
    with hub_token_env(cfg):  # the checkpoint pushes (and the repo creation) read the token from HF_TOKEN
        try:
            trainer = SentenceTransformerTrainer(
                model=model, args=args, train_dataset=train_ds, loss=loss, evaluator=evaluator, callbacks=callbacks
            )
        except OSError as exc:
            if not hub["push_to_hub"]:
                raise
            raise _push_error(cfg, exc) from None  # creating <name>-checkpoints on the Hub failed
        trainer.remove_callback(PrinterCallback)  # our Meter logs through the run log instead of print()
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)  # waits for the last push
    if hub["push_to_hub"]:
        model.model_card_data.model_id = None  # the card's usage names the checkpoints repo; publish names its own
        pushes = getattr(trainer, "push_in_progress", None)
        for job in pushes.jobs if pushes is not None else []:  # the uploads run in the background, errors unseen
            if job.exception() is not None:
                log.warning("train: pushing the last checkpoint to %s failed: %s", hub["hub_model_id"],
                            redact(str(job.exception()), (os.environ.get(cfg.publish.token_env, ""),)))

    if trainer.state.global_step == 0:
        raise StageError(
            f"no training step ran on {plan.rows} rows at batch size {plan.batch_size} x {world} processes: "
            "the NO_DUPLICATES sampler found no batch without repeated texts (multi-process runs drop incomplete "
            "batches). Lower train.batch_size, or mine more (or more varied) data"
        )
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    stopped_early = trainer.state.global_step < trainer.state.max_steps
    result = {
        "lr": lr,
        "rows": plan.rows,
        "batch_size": plan.batch_size,
        "world_size": world,
        "epochs": plan.epochs,
        "steps": trainer.state.global_step,
        "planned_steps": trainer.state.max_steps,
        "stopped_early": stopped_early,
        "precision": precision,
        "device": "cuda" if cuda else "cpu",
        "max_seq_length": train_len,
        "train_seconds": round(meter.seconds, 2),
        "samples_per_s": round(meter.steps * plan.batch_size * world / meter.seconds, 2) if meter.seconds else None,
        "resumed_from_step": int(resume.name.split("-")[-1]) if resume else 0,
        "checkpoints_repo": hub.get("hub_model_id"),
        "best_val_ndcg@10": round(trainer.state.best_metric, 6) if validate and trainer.state.best_metric else None,
        "best_checkpoint_step": _step_of(trainer.state.best_model_checkpoint),
        "final_loss": round(losses[-1], 6) if losses else None,
        "mean_loss": round(output.training_loss, 6),
        "plan": asdict(plan),
    }
    if trainer.is_world_process_zero():
        model.max_seq_length = inference_len  # serve at the model's own limit, not the training length
        with atomic_dir(out / "final") as tmp:
            model.save(str(tmp))
            (tmp / "training_args.json").write_text(args.to_json_string(), encoding="utf-8")
            write_json_atomic(tmp / "train_log.json", {"log_history": trainer.state.log_history, **result})
        write_json_atomic(out / "result.json", result)
    return result


def _push_error(cfg: Config, exc: OSError) -> StageError:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    token = os.environ.get(cfg.publish.token_env, "").strip()
    return StageError(
        f"publish.push_checkpoints: the Hub at {endpoint} refused or did not answer "
        f"({type(exc).__name__}: {redact(str(exc), (token,) if token else ())}). Check that "
        f"${cfg.publish.token_env} holds a write token (and publish.owner, if set), or set "
        "publish.push_checkpoints=false to train without pushing checkpoints"
    )


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None


# ------------------------------------------------------------------------------------- multi-process



def launch_command(cfg: Config, job: Path) -> list[str]:
    """The launcher command line that runs ``python -m trainer.train JOB`` in train.num_processes workers."""
    import torch

    n = cfg.train.num_processes
    cuda = torch.cuda.is_available()
    if cuda and torch.cuda.device_count() < n:
        raise ConfigError(
            f"train.num_processes={n} but only {torch.cuda.device_count()} GPUs are visible; "
            f"set train.num_processes={torch.cuda.device_count()}"
        )
    if cfg.train.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                "-m", "trainer.train", str(job)]
    conf = Path(cfg.train.accelerate_config or ACCELERATE_DIR / ("multi-gpu.yaml" if cuda else "cpu-2proc.yaml"))
    if not conf.is_absolute() and not conf.is_file():
        conf = REPO / conf
    if not conf.is_file():
        raise ConfigError(f"train.accelerate_config={conf}: no such file (see {ACCELERATE_DIR})")
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(conf), "--num_processes", str(n),
            "--main_process_port", str(free_port()), "-m", "trainer.train", str(job)]


def _fit_in_workers(ctx: StageContext, train_path: Path, val: dict | None, out: Path, lr: float) -> dict:
    job = out / "job.json"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job, {
        "config": ctx.cfg.model_dump(mode="json"), "train": str(train_path), "val": val, "out": str(out), "lr": lr,
        "archive": str(ctx.run_dir.archive_dir), "run_root": str(ctx.run_dir.root),
    })
    cmd = launch_command(ctx.cfg, job)
    ctx.log.info("train: launching %d workers: %s", ctx.cfg.train.num_processes, " ".join(cmd))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log_path = out / "workers.log"
    with log_path.open("a", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not (out / "result.json").is_file():
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
        raise StageError(
            f"the {ctx.cfg.train.num_processes} training workers failed (exit {proc.returncode}); re-run to resume "
            f"from the last checkpoint. Full output: {log_path}. Last lines:\n{tail}"
        )
    return json.loads((out / "result.json").read_text())


def _worker_main(job_path: str) -> None:
    import datasets

    job = json.loads(Path(job_path).read_text())
    cfg = Config.model_validate(job["config"])
    hook = ProgressHook(job["run_root"], "train") if job.get("run_root") else None
    fit(cfg, datasets.load_from_disk(job["train"]), job["val"], Path(job["out"]), job["lr"],
        advance=hook.update if hook else None, archive=Path(job["archive"]) if job.get("archive") else None)
    if hook:
        hook.flush()


# ---------------------------------------------------------------------------------------------- stage


def run(ctx: StageContext) -> dict[str, Any]:
    import datasets

    datasets.disable_progress_bars()
    cfg, t = ctx.cfg, ctx.cfg.train
    src = ctx.input("mine", "train")
    raw = datasets.load_from_disk(str(src))
    if len(raw) == 0:
        raise InputError(f"{src} has no rows: nothing to train on (see the mine stage's manifest)")
    group = "query_id" if "query_id" in raw.column_names else None
    selected, negs = select_columns(raw, t.num_negatives)
    if t.hard_negatives_only and not negs:
        raise ConfigError("train.hard_negatives_only=true needs mined negatives, and train.num_negatives is 0")
    if group:
        selected = selected.add_column("_group", raw[group])
    val_fraction = t.val_fraction
    n_queries = len(set(selected["_group" if group else "anchor"]))
    if val_fraction > 0 and round(n_queries * val_fraction) < t.min_val_queries:
        ctx.log.warning("train: %d validation queries would be under train.min_val_queries=%d; training the full "
                        "schedule without validation", round(n_queries * val_fraction), t.min_val_queries)
        val_fraction = 0.0
    train_rows, val_rows = split_by_query(selected, val_fraction, t.val_max_queries, cfg.run.seed,
                                          "_group" if group else None)
    if group:
        train_rows, val_rows = train_rows.remove_columns("_group"), val_rows.remove_columns("_group")
    val = validation_set(val_rows) if len(val_rows) else None
    if t.lr_sweep and val is None:
        raise ConfigError("train.lr_sweep picks the best lr by validation nDCG@10: set train.val_fraction > 0")

    work = ctx.work
    train_path = work / "data" / "train"
    if t.num_processes > 1 and not train_path.is_dir():
        with atomic_dir(train_path) as tmp:
            train_rows.save_to_disk(str(tmp))

    lrs = list(t.lr_sweep) or [t.lr]
    results = []
    for i, lr in enumerate(lrs):
        out = work / (f"lr-{lr:g}" if t.lr_sweep else "run")
        if (out / "result.json").is_file() and (out / "final").is_dir():
            ctx.log.info("train: lr %g already trained (resumed run), reusing it", lr)
            results.append(json.loads((out / "result.json").read_text()))
            continue
        ctx.report(f"train: lr {lr:g} ({i + 1}/{len(lrs)})", i / len(lrs))
        if t.num_processes > 1:
            results.append(_fit_in_workers(ctx, train_path, val, out, lr))
        else:
            sweep = {"label": f"steps lr {lr:g}", "message": f"lr {lr:g} ({i + 1}/{len(lrs)})"} if t.lr_sweep else {}
            results.append(fit(cfg, train_rows, val, out, lr, report=ctx.report, log=ctx.log,
                               advance=functools.partial(ctx.advance, **sweep),
                               archive=ctx.run_dir.archive_dir))
    best_i = max(range(len(results)), key=lambda j: results[j]["best_val_ndcg@10"] or -1.0) if t.lr_sweep else 0
    best = results[best_i]
    src_dir = work / (f"lr-{lrs[best_i]:g}" if t.lr_sweep else "run") / "final"

    with atomic_dir(ctx.output("model")) as dest:
        shutil.copytree(src_dir, dest, dirs_exist_ok=True)
        log_file = dest / "train_log.json"
        history = json.loads(log_file.read_text())
        log_file.unlink()
    write_json_atomic(ctx.output("train_log.json"), {
        **history, "lr_sweep": [{"lr": r["lr"], "best_val_ndcg@10": r["best_val_ndcg@10"]} for r in results],
    })
    counts = {k: v for k, v in best.items() if k != "plan"}
    counts.update(
        negatives_per_row=len(negs),
        val_queries=len(val["queries"]) if val else 0,
        val_corpus=len(val["corpus"]) if val else 0,
        loss=("cached_mnrl" if t.loss == "cached_mnrl" else "mnrl")
        + ("+hard_negatives_only" if t.hard_negatives_only else "")
        + ("+matryoshka" if t.matryoshka_dims else ""),
    )
    if t.lr_sweep:
        counts["lr_sweep"] = {f"{r['lr']:g}": r["best_val_ndcg@10"] for r in results}
    ctx.log.info(
        "train: %d rows, %d steps in %.0f s (%.1f samples/s), best validation nDCG@10 %s, final loss %s",
        counts["rows"], counts["steps"], counts["train_seconds"], counts["samples_per_s"] or 0,
        counts["best_val_ndcg@10"], counts["final_loss"],
    )
    return counts


STAGE = Stage(
    name="train",
    run=run,
    sections=("model", "train", "run.seed"),
    reads=(Input("mine", "train"),),
    writes=("model", "train_log.json"),
    version="1",
    help="Fine-tune contrastively (MNRL at temperature 0.02, hard negatives, Matryoshka) with validation, "
    "best checkpoint and early stopping; resumable.",
)


if __name__ == "__main__":  # a worker of a multi-process run: python -m trainer.train JOB.json
    _worker_main(sys.argv[1])
