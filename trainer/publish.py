"""Publish stage: push the synthetic queries, the training set and the model (with its ONNX export) to the
Hugging Face Hub, with generated cards, and prepare the MTEB leaderboard submission.

Inputs: ``<run>/stages/train/model`` (required), and when present ``generate/queries`` (+ manifest),
``mine/train`` (+ ``stats.json``), ``evaluate/report.json`` (+ ``mteb/`` result files) and
``export/onnx/``. Without an evaluation the model card says the model was not evaluated and claims
nothing; it says "improvement" only when the evaluation found no regression.

Outputs in ``<run>/stages/publish/`` -- exactly the folders that are pushed, one per repository::

    queries/        dataset repo <owner>/<name>-queries: data/train-*.parquet + README.md (card)
    training_set/   dataset repo <owner>/<name>-training-set: data/train-*.parquet + README.md
    model/          model repo <owner>/<name>: the sentence-transformers folder, onnx/*.onnx (and openvino/*.xml
                    when exported), README.md
    submission/     MTEB leaderboard files (results/<org__name>/<revision>/..., SUBMIT.md)
    PUSH.md         the commands that push these folders by hand (`hf upload ...`)
    pushed.json     what was pushed: repo id, commit, files, whether a commit was made

Pushing uses huggingface_hub's own ``create_repo`` / ``create_commit`` (the code ``upload_folder``
runs). Before committing, the local files' hashes are compared with the remote tree (sha256 of LFS
files, git blob ids of the others): a repository that already holds the same files gets no commit,
so re-publishing a run creates no duplicate commits. A failed request (429, 5xx, connection error)
is retried with exponential backoff (``publish.max_retries``, ``publish.retry_backoff_s``); a crash
leaves the stage 'running' and re-running it continues: repositories already pushed are found
identical and skipped, LFS blobs already uploaded are not sent again.

The token is read from ``$<publish.token_env>`` (a Space secret is the same variable) at push time and
is never written: not to the run directory, the logs, the cards or an error message; the stage refuses
to push a file that contains it. Without a token, with ``publish.dry_run`` or offline
(``HF_HUB_OFFLINE=1``) the stage writes the folders and PUSH.md and pushes nothing.

Repository names and the token come from trainer.hub (the train stage's checkpoint pushes use it too).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hub_cards.model import ModelFacts, model_card, verdict
from hub_cards.synthetic import synthetic_card
from hub_cards.training_set import training_set_card
from trainer import submission
from trainer.config import Config
from trainer.errors import StageError
from trainer.export import SERVING_FILE
from trainer.files import sha256_file, write_json_atomic
from trainer.hub import OWNER_PLACEHOLDER, hub_token, repo_ids
from trainer.leaderboard import default_results_dir
from trainer.logs import known_secrets, looks_like_secret, redact
from trainer.models import hub_reachable, is_offline, resolve_model
from trainer.retry import RetryPolicy, http_status, is_retryable, retry_after
from trainer.rundir import Input, Stage, StageContext

REPO_TYPES = {"queries": "dataset", "training_set": "dataset", "model": "model"}
MAX_BACKOFF_S = 60.0  # the longest wait between two push attempts
MAX_SHARD_BYTES = 500 * 1024 * 1024  # datasets' push_to_hub default
_MODEL_SKIP = {"README.md", "training_args.json", "train_log.json"}
T = TypeVar("T")


# ------------------------------------------------------------------------------- never below base


@dataclass(frozen=True)
class RegressionVerdict:
    """The regression guard's verdict on a run, shown before publishing (the Space) and enforced by the stage.

    ``ok``: nothing stands in the way (no task below base beyond the tolerance, or no evaluation at all, which
    the card then says); ``status``: improved | no_regression | regression | not_evaluated; ``regressions``:
    (task, delta) of each task below base - tolerance; ``text``: one line for a person.
    """

    ok: bool
    status: str
    text: str
    regressions: tuple[tuple[str, float], ...] = ()
    tolerance: float = 0.0


def verdict_of_report(report: dict[str, Any] | None, tolerance: float) -> RegressionVerdict:
    """The guard's verdict on an evaluation report (``evaluate/report.json``), its rows re-read with ``tolerance``
    (score units: 0.003 = 0.3 nDCG@10 points)."""
    from hub_cards.model import eval_rows

    rows = [r for r in eval_rows(report) if r["delta"] is not None]
    pts = lambda x: f"{100 * x:+.2f}"  # noqa: E731 - points, as the benchmarks report them
    if not rows:
        return RegressionVerdict(True, "not_evaluated", "Not evaluated: the card will say so and claim nothing "
                                 "(run `python -m trainer evaluate` first to compare it with its base model).",
                                 tolerance=tolerance)
    bad = tuple((r["task"], r["delta"]) for r in rows if r["delta"] < -tolerance)
    near = [f"{r['task']} {pts(r['delta'])}" for r in rows if -tolerance <= r["delta"] < 0]
    within = f"; within the tolerance: {', '.join(near)}" if near else ""
    tol = f"tolerance {100 * tolerance:.2f} points"
    if bad:
        return RegressionVerdict(False, "regression", "Worse than the base model on " + ", ".join(
            f"{t} ({pts(d)} points)" for t, d in bad) + f" ({tol}). Publishing needs publish.allow_regression=true "
            "(the card then says so).", bad, tolerance)
    better = [r for r in rows if r["delta"] > tolerance]
    status = "improved" if len(better) == len(rows) else "no_regression"
    return RegressionVerdict(True, status, f"Never below the base model on {len(rows)} compared task(s), better on "
                             f"{len(better)} ({tol}{within}).", (), tolerance)


def regression_verdict(run_dir: str | Path, tolerance: float | None = None) -> RegressionVerdict:
    """The verdict on a run directory's evaluation (``<run>/stages/evaluate/report.json``), e.g. for the Space to
    show before publishing. ``tolerance``: default the report's own (``evaluate.regression_tolerance``)."""
    from trainer.rundir import RunDir

    rd = RunDir(run_dir)
    path = rd.stage_dir("evaluate") / "report.json"
    report = _read_json(path) if rd.is_complete("evaluate") else None
    tol = tolerance if tolerance is not None else float((report or {}).get("regression_tolerance") or 0.0)
    return verdict_of_report(report, tol)


