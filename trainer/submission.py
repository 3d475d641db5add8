"""MTEB leaderboard submission files for the published model.

Two pull requests put a model on the MTEB leaderboard: its result files in the
``embeddings-benchmark/results`` repository and, optionally, its metadata in mteb's model registry.
:func:`write_submission` prepares both under one folder::

    results/<org__name>/<revision>/<Task>.json   mteb's own result files (from the evaluate stage)
    results/<org__name>/<revision>/model_meta.json   ModelMeta.to_dict() of the model
    mteb_model_meta.py                            the ModelMeta(...) entry for mteb's registry
    SUBMIT.md                                     how to open the two pull requests

The metadata lists the model's training data as mteb expects (``training_datasets``: the base model's,
plus every evaluation task whose corpus the training passages overlap, so the leaderboard does not
count those scores as zero-shot). Field names follow mteb 2.26's ``ModelMeta``; the stage builds them
as plain data (mteb is slow to import) and the tests validate them with ``ModelMeta`` itself.

Example::

    >>> results_folder_name("me/minilm-scientific")
    'me__minilm-scientific'
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainer.config import Config

NO_REVISION = "no_revision_available"  # mteb's placeholder when a model has no Hub revision yet
RESULTS_REPO = "https://github.com/embeddings-benchmark/results"
MTEB_REPO = "https://github.com/embeddings-benchmark/mteb"


def results_folder_name(model_id: str) -> str:
    """mteb's folder name for a model id: ``org/name`` -> ``org__name``."""
    return model_id.replace("/", "__").replace(" ", "_")


def base_model_meta(results_dir: Path, base_model: str) -> dict[str, Any] | None:
    """The base model's model_meta.json from an MTEB results folder (leaderboard snapshot), if present."""
    folder = results_dir / "results" / results_folder_name(base_model)
    for path in sorted(folder.glob("*/model_meta.json")):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
    return None


def _training_datasets(base_meta: Mapping[str, Any] | None, contaminated: Iterable[str]) -> list[str]:
    names = set(contaminated)
    inherited = (base_meta or {}).get("training_datasets") or []
    names.update(inherited.keys() if isinstance(inherited, Mapping) else inherited)
    return sorted(names)


def model_meta(
    cfg: Config,
    model_id: str,
    revision: str | None,
    *,
    n_parameters: int | None,
    n_embedding_parameters: int | None,
    memory_usage_mb: float | None,
    max_tokens: int | None,
    embed_dim: int | None,
    similarity_fn_name: str = "cosine",
    license_id: str | None = None,
    contaminated: Iterable[str] = (),
    base_meta: Mapping[str, Any] | None = None,
    training_data_url: str | None = None,
    onnx: bool = False,
    release_date: str | None = None,
) -> dict[str, Any]:
    """The model's mteb ModelMeta as ``ModelMeta.to_dict()`` writes it (model_meta.json)."""
    framework = ["Sentence Transformers", "PyTorch", "safetensors"] + (["ONNX"] if onnx else [])
    uses_prompts = bool(cfg.model.query_prompt or cfg.model.passage_prompt)
    return {
        "name": model_id,
        "revision": revision or NO_REVISION,
        "release_date": release_date or time.strftime("%Y-%m-%d", time.gmtime()),
        "languages": ["eng-Latn"],
        "loader": "SentenceTransformerEncoderWrapper",
        "loader_kwargs": {},
        "n_parameters": n_parameters,
        "n_active_parameters_override": None,
        "n_embedding_parameters": n_embedding_parameters,
        "memory_usage_mb": memory_usage_mb,
        "max_tokens": float(max_tokens) if max_tokens else None,
        "embed_dim": embed_dim,
        "license": license_id or "not specified",
        "open_weights": True,
        "public_training_code": None,
        "public_training_data": training_data_url,
        "framework": framework,
        "reference": f"https://huggingface.co/{model_id}",
        "similarity_fn_name": similarity_fn_name,
        "use_instructions": uses_prompts,
        "training_datasets": _training_datasets(base_meta, contaminated),
        "adapted_from": cfg.model.name,
        "superseded_by": None,
        "modalities": ["text"],
        "model_type": ["dense"],
        "citation": None,
        "contacts": None,
        "is_cross_encoder": False,
    }


