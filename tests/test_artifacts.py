"""Downloads: what a run offers, zips built once per output fingerprint, and the pushed repositories' links."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO
from tests.hub_server import HubServer, cleanup
from tests.publish_fixtures import PLANTED_TOKEN, build_run
from trainer.artifacts import artifacts, build, pushed_links
from trainer.errors import InputError


@pytest.fixture
def hub():
    server = HubServer.start(token=PLANTED_TOKEN)
    yield server
    cleanup(server)


def _publish(server: HubServer, run_dir) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0", DOMAIN_EMBED_OFFLINE="0",
               TRANSFORMERS_OFFLINE="0", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HOME=str(run_dir.parent / "hf-home"),
               HF_TOKEN=PLANTED_TOKEN)
    return subprocess.run([sys.executable, "-m", "trainer", "publish", "-c", str(run_dir / "config.yaml"),
                           "--run-dir", str(run_dir)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_downloads_of_a_run_and_a_model_zip_that_loads(hub, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    run_dir = tmp_path / "run"
    assert artifacts(run_dir) == []
    with pytest.raises(InputError, match="nothing yet"):
        build(run_dir, "model.zip")
    build_run(run_dir)  # train (a real sentence-transformers folder), evaluate's report.json, export's ONNX files
    names = [a.name for a in artifacts(run_dir)]
    assert names == ["model.zip", "onnx.zip", "model.onnx", "model_qint8_avx512.onnx", "report.json"]
    assert next(a for a in artifacts(run_dir) if a.name == "model.zip").stage == "train"

    zipped = build(run_dir, "model.zip")
    assert zipped == run_dir / "downloads" / "model.zip"
    out = tmp_path / "unzipped"
    with zipfile.ZipFile(zipped) as zf:
        zf.extractall(out)
    model = SentenceTransformer(str(out / "model"), device="cpu")
    emb = model.encode(["how do statins work", "Statins inhibit HMG-CoA reductase."], normalize_embeddings=True)
    assert emb.shape == (2, 384) and float(emb[0] @ emb[1]) > 0.3
    # built once: the same output fingerprint gives the same file, untouched
    mtime = zipped.stat().st_mtime_ns
    assert build(run_dir, "model.zip").stat().st_mtime_ns == mtime
    assert build(run_dir, "report.json") == run_dir / "stages" / "evaluate" / "report.json"  # a file: as it is
    assert not list((run_dir / "downloads").glob("*.partial"))

    res = _publish(hub, run_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    arts = {a.name: a for a in artifacts(run_dir)}
    assert {"PUSH.md", "submission.zip"} <= set(arts) and arts["model.zip"].stage == "publish"
    rebuilt = build(run_dir, "model.zip")  # another source (the published folder, with its card): rebuilt
    with zipfile.ZipFile(rebuilt) as zf:
        assert "model/README.md" in zf.namelist() and "model/modules.json" in zf.namelist()
    with zipfile.ZipFile(build(run_dir, "submission.zip")) as zf:
        assert any(n.startswith("submission/") for n in zf.namelist())

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    links = dict(pushed_links(run_dir))
    model_link = next(url for label, url in links.items() if label.startswith("model: "))
    assert model_link.startswith(hub.url + "/") and "/datasets/" not in model_link
    assert any("/datasets/" in url for url in links.values())  # the queries and training set
    assert PLANTED_TOKEN not in str(links)
