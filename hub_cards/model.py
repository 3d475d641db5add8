"""Model card for the fine-tuned embedding model: sentence-transformers' own card plus what this pipeline knows.

The base is the card sentence-transformers renders from its ``SentenceTransformerModelCardData`` and
``model_card_template.md`` (written next to the weights at the end of training: model details with the real
maximum sequence length, full architecture, usage, training datasets, losses, hyperparameters, training logs,
framework versions, citations). Its sections are kept; this module fills its "Unknown" placeholders and adds the
subcategory, the training-data repositories, base vs tuned scores with leaderboard references, Matryoshka
dimensions, contamination, ONNX and OpenAI-compatible usage and the recipe. The metadata merges theirs (widget,
tags) with ours, and carries the tuned scores as ``model-index`` entries
(``ModelCardData(eval_results=[EvalResult(...)])``), which the Hub renders.

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
import re
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
        if report.get("published_despite_regression"):
            head += (" It was published anyway, by an explicit override (`publish.allow_regression=true`): the "
                     "pipeline's guard would otherwise have stopped it.")
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


def _serving_note(serving: Mapping[str, Any]) -> list[str]:
    """What the export stage measured on its CPU and chose to serve (its serving.json), as card lines."""
    speeds = serving.get("sentences_per_s") or {}
    if not speeds:
        return [f"The export stage serves `{serving.get('file')}` by default ({serving.get('why', '')})."]
    measured = ", ".join(f"{name} {sps}" for name, sps in speeds.items())
    skipped = serving.get("skipped") or {}
    if skipped:
        measured += "; not run there: " + ", ".join(f"{name} ({why})" for name, why in skipped.items())
    if serving.get("backend") in ("onnx", "openvino"):
        served = serving.get("file")
    else:
        served = "the PyTorch model" + (" in bfloat16" if serving.get("dtype") == "bfloat16" else "")
    cpu = serving.get("cpu", "its CPU")
    if serving.get("cpu_flags"):
        cpu += f" ({' '.join(serving['cpu_flags'])})"
    return [f"Encode speed measured by the export stage on {cpu} (sentences/s): "
            f"{measured}. There `trainer.serve` serves {served} by default: {serving.get('why', '')}. "
            "Speeds depend on the CPU (int8 gains most with AVX512-VNNI, bf16 needs AVX512-BF16 or AMX): on another "
            "machine, time them again (`benchmarks/export_bench.py`) and pick one with `--file` or `--int8`."]


def _usage(repo_id: str, facts: ModelFacts, onnx_files: Sequence[str], dims: Sequence[int],
           prompts: tuple[str, str] = ("", ""), serving: Mapping[str, Any] | None = None) -> str:
    """Our subsections of the usage section (sentence-transformers' own snippet comes first)."""
    q_kw = _prompt_kw(facts, ("query",), prompts[0])
    d_kw = _prompt_kw(facts, ("document", "passage", "corpus"), prompts[1])
    parts = ["### Retrieval (Sentence Transformers)", "", "```python",
             "from sentence_transformers import SentenceTransformer", "",
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
        if serving:
            parts += ["", *_serving_note(serving)]
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


# ------------------------------------------------------------------------- sentence-transformers' card

# SentenceTransformer._model_card_model_id_placeholder: the repo id its usage snippet shows until one is set
ST_MODEL_ID_PLACEHOLDER = "sentence_transformers_model_id"
# Its template's Model Description lines for what it does not know, e.g. <!-- - **License:** Unknown -->
_ST_UNKNOWN = re.compile(r"^<!-- - \*\*(?P<key>[^*]+):\*\* .*-->$", re.MULTILINE)


def _sections(markdown: str, level: int) -> list[list[str]]:
    """``markdown`` cut at its level-``level`` headings, outside code blocks and HTML comments (the template
    comments out optional sections): [title, text] pairs, the first titled '' (what precedes any heading)."""
    marker = "#" * level + " "
    out = [["", ""]]
    fence = comment = False
    for line in markdown.splitlines(keepends=True):
        if not comment and line.lstrip().startswith("```"):
            fence = not fence
        elif not fence:
            if comment:
                comment = "-->" not in line
            elif "<!--" in line:
                comment = "-->" not in line.split("<!--", 1)[1]
            elif line.startswith(marker):
                out.append([line[len(marker):].strip(), ""])
        out[-1][1] += line
    return out


def _after_heading(section: str) -> str:
    return section.split("\n", 1)[1] if "\n" in section else ""


def _model_details(section: str, known: Mapping[str, str], bullets: Sequence[str], extra: str) -> str:
    """sentence-transformers' Model Details with its Unknown placeholders filled, our bullets added to its Model
    Description and ``extra`` (a subsection) at the end."""
    section = _ST_UNKNOWN.sub(lambda m: f"- **{m['key']}:** {known[m['key']]}" if known.get(m["key"]) else m[0],
                              section)
    parts = _sections(section, 3)
    for part in parts:
        if part[0] == "Model Description":
            part[1] = part[1].rstrip("\n") + "\n" + "".join(f"{b}\n" for b in bullets) + "\n"
    return "".join(text for _, text in parts).rstrip("\n") + "\n\n" + extra + "\n"


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
    st_card: str,
    train_counts: Mapping[str, Any] | None = None,
    train_seconds: float | None = None,
    report: Mapping[str, Any] | None = None,
    datasets: Mapping[str, str] | None = None,
    onnx_files: Sequence[str] = (),
    versions: Mapping[str, str] | None = None,
    license_id: str | None = None,
    serving: Mapping[str, Any] | None = None,
) -> ModelCard:
    """The model card: ``st_card`` (the README.md sentence-transformers wrote for this model) with our metadata
    merged into its own and our sections added to its. ``datasets``: kind ('queries', 'training_set') -> repo id.
    ``serving``: the export stage's serving.json (the candidates' speeds on its CPU and the one it serves)."""
    counts = dict(train_counts or {})
    datasets = dict(datasets or {})
    status, regressed = verdict(report)
    dims = sorted(set(cfg.train.matryoshka_dims), reverse=True)
    st = ModelCard(st_card)
    theirs = st.data.to_dict()
    # Their model-index scores the validation split during training (shown in their section below); the
    # metadata carries our evaluation only, or nothing without one.
    for key in ("model-index", "metrics", "model_name", "eval_results"):
        theirs.pop(key, None)
    their_tags = list(theirs.get("tags") or [])
    tags = ["sentence-transformers", "sentence-similarity", "feature-extraction", "dense", "domain-embed",
            cfg.domain, "mteb"]
    if dims:
        tags.append("matryoshka")
    if onnx_files:
        tags.append("onnx")
    # dataset size and loss classes: their trainer's tags when present (the exact losses, e.g. the cached form)
    if counts.get("rows") and not any(t.startswith("dataset_size:") for t in their_tags):
        tags.append(f"dataset_size:{counts['rows']}")
    if not any(t.startswith("loss:") for t in their_tags):
        tags += [f"loss:{name}" for name in ("MultipleNegativesRankingLoss", "MatryoshkaLoss")
                 if name != "MatryoshkaLoss" or dims]
    model_name = f"{cfg.model.name.split('/')[-1]} fine-tuned for {cfg.domain} retrieval"
    base_model = cfg.model.name if "/" in cfg.model.name and not cfg.model.name.startswith(("/", ".")) else None
    data = ModelCardData(**{
        **theirs,  # widget examples, pipeline tag, ... as sentence-transformers wrote them
        "language": ["en"],
        "license": license_id or "other",
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": list(dict.fromkeys([*their_tags, *tags])),
        "base_model": base_model or theirs.get("base_model"),
        "datasets": [d for d in (datasets.get("training_set"), datasets.get("queries")) if d]
        or theirs.get("datasets"),
        "model_name": model_name,
        "eval_results": _eval_results(report, datasets) or None,
    })
    data.metrics = sorted({r.metric_type for r in data.eval_results or []}) or None

    hw = counts.get("device") or ("cuda" if cfg.train.profile != "cpu" else "cpu")
    seconds = counts.get("train_seconds") or train_seconds
    duration = f"{seconds / 60:.1f} minutes" if isinstance(seconds, int | float) else "not recorded"
    datasets_md = "\n".join(
        f"- {label}: [{datasets[k]}](https://huggingface.co/datasets/{datasets[k]})"
        for k, label in (("training_set", "training set"), ("queries", "synthetic queries")) if datasets.get(k)
    ) or "- not published (publish.push_datasets=false)"
    versions_md = ", ".join(f"{k}: {v}" for k, v in sorted((versions or {}).items())) or "not recorded"
    base_link = (f"[{data.base_model}](https://huggingface.co/{data.base_model})" if data.base_model
                 else f"`{cfg.model.name}`")
    intro = f"""# {model_name}

This is a [sentence-transformers](https://www.SBERT.net) model finetuned from {base_link} for **{cfg.domain}**
retrieval (the MTEB subcategory it specialises in), on synthetic queries and mined hard negatives built
from `{cfg.ingest.source}` by domain-embed, following NVIDIA's domain-specific
embedding recipe. It maps sentences and paragraphs to a {facts.embedding_dim or '?'}-dimensional dense
vector space for semantic search and retrieval.

"""
    known = {"Base model": base_link, "Language": "en", "License": data.license,
             "Training Dataset": (f"[{datasets['training_set']}](https://huggingface.co/datasets/"
                                  f"{datasets['training_set']})" if datasets.get("training_set") else "")}
    bullets = [f"- **Subcategory:** {cfg.domain}"]
    if dims:
        bullets.append(f"- **Matryoshka dimensions:** {', '.join(map(str, dims))}")
    if facts.n_parameters:
        bullets.append(f"- **Parameters:** {facts.n_parameters / 1e6:.1f}M")
    training_data = f"### Training data\n{datasets_md}\n- source corpus: `{cfg.ingest.source}`\n"
    usage = _usage(repo_id, facts, onnx_files, dims, (cfg.model.query_prompt, cfg.model.passage_prompt), serving)
    evaluation = _eval_section(report, status, regressed)
    contamination = _contamination_section(report, cfg) + "\n"
    recipe = (f"### Training recipe (domain-embed)\n{_hyperparameters(cfg, counts)}\n"
              f"- hardware profile: {cfg.train.profile}; device: {hw}\n- training time: {duration}\n"
              f"- package versions at training: {versions_md}\n\n")

    # Their sections in their order (title, details, architecture, usage, training details, versions,
    # citations), ours placed among them; a section their card lacks gets ours at the end.
    body = st.text.replace(f'SentenceTransformer("{ST_MODEL_ID_PLACEHOLDER}"', f'SentenceTransformer("{repo_id}"')
    sections = _sections(body, 2)
    titles = {title for title, _ in sections}
    out: list[str] = []
    pending = {"details": training_data, "usage": "## Usage\n\n" + usage + "\n",
               "evaluation": evaluation + "\n" + contamination, "training": "## Training Details\n\n" + recipe}
    for title, text in sections:
        if title == "":
            out.append(intro)  # their title and description, made specific
        elif title == "Model Details":
            out.append(_model_details(text, known, bullets, pending.pop("details")))
        elif title == "Usage":  # ours after their snippet, before the optional sections they comment out
            cut = text.find("\n<!--")
            cut = len(text) if cut < 0 else cut + 1
            out.append(text[:cut].rstrip("\n") + "\n\n" + usage + "\n" + text[cut:])
            pending.pop("usage")
            if "Evaluation" not in titles:
                out.append(pending.pop("evaluation"))
        elif title == "Evaluation":
            out.append(evaluation + "\nThe metrics below are sentence-transformers' validation during training, "
                       "on queries held out from the synthetic training set (not a benchmark).\n"
                       + _after_heading(text) + "\n" + contamination)
            pending.pop("evaluation", None)
        elif title == "Training Details":
            out.append("## Training Details\n\n" + recipe + _after_heading(text).lstrip("\n"))
            pending.pop("training")
        else:
            out.append(text)
    out += list(pending.values())
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "".join(out).strip() + "\n")
