"""Publish stage: pushes against a Hub-protocol test server on loopback, re-push without new commits,
retries and resume after failures, the token never written anywhere, and the no-token folders.

The pushes run in a subprocess (``python -m trainer publish``): huggingface_hub reads HF_ENDPOINT and
HF_HUB_DISABLE_XET when it is imported, and this test process imported it offline already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard, ModelCard

from hub_cards.model import ST_MODEL_ID_PLACEHOLDER
from tests.conftest import REPO
from tests.hub_server import HubServer, cleanup
from tests.publish_fixtures import PLANTED_TOKEN, build_run
from trainer.errors import StageError
from trainer.hub import checkpoint_hub_kwargs, hub_token_env
from trainer.publish import STAGE
from trainer.rundir import RunDir, run_stage

MODEL = "tester/minilm-medical-test"
QUERIES = "tester/minilm-medical-test-queries"
TRAINING = "tester/minilm-medical-test-training-set"


@pytest.fixture
def hub():
    server = HubServer.start(token=PLANTED_TOKEN)
    yield server
    cleanup(server)


def publish(server: HubServer, run_dir: Path, *sets: str, token: str = PLANTED_TOKEN, force: bool = False,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0", DOMAIN_EMBED_OFFLINE="0",
               TRANSFORMERS_OFFLINE="0", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HOME=str(run_dir.parent / "hf-home"),
               HF_TOKEN=token, **(extra_env or {}))
    args = [sys.executable, "-m", "trainer", "publish", "-c", str(run_dir / "config.yaml"), "--run-dir", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    if force:
        args.append("--force")
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def commits(server: HubServer, repo_id: str, repo_type: str = "model") -> list[str]:
    return [c.title for c in server.repo(repo_id, repo_type).commits]


def kind_name(repo_id: str) -> str:
    return {MODEL: "model", QUERIES: "queries", TRAINING: "training_set"}[repo_id]


def assert_token_nowhere(run_dir: Path, *outputs: str, token: str = PLANTED_TOKEN) -> None:
    for out in outputs:
        assert token not in out
    secret = token.encode()
    for file in run_dir.rglob("*"):
        if file.is_file():
            assert secret not in file.read_bytes(), file


def test_push_then_repush_creates_no_new_commit(hub, tmp_path):
    run_dir = tmp_path / "run"
    build_run(run_dir)
    first = publish(hub, run_dir)
    assert first.returncode == 0, first.stderr[-3000:]

    for repo_id, kind in ((MODEL, "model"), (QUERIES, "dataset"), (TRAINING, "dataset")):
        repo = hub.repo(repo_id, kind)
        assert repo.private
        assert commits(hub, repo_id, kind) == ["initial commit", f"domain-embed: publish {kind_name(repo_id)}"]
    model = hub.repo(MODEL).head.files
    local = run_dir / "stages/publish/model"
    assert model["model.safetensors"].sha256 is not None  # went through the LFS batch API + basic transfer
    assert hub.file_bytes(MODEL, "model.safetensors") == (local / "model.safetensors").read_bytes()
    assert {"onnx/model.onnx", "onnx/model_qint8_avx512.onnx", "1_Pooling/config.json", "README.md"} <= set(model)
    assert "training_args.json" not in model and not any(p.startswith("onnx/onnx") for p in model)
    assert "serving.json" not in model  # the export machine's choice: the card reports it instead
    card = ModelCard(hub.file_bytes(MODEL, "README.md").decode())
    assert "on Test CPU (sentences/s): pytorch 20.0, fp32 25.0, int8 40.0" in card.text
    assert card.data.datasets == [TRAINING, QUERIES] and card.data.eval_results
    assert f'SentenceTransformer("{MODEL}")' in card.text
    # sentence-transformers' card (written next to the weights by its trainer) with ours merged in
    assert "- **Maximum Sequence Length:** 256 tokens" in card.text and "### Full Model Architecture" in card.text
    assert "generated_from_trainer" in card.data.tags and "## Contamination disclosure" in card.text
    dcard = DatasetCard(hub.file_bytes(TRAINING, "README.md", "dataset").decode())
    assert dcard.data.configs[0]["data_files"][0]["path"] == "data/train-*"
    assert "data/train-00000-of-00001.parquet" in hub.repo(TRAINING, "dataset").head.files

    pushed = json.loads((run_dir / "stages/publish/pushed.json").read_text())
    assert pushed["model"]["commit"] == hub.repo(MODEL).head.oid and pushed["model"]["committed"]
    manifest = RunDir(run_dir).manifest("publish")
    assert manifest["counts"]["mode"] == "push" and manifest["counts"]["commits"] == 3
    sub = run_dir / f"stages/publish/submission/results/tester__minilm-medical-test/{hub.repo(MODEL).head.oid}"
    assert (sub / "SciFact.json").is_file() and (sub / "model_meta.json").is_file()

    # Same run again (forced): the remote already holds every file, so no commit anywhere.
    again = publish(hub, run_dir, force=True)
    assert again.returncode == 0, again.stderr[-3000:]
    for repo_id, kind in ((MODEL, "model"), (QUERIES, "dataset"), (TRAINING, "dataset")):
        assert len(commits(hub, repo_id, kind)) == 2
    pushed = json.loads((run_dir / "stages/publish/pushed.json").read_text())
    assert not any(v["committed"] for v in pushed.values())
    assert "no new commit" in again.stderr

    # A changed card (the datasets' licence) commits to the datasets only, and only their README.
    before = dict(hub.repo(QUERIES, "dataset").head.files)
    third = publish(hub, run_dir, "publish.license=cc-by-4.0")
    assert third.returncode == 0, third.stderr[-3000:]
    assert len(commits(hub, QUERIES, "dataset")) == 3 and len(commits(hub, TRAINING, "dataset")) == 3
    assert len(commits(hub, MODEL)) == 2
    after = hub.repo(QUERIES, "dataset").head.files
    assert {p for p in after if after[p] != before.get(p)} == {"README.md"}

    # The token was used (every push authenticated with it) and written nowhere.
    assert f"Bearer {PLANTED_TOKEN}" in hub.auth_headers
    assert_token_nowhere(run_dir, first.stdout, first.stderr, again.stdout, again.stderr, third.stdout, third.stderr)



def test_transient_failures_are_retried(hub, tmp_path):
    run_dir = tmp_path / "run"
    build_run(run_dir, evaluate=None, export=False)
    hub.fail_next.update({"commit": 1, "lfs_upload": 1, "preupload": 1})
    res = publish(hub, run_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not any(hub.fail_next.values())  # every injected fault was hit
    assert "retry 1/4" in (run_dir / "run.log").read_text()
    for repo_id, kind in ((MODEL, "model"), (QUERIES, "dataset"), (TRAINING, "dataset")):
        assert len(commits(hub, repo_id, kind)) == 2  # retries made no duplicate commit
    card = ModelCard(hub.file_bytes(MODEL, "README.md").decode())
    assert "has not been evaluated" in card.text and "improv" not in card.text.lower()


def test_interrupted_push_resumes_where_it_stopped(hub, tmp_path):
    run_dir = tmp_path / "run"
    build_run(run_dir)
    hub.fail_next[f"commit:{MODEL}"] = 10  # the model commit keeps failing
    failed = publish(hub, run_dir, "publish.max_retries=1")
    assert failed.returncode == 2
    assert "failed after 2 attempt(s)" in failed.stderr and "run the stage again" in failed.stderr
    m = RunDir(run_dir).manifest("publish")
    assert m["status"] == "failed" and "failed after 2 attempt(s)" in m["error"]  # resumable, with its reason
    pushed = json.loads((run_dir / "stages/publish/pushed.json").read_text())
    assert set(pushed) == {"queries", "training_set"}
    assert commits(hub, MODEL) == ["initial commit"]

    hub.fail_next.clear()
    resumed = publish(hub, run_dir, "publish.max_retries=1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    assert len(commits(hub, QUERIES, "dataset")) == 2 and len(commits(hub, TRAINING, "dataset")) == 2
    assert len(commits(hub, MODEL)) == 2
    manifest = RunDir(run_dir).manifest("publish")
    assert manifest["status"] == "complete" and manifest["counts"]["pushed"] == 3
    assert_token_nowhere(run_dir, failed.stdout, failed.stderr, resumed.stdout, resumed.stderr)


def test_a_rejected_token_is_an_actionable_error_that_does_not_show_it(hub, tmp_path):
    run_dir = tmp_path / "run"
    build_run(run_dir, evaluate=None, export=False, datasets=False)
    wrong = "hf_WrongButStillSecretToken987654321"
    res = publish(hub, run_dir, "publish.token_env=MY_HUB_TOKEN", token="",
                  extra_env={"MY_HUB_TOKEN": wrong})
    assert res.returncode == 2
    assert "refused the token in $MY_HUB_TOKEN (401)" in res.stderr and "write access" in res.stderr
    assert_token_nowhere(run_dir, res.stdout, res.stderr, token=wrong)
    assert hub.repos == {}


@pytest.mark.parametrize("mode", ["no_token", "dry_run", "offline"])
def test_without_a_push_it_writes_the_folders_and_the_push_commands(tmp_path, monkeypatch, mode):
    run_dir = tmp_path / "run"
    cfg = build_run(run_dir)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    if mode != "no_token":
        monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    if mode == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if mode == "dry_run":
        cfg = cfg.model_copy(update={"publish": cfg.publish.model_copy(update={"dry_run": True})})
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # never contacted
    counts = run_stage(STAGE, cfg, RunDir(run_dir)).manifest["counts"]
    assert counts["mode"] == mode and counts["pushed"] == 0 and counts["model_revision"] is None

    out = run_dir / "stages/publish"
    table = pq.read_table(out / "training_set/data/train-00000-of-00001.parquet")
    assert table.column_names == ["anchor", "positive", "negative_1", "negative_2"] and table.num_rows == 4
    assert pq.read_table(out / "queries/data/train-00000-of-00001.parquet").num_rows == 4
    assert (out / "model/model.safetensors").is_file() and (out / "model/onnx/model.onnx").is_file()
    owner = "YOUR_HF_USERNAME"
    commands = [line for line in (out / "PUSH.md").read_text().splitlines() if line.startswith("hf upload")]
    assert commands == [
        f"hf upload {owner}/minilm-medical-test-queries {(out / 'queries').resolve()} . --repo-type dataset --private "
        "--delete '*' --commit-message 'domain-embed: publish queries'",
        f"hf upload {owner}/minilm-medical-test-training-set {(out / 'training_set').resolve()} . --repo-type dataset "
        "--private --delete '*' --commit-message 'domain-embed: publish training_set'",
        f"hf upload {owner}/minilm-medical-test {(out / 'model').resolve()} . --repo-type model --private "
        "--delete '*' --commit-message 'domain-embed: publish model'",
    ]
    assert "set `publish.owner`" in (out / "PUSH.md").read_text()
    assert not (out / "pushed.json").exists()
    meta = json.loads(next((out / "submission/results").glob("*/no_revision_available/model_meta.json")).read_text())
    assert meta["revision"] == "no_revision_available" and "rename" in (out / "submission/SUBMIT.md").read_text()
    assert_token_nowhere(run_dir)


def test_a_file_holding_the_token_is_never_published(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = build_run(run_dir, evaluate=None, export=False, datasets=False)
    (run_dir / "stages/train/model/notes.txt").write_text(f"token={PLANTED_TOKEN}\n")
    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    with pytest.raises(StageError) as err:
        run_stage(STAGE, cfg, RunDir(run_dir))
    assert "notes.txt contains the Hub token" in str(err.value) and PLANTED_TOKEN not in str(err.value)


def test_a_file_holding_the_endpoint_token_is_never_published(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = build_run(run_dir, evaluate=None, export=False, datasets=False)
    endpoint_token = "tgi-Zx9Qm2LpR7tVbN4cKw8YjH3sDf6GaE1uW5"  # of no known shape: found by its value
    (run_dir / "stages/train/model/notes.txt").write_text(f"endpoint key {endpoint_token}\n")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("TGI_TOKEN", endpoint_token)
    cfg = cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"token_env": "TGI_TOKEN"})})
    with pytest.raises(StageError) as err:
        run_stage(STAGE, cfg, RunDir(run_dir))
    assert "notes.txt contains the value of $TGI_TOKEN" in str(err.value) and endpoint_token not in str(err.value)


def test_a_card_quoting_a_credential_is_never_published(tmp_path, monkeypatch):
    """A generate manifest from before the endpoint check held the endpoint URL with its user:password@."""
    run_dir = tmp_path / "run"
    cfg = build_run(run_dir, evaluate=None, export=False)
    manifest = run_dir / "stages/generate/manifest.json"
    data = json.loads(manifest.read_text())
    data["counts"]["generator"] = "endpoint:https://bob:s3cretpassword@tgi.example.com/v1|tgi"
    manifest.write_text(json.dumps(data))
    monkeypatch.delenv("HF_TOKEN", raising=False)  # no token: the folders are still checked before PUSH.md
    with pytest.raises(StageError, match=r"queries/README.md holds what looks like a credential") as err:
        run_stage(STAGE, cfg, RunDir(run_dir))
    assert "s3cretpassword" not in str(err.value)


def test_checkpoint_hub_kwargs(tmp_path, monkeypatch):
    from tests.publish_fixtures import make_config

    cfg = make_config(tmp_path / "run", "publish.push_checkpoints=true", "publish.owner=acme")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert checkpoint_hub_kwargs(cfg) == {"push_to_hub": False}  # no token
    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    expected = {"push_to_hub": True, "hub_model_id": "acme/minilm-medical-test-checkpoints",
                "hub_strategy": "checkpoint", "hub_private_repo": True}
    assert checkpoint_hub_kwargs(cfg) == expected
    # another variable: never a kwarg (the trainer pickles its arguments into every checkpoint), HF_TOKEN meanwhile
    other = make_config(tmp_path / "run", "publish.push_checkpoints=true", "publish.owner=acme",
                        "publish.token_env=MY_TOKEN")
    monkeypatch.setenv("MY_TOKEN", "hf_other_token_value_123")
    assert checkpoint_hub_kwargs(other) == expected
    with hub_token_env(other):
        assert os.environ["HF_TOKEN"] == "hf_other_token_value_123"
    assert os.environ["HF_TOKEN"] == PLANTED_TOKEN
    off = make_config(tmp_path / "run", "publish.owner=acme")
    assert checkpoint_hub_kwargs(off) == {"push_to_hub": False}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert checkpoint_hub_kwargs(cfg) == {"push_to_hub": False}


_TRAIN_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[2])
from tests.train_fixtures import FAKE_MINE, TINY
from trainer.config import load_config
from trainer.models import resolve_model
from trainer.rundir import RunDir, run_stage
from trainer.train import STAGE

base = resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True)  # the Hub here is the test server
cfg = load_config(None, [*TINY, "train.epochs=1", "train.val_fraction=0", "model.name=" + base,
                         "run.dir=" + sys.argv[1], "publish.push_checkpoints=true", "publish.name=tiny",
                         "publish.token_env=MY_HUB_TOKEN"])
run_stage(FAKE_MINE, cfg, RunDir(cfg.run.dir))
print(run_stage(STAGE, cfg, RunDir(cfg.run.dir)).manifest["counts"]["checkpoints_repo"])
"""