# ----------------------------------------------------------------------------------- repo naming


# ------------------------------------------------------------------------------- model folder facts


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def model_facts(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """(ModelFacts for the card, {n_embedding_parameters, memory_usage_mb}) read from the folder's files."""

    facts = ModelFacts()
    n_params = n_embed = 0
    size = 0
    for st in sorted(model_dir.rglob("*.safetensors")):
        if "onnx" in st.relative_to(model_dir).parts:
            continue
        size += st.stat().st_size
        try:
            header = _safetensors_header(st)
        except (OSError, ValueError, struct.error):
            continue
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            if not str(info.get("dtype", "F")).startswith(("F", "BF")):
                continue  # integer buffers (position_ids) are not parameters
            count = math.prod(info.get("shape") or [1])
            n_params += count
            if "word_embeddings" in name:
                n_embed += count
    facts.n_parameters = n_params or None
    sbert = _read_json(model_dir / "sentence_bert_config.json") or {}
    tokenizer = _read_json(model_dir / "tokenizer_config.json") or {}
    # sentence-transformers < 5 kept the limit in sentence_bert_config.json; 5.x keeps it in the tokenizer
    limit = sbert.get("max_seq_length") or tokenizer.get("model_max_length")
    facts.max_seq_length = limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None  # not "no limit"
    st_cfg = _read_json(model_dir / "config_sentence_transformers.json") or {}
    facts.similarity_fn_name = st_cfg.get("similarity_fn_name") or "cosine"
    facts.prompts = {k: v for k, v in (st_cfg.get("prompts") or {}).items() if v}
    for module in _read_json(model_dir / "modules.json") or []:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        conf = _read_json(model_dir / module.get("path", "") / "config.json") or {}
        # Pooling: embedding_dimension (5.x) or word_embedding_dimension; a Dense layer after it wins
        pooled = conf.get("embedding_dimension") or conf.get("word_embedding_dimension")
        if kind == "Pooling" and pooled:
            facts.embedding_dim = pooled
        if kind == "Dense" and conf.get("out_features"):
            facts.embedding_dim = conf["out_features"]
    if facts.embedding_dim is None:
        facts.embedding_dim = (_read_json(model_dir / "config.json") or {}).get("hidden_size")
    return facts, {"n_embedding_parameters": n_embed or None,
                   "memory_usage_mb": round(size / 2**20) if size else None}


def sentence_transformers_card(model_dir: Path, repo_id: str) -> str:
    """sentence-transformers' own card for the model (README.md text), the base of the published one.

    The card its trainer wrote next to the weights at the end of training (tagged generated_from_trainer:
    datasets, losses, hyperparameters, training logs); else, for a folder without one, the card its template
    renders now from the loaded model (``SentenceTransformerModelCardData``, without the Hub).
    """
    from huggingface_hub import ModelCard

    saved = model_dir / "README.md"
    if saved.is_file():
        text = saved.read_text(encoding="utf-8")
        if "generated_from_trainer" in (ModelCard(text).data.tags or []):
            return text
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.model_card import generate_model_card
    from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

    card_data = SentenceTransformerModelCardData(model_id=repo_id, local_files_only=True)
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True, model_card_data=card_data)
    return generate_model_card(model)