def registry_snippet(meta: Mapping[str, Any], matryoshka_dims: Iterable[int] = ()) -> str:
    """A ``ModelMeta(...)`` entry for mteb/models/model_implementations/ (the registry pull request)."""
    var = "".join(c if c.isalnum() else "_" for c in meta["name"].split("/")[-1].lower())
    dims = sorted({*matryoshka_dims, *([meta["embed_dim"]] if meta.get("embed_dim") else [])}, reverse=True)
    embed_dim = dims if len(dims) > 1 else meta.get("embed_dim")

    def lit(value: Any) -> str:
        if isinstance(value, str):
            return json.dumps(value)
        if isinstance(value, list | tuple):
            return "[" + ", ".join(lit(v) for v in value) + "]"
        return repr(value)

    training = "{" + ", ".join(json.dumps(t) for t in meta["training_datasets"]) + "}" if meta["training_datasets"] \
        else "set()"
    fields = [
        ("loader", "SentenceTransformerEncoderWrapper"), ("name", lit(meta["name"])),
        ("revision", lit(meta["revision"])), ("release_date", lit(meta["release_date"])),
        ("languages", lit(meta["languages"])), ("n_parameters", lit(meta["n_parameters"])),
        ("n_embedding_parameters", lit(meta["n_embedding_parameters"])),
        ("memory_usage_mb", lit(meta["memory_usage_mb"])),
        ("max_tokens", lit(int(meta["max_tokens"]) if meta["max_tokens"] else None)),
        ("embed_dim", lit(embed_dim)), ("license", lit(meta["license"])), ("open_weights", "True"),
        ("public_training_code", lit(meta["public_training_code"])),
        ("public_training_data", lit(meta["public_training_data"])), ("framework", lit(meta["framework"])),
        ("reference", lit(meta["reference"])), ("similarity_fn_name", "ScoringFunction.COSINE"
                                                 if meta["similarity_fn_name"] == "cosine"
                                                 else lit(meta["similarity_fn_name"])),
        ("use_instructions", lit(meta["use_instructions"])), ("training_datasets", training),
        ("adapted_from", lit(meta["adapted_from"])), ("superseded_by", "None"), ("model_type", '["dense"]'),
    ]
    body = "\n".join(f"    {k}={v}," for k, v in fields)
    return (
        "from mteb.models.model_meta import ModelMeta, ScoringFunction\n"
        "from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper\n\n"
        f"{var} = ModelMeta(\n{body}\n)\n"
    )


_GUIDE = """# Submitting {model_id} to the MTEB leaderboard

Prepared by domain-embed's publish stage. The model must be **public** on the Hub for the leaderboard
(it was pushed {visibility}); make it public first if you want it listed:
`python -c "from huggingface_hub import HfApi; HfApi().update_repo_settings('{model_id}', private=False)"`
(or in the repository's settings page).
{revision_note}
## 1. Results: a pull request to {results_repo}

```bash
git clone --depth 1 {results_repo}.git mteb-results && cd mteb-results
cp -r {here}/results/{folder} results/
git checkout -b add-{folder}
git add results/{folder} && git commit -m "Add results for {model_id}"
# push to your fork and open a pull request against embeddings-benchmark/results
```

Files: {n_results} task result(s) ({tasks}) written by mteb {mteb_version} during the evaluate stage, and
`model_meta.json`. Re-run them yourself with `mteb run -m {model_id} -t {tasks_args}` to check.

## 2. Model metadata: a pull request to {mteb_repo} (optional, recommended)

Add the entry in `mteb_model_meta.py` to a file under `mteb/models/model_implementations/` (for a
sentence-transformers model it needs no custom loader), then run mteb's tests (`make test`).

## Training data and contamination

`training_datasets` lists the base model's training data{contam}. The synthetic training queries
were generated from `{source}`; no evaluation query or relevance label was used. Say so in the pull
request, and link the training set{training_link}.
"""


def write_submission(
    out: Path,
    cfg: Config,
    meta: Mapping[str, Any],
    result_files: Mapping[str, Path],
    *,
    contaminated: Iterable[str] = (),
    training_set_repo: str | None = None,
) -> dict[str, Any]:
    """Write the results folder, model_meta.json, the registry entry and SUBMIT.md under ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    folder = results_folder_name(meta["name"])
    rev_dir = out / "results" / folder / meta["revision"]
    rev_dir.mkdir(parents=True)
    written, mteb_versions = [], set()
    for task, src in sorted(result_files.items()):
        try:
            data = json.loads(Path(src).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or "scores" not in data:
            continue
        data.setdefault("task_name", task)
        mteb_versions.add(str(data.get("mteb_version", "?")))
        (rev_dir / f"{task}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        written.append(task)
    (rev_dir / "model_meta.json").write_text(json.dumps(dict(meta), indent=4, default=str) + "\n", encoding="utf-8")
    (out / "mteb_model_meta.py").write_text(registry_snippet(meta, cfg.train.matryoshka_dims), encoding="utf-8")
    contaminated = sorted(contaminated)
    revision_note = "" if meta["revision"] != NO_REVISION else (
        f"\nThe model was not pushed from this run, so its revision is `{NO_REVISION}`: after pushing, rename "
        f"`results/{folder}/{NO_REVISION}` to the commit hash of the model repository and set `revision` in both "
        "metadata files to it.\n")
    guide = _GUIDE.format(
        model_id=meta["name"], visibility="private" if cfg.publish.private else "public",
        revision_note=revision_note, results_repo=RESULTS_REPO, mteb_repo=MTEB_REPO, here=out.resolve(),
        folder=folder, n_results=len(written), tasks=", ".join(written) or "none",
        tasks_args=" ".join(written) or "<task>", mteb_version=", ".join(sorted(mteb_versions)) or "?",
        contam=(", plus the evaluation tasks whose documents appear in the training passages: "
                + ", ".join(contaminated) + " (their scores are not zero-shot)") if contaminated else
        " (no evaluation corpus was found in the training passages)",
        source=cfg.ingest.source,
        training_link=f" (https://huggingface.co/datasets/{training_set_repo})" if training_set_repo else "",
    )
    (out / "SUBMIT.md").write_text(guide, encoding="utf-8")
    return {"tasks": written, "folder": f"results/{folder}/{meta['revision']}"}