def test_train_stage_pushes_its_checkpoints_to_the_hub(hub, tmp_path):
    """publish.push_checkpoints: a real tiny training run pushes its checkpoint to <owner>/<name>-checkpoints."""
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0", DOMAIN_EMBED_OFFLINE="0",
               TRANSFORMERS_OFFLINE="0", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HOME=str(tmp_path / "hf-home"),
               MY_HUB_TOKEN=PLANTED_TOKEN)
    res = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(run_dir), str(REPO)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    repo_id = "tester/tiny-checkpoints"  # the owner from whoami; the model's own repo is the publish stage's
    assert res.stdout.strip().splitlines()[-1] == repo_id
    repo = hub.repo(repo_id)
    assert repo.private and ("model", "tester/tiny") not in hub.repos
    assert {c.title for c in repo.commits} >= {"Training in progress, step 2",
                                               "Training in progress, step 2, checkpoint"}
    files = repo.head.files
    # the resumable checkpoint under last-checkpoint/, the model itself (sentence-transformers layout) at the root
    assert {"last-checkpoint/model.safetensors", "last-checkpoint/optimizer.pt", "last-checkpoint/scheduler.pt",
            "last-checkpoint/trainer_state.json", "last-checkpoint/modules.json", "model.safetensors",
            "modules.json", "tokenizer.json", "1_Pooling/config.json"} <= set(files)
    assert json.loads(hub.file_bytes(repo_id, "last-checkpoint/trainer_state.json"))["global_step"] == 2
    final = (run_dir / "stages/train/model/model.safetensors").read_bytes()  # no validation: the last step's
    assert hub.file_bytes(repo_id, "last-checkpoint/model.safetensors") == final
    # the token: used for every request, written nowhere (not in the pickled training_args.bin either)
    assert hub.auth_headers == {f"Bearer {PLANTED_TOKEN}"}
    assert all(PLANTED_TOKEN.encode() not in hub.file_bytes(repo_id, p) for p in files)
    assert_token_nowhere(run_dir, res.stdout, res.stderr)
    # the trained model's card: its usage does not load the checkpoints repo (publish names the model's repo)
    card = (run_dir / "stages/train/model/README.md").read_text(encoding="utf-8")
    assert f'SentenceTransformer("{repo_id}")' not in card
    assert f'SentenceTransformer("{ST_MODEL_ID_PLACEHOLDER}")' in card


