"""The Space's UI. It holds no pipeline logic: every button builds a config and starts a background
job (``trainer.jobs``) that runs ``python -m trainer run --to STAGE``; a timer polls the job.

Steps: Domain -> Data -> Generate -> Mine -> Train -> Evaluate -> Publish & Export. A reload re-attaches
to the running job; one job at a time; Cancel stops it cleanly (the run stays resumable).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import Any

import gradio as gr

from trainer.config import QUERY_TYPES, load_config
from trainer.domain_ranking import domains_table, plot_domains
from trainer.domains import DOMAINS, SUBCATEGORIES
from trainer.errors import TrainerError
from trainer.jobs import JobManager
from trainer.logs import redact
from trainer.paths import data_dir
from trainer.pipeline import output_path
from trainer.pipeline import status as stage_status
from trainer.rundir import RunDir

DUPLICATE_HELP = (
    "**Run it on a GPU:** this Space runs on free CPU hardware, where only small runs finish quickly. "
    "Use *Duplicate this Space* (top-right menu), pick GPU hardware (a T4 is enough for MiniLM-size models), "
    "and add your Hub token as the secret `HF_TOKEN` (write access) to publish. The Train step detects the "
    "hardware and picks the matching profile (cpu / t4 / a100)."
)


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
    "domain", "source", "uploads", "run_dir", "endpoint", "endpoint_model", "generator", "questions_per_chunk",
    "query_types", "sample_documents", "mine_mode", "num_negatives", "margin", "profile", "epochs", "lr", "owner",
    "repo_name", "private", "onnx", "advanced",
)


def config_from(values: dict[str, Any]):
    """The pipeline config the UI's fields describe (the same config the CLI and YAML produce)."""
    run_dir = values["run_dir"] or "runs/space"
    source = values["source"]
    if values.get("uploads"):
        target = Path(run_dir) / "uploads"
        target.mkdir(parents=True, exist_ok=True)
        for f in values["uploads"]:
            shutil.copy2(f, target / Path(f).name)
        source = str(target)
    o = [f"domain={values['domain']}", f"run.dir={run_dir}", f"ingest.source={source}",
         f"generate.questions_per_chunk={int(values['questions_per_chunk'])}",
         f"mine.mode={values['mine_mode']}", f"mine.num_negatives={int(values['num_negatives'])}",
         f"mine.margin={float(values['margin'])}", f"train.profile={values['profile']}",
         f"train.epochs={float(values['epochs'])}", f"train.lr={float(values['lr'])}",
         f"publish.private={bool(values['private'])}", f"export.onnx={bool(values['onnx'])}"]
    types = [t for t in QUERY_TYPES if t in (values.get("query_types") or QUERY_TYPES)]
    if types != list(QUERY_TYPES):  # all three: the recipe's rotation (the config default)
        o.append(f"generate.query_types=[{', '.join(types)}]")
    if values.get("sample_documents"):
        o.append(f"generate.sample_documents={int(values['sample_documents'])}")
    if values.get("endpoint"):
        o += [f"generate.endpoint={values['endpoint']}", f"generate.model={values.get('endpoint_model') or 'tgi'}"]
    elif values.get("generator"):
        o.append(f"generate.generator={values['generator']}")
    if values.get("owner"):
        o.append(f"publish.owner={values['owner']}")
    if values.get("repo_name"):
        o.append(f"publish.name={values['repo_name']}")
    # Advanced: any other setting, one section.key=value per line (as --set on the command line)
    o += [line.strip() for line in (values.get("advanced") or "").splitlines() if line.strip()]
    return load_config(None, o)


