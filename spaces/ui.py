"""The Space's UI. It holds no pipeline logic: every button builds a config and hands a job to the job
pool (``trainer.jobs.JobPool``), which runs ``python -m trainer run --to STAGE``; a timer polls the job.

Each visitor (a signed-in Hugging Face user, or an anonymous browser session) has their own run folder and
job (``spaces.sessions``); nobody sees, cancels or publishes another's. A reload fills the form from the
session's job config and re-attaches to its job. A click that would re-run a finished stage with other
settings says what changed and asks first.

Steps: Domain -> Data -> Generate -> Mine -> Train -> Evaluate -> Publish & Export (+ Downloads).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import gradio as gr

from spaces.sessions import (
    ANON_PREFIX,
    anon_ttl_s,
    check_endpoint_url,
    for_visitor,
    job_token_env,
    max_jobs,
    new_session_id,
    owner_key,
    share_space_token,
    storage_root,
)
from trainer.artifacts import artifacts, build, pushed_links
from trainer.config import QUERY_TYPE_CHOICES, QUERY_TYPES, Config, load_config
from trainer.domain_ranking import domains_table, plot_domains
from trainer.domains import DOMAINS, SUBCATEGORIES
from trainer.errors import StageError, TrainerError
from trainer.generators import PROVIDER_MODELS, format_plan, generator_kind, generator_plan
from trainer.generators import choices as generator_choices
from trainer.jobs import Job, JobPool
from trainer.logs import redact
from trainer.paths import data_dir
from trainer.pipeline import STAGE_NAMES, STAGES, chain, output_path
from trainer.pipeline import status as stage_status
from trainer.presets import PRESETS, estimate, presets_for
from trainer.progress import PROGRESS_FILE, format_bar, format_duration, read_progress
from trainer.publish import regression_verdict
from trainer.rundir import RunDir, stage_identity

DUPLICATE_HELP = (
    "**Run it on a GPU:** this Space runs on free CPU hardware, where only small runs finish quickly. "
    "Use *Duplicate this Space* (top-right menu), pick GPU hardware (a T4 is enough for MiniLM-size models), "
    "and either sign in with Hugging Face or add your Hub token as the secret `HF_TOKEN` (write access) to "
    "publish. The Train step detects the hardware and picks the matching profile (cpu / t4 / a100)."
)

# Off a Space there is no sign-in: gradio warns on every event that declares gr.OAuthProfile; None is right.
warnings.filterwarnings("ignore", message="Empty session being created")

CSS = """
#eval-report table { table-layout: auto; width: 100%; display: block; overflow-x: auto; }
#eval-report th, #eval-report td { white-space: nowrap; padding: 2px 8px; }
.de-bar { background: #e5e7eb; border-radius: 6px; height: 14px; overflow: hidden; }
.de-bar > div { background: #4f46e5; height: 100%; }
"""


def detect_profile() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            if torch.cuda.device_count() > 1:
                return "multi-gpu"
            return "a100" if any(x in name for x in ("A100", "H100", "H200", "L40", "A10G")) else "t4"
    except ImportError:
        pass
    return "cpu"


def default_corpus(domain: str) -> str:
    src = DOMAINS[domain].default_corpus if domain in DOMAINS else "builtin:python-docs"
    if src.startswith("data:") and not (data_dir() / src[5:]).is_dir():
        return "builtin:python-docs"
    return src


# Every run button sends these settings, in this order.
SETTINGS = (
    "domain", "source", "uploads", "gen_kind", "provider", "provider_model", "ie_name", "ie_repository",
    "ie_instance", "ie_region", "endpoint", "endpoint_model", "generator", "questions_per_chunk",
    "query_types", "sample_documents", "mine_mode", "num_negatives", "margin", "profile", "epochs", "lr", "owner",
    "repo_name", "private", "onnx", "advanced", "queries_file", "queries_source", "queries_use", "queries_ratio",
    "allow_regression",
)
UPLOADS = "uploads"  # the Corpus box's name for the session's uploaded files
QUERY_UPLOADS = "query-uploads"  # the Your queries box's name for the session's uploaded queries file
QUERY_FILE_TYPES = (".jsonl", ".json", ".csv", ".tsv")
SOURCE_PREFIXES = ("hub:", "builtin:", "data:")
# Settings a visitor may not change from the Advanced box: where runs live, which files are read, which secret
# is sent where.
_LOCKED = ("run.", "ingest.source", "queries.source")


def _check_advanced(lines: list[str]) -> None:
    for line in lines:
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key.startswith(_LOCKED) or key.endswith("token_env"):
            raise TrainerError(f"{key} cannot be changed on the Space (the Corpus box sets the corpus; each "
                               "visitor's run folder and token are fixed)")
        if value.startswith(("/", "~")) or ".." in value:
            raise TrainerError(f"{key}: settings that name server folders are not available on the Space")


def config_from(values: dict[str, Any], run_dir: str | Path, preset: str | None = None) -> Config:
    """The pipeline config the UI's fields describe (the same config the CLI and YAML produce), run in
    ``run_dir``. Uploaded files are copied to ``<run>/uploads`` and used as the corpus. A ``preset``
    (``trainer.presets``) overrides the form's fields; the Advanced box overrides both."""
    run_dir = Path(run_dir)
    source = (values.get("source") or "").strip()
    uploads = run_dir / UPLOADS
    if values.get("uploads"):
        uploads.mkdir(parents=True, exist_ok=True)
        for f in values["uploads"]:
            shutil.copy2(f, uploads / Path(f).name)
        source = UPLOADS
    if source == UPLOADS:
        if not uploads.is_dir() or not any(uploads.iterdir()):
            raise TrainerError("no uploaded files: add files on the Data tab, or name a corpus in the Corpus box")
        source = str(uploads)
    elif not source.startswith(SOURCE_PREFIXES):
        raise TrainerError(f"corpus {source!r}: on the Space, use hub:<dataset id>, builtin:python-docs, "
                           "data:<name>, or upload files on the Data tab")
    # embeddings of a visitor's corpus stay in their own run folder, not in the server's shared cache
    o = [f"domain={values['domain']}", f"run.dir={run_dir}", "run.embedding_cache=false",
         "evaluate.embedding_cache=false", f"ingest.source={source}",
         f"generate.questions_per_chunk={int(values['questions_per_chunk'])}",
         f"mine.mode={values['mine_mode']}", f"mine.num_negatives={int(values['num_negatives'])}",
         f"mine.margin={float(values['margin'])}", f"train.profile={values['profile']}",
         f"train.epochs={float(values['epochs'])}", f"train.lr={float(values['lr'])}",
         f"publish.private={bool(values['private'])}", f"export.onnx={bool(values['onnx'])}"]
    types = [t for t in QUERY_TYPE_CHOICES if t in (values.get("query_types") or QUERY_TYPES)]
    if types != list(QUERY_TYPES):  # the recipe's three: its rotation (the config default)
        o.append(f"generate.query_types=[{', '.join(types)}]")
    if values.get("sample_documents"):
        o.append(f"generate.sample_documents={int(values['sample_documents'])}")
    o += _generator_overrides(values)
    o += _queries_overrides(values, run_dir)
    if values.get("allow_regression"):
        o.append("publish.allow_regression=true")
    if values.get("owner"):
        o.append(f"publish.owner={values['owner']}")
    if values.get("repo_name"):
        o.append(f"publish.name={values['repo_name']}")
    # Advanced: any other setting, one section.key=value per line (as --set on the command line)
    advanced = [line.strip() for line in (values.get("advanced") or "").splitlines() if line.strip()]
    _check_advanced(advanced)
    if preset:
        o += [x for x in PRESETS[preset].overrides if not x.startswith(_LOCKED)]
    return load_config(None, o + advanced)


def _queries_overrides(values: dict[str, Any], run_dir: Path) -> list[str]:
    """Your own real queries: an uploaded .jsonl/.csv file (copied to ``<run>/query-uploads``), or a Hub dataset;
    used for training, evaluation or both, at a share of the training queries (0: all of them)."""
    src = (values.get("queries_source") or "").strip()
    folder = run_dir / QUERY_UPLOADS
    if values.get("queries_file"):
        upload = Path(values["queries_file"])
        if upload.suffix.lower() not in QUERY_FILE_TYPES:
            raise TrainerError(f"Your queries: {upload.name} is not a .jsonl or .csv file (a query column and the "
                               "relevant document's id or text)")
        shutil.rmtree(folder, ignore_errors=True)  # one queries file per run: the latest upload
        folder.mkdir(parents=True)
        shutil.copy2(upload, folder / upload.name)
        src = QUERY_UPLOADS
    if not src:
        return []
    if src == QUERY_UPLOADS:
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        if not files:
            raise TrainerError("Your queries: no uploaded file: upload one on the Data tab, or clear the box")
        src = str(files[0])
    elif not src.startswith(("hub:", "data:")):
        raise TrainerError(f"Your queries {src!r}: on the Space, upload a .jsonl/.csv file or name a Hub dataset "
                           "(hub:<dataset id>)")
    o = [f"queries.source={src}", f"queries.use={values.get('queries_use') or 'both'}"]
    ratio = float(values.get("queries_ratio") or 0)
    if not 0 <= ratio <= 1:
        raise TrainerError("Your queries: the share of your queries among training queries is between 0 and 1 "
                           "(0: all of yours and every synthetic one; 1: yours only, no generation)")
    if ratio:
        o.append(f"queries.ratio={ratio}")
    return o


GEN_KINDS = [(c["label"], c["value"]) for c in generator_choices()] + [
    ("Your own endpoint URL (TGI / OpenAI-compatible)", "endpoint")]


def _generator_overrides(values: dict[str, Any]) -> list[str]:
    """The Generator section's fields as settings: Inference Providers, a dedicated Inference Endpoint, a URL
    (https only on the Space), or the embedded llama.cpp server."""
    kind = values.get("gen_kind") or ("endpoint" if values.get("endpoint") else "embedded")
    if kind == "provider":
        model = (values.get("provider_model") or "").strip()
        if not model:
            raise TrainerError("Generator: pick a model for Inference Providers")
        return [f"generate.provider={(values.get('provider') or 'auto').strip()}", f"generate.model={model}"]
    if kind == "inference_endpoint":
        name = (values.get("ie_name") or "").strip()
        if not name:
            raise TrainerError("Generator: name your Inference Endpoint (an existing one of that name is resumed)")
        vendor, itype, size = (values.get("ie_instance") or "aws/nvidia-l4/x1").split("/")
        spec = {"name": name, "repository": values.get("ie_repository") or "Qwen/Qwen2.5-7B-Instruct",
                "vendor": vendor, "instance_type": itype, "instance_size": size,
                "region": values.get("ie_region") or "us-east-1"}
        return [f"generate.inference_endpoint.{k}={v}" for k, v in spec.items()]
    if kind == "endpoint":
        url = (values.get("endpoint") or "").strip()
        if not url:
            raise TrainerError("Generator: type your endpoint's URL, or pick another generator")
        if os.environ.get("SPACE_ID"):
            check_endpoint_url(url)
        return [f"generate.endpoint={url}", f"generate.model={values.get('endpoint_model') or 'tgi'}"]
    return [f"generate.generator={values['generator']}"] if values.get("generator") else []


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def values_from_config(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """The form's fields for a config (the inverse of :func:`config_from`); settings the form has no field
    for go to the Advanced box."""
    src = cfg.ingest.source or ""
    values: dict[str, Any] = {
        "domain": cfg.domain, "source": UPLOADS if src == str(Path(run_dir) / UPLOADS) else src, "uploads": None,
        **_generator_values(cfg),
        "generator": cfg.generate.generator, "questions_per_chunk": cfg.generate.questions_per_chunk,
        "query_types": list(cfg.generate.query_types or QUERY_TYPES),
        "sample_documents": cfg.generate.sample_documents or 0, "mine_mode": cfg.mine.mode,
        "num_negatives": cfg.mine.num_negatives, "margin": cfg.mine.margin, "profile": cfg.train.profile,
        "epochs": cfg.train.epochs, "lr": cfg.train.lr, "owner": cfg.publish.owner or "",
        "repo_name": cfg.publish.name or "", "private": cfg.publish.private, "onnx": cfg.export.onnx,
        "advanced": "", "queries_file": None, "queries_source": _queries_box(cfg, run_dir),
        "queries_use": cfg.queries.use, "queries_ratio": cfg.queries.ratio or 0,
        "allow_regression": cfg.publish.allow_regression,
    }
    try:
        base = _flat(config_from(values, run_dir).model_dump())
    except TrainerError:
        return values
    lines = []
    for key, value in _flat(cfg.model_dump()).items():
        if base.get(key) != value and not key.startswith(_LOCKED):
            text = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"{key}={text}")
    values["advanced"] = "\n".join(lines)
    return values


def _queries_box(cfg: Config, run_dir: str | Path) -> str:
    src = cfg.queries.source or ""
    return QUERY_UPLOADS if src and Path(src).parent == Path(run_dir) / QUERY_UPLOADS else src


def _generator_values(cfg: Config) -> dict[str, Any]:
    g, ie = cfg.generate, cfg.generate.inference_endpoint
    kind = generator_kind(cfg)
    return {"gen_kind": kind, "provider": g.provider or "auto",
            "provider_model": g.model if kind == "provider" else PROVIDER_MODELS[0][0],
            "ie_name": ie.name if ie else "", "ie_repository": ie.repository if ie else "Qwen/Qwen2.5-7B-Instruct",
            "ie_instance": f"{ie.vendor}/{ie.instance_type}/{ie.instance_size}" if ie else "aws/nvidia-l4/x1",
            "ie_region": ie.region if ie else "us-east-1", "endpoint": g.endpoint or "",
            "endpoint_model": g.model if kind == "endpoint" else "tgi"}


def rerun_changes(cfg: Config, to: str, only: bool = False) -> list[str]:
    """What a job up to ``to`` would redo of the finished work in ``cfg.run.dir`` because settings differ:
    one line per finished stage whose settings changed, then the finished stages after it (they run again
    on the new output). Empty: nothing finished would be archived."""
    run_dir = RunDir(cfg.run.dir)
    lines: list[str] = []
    after: list[str] = []
    for stage in [STAGES[to]] if only else chain(to):
        m = run_dir.manifest(stage.name)
        if not m or m.get("status") != "complete":
            continue
        try:
            ident = stage_identity(stage, cfg, run_dir)
        except StageError:
            continue
        if ident["key"] == m.get("key"):
            if lines:
                after.append(stage.name)
            continue
        old = m.get("identity") or {}
        old_cfg, new_cfg = _flat(old.get("config") or {}), _flat(ident["config"])
        diff = [f"{k}: {old_cfg.get(k)!r} → {new_cfg.get(k)!r}" for k in sorted(set(old_cfg) | set(new_cfg))
                if old_cfg.get(k) != new_cfg.get(k)]
        if old.get("inputs") != ident["inputs"]:
            diff.append("its input files changed")
        if old.get("version") != ident["version"]:
            diff.append("a newer version of the stage")
        lines.append(f"**{stage.name}**: " + ("; ".join(diff) if diff else "its input changed"))
    if after:
        lines.append(f"then the finished {', '.join(after)} run again on the new output")
    return lines


class SpaceApp:
    """The Space's actions, per visitor. ``root``: where owners' folders live (default: see
    ``spaces.sessions.storage_root``)."""

    def __init__(self, root: str | Path | None = None, max_running: int | None = None, scheduler: bool = True):
        self.root = Path(root) if root else storage_root()
        self.pool = JobPool(self.root, max_running or max_jobs())
        if scheduler:
            self.pool.start_scheduler(clean=(ANON_PREFIX, anon_ttl_s()))

    # --- who -----------------------------------------------------------------------------------

    @staticmethod
    def owner(session: str | None, profile: gr.OAuthProfile | None) -> str:
        key = owner_key(profile.username if profile is not None else None, session)
        if key is None:
            raise TrainerError("this page has no session yet: reload it")
        return key

    def run_dir(self, owner: str) -> Path:
        return self.pool.owner_dir(owner) / "run"

    def identity(self, session: str | None, profile: gr.OAuthProfile | None, on_space: bool) -> str:
        if profile is not None:
            return (f"Signed in as **{profile.username}**: pushes go to **{profile.username}/...** "
                    "(or the owner you name on the Publish tab). Your runs are yours alone.")
        if os.environ.get("HF_TOKEN") and not share_space_token():
            return ("Not signed in: sign in with Hugging Face to publish or to use Inference Providers and "
                    "Endpoints (this public Space does not lend its own token to visitors). Your runs belong "
                    "to this browser.")
        if os.environ.get("HF_TOKEN"):
            return ("Not signed in: pushes use this Space's `HF_TOKEN` secret (its user's namespace). "
                    "Your runs belong to this browser.")
        hint = "sign in with Hugging Face to publish" if on_space else "set HF_TOKEN to publish"
        return f"Anonymous session: your runs belong to this browser (kept {anon_ttl_s() / 3600:g} h); {hint}."

    # --- actions -------------------------------------------------------------------------------

    def job_config(self, owner: str) -> Config | None:
        path = self.run_dir(owner) / "job-config.yaml"
        try:
            return load_config(path) if path.is_file() else None
        except TrainerError:
            return None

    def start(self, stage: str, session: str, pending: str, profile: gr.OAuthProfile | None,
              token: gr.OAuthToken | None, values: dict[str, Any], preset: str | None = None) -> tuple[str, str]:
        """Start (or queue) the visitor's job up to ``stage``; returns (message, pending confirmation).
        A click that would redo finished work with other settings returns what changed and runs only when
        pressed again with the same settings."""
        run_dir = None
        try:
            owner = self.owner(session, profile)
            run_dir = self.run_dir(owner)
            only = False
            current = self.job_config(owner)
            if stage == "publish" and not preset and current is not None and RunDir(run_dir).is_complete("train"):
                # publish what was trained: the finished run's settings, the Publish tab's fields
                over = [f"publish.private={bool(values['private'])}",
                        f"publish.allow_regression={bool(values.get('allow_regression'))}"]
                if values.get("repo_name"):
                    over.append(f"publish.name={values['repo_name']}")
                cfg = load_config(run_dir / "job-config.yaml", over)
                only = True
            else:
                cfg = config_from(values, run_dir, preset)
            owner_ns = values.get("owner") or (profile.username if profile is not None else None)
            if owner_ns:
                cfg.publish.owner = owner_ns
            changes = rerun_changes(cfg, stage, only)
            if changes:
                sig = hashlib.sha256(json.dumps([stage, changes]).encode()).hexdigest()[:16]
                if pending != sig:
                    return ("**These settings differ from your finished run**, so this would redo finished work "
                            "(the earlier output is kept in the run's archive):\n\n- " + "\n- ".join(changes)
                            + f"\n\nPress **{'Run all' if preset else 'Run: ' + stage}** again to re-run, or "
                            "**Keep the finished run** "
                            "to change nothing.", sig)
            env = job_token_env(token.token if token is not None else None, (cfg.publish.token_env,))
            job = self.pool.submit(owner, cfg, stage, env, only=only)
        except TrainerError as exc:
            return f"**Not started:** {for_visitor(redact(str(exc)), run_dir or '')}", ""
        if job.status == "queued":
            return f"Queued: run up to **{stage}** ({_ordinal(self.pool.position(owner) or 1)} in line).", ""
        return f"Started: run up to **{stage}**.", ""

    def cancel(self, session: str, profile: gr.OAuthProfile | None) -> str:
        try:
            owner = self.owner(session, profile)
        except TrainerError as exc:
            return str(exc)
        job = self.pool.cancel(owner)
        if job is None:
            return "No job."
        return f"Job up to **{job.to}**: {job.status}. Run the same step again to resume."

    # --- what the page shows -------------------------------------------------------------------

    def signature(self, owner: str) -> str:
        """Changes whenever anything the page shows for this owner changes (cheap: a few stat calls)."""
        odir = self.pool.owner_dir(owner)
        run = odir / "run"
        paths = [odir / "job.json", run / "job.log", run / PROGRESS_FILE, run / "job-config.yaml",
                 *(run / "stages" / s / "manifest.json" for s in STAGE_NAMES)]
        parts = [owner, str(self.pool.position(owner))]
        for p in paths:
            try:
                st = p.stat()
                parts.append(f"{st.st_mtime_ns}:{st.st_size}")
            except OSError:
                parts.append("-")
        return hashlib.sha1("|".join(parts).encode()).hexdigest()

    def job_line(self, owner: str, job: Job | None) -> str:
        if job is None:
            return "No job yet: pick a step and press its Run button (or **Run all**)."
        if job.status == "queued":
            pos = self.pool.position(owner) or 1
            return f"Job up to **{job.to}**: **queued** ({_ordinal(pos)} in line; it starts when a slot frees)"
        head = f"Job up to **{job.to}**: **{job.status}**"
        if job.status == "failed":
            cfg = self.job_config(owner)
            failed = [state for _, state in stage_status(cfg) if state.startswith("failed:")] if cfg else []
            reason = (failed[0].removeprefix("failed: ") if failed
                      else _failure(self.pool.manager(owner).log_tail(200)))
            head += f": {for_visitor(reason, job.run_dir)}" if reason else " (see the log)"
        return head

    def stages(self, owner: str) -> list[list[str]]:
        cfg = self.job_config(owner)
        if cfg is None:
            return []
        return [[name, for_visitor(state, cfg.run.dir)] for name, state in stage_status(cfg)]

    def progress(self, owner: str, job: Job | None) -> str:
        if job is None or job.status != "running":
            return ""
        p = read_progress(self.run_dir(owner))
        if p is None or p.updated < job.started:
            return "<div id='progress-text'>Starting…</div>"
        frac = p.fraction or 0.0
        text = html.escape(format_bar(p, width=0).replace("[]", "").replace("  ", " "))
        if p.message:
            text += " · " + html.escape(p.message)
        return (f"<div class='de-bar' role='progressbar' aria-valuenow='{p.done:g}' aria-valuemax='{p.total or 0:g}'>"
                f"<div style='width:{100 * frac:.1f}%'></div></div><div id='progress-text'>{text}</div>")

    def planned_chunks(self, owner: str, cfg: Config) -> tuple[int, bool]:
        """Chunks the generate stage will see: the finished ingest's count (exact), else a guess from the
        sample of documents (2 chunks each, 100 documents when all are used)."""
        counts = self.counts(owner, "ingest")
        if counts.get("status") == "complete" and counts.get("chunks"):
            n = int(counts["chunks"])
            docs = cfg.generate.sample_documents
            if docs and counts.get("documents"):
                n = min(n, round(n * docs / max(1, int(counts["documents"]))))
            return n, True
        per_doc = cfg.generate.max_chunks_per_document or 2
        return (cfg.generate.sample_documents or 100) * per_doc, False

    def counts(self, owner: str, stage: str) -> dict[str, Any]:
        m = RunDir(self.run_dir(owner)).manifest(stage)
        if not m:
            return {}
        return {"status": m.get("status"), **(m.get("counts") or {})}

    def sample_queries(self, owner: str) -> list[list[Any]]:
        path = output_path(self.run_dir(owner), "generate", "queries")
        if not path.is_dir() or not RunDir(self.run_dir(owner)).is_complete("generate"):
            return []
        import datasets

        ds = datasets.load_from_disk(str(path))
        return [[r["type"], r["query"], " ".join(r["hop_contexts"][0].split())[:240]]
                for r in ds.select(range(min(10, len(ds))))]

    def evaluation(self, owner: str) -> tuple[str, list[str]]:
        run = self.run_dir(owner)
        report = output_path(run, "evaluate", "report.md")
        plots_dir = output_path(run, "evaluate", "plots")
        text = for_visitor(report.read_text(), run) if report.is_file() else "No evaluation yet."
        plots = [str(p) for p in sorted(plots_dir.glob("*.png"))] if plots_dir.is_dir() else []
        return text, plots

    def verdict(self, owner: str) -> str:
        """The regression guard's verdict, shown on the Publish tab before publishing."""
        run = self.run_dir(owner)
        if not RunDir(run).is_complete("evaluate"):
            return ("**Never below base:** run **evaluate** first to compare the model with its base; an "
                    "unevaluated model is published with a card that claims nothing.")
        v = regression_verdict(run)
        head = {"regression": "⚠️ **Worse than its base model.**", "not_evaluated": "**Not compared.**"}.get(
            v.status, "✅ **Never below base.**")
        return f"{head} {for_visitor(v.text, run)}"

    def published(self, owner: str) -> str:
        links = pushed_links(self.run_dir(owner))
        if links:
            return "Pushed:\n" + "\n".join(f"- [{label}]({url})" for label, url in links)
        if RunDir(self.run_dir(owner)).is_complete("publish"):
            return ("Nothing pushed (no token): the folders to push and PUSH.md are in **Downloads**. "
                    "Sign in with Hugging Face and run Publish again to push them.")
        return ""

    def domains(self) -> tuple[Any, str | None, str]:
        import pandas as pd

        try:
            rows = domains_table()
        except TrainerError as exc:
            return pd.DataFrame(), None, f"Domain ranking unavailable: {for_visitor(str(exc))}"
        out = self.root / "domains.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        plot = str(plot_domains(rows, out))
        keys = list(rows[0]) if rows else []
        return pd.DataFrame(rows, columns=keys), plot, "Ranked by room for improvement (largest first)."


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _failure(log: str) -> str:
    """The one-line reason of a failed job, from its log (the CLI's 'error: ...' line)."""
    for line in reversed(log.splitlines()):
        low = line.lower()
        if low.startswith("error") or " error " in low or "error:" in low:
            return line.split("error:", 1)[-1].strip()[:300] if "error:" in line else line.strip()[:300]
    return ""


def show_login() -> bool:
    """The sign-in button: on a Space (gradio's real OAuth, SYSTEM=spaces) and, with SPACE_ID set elsewhere,
    only where gradio's local mock sign-in can work (it signs in as the machine's own Hub token)."""
    from gradio.utils import get_space

    if get_space() is not None:
        return True
    if not os.environ.get("SPACE_ID"):
        return False
    from huggingface_hub import get_token

    return get_token() is not None


def _form_updates(values: dict[str, Any]) -> list[Any]:
    return [values[k] for k in SETTINGS]


def build_demo(run_root: str | Path | None = None, defaults: dict[str, Any] | None = None,
               max_running: int | None = None) -> gr.Blocks:
    """The Space UI. ``run_root``: where visitors' folders live (default: ``spaces.sessions.storage_root``);
    ``defaults`` pre-fills settings for a new session (e.g. {"generator": ..., "sample_documents": 20})."""
    app = SpaceApp(run_root, max_running)
    d = {"domain": "scientific", "generator": "qwen2.5-coder-0.5b-instruct-q4_k_m", "questions_per_chunk": 3,
         "sample_documents": 200, **(defaults or {})}
    on_space = bool(os.environ.get("SPACE_ID"))
    login = show_login()
    with gr.Blocks(title="Domain embedding specialist") as demo:
        gr.HTML(f"<style>{CSS}</style>", padding=False)
        # The browser keeps its session id in local storage (a reload keeps it); the hidden box carries it to
        # every event (and lets an API client name its session).
        store = gr.BrowserState("", storage_key="domain-embed-session")
        session = gr.Textbox("", visible=False, elem_id="session")
        pending = gr.State("")
        shown = gr.State("")  # signature of what the page shows: the timer skips work while it holds
        gr.Markdown(
            "# Domain embedding specialist\n"
            "Turn a small general embedding model into a retrieval specialist for one domain: synthetic "
            "queries from your corpus, hard negatives, contrastive fine-tuning, MTEB evaluation, Hub publishing."
        )
        gr.Markdown(DUPLICATE_HELP)
        with gr.Row():
            if login:
                gr.LoginButton(scale=0)
            identity = gr.Markdown("", elem_id="identity")
        with gr.Row():
            job_status = gr.Markdown("No job yet.", elem_id="job-status")
            cancel = gr.Button("Cancel job", variant="stop", scale=0, elem_id="cancel")
        progress = gr.HTML("", elem_id="progress")
        with gr.Group(visible=False, elem_id="notice-box") as notice_box:
            notice = gr.Markdown("", elem_id="notice")
            with gr.Row():
                keep = gr.Button("Keep the finished run", size="sm", elem_id="keep", visible=False)
                dismiss = gr.Button("Dismiss", size="sm", elem_id="dismiss")
        with gr.Row(equal_height=True):
            choices = [(p.label, p.name) for p in presets_for(detect_profile())] + [("The form's settings", "")]
            preset = gr.Dropdown(choices, value=choices[0][1], label="Run all with", scale=2, elem_id="preset")
            run_all = gr.Button("Run all", variant="primary", scale=1, elem_id="run-all")
        preset_note = gr.Markdown("", elem_id="preset-note")
        inputs: dict[str, gr.components.Component] = {}
        with gr.Tab("1 Domain"):
            domains_btn = gr.Button("Rank the MTEB subcategories")
            domains_note = gr.Markdown()
            domains_view = gr.Dataframe(label="Room for improvement", interactive=False, wrap=True)
            domains_plot = gr.Image(label="Subcategories", type="filepath")
            inputs["domain"] = gr.Radio(list(SUBCATEGORIES), value=d["domain"], label="Subcategory")
        with gr.Tab("2 Data"):
            inputs["source"] = gr.Textbox(
                d.get("source") or default_corpus(d["domain"]), elem_id="source",
                label="Corpus: hub:<dataset id>, builtin:python-docs, data:<name>, or uploads (your uploaded files)",
            )
            inputs["uploads"] = gr.File(label="…or upload files (.txt .md .html .pdf .jsonl .csv .parquet)",
                                        file_count="multiple", type="filepath")
            corpus_note = gr.Markdown("", elem_id="corpus-note")
            with gr.Accordion("Your own queries (optional): real searches with their relevant documents",
                              open=bool(d.get("queries_source")), elem_id="queries-box"):
                gr.Markdown("A .jsonl or .csv file with a query column (query, question or text) and the relevant "
                            "document's id (doc_id, corpus_id) or text (document, passage). Queries that match an "
                            "evaluation task's test queries are refused.")
                with gr.Row():
                    inputs["queries_file"] = gr.File(label="Upload your queries (.jsonl / .csv)",
                                                     file_types=list(QUERY_FILE_TYPES), type="filepath",
                                                     elem_id="queries-file")
                    inputs["queries_source"] = gr.Textbox(
                        d.get("queries_source", ""), elem_id="queries-source",
                        label=f"…or a Hub dataset: hub:<dataset id> ({QUERY_UPLOADS}: your uploaded file)")
                with gr.Row():
                    inputs["queries_use"] = gr.Radio(
                        [("train on part, score the rest", "both"), ("train on them", "train"),
                         ("score the model on them", "eval")], value=d.get("queries_use", "both"),
                        label="Use them to", elem_id="queries-use")
                    inputs["queries_ratio"] = gr.Number(
                        d.get("queries_ratio", 0), minimum=0, maximum=1, label="Their share of the training "
                        "queries (0: all of yours and every synthetic one; 1: yours only, no generation)",
                        elem_id="queries-ratio")
            ingest_btn = gr.Button("Run: ingest", variant="primary", elem_id="run-ingest")
            ingest_counts = gr.JSON(label="Ingest counts")
        with gr.Tab("3 Generate"):
            with gr.Group(elem_id="generator-section"):
                gen = {c["value"]: c for c in generator_choices()}
                inputs["gen_kind"] = gr.Radio(GEN_KINDS, value=d.get("gen_kind", "embedded"), label="Generator",
                                              elem_id="gen-kind")
                kind0 = d.get("gen_kind", "embedded")
                with gr.Row(visible=kind0 == "provider") as provider_row:
                    inputs["provider"] = gr.Dropdown(["auto", "together", "nebius", "fireworks-ai", "sambanova",
                                                      "novita", "hyperbolic", "cerebras", "groq"], value="auto",
                                                     allow_custom_value=True, label="Inference Provider "
                                                     "(billed to your Hugging Face account)")
                    inputs["provider_model"] = gr.Dropdown(gen["provider"]["models"],
                                                           value=gen["provider"]["default_model"],
                                                           allow_custom_value=True, label="Provider model")
                with gr.Row(visible=kind0 == "inference_endpoint") as endpoint_row:
                    inputs["ie_name"] = gr.Textbox("", label="Endpoint name (an existing one is resumed, "
                                                   "then paused; never deleted)", placeholder="my-query-writer")
                    inputs["ie_repository"] = gr.Dropdown(gen["inference_endpoint"]["models"],
                                                          value=gen["inference_endpoint"]["default_model"],
                                                          allow_custom_value=True, label="Endpoint model")
                    inputs["ie_instance"] = gr.Dropdown(gen["inference_endpoint"]["instances"],
                                                        value="aws/nvidia-l4/x1", label="vendor/instance/size")
                    inputs["ie_region"] = gr.Textbox("us-east-1", label="Region")
                with gr.Row(visible=kind0 == "endpoint") as url_row:
                    inputs["endpoint"] = gr.Textbox("", label="Your endpoint URL (https)",
                                                    placeholder="https://xyz.endpoints.huggingface.cloud/v1")
                    inputs["endpoint_model"] = gr.Textbox("tgi", label="Endpoint model name")
                inputs["generator"] = gr.Dropdown(gen["embedded"]["models"], value=d["generator"],
                                                  label="Embedded generator (offline weights)",
                                                  visible=kind0 == "embedded")
                gen_plan = gr.Markdown("", elem_id="generator-plan")
            inputs["questions_per_chunk"] = gr.Slider(1, 6, value=d["questions_per_chunk"], step=1,
                                                      label="Questions per chunk", elem_id="questions")
            inputs["query_types"] = gr.CheckboxGroup(
                list(QUERY_TYPE_CHOICES), value=d.get("query_types", list(QUERY_TYPES)), label="Query types "
                "(factual only: short claims/queries, as in claim-verification tasks such as SciFact; keyword: "
                "3-6 word searches)")
            inputs["sample_documents"] = gr.Number(d["sample_documents"], precision=0,
                                                   label="Sample of documents (0: all; on CPU, 20–40 take minutes, "
                                                         "hundreds take hours)")
            generate_btn = gr.Button("Run: generate", variant="primary", elem_id="run-generate")
            gen_counts = gr.JSON(label="Generation counts")
            gen_sample = gr.Dataframe(headers=["type", "query", "passage"], label="Sample queries",
                                      interactive=False, elem_id="sample-queries", wrap=True)
        with gr.Tab("4 Mine"):
            inputs["mine_mode"] = gr.Radio(["hybrid", "dense", "bm25"], value="hybrid", label="Negatives from")
            inputs["num_negatives"] = gr.Slider(1, 10, value=5, step=1, label="Hard negatives per query")
            inputs["margin"] = gr.Slider(0.8, 1.0, value=0.95, step=0.01, label="Margin (x lowest positive score)")
            mine_btn = gr.Button("Run: mine", variant="primary")
            mine_counts = gr.JSON(label="Mining counts")
        with gr.Tab("5 Train"):
            inputs["profile"] = gr.Radio(["cpu", "t4", "a100", "multi-gpu"], value=detect_profile(),
                                         label="Hardware profile (detected)")
            inputs["epochs"] = gr.Number(d.get("epochs", 3), label="Epochs")
            inputs["lr"] = gr.Number(1e-5, label="Learning rate")
            train_btn = gr.Button("Run: train", variant="primary")
            train_counts = gr.JSON(label="Training counts")
        with gr.Tab("6 Evaluate"):
            evaluate_btn = gr.Button("Run: evaluate", variant="primary")
            eval_report = gr.Markdown(elem_id="eval-report")
            eval_plots = gr.Gallery(label="Plots", columns=3)
        with gr.Tab("7 Publish & Export"):
            inputs["owner"] = gr.Textbox("", label="Hub owner (user or organisation; empty: you, when signed in)")
            inputs["repo_name"] = gr.Textbox("", label="Repository base name (default: from the run)")
            inputs["private"] = gr.Checkbox(True, label="Private repositories")
            inputs["onnx"] = gr.Checkbox(True, label="Export ONNX (fp32 + int8)")
            gr.Markdown("The Hub token comes from your sign-in (or the Space's `HF_TOKEN` secret); it is never "
                        "shown or written to disk. Without one, the folders to push are prepared for download.")
            verdict = gr.Markdown("", elem_id="verdict")
            inputs["allow_regression"] = gr.Checkbox(
                False, label="Publish even if it is worse than the base model (the card then says so)",
                elem_id="allow-regression")
            export_btn = gr.Button("Run: export", variant="secondary")
            publish_btn = gr.Button("Run: publish", variant="primary", elem_id="run-publish")
            publish_counts = gr.JSON(label="Publish counts")
            pushed = gr.Markdown("", elem_id="pushed")
        with gr.Tab("Downloads"):
            gr.Markdown("The finished run's files: the model (zip, loads with `SentenceTransformer(folder)`), "
                        "ONNX fp32/int8, the evaluation report, PUSH.md and the leaderboard submission (zip).")
            files_btn = gr.Button("Prepare downloads", elem_id="prepare-downloads")
            files = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="downloads")
        with gr.Accordion("Advanced settings", open=False):
            inputs["advanced"] = gr.Textbox(
                d.get("advanced", ""), lines=4, label="Any other setting, one section.key=value per line "
                "(see the README's configuration reference)",
                placeholder="train.max_seq_length=256\nmine.candidates=100", elem_id="advanced",
            )
        log = gr.Textbox(label="Live log", lines=14, max_lines=30, autoscroll=True, elem_id="log")
        stages = gr.Dataframe(headers=["stage", "state"], label="Stages", interactive=False, elem_id="stages")
        timer = gr.Timer(2.0)

        settings = [inputs[k] for k in SETTINGS]

        def corpus_note_for(source: str, uploads: list[str] | None, sess: str,
                            profile: gr.OAuthProfile | None) -> str:
            if uploads:
                return f"Using your **{len(uploads)} uploaded file(s)** as the corpus (the Corpus box is ignored)."
            if (source or "").strip() == UPLOADS:
                try:
                    folder = app.run_dir(app.owner(sess, profile)) / UPLOADS
                    n = sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0
                except TrainerError:
                    n = 0
                return f"Using your **{n} earlier uploaded file(s)**." if n else "No uploaded files yet."
            return f"Using **{source}** (upload files to use them instead)."

        inputs["domain"].change(default_corpus, inputs["domain"], inputs["source"])
        for comp in (inputs["source"], inputs["uploads"]):
            comp.change(corpus_note_for, [inputs["source"], inputs["uploads"], session], corpus_note)

        def make_run(stage: str):
            def run(sess: str, pend: str, profile: gr.OAuthProfile | None, token: gr.OAuthToken | None,
                    *values: Any) -> tuple[Any, ...]:
                msg, sig = app.start(stage, sess, pend, profile, token, dict(zip(SETTINGS, values, strict=True)))
                return gr.update(visible=True), msg, gr.update(visible=bool(sig)), sig, ""
            run.__name__ = f"run_{stage}"
            return run

        for stage, btn in (("ingest", ingest_btn), ("generate", generate_btn), ("mine", mine_btn),
                           ("train", train_btn), ("evaluate", evaluate_btn), ("export", export_btn),
                           ("publish", publish_btn)):
            btn.click(make_run(stage), [session, pending, *settings], [notice_box, notice, keep, pending, shown],
                      api_name=f"run_{stage}")

        def run_everything(sess: str, pend: str, profile: gr.OAuthProfile | None, token: gr.OAuthToken | None,
                           chosen: str, *values: Any) -> tuple[Any, ...]:
            msg, sig = app.start("publish", sess, pend, profile, token, dict(zip(SETTINGS, values, strict=True)),
                                 preset=chosen or None)
            return gr.update(visible=True), msg, gr.update(visible=bool(sig)), sig, ""

        run_all.click(run_everything, [session, pending, preset, *settings], [notice_box, notice, keep, pending, shown],
                      api_name="run_all")

        def explain_preset(chosen: str, sess: str, profile: gr.OAuthProfile | None, *values: Any) -> str:
            try:
                owner = app.owner(sess, profile)
                cfg = config_from(dict(zip(SETTINGS, values, strict=True)), app.run_dir(owner), chosen or None)
                est = estimate(cfg)
            except TrainerError as exc:
                return f"No estimate: {for_visitor(str(exc))}"
            steps = " · ".join(f"{k} {format_duration(v)}" for k, v in est.seconds.items())
            summary = PRESETS[chosen].summary + " " if chosen else ""
            total = format_duration(est.total_s)
            return f"{summary}**Estimated time: {total}** ({steps}); from the rates in BENCHMARKS.md."

        preset.change(explain_preset, [preset, session, *settings], preset_note)

        def explain_generator(sess: str, profile: gr.OAuthProfile | None, *values: Any) -> str:
            try:
                owner = app.owner(sess, profile)
                vals = dict(zip(SETTINGS, values, strict=True), uploads=None)
                cfg = config_from(vals, app.run_dir(owner))
            except TrainerError as exc:
                return f"No estimate: {for_visitor(str(exc))}"
            chunks, exact = app.planned_chunks(owner, cfg)
            text = format_plan(generator_plan(cfg, chunks)).replace("\n  ", "\n- ")
            basis = "" if exact else f" (assuming {chunks:,} chunks: run ingest for the exact number)"
            return f"**Before Run:** {text}{basis}"

        def show_generator(kind: str) -> list[Any]:
            return [gr.update(visible=kind == k) for k in ("provider", "inference_endpoint", "endpoint", "embedded")]

        inputs["gen_kind"].change(show_generator, inputs["gen_kind"],
                                  [provider_row, endpoint_row, url_row, inputs["generator"]])
        gen_fields = [inputs[k] for k in ("gen_kind", "provider", "provider_model", "ie_name", "ie_repository",
                                          "ie_instance", "ie_region", "endpoint", "endpoint_model", "generator",
                                          "questions_per_chunk", "sample_documents")]
        for comp in gen_fields:
            comp.change(explain_generator, [session, *settings], gen_plan)

        def do_cancel(sess: str, profile: gr.OAuthProfile | None) -> tuple[Any, ...]:
            return gr.update(visible=True), app.cancel(sess, profile), gr.update(visible=False), "", ""

        cancel.click(do_cancel, [session], [notice_box, notice, keep, pending, shown], api_name="cancel")
        def close_notice() -> tuple[Any, ...]:
            return gr.update(visible=False), "", "", gr.update(visible=False)

        dismiss.click(close_notice, None, [notice_box, notice, pending, keep])
        keep.click(close_notice, None, [notice_box, notice, pending, keep])
        domains_btn.click(app.domains, None, [domains_view, domains_plot, domains_note], api_name="domains")

        def prepare(sess: str, profile: gr.OAuthProfile | None) -> list[str]:
            try:
                run = app.run_dir(app.owner(sess, profile))
                return [str(build(run, a.name)) for a in artifacts(run)]
            except TrainerError:
                return []

        files_btn.click(prepare, [session], files, api_name="downloads")

        outputs = [identity, job_status, progress, log, stages, ingest_counts, gen_counts, gen_sample, mine_counts,
                   train_counts, eval_report, eval_plots, verdict, publish_counts, pushed, timer, shown]

        def refresh(sess: str, seen: str, profile: gr.OAuthProfile | None) -> tuple[Any, ...]:
            try:
                owner = app.owner(sess, profile)
            except TrainerError:
                return tuple(gr.skip() for _ in outputs)
            sig = app.signature(owner)
            if sig == seen:  # nothing changed since the last tick: no work, nothing sent
                return tuple(gr.skip() for _ in outputs)
            job = app.pool.manager(owner).current()
            active = job is not None and job.active
            run = app.run_dir(owner)
            report, plots = app.evaluation(owner)
            log_text = for_visitor(app.pool.manager(owner).log_tail(30), run) if job else ""
            return (app.identity(sess, profile, on_space), app.job_line(owner, job), app.progress(owner, job),
                    log_text, app.stages(owner), app.counts(owner, "ingest"), app.counts(owner, "generate"),
                    app.sample_queries(owner), app.counts(owner, "mine"), app.counts(owner, "train"), report, plots,
                    app.verdict(owner), app.counts(owner, "publish"), app.published(owner),
                    gr.Timer(2.0 if active else 10.0), sig)

        timer.tick(refresh, [session, shown], outputs, api_name="status", show_progress="hidden")

        def on_load(sess: str, profile: gr.OAuthProfile | None) -> tuple[Any, ...]:
            """A new browser gets a session id; a known session (or user) gets its job config back."""
            if profile is None and owner_key(None, sess) is None:
                sess = new_session_id()
            owner = app.owner(sess, profile)
            cfg = app.job_config(owner)
            form = values_from_config(cfg, app.run_dir(owner)) if cfg is not None else None
            updates = _form_updates(form) if form else [gr.skip() for _ in SETTINGS]
            return (sess, sess, *updates, app.identity(sess, profile, on_space), "")

        demo.load(on_load, [store], [store, session, *settings, identity, shown]).then(
            refresh, [session, shown], outputs).then(explain_preset, [preset, session, *settings], preset_note).then(
            show_generator, inputs["gen_kind"], [provider_row, endpoint_row, url_row, inputs["generator"]]).then(
            explain_generator, [session, *settings], gen_plan)
    demo.space_app = app  # type: ignore[attr-defined]  (tests and app.py reach the pool through it)
    return demo