def test_submission_files_are_valid_mteb_data(tmp_path, monkeypatch):
    from mteb import TaskResult
    from mteb.models.model_meta import ModelMeta

    run_dir = tmp_path / "run"
    cfg = build_run(run_dir)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    run_stage(STAGE, cfg.model_copy(update={"publish": cfg.publish.model_copy(update={"owner": "acme"})}),
              RunDir(run_dir))
    sub = run_dir / "stages/publish/submission"
    rev = sub / "results/acme__minilm-medical-test/no_revision_available"
    result = TaskResult.from_disk(rev / "SciFact.json")
    assert result.task_name == "SciFact" and result.get_score() == pytest.approx(0.661)
    meta = json.loads((rev / "model_meta.json").read_text())
    fields = {k: v for k, v in meta.items() if k in ModelMeta.model_fields and k != "loader"}
    model_meta = ModelMeta(loader=None, **fields)
    assert model_meta.name == "acme/minilm-medical-test" and model_meta.embed_dim == 384
    assert model_meta.n_parameters == 22_713_216 and model_meta.max_tokens == 256
    assert model_meta.adapted_from == "sentence-transformers/all-MiniLM-L6-v2"
    assert "SciFact" in model_meta.training_datasets  # contamination disclosed to the leaderboard
    assert "ONNX" in model_meta.framework and model_meta.license == "apache-2.0"
    snippet = (sub / "mteb_model_meta.py").read_text()
    compile(snippet, "mteb_model_meta.py", "exec")
    assert 'embed_dim=[384, 128]' in snippet and '"SciFact"' in snippet
    guide = (sub / "SUBMIT.md").read_text()
    assert "embeddings-benchmark/results" in guide and "SciFact" in guide and "not zero-shot" in guide


