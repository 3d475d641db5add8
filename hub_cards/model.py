"""Model card for the fine-tuned embedding model (sentence-transformers conventions, MTEB eval metadata).

The card follows the structure sentence-transformers writes (model description, architecture, usage,
evaluation, training details, framework versions) and adds what this pipeline knows: the subcategory,
the training-data repositories, base vs tuned scores with leaderboard references, Matryoshka
dimensions, contamination, ONNX and OpenAI-compatible usage. Its metadata carries the tuned scores as
``model-index`` entries (``ModelCardData(eval_results=[EvalResult(...)])``), which the Hub renders.

The word "improvement" is used only when an evaluation compared base and tuned and found no regression
(:func:`verdict`); without an evaluation the card says so and claims nothing.

Example::

    >>> verdict(None)[0]
    'not_evaluated'
    >>> verdict({"tasks": [{"task": "SciFact", "base": 0.64, "tuned": 0.60}]})[0]
    'regression'
    >>> verdict({"tasks": [{"task": "SciFact", "base": 0.64, "tuned": 0.66}]})[0]
    'improved'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from trainer.config import Config
from trainer.domains import task_dataset


@dataclass
class ModelFacts:
    """What the card says about the model itself (read from the model folder, not from torch)."""

    embedding_dim: int | None = None
    max_seq_length: int | None = None
    similarity_fn_name: str = "cosine"
    n_parameters: int | None = None
    architecture: str = ""
    prompts: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- evaluation report


def _score(value: Any) -> float | None:
    if isinstance(value, Mapping):
        value = value.get("main_score", value.get("score"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def eval_rows(report: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The report's per-task rows, normalised: task, kind, metric, base, tuned, delta, leaderboard, ..."""
    if not report:
        return []
    raw = report.get("tasks") or report.get("rows") or report.get("per_task") or []
    if isinstance(raw, Mapping):
        raw = [{"task": k, **(v if isinstance(v, Mapping) else {"tuned": v})} for k, v in raw.items()]
    rows = []
    for r in raw:
        if not isinstance(r, Mapping) or not r.get("task"):
            continue
        base, tuned = _score(r.get("base")), _score(r.get("tuned"))
        rows.append({
            **r,
            "task": str(r["task"]),
            "kind": r.get("kind") or "MTEB",
            "metric": r.get("metric") or "ndcg_at_10",
            "base": base,
            "tuned": tuned,
            "delta": tuned - base if base is not None and tuned is not None else None,
        })
    return rows


def verdict(report: Mapping[str, Any] | None) -> tuple[str, list[str]]:
    """('not_evaluated' | 'regression' | 'no_regression' | 'improved', regressed task names).

    Read from the report's ``regressions`` / ``improved_everywhere`` when present, else from the rows
    (a task regresses when tuned < base - ``regression_tolerance``).
    """
    rows = [r for r in eval_rows(report) if r["delta"] is not None]
    if not report or not rows:
        return "not_evaluated", []
    tol = report.get("regression_tolerance") or 0.0
    regs = report.get("regressions")
    if isinstance(regs, Sequence) and not isinstance(regs, str):
        names = [str(r.get("task") if isinstance(r, Mapping) else r) for r in regs]
    else:
        names = [r["task"] for r in rows if r["delta"] < -tol]
        if isinstance(regs, int) and regs and not names:
            names = ["(see the evaluation report)"]
    if names:
        return "regression", names
    everywhere = report.get("improved_everywhere")
    if everywhere is None:
        everywhere = all(r["delta"] > tol for r in rows)
    return ("improved" if everywhere else "no_regression"), []


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def _ref(ref: Any, key: str) -> str:
    best = (ref or {}).get(key) if isinstance(ref, Mapping) else None
    if not isinstance(best, Mapping) or _score(best.get("score")) is None:
        return "–"
    n = best.get("n_parameters")
    size = f", {n / 1e6:.0f}M" if isinstance(n, int | float) and n else ""
    return f"{best['score']:.4f} ({best.get('model', '?')}{size})"


def _contamination(row: Mapping[str, Any]) -> str:
    c = row.get("contamination")
    if isinstance(c, Mapping) and _score(c.get("fraction")) is not None:
        return f"{c['fraction']:.1%}"
    return "–" if c is None else str(c)