class SpaceApp:
    def __init__(self, run_root: str = "runs/space", state_dir: str | None = None):
        self.run_root = run_root
        self.jobs = JobManager(state_dir or os.environ.get("DOMAIN_EMBED_SPACE_STATE", "runs/.space"))

    # --- actions -------------------------------------------------------------------------------

    def start(self, stage: str, *args, oauth_token: gr.OAuthToken | None = None) -> str:
        values = dict(zip(SETTINGS, args, strict=True))
        try:
            cfg = config_from(values)
            env = {cfg.publish.token_env: oauth_token.token} if oauth_token is not None else None
            job = self.jobs.start(cfg, stage, env=env)
        except TrainerError as exc:
            return f"**Not started:** {redact(str(exc))}"
        return f"Started: run up to **{stage}** in `{job.run_dir}` (pid {job.pid})."

    def cancel(self) -> str:
        job = self.jobs.cancel()
        if job is None:
            return "No job."
        return f"Job up to **{job.to}**: {job.status}. Re-run the same step to resume."

    def status(self) -> tuple[str, str, list[list[str]]]:
        job = self.jobs.current()
        if job is None:
            return "No job yet: pick a step and press its Run button.", "", []

        rows = []
        try:
            cfg = load_config(Path(job.run_dir) / "job-config.yaml")
            rows = [[name, state] for name, state in stage_status(cfg)]
        except TrainerError:
            pass
        head = f"Job up to **{job.to}** in `{job.run_dir}`: **{job.status}**"
        if job.returncode not in (None, 0):
            head += f" (exit code {job.returncode}; see the log)"
        return head, self.jobs.log_tail(30), rows

    # --- results -------------------------------------------------------------------------------

    def _run_dir(self) -> Path:
        job = self.jobs.current()
        return Path(job.run_dir) if job else Path(self.run_root)

    def counts(self, stage: str) -> dict[str, Any]:
        m = RunDir(self._run_dir()).manifest(stage)
        if not m:
            return {}
        return {"status": m.get("status"), **(m.get("counts") or {})}

    def sample_queries(self) -> list[list[Any]]:
        path = output_path(self._run_dir(), "generate", "queries")
        if not path.is_dir():
            return []
        import datasets

        ds = datasets.load_from_disk(str(path))
        return [[r["type"], r["query"], " ".join(r["hop_contexts"][0].split())[:240]]
                for r in ds.select(range(min(10, len(ds))))]

    def evaluation(self) -> tuple[str, list[str]]:
        report = output_path(self._run_dir(), "evaluate", "report.md")
        plots_dir = output_path(self._run_dir(), "evaluate", "plots")
        text = report.read_text() if report.is_file() else "No evaluation yet."
        plots = [str(p) for p in sorted(plots_dir.glob("*.png"))] if plots_dir.is_dir() else []
        return text, plots

    def domains(self) -> tuple[list[list[Any]], str | None, str]:
        try:
            rows = domains_table()
        except TrainerError as exc:
            return [], None, f"Domain ranking unavailable: {exc}"
        out = Path(self.run_root) / "domains.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        plot = str(plot_domains(rows, out))
        keys = list(rows[0]) if rows else []
        table = [[r.get(k) for k in keys] for r in rows]
        return table, plot, "Ranked by room for improvement: " + ", ".join(keys)