_PROTOCOL_SCRIPT = """
import json, sys
from pathlib import Path
from datasets import Dataset
from huggingface_hub import HfApi, hf_hub_download

folder, out = Path(sys.argv[1]), {}
api = HfApi()
out["user"] = api.whoami()["name"]
api.create_repo("tester/folder-model", private=True)
for _ in range(2):  # the second upload of the same folder must not commit
    api.upload_folder(repo_id="tester/folder-model", folder_path=folder, commit_message="upload")
out["model_commits"] = [c.title for c in api.list_repo_commits("tester/folder-model")]
out["model_files"] = sorted(api.list_repo_files("tester/folder-model"))
ds = Dataset.from_dict({"anchor": ["a", "b"], "positive": ["c", "d"]})
for _ in range(2):
    ds.push_to_hub("tester/pushed-dataset", private=True)
out["dataset_commits"] = [c.title for c in api.list_repo_commits("tester/pushed-dataset", repo_type="dataset")]
out["dataset_files"] = sorted(api.list_repo_files("tester/pushed-dataset", repo_type="dataset"))
path = hf_hub_download("tester/folder-model", "weights.safetensors", cache_dir=str(folder.parent / "cache"))
out["roundtrip"] = Path(path).read_bytes() == (folder / "weights.safetensors").read_bytes()
print(json.dumps(out))
"""