def _eval_section(report: Mapping[str, Any] | None, status: str, regressed: list[str]) -> str:
    if status == "not_evaluated":
        return ("## Evaluation\n\nThis model has not been evaluated against its base model (no evaluation in the "
                "run compared them). No claim is made about its retrieval quality; run `python -m trainer evaluate` "
                "and publish again to add the scores.\n")
    rows = eval_rows(report)
    compared = [r for r in rows if r["delta"] is not None]
    if status == "improved":
        head = (f"**Improvement on every compared task** ({len(compared)}): the fine-tuned model scores above "
                "its base model on each of them.")
    elif status == "no_regression":
        better = sum(1 for r in compared if r["delta"] > 0)
        head = (f"**No regression:** on {len(compared)} compared tasks the fine-tuned model is never below its "
                f"base model (tolerance {report.get('regression_tolerance', 0)}); an improvement on {better}.")
    else:
        head = (f"**Regressions:** the fine-tuned model scores below its base model on {', '.join(regressed)}. "
                "Check that these tasks matter to you before using it in place of the base model.")
    lines = ["## Evaluation", "", head, "",
             "Main score per task (nDCG@10 unless noted) for the base model and this model, with leaderboard "
             "references from the MTEB results at evaluation time.", "",
             "| task | kind | metric | base | tuned | Δ | base on leaderboard | best < 100M | best overall "
             "| contamination |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = r.get("leaderboard")
        base_lb = _score(ref.get("base_leaderboard")) if isinstance(ref, Mapping) else None
        delta = "–" if r["delta"] is None else f"{r['delta']:+.4f}"
        note = f" ({r['note']})" if r.get("note") and r["tuned"] is None else ""
        lines.append(f"| {r['task']}{note} | {r['kind']} | {r['metric']} | {_fmt(r['base'])} | {_fmt(r['tuned'])} "
                     f"| {delta} | {_fmt(base_lb)} | {_ref(ref, 'best_under_100m')} | {_ref(ref, 'best')} "
                     f"| {_contamination(r)} |")
    mat = report.get("matryoshka") if report else None
    if isinstance(mat, Mapping) and isinstance(mat.get("tuned"), Mapping) and mat["tuned"]:
        lines += ["", "### Score by Matryoshka dimension (held-out synthetic split, nDCG@10)", "",
                  "| dimensions | base | tuned |", "|---|---|---|"]
        base_m = mat.get("base") if isinstance(mat.get("base"), Mapping) else {}
        for dim in sorted(mat["tuned"], key=lambda d: -int(d)):
            lines.append(f"| {dim} | {_fmt(_score(base_m.get(dim)))} | {_fmt(_score(mat['tuned'][dim]))} |")
    return "\n".join(lines) + "\n"


def _contamination_section(report: Mapping[str, Any] | None, cfg: Config) -> str:
    head = ("## Contamination disclosure\n\nThe training queries were generated by an LLM from chunks of "
            f"`{cfg.ingest.source}`; no evaluation query or relevance label was used. ")
    if not report:
        return head + "Overlap between the training texts and evaluation corpora was not measured.\n"
    found = report.get("contaminated")
    rows = [r for r in eval_rows(report) if isinstance(r.get("contamination"), Mapping)]
    if isinstance(found, Mapping) and found:
        items = ", ".join(f"{t} ({_score(v) or 0:.1%} of its documents)" for t, v in found.items())
        return head + (f"The training passages overlap the corpora of these evaluation tasks: {items}. Scores on "
                       "them are in-domain, not zero-shot: the model has seen their documents (not their "
                       "queries). They are listed as training data in the MTEB metadata.\n")
    if rows:
        return head + ("Every evaluation corpus was checked against the training texts (exact and near-duplicate "
                       "documents): no overlap was found.\n")
    return head + "The evaluation report holds no overlap measurement.\n"


# ---------------------------------------------------------------------------------------- usage


def _prompt_kw(facts: ModelFacts, names: tuple[str, ...], prompt: str) -> str:
    name = next((n for n in names if facts.prompts.get(n)), None)
    if name:
        return f", prompt_name={name!r}"
    return f", prompt={prompt!r}" if prompt else ""


def _usage(repo_id: str, facts: ModelFacts, onnx_files: Sequence[str], dims: Sequence[int],
           prompts: tuple[str, str] = ("", "")) -> str:
    q_kw = _prompt_kw(facts, ("query",), prompts[0])
    d_kw = _prompt_kw(facts, ("document", "passage", "corpus"), prompts[1])
    parts = ["## Usage", "", "### Sentence Transformers", "", "```bash", "pip install -U sentence-transformers",
             "```", "", "```python", "from sentence_transformers import SentenceTransformer", "",
             f'model = SentenceTransformer("{repo_id}")',
             'queries = ["What does the corpus say about this topic?"]',
             'documents = ["A passage of the corpus.", "Another passage."]',
             f"query_embeddings = model.encode(queries{q_kw})",
             f"document_embeddings = model.encode(documents{d_kw})",
             "print(model.similarity(query_embeddings, document_embeddings))", "```"]
    smaller = [d for d in dims if facts.embedding_dim is None or d < facts.embedding_dim]
    if smaller:
        parts += ["", f"Trained with a Matryoshka loss: embeddings can be truncated to {', '.join(map(str, dims))} "
                  "dimensions with a graceful loss of quality (see the evaluation section, when evaluated):", "",
                  "```python", f'model = SentenceTransformer("{repo_id}", truncate_dim={smaller[0]})', "```"]
    if onnx_files:
        main = next((f for f in onnx_files if f.endswith("/model.onnx")), onnx_files[0])
        parts += ["", "### ONNX", "", f"ONNX exports in this repository: {', '.join(f'`{f}`' for f in onnx_files)}.",
                  "", "```python", "from sentence_transformers import SentenceTransformer", "",
                  f'model = SentenceTransformer("{repo_id}", backend="onnx", model_kwargs={{"file_name": "{main}"}})',
                  'embeddings = model.encode(["A passage of the corpus."])', "```"]
    payload = f'{{"model": "{repo_id}", "input": ["A passage of the corpus."]}}'
    parts += ["", "### OpenAI-compatible embeddings API (`POST /v1/embeddings`)", ""]
    if onnx_files:
        dim_kw = f", dimensions={smaller[-1]}" if smaller else ""
        parts += ["Serve the ONNX export with domain-embed's server (`trainer.serve`; `dimensions` truncates "
                  "Matryoshka embeddings) and call it with any OpenAI client:", "", "```bash",
                  f"hf download {repo_id} --local-dir model   # a private repo needs a read token in HF_TOKEN",
                  "python -m trainer.serve --model model --port 8000",
                  "curl -s http://127.0.0.1:8000/v1/embeddings -H 'Content-Type: application/json' \\",
                  f"  -d '{payload}'", "```", "", "```python", "from openai import OpenAI", "",
                  'client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")',
                  f'response = client.embeddings.create(model="{repo_id}", input=["A passage of the corpus."]{dim_kw})',
                  "print(len(response.data[0].embedding))", "```", "",
                  "[Text Embeddings Inference](https://github.com/huggingface/text-embeddings-inference) serves the "
                  "same route from the PyTorch weights:", ""]
    else:
        parts += ["Serve the model with [Text Embeddings Inference](https://github.com/huggingface/"
                  "text-embeddings-inference), which exposes the OpenAI route:", ""]
    parts += ["```bash", "docker run -p 8080:80 -e HF_TOKEN ghcr.io/huggingface/text-embeddings-inference:cpu-latest "
              f"--model-id {repo_id}",
              "curl -s http://localhost:8080/v1/embeddings -H 'Content-Type: application/json' \\",
              f"  -d '{payload}'", "```"]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ card


def _eval_results(report: Mapping[str, Any] | None, datasets: Mapping[str, str]) -> list[EvalResult]:
    out = []
    for r in eval_rows(report):
        if r["tuned"] is None:
            continue
        kind = str(r["kind"])
        if kind == "MTEB":
            dataset_type = r.get("dataset") or task_dataset(r["task"]) or r["task"]
            name = f"MTEB {r['task']}"
        elif kind == "synthetic" and datasets.get("queries"):  # the held-out queries are in the queries set
            dataset_type, name = datasets["queries"], "held-out synthetic split (test documents)"
        else:
            dataset_type, name = r.get("dataset") or r["task"], r["task"]
        out.append(EvalResult(
            task_type="information-retrieval", task_name="Information Retrieval",
            dataset_type=str(dataset_type), dataset_name=name, dataset_split=r.get("split") or "test",
            dataset_revision=r.get("dataset_revision"), metric_type=str(r["metric"]),
            metric_name=str(r["metric"]).replace("_at_", "@"), metric_value=round(r["tuned"], 5),
        ))
    return out


def _hyperparameters(cfg: Config, counts: Mapping[str, Any]) -> str:
    t = cfg.train
    items = {
        "loss": counts.get("loss") or t.loss,
        "temperature (scale)": f"{t.temperature} ({1 / t.temperature:g})",
        "learning rate": counts.get("lr", t.lr),
        "epochs": counts.get("epochs", t.epochs),
        "batch size": counts.get("batch_size", t.batch_size or "auto"),
        "processes": counts.get("world_size", t.num_processes),
        "warmup ratio": t.warmup_ratio,
        "hard negatives per row": counts.get("negatives_per_row", t.num_negatives or cfg.mine.num_negatives),
        "in-batch negatives": "no (mined negatives only)" if t.hard_negatives_only else "yes",
        "Matryoshka dimensions": ", ".join(map(str, t.matryoshka_dims)) or "off",
        "max sequence length (training)": counts.get("max_seq_length", t.max_seq_length or "model's"),
        "precision": counts.get("precision", t.precision),
        "seed": cfg.run.seed,
        "steps": counts.get("steps"),
        "best validation nDCG@10": counts.get("best_val_ndcg@10"),
        "final loss": counts.get("final_loss"),
    }
    return "\n".join(f"- {k}: {v}" for k, v in items.items() if v is not None)


def model_card(
    cfg: Config,
    repo_id: str,
    facts: ModelFacts,
    *,
    train_counts: Mapping[str, Any] | None = None,
    train_seconds: float | None = None,
    report: Mapping[str, Any] | None = None,
    datasets: Mapping[str, str] | None = None,
    onnx_files: Sequence[str] = (),
    versions: Mapping[str, str] | None = None,
    license_id: str | None = None,
) -> ModelCard:
    """The model card. ``datasets``: kind ('queries', 'training_set') -> dataset repo id."""
    counts = dict(train_counts or {})
    datasets = dict(datasets or {})
    status, regressed = verdict(report)
    dims = sorted(set(cfg.train.matryoshka_dims), reverse=True)
    tags = ["sentence-transformers", "sentence-similarity", "feature-extraction", "dense", "domain-embed",
            cfg.domain, "mteb"]
    if dims:
        tags.append("matryoshka")
    if onnx_files:
        tags.append("onnx")
    if counts.get("rows"):
        tags.append(f"dataset_size:{counts['rows']}")
    tags += [f"loss:{name}" for name in ("MultipleNegativesRankingLoss", "MatryoshkaLoss")
             if name != "MatryoshkaLoss" or dims]
    model_name = f"{cfg.model.name.split('/')[-1]} fine-tuned for {cfg.domain} retrieval"
    data = ModelCardData(
        language=["en"],
        license=license_id or "other",
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=tags,
        base_model=cfg.model.name if "/" in cfg.model.name and not cfg.model.name.startswith(("/", ".")) else None,
        datasets=[d for d in (datasets.get("training_set"), datasets.get("queries")) if d] or None,
        model_name=model_name,
        eval_results=_eval_results(report, datasets) or None,
    )
    data.metrics = sorted({r.metric_type for r in data.eval_results or []}) or None
    hw = counts.get("device") or ("cuda" if cfg.train.profile != "cpu" else "cpu")
    seconds = counts.get("train_seconds") or train_seconds
    duration = f"{seconds / 60:.1f} minutes" if isinstance(seconds, int | float) else "not recorded"
    datasets_md = "\n".join(
        f"- {label}: [{datasets[k]}](https://huggingface.co/datasets/{datasets[k]})"
        for k, label in (("training_set", "training set"), ("queries", "synthetic queries")) if datasets.get(k)
    ) or "- not published (publish.push_datasets=false)"
    versions_md = "\n".join(f"- {k}: {v}" for k, v in sorted((versions or {}).items()))
    matryoshka = f" (Matryoshka: {', '.join(map(str, dims))})" if dims else ""
    base_link = (f"[{cfg.model.name}](https://huggingface.co/{cfg.model.name})" if data.base_model
                 else f"`{cfg.model.name}`")
    body = f"""
# {model_name}

This is a [sentence-transformers](https://www.SBERT.net) model finetuned from {base_link} for **{cfg.domain}**
retrieval (the MTEB subcategory it specialises in), on synthetic queries and mined hard negatives built
from `{cfg.ingest.source}` by domain-embed, following NVIDIA's domain-specific
embedding recipe. It maps sentences and paragraphs to a {facts.embedding_dim or '?'}-dimensional dense
vector space for semantic search and retrieval.

## Model Details

### Model Description
- **Model Type:** Sentence Transformer
- **Base model:** {base_link}
- **Subcategory:** {cfg.domain}
- **Maximum Sequence Length:** {facts.max_seq_length or '?'} tokens
- **Output Dimensionality:** {facts.embedding_dim or '?'} dimensions{matryoshka}
- **Similarity Function:** {facts.similarity_fn_name}
- **Parameters:** {f'{facts.n_parameters / 1e6:.1f}M' if facts.n_parameters else 'unknown'}
- **Language:** en
- **License:** {data.license}

### Training data
{datasets_md}

### Full Model Architecture

```
{facts.architecture or 'see modules.json'}
```

{_usage(repo_id, facts, onnx_files, dims, (cfg.model.query_prompt, cfg.model.passage_prompt))}
{_eval_section(report, status, regressed)}
{_contamination_section(report, cfg)}
## Training Details

### Training Hyperparameters
{_hyperparameters(cfg, counts)}

### Hardware and time
- hardware profile: {cfg.train.profile}; device: {hw}
- training time: {duration}

### Framework Versions
{versions_md or '- not recorded'}

## Citation

```bibtex
@inproceedings{{reimers-2019-sentence-bert,
    title = "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks",
    author = "Reimers, Nils and Gurevych, Iryna",
    booktitle = "Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing",
    year = "2019",
    url = "https://arxiv.org/abs/1908.10084",
}}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