def build_demo(run_root: str = "runs/space", state_dir: str | None = None,
               defaults: dict[str, Any] | None = None) -> gr.Blocks:
    """The Space UI; ``defaults`` pre-fills settings (e.g. {"generator": ..., "sample_documents": 20})."""
    app = SpaceApp(run_root, state_dir)
    d = {"domain": "scientific", "generator": "qwen2.5-coder-0.5b-instruct-q4_k_m", "questions_per_chunk": 3,
         "sample_documents": 200, **(defaults or {})}
    on_space = bool(os.environ.get("SPACE_ID"))
    with gr.Blocks(title="Domain embedding specialist") as demo:
        gr.Markdown(
            "# Domain embedding specialist\n"
            "Turn a small general embedding model into a retrieval specialist for one domain: synthetic "
            "queries from your corpus, hard negatives, contrastive fine-tuning, MTEB evaluation, Hub publishing."
        )
        gr.Markdown(DUPLICATE_HELP)
        if on_space:
            gr.LoginButton()
        with gr.Row():
            job_status = gr.Markdown("No job yet.", elem_id="job-status")
            cancel = gr.Button("Cancel job", variant="stop", scale=0)
        inputs: dict[str, gr.components.Component] = {}
        with gr.Tab("1 Domain"):
            domains_btn = gr.Button("Rank the MTEB subcategories")
            domains_note = gr.Markdown()
            domains_table = gr.Dataframe(label="Room for improvement", interactive=False)
            domains_plot = gr.Image(label="Subcategories", type="filepath")
            inputs["domain"] = gr.Radio(list(SUBCATEGORIES), value=d["domain"],
                                        label="Subcategory")
        with gr.Tab("2 Data"):
            inputs["source"] = gr.Textbox(
                d.get("source") or default_corpus(d["domain"]),
                label="Corpus: folder, BEIR folder, hub:<dataset id>, builtin:python-docs, data:<name>",
            )
            inputs["uploads"] = gr.File(label="…or upload files (.txt .md .html .pdf .jsonl .csv .parquet)",
                                        file_count="multiple", type="filepath")
            inputs["run_dir"] = gr.Textbox(f"{run_root}/run", label="Run directory")
            ingest_btn = gr.Button("Run: ingest", variant="primary", elem_id="run-ingest")
            ingest_counts = gr.JSON(label="Ingest counts")
        with gr.Tab("3 Generate"):
            inputs["endpoint"] = gr.Textbox("", label="TGI endpoint URL (empty: the embedded llama.cpp server)",
                                            placeholder="https://xyz.endpoints.huggingface.cloud/v1")
            inputs["endpoint_model"] = gr.Textbox("tgi", label="Endpoint model name")
            inputs["generator"] = gr.Dropdown(
                ["qwen2.5-coder-0.5b-instruct-q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m",
                 "smollm2-135m-instruct-q4_1"], value=d["generator"],
                label="Embedded generator (offline weights)")
            inputs["questions_per_chunk"] = gr.Slider(1, 6, value=d["questions_per_chunk"], step=1,
                                                      label="Questions per chunk")
            inputs["query_types"] = gr.CheckboxGroup(
                list(QUERY_TYPES), value=d.get("query_types", list(QUERY_TYPES)), label="Query types "
                "(factual only: short claims/queries, as in claim-verification tasks such as SciFact)")
            inputs["sample_documents"] = gr.Number(d["sample_documents"], precision=0,
                                                   label="Sample of documents (0: all)")
            generate_btn = gr.Button("Run: generate", variant="primary", elem_id="run-generate")
            gen_counts = gr.JSON(label="Generation counts")
            gen_sample = gr.Dataframe(headers=["type", "query", "passage"], label="Sample queries",
                                      interactive=False, elem_id="sample-queries")
        with gr.Tab("4 Mine"):
            inputs["mine_mode"] = gr.Radio(["hybrid", "dense", "bm25"], value="hybrid", label="Negatives from")
            inputs["num_negatives"] = gr.Slider(1, 10, value=5, step=1, label="Hard negatives per query")
            inputs["margin"] = gr.Slider(0.8, 1.0, value=0.95, step=0.01, label="Margin (x lowest positive score)")
            mine_btn = gr.Button("Run: mine", variant="primary")
            mine_counts = gr.JSON(label="Mining counts")
        with gr.Tab("5 Train"):
            inputs["profile"] = gr.Radio(["cpu", "t4", "a100", "multi-gpu"], value=detect_profile(),
                                         label="Hardware profile (detected)")
            inputs["epochs"] = gr.Number(3, label="Epochs")
            inputs["lr"] = gr.Number(1e-5, label="Learning rate")
            train_btn = gr.Button("Run: train", variant="primary")
            train_counts = gr.JSON(label="Training counts")
        with gr.Tab("6 Evaluate"):
            evaluate_btn = gr.Button("Run: evaluate", variant="primary")
            eval_report = gr.Markdown()
            eval_plots = gr.Gallery(label="Plots", columns=3)
        with gr.Tab("7 Publish & Export"):
            inputs["owner"] = gr.Textbox("", label="Hub owner (user or organisation)")
            inputs["repo_name"] = gr.Textbox("", label="Repository base name (default: from the run)")
            inputs["private"] = gr.Checkbox(True, label="Private repositories")
            inputs["onnx"] = gr.Checkbox(True, label="Export ONNX (fp32 + int8)")
            gr.Markdown("The Hub token comes from the `HF_TOKEN` secret or your login; it is never shown "
                        "or written to disk. Without one, the files to push are written to the run directory.")
            export_btn = gr.Button("Run: export", variant="secondary")
            publish_btn = gr.Button("Run: publish", variant="primary")
            publish_counts = gr.JSON(label="Publish counts")
        with gr.Accordion("Advanced settings", open=False):
            inputs["advanced"] = gr.Textbox(
                d.get("advanced", ""), lines=4, label="Any other setting, one section.key=value per line "
                "(as `--set` on the command line; see the README's configuration reference)",
                placeholder="train.max_seq_length=256\nmine.candidates=100",
            )
        log = gr.Textbox(label="Live log", lines=14, max_lines=30, autoscroll=True)
        stages = gr.Dataframe(headers=["stage", "state"], label="Stages", interactive=False)

        settings = [inputs[k] for k in SETTINGS]
        inputs["domain"].change(default_corpus, inputs["domain"], inputs["source"])
        for stage, btn in (("ingest", ingest_btn), ("generate", generate_btn), ("mine", mine_btn),
                           ("train", train_btn), ("evaluate", evaluate_btn), ("export", export_btn),
                           ("publish", publish_btn)):
            btn.click(functools.partial(app.start, stage), settings, job_status, api_name=f"run_{stage}")
        cancel.click(app.cancel, None, job_status, api_name="cancel")
        domains_btn.click(app.domains, None, [domains_table, domains_plot, domains_note], api_name="domains")

        def refresh():
            head, text, rows = app.status()
            report, plots = app.evaluation()
            return (head, text, rows, app.counts("ingest"), app.counts("generate"), app.sample_queries(),
                    app.counts("mine"), app.counts("train"), report, plots, app.counts("publish"))

        outputs = [job_status, log, stages, ingest_counts, gen_counts, gen_sample, mine_counts, train_counts,
                   eval_report, eval_plots, publish_counts]
        gr.Timer(2.0).tick(refresh, None, outputs, api_name="status")
        demo.load(refresh, None, outputs)
    return demo
