"""What a run offers for download, and the zips of its folders.

:func:`artifacts` lists what can be downloaded now (outputs of finished stages only): the fine-tuned model
(zip), the ONNX export (zip, and its fp32/int8 files), the evaluation report (md, json, plots), PUSH.md and
the leaderboard submission folder (zip). :func:`build` returns the file to send: a file output as it is,
a folder zipped into ``<run>/downloads/<name>`` (atomically; rebuilt only when the stage's recorded
fingerprint of that output changed). :func:`pushed_links` lists the Hub repositories the publish stage
pushed. Every path comes from :func:`trainer.pipeline.output_path` (the stage contracts).

Example::

    >>> import tempfile
    >>> artifacts(tempfile.mkdtemp())  # nothing finished yet
    []
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import InputError
from trainer.pipeline import output_path
from trainer.rundir import RunDir

DOWNLOADS = "downloads"
_HUB_PATHS = {"model": "", "dataset": "datasets/", "space": "spaces/"}


@dataclass(frozen=True)
class Artifact:
    name: str  # the downloaded file's name: model.zip, report.md, model_qint8_avx512_vnni.onnx, ...
    label: str  # what the page shows
    path: Path  # the stage output (a file, or a folder that build() zips)
    stage: str = ""
    output: str = ""  # the stage's declared output holding it (its fingerprint decides a rebuild)

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


def _finished(run_dir: Path, stage: str) -> bool:
    return RunDir(run_dir).is_complete(stage)


def artifacts(run_dir: str | Path) -> list[Artifact]:
    """What can be downloaded from ``run_dir`` now, in the order a page shows it."""
    run_dir = Path(run_dir)
    found: list[Artifact] = []

    def add(name: str, label: str, stage: str, output: str, sub: str = "") -> None:
        if not _finished(run_dir, stage):
            return
        path = output_path(run_dir, stage, output)
        path = path / sub if sub else path
        if path.exists():
            found.append(Artifact(name, label, path, stage, output))

    # the model: the published folder (its card names the Hub repo) once publish ran, else the trained one
    if _finished(run_dir, "publish") and output_path(run_dir, "publish", "model").is_dir():
        add("model.zip", "Fine-tuned model (sentence-transformers folder, zip)", "publish", "model")
    else:
        add("model.zip", "Fine-tuned model (sentence-transformers folder, zip)", "train", "model")

    add("onnx.zip", "ONNX export (sentence-transformers folder with onnx/, zip)", "export", "onnx")
    if _finished(run_dir, "export"):
        onnx_dir = output_path(run_dir, "export", "onnx") / "onnx"
        for f in sorted(onnx_dir.glob("*.onnx")) if onnx_dir.is_dir() else []:
            kind = "fp32" if f.name == "model.onnx" else "int8" if "int8" in f.name else "optimized"
            add(f.name, f"ONNX {kind} ({f.name})", "export", "onnx", f"onnx/{f.name}")

    add("report.md", "Evaluation report (Markdown)", "evaluate", "report.md")
    add("report.json", "Evaluation report (JSON)", "evaluate", "report.json")
    if _finished(run_dir, "evaluate"):
        plots = output_path(run_dir, "evaluate", "plots")
        for f in sorted(plots.glob("*.png")) if plots.is_dir() else []:
            add(f.name, f"Plot: {f.stem.replace('_', ' ')}", "evaluate", "plots", f.name)

    add("PUSH.md", "Push commands (PUSH.md)", "publish", "PUSH.md")
    add("submission.zip", "MTEB leaderboard submission folder (zip)", "publish", "submission")
    return found


def _fingerprint(run_dir: Path, art: Artifact) -> str:
    m = RunDir(run_dir).manifest(art.stage) or {}
    recorded = (m.get("outputs") or {}).get(art.output)
    # a manifest without per-output fingerprints: the stage's whole-folder one, else its finish time
    return str(recorded or m.get("output_fingerprint") or m.get("finished"))


def build(run_dir: str | Path, name: str) -> Path:
    """The file to download for artifact ``name``: a file output itself, a folder zipped into
    ``<run>/downloads/<name>`` (written to a temporary file and renamed, so a reader never sees half a zip;
    kept while the stage's fingerprint of the output is the one it was built from)."""
    run_dir = Path(run_dir)
    art = next((a for a in artifacts(run_dir) if a.name == name), None)
    if art is None:
        available = ", ".join(a.name for a in artifacts(run_dir)) or "nothing yet (no stage has finished)"
        raise InputError(f"{name!r} cannot be downloaded from this run now; available: {available}")
    if not art.is_folder:
        return art.path
    dest_dir = run_dir / DOWNLOADS
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest, stamp = dest_dir / name, dest_dir / f"{name}.json"
    fp = _fingerprint(run_dir, art)
    try:
        if dest.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("fingerprint") == fp:
            return dest
    except (OSError, ValueError):
        pass  # no stamp, or a torn one: rebuild
    top = Path(name).stem  # model.zip unpacks to model/
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=dest_dir)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(art.path.rglob("*")):
                if f.is_file() and "_work" not in f.relative_to(art.path).parts:
                    zf.write(f, f"{top}/{f.relative_to(art.path).as_posix()}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    stamp_tmp = stamp.with_name(stamp.name + ".tmp")
    stamp_tmp.write_text(json.dumps({"fingerprint": fp, "source": str(art.path)}), encoding="utf-8")
    os.replace(stamp_tmp, stamp)
    return dest


def pushed_links(run_dir: str | Path) -> list[tuple[str, str]]:
    """(label, URL) of each repository the publish stage pushed (publish/pushed.json), e.g.
    ``("model: alice/minilm-legal", "https://huggingface.co/alice/minilm-legal")``."""
    path = output_path(run_dir, "publish", "pushed.json")
    try:
        pushed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    links = []
    for kind, entry in pushed.items():
        if not isinstance(entry, dict) or not entry.get("repo_id"):
            continue
        prefix = _HUB_PATHS.get(entry.get("repo_type") or "model", "")
        links.append((f"{kind.replace('_', ' ')}: {entry['repo_id']}", f"{endpoint}/{prefix}{entry['repo_id']}"))
    return links
