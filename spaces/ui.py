"""The Space's UI. It holds no pipeline logic: buttons call ``trainer.pipeline.run_pipeline``.

Stages appear here as they land in the pipeline (today: Data / ingest).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from trainer.config import load_config
from trainer.errors import TrainerError
from trainer.logs import redact
from trainer.pipeline import run_pipeline

DEFAULT_SOURCE = "builtin:python-docs"


def ingest_action(source: str, uploads: list[str] | None, run_dir: str, progress=gr.Progress()):  # noqa: B008
    """Run the ingest stage on a source or uploaded files; returns (status, counts, sample rows)."""
    import datasets

    try:
        if uploads:
            target = Path(run_dir) / "uploads"
            target.mkdir(parents=True, exist_ok=True)
            for f in uploads:
                shutil.copy2(f, target / Path(f).name)
            source = str(target)
        cfg = load_config(None, [f"ingest.source={source}", f"run.dir={run_dir}"])
        outcome = run_pipeline(cfg, only="ingest", progress=lambda msg, frac: progress(frac or 0, desc=msg))[0]
    except TrainerError as exc:
        return f"**Error:** {redact(str(exc))}", {}, []
    chunks = datasets.load_from_disk(str(Path(run_dir) / "stages" / "ingest" / "chunks"))
    head = chunks.select(range(min(10, len(chunks))))
    sample = [[r["doc_id"], r["title"], r["text"][:300], r["n_tokens"]] for r in head]
    return f"Ingest **{outcome.action}**: `{run_dir}/stages/ingest`", outcome.manifest.get("counts", {}), sample


def build_demo(run_root: str = "runs/space") -> gr.Blocks:
    with gr.Blocks(title="Domain embedding specialist") as demo:
        gr.Markdown(
            "# Domain embedding specialist\n"
            "Turn a general embedding model into a specialist for your domain's retrieval tasks. "
            "Duplicate this Space to GPU hardware for full-size runs."
        )
        with gr.Tab("Data"):
            source = gr.Textbox(
                DEFAULT_SOURCE, label="Corpus: folder, BEIR folder, hub:<dataset id>, builtin:python-docs"
            )
            uploads = gr.File(label="…or upload files (.txt .md .html .pdf .jsonl .csv .parquet)",
                              file_count="multiple", type="filepath")
            run_dir = gr.Textbox(run_root, label="Run directory")
            go = gr.Button("Ingest and chunk", variant="primary")
            status = gr.Markdown()
            counts = gr.JSON(label="Counts")
            sample = gr.Dataframe(headers=["doc_id", "title", "text", "tokens"], label="Sample chunks")
            go.click(ingest_action, [source, uploads, run_dir], [status, counts, sample], api_name="ingest")
    return demo