def test_the_test_server_speaks_the_hub_protocol(hub, tmp_path):
    """huggingface_hub's upload_folder and datasets' push_to_hub, unchanged, against the test server."""
    folder = tmp_path / "folder"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "1_Pooling/config.json").write_text('{"word_embedding_dimension": 4}')
    (folder / "weights.safetensors").write_bytes(os.urandom(300_000))
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
           "HF_TOKEN": PLANTED_TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HOME": str(tmp_path / "hf-home")}
    res = subprocess.run([sys.executable, "-c", _PROTOCOL_SCRIPT, str(folder)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["user"] == "tester"
    assert out["model_commits"] == ["upload", "initial commit"]
    assert out["model_files"] == [".gitattributes", "1_Pooling/config.json", "weights.safetensors"]
    assert out["dataset_commits"] == ["Upload dataset", "initial commit"]
    assert out["dataset_files"] == [".gitattributes", "README.md", "data/train-00000-of-00001.parquet"]
    assert out["roundtrip"]
    assert hub.repo("tester/pushed-dataset", "dataset").private


def test_a_model_worse_than_its_base_is_not_pushed_without_the_override(hub, tmp_path):
    from tests.publish_fixtures import report_with_regression
    from trainer.publish import regression_verdict

    run_dir = tmp_path / "run"
    build_run(run_dir, evaluate=report_with_regression())
    shown = regression_verdict(run_dir)  # what the Space shows before publish
    assert not shown.ok and shown.status == "regression" and "SciFact (-4.50 points)" in shown.text
    refused = publish(hub, run_dir)
    assert refused.returncode != 0 and hub.repos == {}
    assert "nothing was pushed" in refused.stderr and "publish.allow_regression=true" in refused.stderr
    allowed = publish(hub, run_dir, "publish.allow_regression=true")
    assert allowed.returncode == 0, allowed.stderr
    card = hub.file_bytes(MODEL, "README.md").decode()
    assert "below its base model on SciFact" in card and "`publish.allow_regression=true`" in card


def test_a_change_within_the_tolerance_is_not_a_regression(tmp_path):
    from tests.publish_fixtures import REPORT_IMPROVED
    from trainer.leaderboard import compare, to_markdown
    from trainer.publish import verdict_of_report

    rows = [{"task": "SciFact", "base": 0.6451, "tuned": 0.6443}, {"task": "AILAStatutes", "base": 0.2, "tuned": 0.21}]
    report = compare(rows, tolerance=0.003)  # the default evaluate.regression_tolerance
    assert report["regressions"] == []
    assert "within the tolerance: SciFact -0.0008" in to_markdown(report) and "REGRESSION" not in to_markdown(report)
    v = verdict_of_report(report, 0.003)
    assert v.ok and v.status == "no_regression" and "SciFact -0.08" in v.text
    assert not verdict_of_report(report, 0.0).ok  # with no tolerance it would be one
    assert verdict_of_report(REPORT_IMPROVED, 0.003).status == "improved"
    assert verdict_of_report(None, 0.003).status == "not_evaluated"