def _base_license(cfg: Config) -> str | None:
    """The base model's licence from its card (README.md front matter), when the weights are local."""
    try:
        from huggingface_hub import ModelCard


        path = Path(resolve_model(cfg.model.name, offline=True))
        return ModelCard((path / "README.md").read_text(encoding="utf-8")).data.license
    except Exception:  # noqa: BLE001 - no local card: the config or 'other' decides
        return None


# ---------------------------------------------------------------------------------- folder building


def _with_metadata(card: Any, **updates: Any) -> Any:
    """The card with metadata keys set, rendered in a stable key order.

    (Setting attributes on a parsed card's data makes huggingface_hub order the new keys through a set,
    which changes with the interpreter's hash seed: the README would differ between runs.)
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(**{**card.data.to_dict(), **updates})
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{card.text}")


def _dataset_folder(src: Path, dest: Path, card: Any) -> dict[str, Any]:
    """Parquet shards under data/ (the Hub's dataset layout) and the card with its configs metadata."""
    import datasets

    datasets.disable_progress_bars()
    loaded = datasets.load_from_disk(str(src))
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "data").mkdir(parents=True)
    rows = {}
    for split, ds in splits.items():
        n = max(1, math.ceil(ds.data.nbytes / MAX_SHARD_BYTES))
        for i in range(n):
            shard = ds.shard(n, i, contiguous=True)
            shard.to_parquet(str(dest / "data" / f"{split}-{i:05d}-of-{n:05d}.parquet"))
        rows[split] = len(ds)
    configs = [{"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}]
    (dest / "README.md").write_text(str(_with_metadata(card, configs=configs)), encoding="utf-8")
    return {"rows": rows, "columns": list(next(iter(splits.values())).column_names)}


def _model_folder(model_dir: Path, onnx_dir: Path | None, dest: Path, card_fn: Callable[[list[str]], Any]) -> list[str]:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for src in sorted(model_dir.rglob("*")):
        rel = src.relative_to(model_dir)
        if (src.is_dir() or (rel.name in _MODEL_SKIP and len(rel.parts) == 1)
                or any(p.startswith((".", "checkpoint-")) for p in rel.parts)):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    onnx_files = []
    if onnx_dir is not None and onnx_dir.is_dir():
        # OpenVINO IR (openvino/*.xml + .bin) when the export stage made it: it may be the one it serves
        openvino = sorted((onnx_dir / "openvino").rglob("*")) if (onnx_dir / "openvino").is_dir() else []
        for src in sorted(onnx_dir.rglob("*.onnx*")) + openvino:
            rel = src.relative_to(onnx_dir)
            if any(p.startswith(".") for p in rel.parts) or not src.is_file():
                continue
            # the export stage writes a sentence-transformers folder with its ONNX files under onnx/
            target = dest / rel if rel.parts[0] in ("onnx", "openvino") else dest / "onnx" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            if target.suffix in (".onnx", ".xml"):
                onnx_files.append(str(target.relative_to(dest)))
    (dest / "README.md").write_text(str(card_fn(onnx_files)), encoding="utf-8")
    return onnx_files


def _contains_any(path: Path, secrets: list[bytes]) -> bytes | None:
    """The first of ``secrets`` found in the file (one read, whatever their number)."""
    if not secrets:
        return None
    overlap = max(len(s) for s in secrets) - 1
    tail = b""
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            window = tail + block
            for secret in secrets:
                if secret in window:
                    return secret
            tail = window[-overlap:] if overlap else b""
    return None


def _check_no_secret(folder: Path, token: str | None, cfg: Config | None = None) -> None:
    """Refuse to publish a file holding the Hub token or another secret this process knows (the generate
    endpoint's token, the Hub token variables), or a card (README.md) holding a credential's shape."""
    named = {"the Hub token": token}
    if cfg is not None and cfg.generate.token_env:
        named[f"the value of ${cfg.generate.token_env}"] = os.environ.get(cfg.generate.token_env, "").strip()
    secrets = {value: what for what, value in reversed(named.items()) if value and len(value) >= 8}
    for value in known_secrets():
        secrets.setdefault(value, "a token")
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        found = _contains_any(file, [v.encode() for v in secrets])
        if found is not None:
            raise StageError(f"refusing to publish: {file} contains {secrets[found.decode()]}. Remove it from that "
                             "file (or from whatever wrote it) and run the stage again; consider rotating the token.")
        if file.name == "README.md" and looks_like_secret(file.read_text(encoding="utf-8", errors="replace"),
                                                         heuristic=False):
            raise StageError(f"refusing to publish: {file} holds what looks like a credential (a token, "
                             "'Bearer ...' or user:password@ in a URL). Remove it from the configuration that the "
                             "card quotes (endpoints, sources) and run the stage again.")


# ------------------------------------------------------------------------------------ hashing


def _git_blob_oid(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_files(folder: Path) -> dict[str, dict[str, Any]]:
    """path in repo -> {size, sha256, git_oid} for every file of a folder to push."""
    out = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = file.relative_to(folder).as_posix()
        out[rel] = {"size": file.stat().st_size, "sha256": sha256_file(file), "git_oid": _git_blob_oid(file)}
    return out


def tree_hash(files: dict[str, dict[str, Any]]) -> str:
    blob = json.dumps({p: f["sha256"] for p, f in sorted(files.items())}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def diff_remote(local: dict[str, dict[str, Any]], remote: list[Any]) -> tuple[list[str], list[str]]:
    """(local paths to upload: new or changed, remote paths to delete) from a recursive remote tree."""
    remote_files = {f.path: f for f in remote if hasattr(f, "blob_id")}
    changed = []
    for path, info in local.items():
        r = remote_files.get(path)
        if r is None:
            changed.append(path)
        elif r.lfs is not None:
            if r.lfs.sha256 != info["sha256"]:
                changed.append(path)
        elif r.blob_id != info["git_oid"]:
            changed.append(path)
    stale = sorted(p for p in remote_files if p not in local and p != ".gitattributes")
    return changed, stale


# ------------------------------------------------------------------------------------------ pushing


class _Pusher:
    def __init__(self, cfg: Config, token: str, log: Any, endpoint: str | None = None):
        from huggingface_hub import HfApi

        self.cfg, self.token, self.log = cfg, token, log
        self.api = HfApi(token=token, endpoint=endpoint)

    def clean(self, text: str) -> str:
        return redact(text, (self.token,))

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """fn() with retries and exponential backoff on 429/5xx/connection errors; errors made actionable."""
        p = self.cfg.publish
        for attempt in range(p.max_retries + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised as a StageError
                status = http_status(exc)
                detail = self.clean(f"{type(exc).__name__}: {exc}".splitlines()[0])
                if status in (401, 403):
                    raise StageError(
                        f"{what}: the Hub refused the token in ${p.token_env} ({status}). Use a token with write "
                        f"access to {p.owner or 'your namespace'} (https://huggingface.co/settings/tokens) and run "
                        "the stage again."
                    ) from None
                if not is_retryable(exc) or attempt == p.max_retries:
                    raise StageError(
                        f"{what} failed after {attempt + 1} attempt(s): {detail}. What was pushed is recorded in "
                        "pushed.json; run the stage again to continue (finished repositories are not pushed twice)."
                    ) from None
                delay = RetryPolicy(p.max_retries, p.retry_backoff_s, MAX_BACKOFF_S).delay(attempt, retry_after(exc))
                self.log.warning("publish: %s failed (%s); retry %d/%d in %.1f s", what, detail, attempt + 1,
                                 p.max_retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def whoami(self) -> str:
        return self.call("whoami", lambda: self.api.whoami())["name"]

    def push(self, kind: str, repo_id: str, folder: Path, message: str) -> dict[str, Any]:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        repo_type = REPO_TYPES[kind]
        local = local_files(folder)

        def attempt() -> dict[str, Any]:
            self.api.create_repo(repo_id, repo_type=repo_type, private=self.cfg.publish.private, exist_ok=True)
            info = self.api.repo_info(repo_id, repo_type=repo_type)
            remote = list(self.api.list_repo_tree(repo_id, repo_type=repo_type, recursive=True))
            changed, stale = diff_remote(local, remote)
            result = {"repo_id": repo_id, "repo_type": repo_type, "files": len(local), "tree": tree_hash(local),
                      "private": info.private}
            if not changed and not stale:
                return {**result, "commit": info.sha, "committed": False}
            ops: list[Any] = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p)) for p in changed]
            ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
            commit = self.api.create_commit(repo_id, repo_type=repo_type, operations=ops, commit_message=message,
                                            parent_commit=info.sha)
            return {**result, "commit": commit.oid, "committed": True, "uploaded": len(changed),
                    "deleted": len(stale)}

        result = self.call(f"pushing {repo_type} {repo_id}", attempt)
        if result["private"] is not None and result["private"] != self.cfg.publish.private:
            self.log.warning("publish: %s already exists and is %s (publish.private=%s does not change an existing "
                             "repository)", repo_id, "private" if result["private"] else "public",
                             self.cfg.publish.private)
        return result


# ------------------------------------------------------------------------------------- the stage


@dataclass
class _Plan:
    kind: str
    repo_id: str
    folder: Path

    @property
    def repo_type(self) -> str:
        return REPO_TYPES[self.kind]


def push_mode(cfg: Config) -> str:
    """'dry_run', 'no_token', 'offline' or 'push' (the token itself is never part of it)."""
    if cfg.publish.dry_run:
        return "dry_run"
    if hub_token(cfg) is None:
        return "no_token"
    if is_offline():
        return "offline"
    return "push"


def _push_commands(plans: list[_Plan], cfg: Config, status: str) -> str:
    lines = [
        "# Push this run to the Hugging Face Hub", "", status, "",
        f"Each folder below is exactly what the publish stage pushes. With a write token in `${cfg.publish.token_env}`",
        "(never pass it with `--token`: it would land in your shell history), either run the stage again",
        f"(`python -m trainer publish --run-dir {cfg.run.dir}`; repositories already up to date get no new commit)",
        "or push the folders yourself:", "", "```bash", f'export HF_TOKEN="${{{cfg.publish.token_env}}}"'
        if cfg.publish.token_env != "HF_TOKEN" else "# export HF_TOKEN=hf_...   (a write token)",
    ]
    for plan in plans:
        private = " --private" if cfg.publish.private else ""
        lines.append(f"hf upload {plan.repo_id} {plan.folder.resolve()} . --repo-type {plan.repo_type}{private} "
                     f"--delete '*' --commit-message 'domain-embed: publish {plan.kind}'")
    lines += ["```", "", "(huggingface_hub before 0.34: `huggingface-cli upload` takes the same arguments.)"]
    if any(OWNER_PLACEHOLDER in p.repo_id for p in plans):
        lines += ["", f"`{OWNER_PLACEHOLDER}` stands for your Hub user or organisation: set `publish.owner` and run "
                  "the stage again so that the cards link the right repositories."]
    return "\n".join(lines) + "\n"


def run(ctx: StageContext) -> dict[str, Any]:

    cfg, sdir, log = ctx.cfg, ctx.dir, ctx.log
    p = cfg.publish
    token = hub_token(cfg)
    mode = push_mode(cfg)
    model_dir = ctx.input("train", "model")
    if not (model_dir / "modules.json").is_file() and not (model_dir / "config.json").is_file():
        raise StageError(f"no trained model at {model_dir}; run `python -m trainer train` first")

    pusher = None
    owner = p.owner
    if mode == "push":
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        if not hub_reachable():
            mode = "unreachable"
            log.warning("publish: the Hub at %s does not answer", endpoint)
        else:
            pusher = _Pusher(cfg, token, log)  # type: ignore[arg-type]
            owner = owner or pusher.whoami()
    ids = repo_ids(cfg, owner)

    manifests = {n: ctx.manifest(n) for n in ("generate", "mine", "train")}
    report_file = ctx.input("evaluate", "report.json")
    report = _read_json(report_file) if report_file else None
    guard = verdict_of_report(report, cfg.evaluate.regression_tolerance)
    if not guard.ok and not p.allow_regression:
        raise StageError(f"publish: nothing was pushed. {guard.text}")
    if report is not None:  # the card says what the guard says, with the same tolerance
        report = {**report, "regression_tolerance": guard.tolerance, "no_regressions": guard.ok,
                  "regressions": [{"task": t, "delta": d} for t, d in guard.regressions],
                  "published_despite_regression": not guard.ok}
        report.pop("improved_everywhere", None)
    status, regressed = verdict(report)
    if status == "not_evaluated":
        log.warning("publish: no evaluation report; the model card will say the model was not evaluated")
    elif status == "regression":
        log.warning("publish: the evaluation found regressions (%s); publishing anyway (publish.allow_regression); "
                    "the card says so", ", ".join(regressed))

    plans: list[_Plan] = []
    built: dict[str, Any] = {}
    queries_src = ctx.input("generate", "queries")
    train_src = ctx.input("mine", "train")
    datasets_published: dict[str, str] = {}
    if p.push_datasets and queries_src is not None:
        datasets_published["queries"] = ids["queries"]
    if p.push_datasets and train_src is not None:
        datasets_published["training_set"] = ids["training_set"]
    if p.push_datasets and len(datasets_published) < 2:
        log.warning("publish: %s not found (stages generate / mine incomplete); not published",
                    " and ".join(k for k in ("queries", "training_set") if k not in datasets_published))

    if "queries" in datasets_published:
        ctx.report("publish: preparing the synthetic queries", 0.05)
        card = _with_metadata(synthetic_card(cfg, (manifests["generate"] or {}).get("counts") or {}),
                              license=p.license or "other")
        built["queries"] = _dataset_folder(queries_src, sdir / "queries", card)
        plans.append(_Plan("queries", ids["queries"], sdir / "queries"))
    if "training_set" in datasets_published:
        ctx.report("publish: preparing the training set", 0.1)
        stats_file = ctx.input("mine", "stats.json")
        stats = (_read_json(stats_file) if stats_file else None) or {}
        import datasets

        columns = list(datasets.load_from_disk(str(train_src)).column_names)
        card = training_set_card(cfg, (manifests["mine"] or {}).get("counts") or {}, stats,
                                 queries_repo=datasets_published.get("queries"), columns=columns)
        built["training_set"] = _dataset_folder(train_src, sdir / "training_set", card)
        plans.append(_Plan("training_set", ids["training_set"], sdir / "training_set"))

    ctx.report("publish: preparing the model", 0.15)
    facts, extra = model_facts(model_dir)
    license_id = p.model_license or _base_license(cfg) or "other"
    train_m = manifests["train"] or {}
    onnx_dir = ctx.input("export", "onnx")

    st_card = sentence_transformers_card(model_dir, ids["model"])
    # what the export stage timed on its CPU and serves (not pushed: the choice is for that CPU; the card says it)
    serving = (_read_json(onnx_dir / SERVING_FILE) if onnx_dir is not None else None) or None

    def card_fn(onnx_files: list[str]) -> Any:
        return model_card(cfg, ids["model"], facts, st_card=st_card, train_counts=train_m.get("counts") or {},
                          train_seconds=train_m.get("duration_s"), report=report, datasets=datasets_published,
                          onnx_files=onnx_files, versions=train_m.get("versions") or {}, license_id=license_id,
                          serving=serving)

    onnx_files = _model_folder(model_dir, onnx_dir, sdir / "model", card_fn)
    plans.append(_Plan("model", ids["model"], sdir / "model"))
    for plan in plans:
        _check_no_secret(plan.folder, token, cfg)

    # What was pushed by an earlier (interrupted) attempt of this stage.
    pushed_path = sdir / "pushed.json"
    pushed: dict[str, Any] = (_read_json(pushed_path) or {}) if ctx.resumed else {}
    statuses = {
        "dry_run": "Not pushed: publish.dry_run is set.",
        "no_token": f"Not pushed: no token in ${p.token_env}.",
        "offline": "Not pushed: offline (HF_HUB_OFFLINE or DOMAIN_EMBED_OFFLINE is set).",
        "unreachable": "Not pushed yet: the Hub did not answer.",
        "push": "Pushed by the publish stage; the commands below repeat the push by hand.",
    }
    (sdir / "PUSH.md").write_text(_push_commands(plans, cfg, statuses[mode]), encoding="utf-8")
    if mode == "unreachable":
        raise StageError(
            f"the Hub at {os.environ.get('HF_ENDPOINT', 'https://huggingface.co')} did not answer, so nothing was "
            f"pushed. The folders are ready in {sdir}: run the stage again when the Hub is reachable, or push "
            f"them with the commands in {sdir / 'PUSH.md'}."
        )

    revision = None
    if pusher is not None:
        for i, plan in enumerate(plans):
            ctx.report(f"publish: pushing {plan.repo_id}", 0.2 + 0.7 * i / len(plans))
            result = pusher.push(plan.kind, plan.repo_id, plan.folder, f"domain-embed: publish {plan.kind}")
            log.info("publish: %s %s at %s (%d files)", plan.repo_id,
                     "committed" if result["committed"] else "already up to date, no new commit",
                     result["commit"][:10], result["files"])
            # 'committed': this stage run made the commit (in this attempt or an interrupted earlier one)
            earlier = pushed.get(plan.kind) or {}
            result["committed"] = bool(result["committed"] or (earlier.get("committed")
                                                               and earlier.get("tree") == result["tree"]))
            pushed[plan.kind] = {**result, "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            write_json_atomic(pushed_path, pushed)
        revision = pushed["model"]["commit"]
    else:
        log.warning("publish: %s The folders to push are in %s; push commands:\n%s", statuses[mode], sdir,
                    "\n".join(line for line in (sdir / "PUSH.md").read_text().splitlines()
                              if line.startswith("hf upload")))

    # Leaderboard submission files.
    mteb_tasks = [r.get("task") for r in (report or {}).get("tasks") or []
                  if isinstance(r, dict) and r.get("kind", "MTEB") == "MTEB" and r.get("tuned") is not None]
    contaminated = sorted(((report or {}).get("contaminated") or {}).keys())
    results_dir = None
    if report is not None:

        results_dir = default_results_dir(cfg.evaluate.results_dir)
    meta = submission.model_meta(
        cfg, ids["model"], revision, n_parameters=facts.n_parameters,
        n_embedding_parameters=extra["n_embedding_parameters"], memory_usage_mb=extra["memory_usage_mb"],
        max_tokens=facts.max_seq_length, embed_dim=facts.embedding_dim, similarity_fn_name=facts.similarity_fn_name,
        license_id=license_id, contaminated=contaminated,
        base_meta=submission.base_model_meta(results_dir, cfg.model.name) if results_dir else None,
        training_data_url=(f"https://huggingface.co/datasets/{datasets_published['training_set']}"
                           if "training_set" in datasets_published and not p.private else None),
        onnx=bool(onnx_files),
    )
    mteb_dir = ctx.input("evaluate", "mteb")
    result_files = (report or {}).get("result_files") or {}
    files = {t: mteb_dir / result_files[t] for t in mteb_tasks
             if mteb_dir is not None and t in result_files and (mteb_dir / result_files[t]).is_file()}
    sub = submission.write_submission(sdir / "submission", cfg, meta, files, contaminated=contaminated,
                                      training_set_repo=datasets_published.get("training_set"))
    ctx.report("publish: done", 1.0)
    return {
        "mode": mode,
        "repos": {plan.kind: plan.repo_id for plan in plans},
        "pushed": sum(1 for k in pushed if k in {pl.kind for pl in plans}),
        "commits": sum(1 for v in pushed.values() if v.get("committed")),
        "model_revision": revision,
        "evaluation": status,
        "regressions": regressed,
        "published_despite_regression": not guard.ok,
        "onnx_files": onnx_files,
        "dataset_rows": {k: v["rows"] for k, v in built.items()},
        "submission_tasks": sub["tasks"],
        "private": p.private,
        "push_checkpoints": p.push_checkpoints,
    }


def _inputs(cfg: Config) -> dict[str, str]:
    out = {}
    out["mode"] = push_mode(cfg)  # a token added later (or offline lifted) re-runs the stage
    out["endpoint"] = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return out


STAGE = Stage(
    name="publish",
    run=run,
    sections=("domain", "model", "ingest.source", "generate", "mine", "train", "evaluate.regression_tolerance",
              "publish"),
    reads=(
        Input("train", "model"),
        Input("generate", "queries", optional=True),
        Input("mine", "train", optional=True),
        Input("mine", "stats.json", optional=True),
        Input("evaluate", "report.json", optional=True),
        Input("evaluate", "mteb", optional=True),
        Input("export", "onnx", optional=True),
    ),
    writes=("model", "PUSH.md", "submission"),
    may_write=("queries", "training_set", "pushed.json"),
    external=_inputs,
    version="1",
    help="Push the synthetic queries, the training set and the model (+ ONNX) with cards to the Hub; "
    "write the MTEB leaderboard submission files.",
)

