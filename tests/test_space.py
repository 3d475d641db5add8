"""The Space: built from spaces/, driven through gradio_client like a user's browser would, plus its
sign-in path against the loopback Hub-protocol server and a start-up with SPACE_ID and OAuth set."""

import os
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import pytest

from spaces.sessions import for_visitor, job_token_env, owner_key, share_space_token
from spaces.ui import SETTINGS, SpaceApp, config_from, rerun_changes, values_from_config
from tests.conftest import REPO
from trainer.errors import TrainerError
from trainer.generators import PROVIDER_MODELS, generator_kind
from trainer.jobs import job_environment
from trainer.logs import HUB_TOKEN_ENVS

SESSION_A, SESSION_B = "a" * 32, "b" * 32


def values(**over):
    v = {
        "domain": "code", "source": "builtin:python-docs", "uploads": None, "gen_kind": "embedded",
        "provider": "auto", "provider_model": PROVIDER_MODELS[0][0], "ie_name": "",
        "ie_repository": "Qwen/Qwen2.5-7B-Instruct", "ie_instance": "aws/nvidia-l4/x1", "ie_region": "us-east-1",
        "endpoint": "", "endpoint_model": "tgi", "generator": "smollm2-135m-instruct-q4_1",
        "questions_per_chunk": 1, "query_types": ["factual", "contextual", "multi_hop"], "sample_documents": 2,
        "mine_mode": "hybrid", "num_negatives": 2,
        "margin": 0.95, "profile": "cpu", "epochs": 1, "lr": 1e-5, "owner": "", "repo_name": "", "private": True,
        "onnx": True, "advanced": "", "queries_file": None, "queries_source": "", "queries_use": "both",
        "queries_ratio": 0, "allow_regression": False,
    }
    v.update(over)
    return v


def settings(**over):
    v = values(**over)
    return [v[k] for k in SETTINGS]


def test_ui_fields_make_the_same_config_as_the_cli(tmp_path):
    cfg = config_from(values(gen_kind="endpoint", endpoint="http://127.0.0.1:9/v1"), tmp_path)
    assert cfg.domain == "code" and cfg.ingest.source == "builtin:python-docs" and cfg.run.dir == tmp_path
    assert cfg.generate.endpoint == "http://127.0.0.1:9/v1" and cfg.generate.sample_documents == 2
    assert cfg.mine.num_negatives == 2 and cfg.train.profile == "cpu" and cfg.publish.private is True
    assert cfg.generate.query_types is None  # all three ticked: the recipe's rotation
    claims = config_from(values(query_types=["factual"]), tmp_path)
    assert claims.generate.query_types == ["factual"]


def test_the_generator_section_makes_provider_and_endpoint_configs(tmp_path):
    cfg = config_from(values(gen_kind="provider", provider="together", provider_model="Qwen/Qwen2.5-72B-Instruct"),
                      tmp_path)
    assert generator_kind(cfg) == "provider" and cfg.generate.provider == "together"
    assert cfg.generate.model == "Qwen/Qwen2.5-72B-Instruct"
    ie = config_from(values(gen_kind="inference_endpoint", ie_name="my-writer", ie_instance="aws/nvidia-a10g/x1",
                            ie_region="eu-west-1"), tmp_path)
    spec = ie.generate.inference_endpoint
    assert generator_kind(ie) == "inference_endpoint" and spec.name == "my-writer"
    assert (spec.vendor, spec.instance_type, spec.instance_size, spec.region) == ("aws", "nvidia-a10g", "x1",
                                                                                  "eu-west-1")
    for cfg_, kind in ((cfg, "provider"), (ie, "inference_endpoint")):  # a reload shows the same choice
        back = values_from_config(cfg_, tmp_path)
        assert back["gen_kind"] == kind and config_from(back, tmp_path) == cfg_
    with pytest.raises(TrainerError, match="name your Inference Endpoint"):
        config_from(values(gen_kind="inference_endpoint"), tmp_path)


def test_on_the_space_a_visitors_endpoint_url_cannot_reach_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/domain-embed")
    for bad in ("http://example.org/v1", "https://127.0.0.1:8080/v1", "https://localhost/v1",
                "https://10.0.0.5/v1", "https://169.254.169.254/latest"):
        with pytest.raises(TrainerError, match="endpoint URL"):
            config_from(values(gen_kind="endpoint", endpoint=bad), tmp_path)
    ok = config_from(values(gen_kind="endpoint", endpoint="https://xyz.endpoints.huggingface.cloud/v1"), tmp_path)
    assert ok.generate.endpoint == "https://xyz.endpoints.huggingface.cloud/v1"


def test_a_public_spaces_token_is_not_lent_to_visitors(monkeypatch):
    """Signed in: the visitor's own token in every token variable. Not signed in on a public Space: the Space's
    HF_TOKEN secret is removed from the job's environment (nobody publishes or pays with the owner's token)."""
    monkeypatch.setenv("HF_TOKEN", "hf_SpaceOwnersSecretToken0123456789")
    monkeypatch.setenv("DOMAIN_EMBED_SPACE_SHARE_TOKEN", "0")
    share_space_token.cache_clear()
    try:
        assert job_token_env("hf_visitor") == dict.fromkeys(HUB_TOKEN_ENVS, "hf_visitor")
        env = job_environment(job_token_env(None, ("MY_TOKEN",)))
        assert not {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACEHUB_API_TOKEN", "MY_TOKEN"} & set(env)
        monkeypatch.setenv("DOMAIN_EMBED_SPACE_SHARE_TOKEN", "1")  # a duplicated private Space: its owner's
        share_space_token.cache_clear()
        assert job_environment(job_token_env(None))["HF_TOKEN"] == "hf_SpaceOwnersSecretToken0123456789"
        monkeypatch.delenv("DOMAIN_EMBED_SPACE_SHARE_TOKEN")
        monkeypatch.setenv("SPACE_ID", "someone/domain-embed")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # visibility cannot be checked: treated as public
        share_space_token.cache_clear()
        assert share_space_token() is False
    finally:
        share_space_token.cache_clear()


def test_visitors_cannot_point_the_space_at_server_folders(tmp_path):
    for bad in ({"source": "/etc"}, {"source": str(tmp_path)}, {"advanced": "run.dir=/tmp/other"},
                {"advanced": "publish.token_env=AWS_SECRET"}, {"advanced": "evaluate.beir_dir=/data/x"},
                {"advanced": "ingest.source=/srv"}, {"source": "uploads"}):
        with pytest.raises(TrainerError):
            config_from(values(**bad), tmp_path)
    upload = tmp_path / "notes.md"
    upload.write_text("# Notes\n\nSome text.\n")
    cfg = config_from(values(uploads=[str(upload)], source="data:scifact"), tmp_path / "run")
    assert cfg.ingest.source == str(tmp_path / "run" / "uploads")  # uploads win, into the visitor's run
    # and their embeddings stay in the visitor's run, not in the server's shared embedding cache
    assert not cfg.run.embedding_cache and not cfg.evaluate.embedding_cache


def test_your_own_queries_and_the_regression_override_from_the_form(tmp_path):
    """The Data tab's Your queries box: an upload is copied into the visitor's run and read from there; a Hub
    dataset by name; server paths and other file types refused; the form fills back after a reload."""
    upload = tmp_path / "search-log.jsonl"
    upload.write_text('{"query": "statins liver", "doc_id": "d1"}\n')
    run = tmp_path / "run"
    cfg = config_from(values(queries_file=str(upload), queries_use="train", queries_ratio=0.5,
                             allow_regression=True), run)
    assert cfg.queries.source == str(run / "query-uploads" / "search-log.jsonl")
    assert (run / "query-uploads" / "search-log.jsonl").read_text() == upload.read_text()
    assert (cfg.queries.use, cfg.queries.ratio, cfg.publish.allow_regression) == ("train", 0.5, True)
    back = values_from_config(cfg, run)
    assert (back["queries_source"], back["queries_use"], back["queries_ratio"]) == ("query-uploads", "train", 0.5)
    assert back["advanced"] == "" and config_from(back, run) == cfg  # a reload keeps using the uploaded file
    hub = config_from(values(queries_source="hub:me/search-log", queries_use="eval"), run)
    assert (hub.queries.source, hub.queries.use, hub.queries.ratio) == ("hub:me/search-log", "eval", None)
    assert config_from(values(), run).queries.source is None and not config_from(values(), run).publish.allow_regression
    bad_type = tmp_path / "queries.txt"
    bad_type.write_text("x")
    for bad, message in (({"queries_source": "/etc/passwd"}, "upload a .jsonl/.csv file"),
                         ({"queries_source": "notes.jsonl"}, "upload a .jsonl/.csv file"),
                         ({"queries_file": str(bad_type)}, "not a .jsonl or .csv file"),
                         ({"queries_source": "query-uploads"}, None),  # nothing uploaded in that run
                         ({"advanced": "queries.source=q.jsonl"}, "cannot be changed on the Space"),
                         ({"queries_source": "hub:me/x", "queries_ratio": 2}, "between 0 and 1")):
        with pytest.raises(TrainerError, match=message):
            config_from(values(**bad), tmp_path / "other-run")


def test_the_publish_tab_shows_the_regression_verdict_before_publishing(tmp_path):
    from tests.publish_fixtures import REPORT_IMPROVED, build_run, report_with_regression

    app = SpaceApp(tmp_path / "space")
    owner = "anon-" + SESSION_A
    assert "run **evaluate** first" in app.verdict(owner)
    build_run(app.run_dir(owner), evaluate=report_with_regression())
    shown = app.verdict(owner)
    assert "Worse than its base model" in shown and "SciFact (-4.50 points)" in shown
    assert "Publish even if it is worse than the base model" in shown and "allow_regression" not in shown
    other = "anon-" + SESSION_B
    build_run(app.run_dir(other), evaluate=REPORT_IMPROVED)
    assert app.verdict(other).startswith("✅ **Never below base.**")


def test_owner_keys_are_safe_path_components():
    assert owner_key("alice", SESSION_A) == "user-alice"  # the sign-in wins over the browser session
    assert owner_key(None, SESSION_A) == "anon-" + SESSION_A
    for bad in ("../x", "", "A" * 32, "a" * 31, "a/" + "a" * 30):
        assert owner_key(None, bad) is None
    assert owner_key("../root", SESSION_A) is None


def test_the_form_fills_back_from_the_job_config(tmp_path):
    """What a reload shows: the fields of the run's config, other settings in the Advanced box."""
    v = values(domain="legal", source="uploads", questions_per_chunk=2, query_types=["factual"], epochs=2,
               advanced="train.max_seq_length=200\nmine.candidates=30")
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "a.txt").write_text("text")
    cfg = config_from(v, tmp_path)
    back = values_from_config(cfg, tmp_path)
    assert sorted(back.pop("advanced").splitlines()) == ["mine.candidates=30", "train.max_seq_length=200"]
    assert back == {k: x for k, x in v.items() if k != "advanced"}
    assert config_from({**back, "advanced": "train.max_seq_length=200\nmine.candidates=30"}, tmp_path) == cfg


def test_messages_name_space_controls_not_the_cli(tmp_path):
    msg = for_visitor(f"re-run it (`python -m trainer ingest --force`) or see {tmp_path}/stages/x", tmp_path)
    assert "python -m" not in msg and "--force" not in msg and str(tmp_path) not in msg
    assert "ingest step's Run button" in msg


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from spaces.ui import build_demo

    root = tmp_path_factory.mktemp("space")
    demo = build_demo(root)
    demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield demo, root
    demo.close()


def wait_done(app: SpaceApp, owner: str, timeout=600):
    job = app.pool.manager(owner).wait(timeout=timeout)
    return app.job_line(owner, job)


def test_two_sessions_run_apart_and_a_changed_setting_asks_first(served):
    """Session A ingests; session B sees no job and cannot cancel A's; a changed chunking setting for A
    asks before re-running the finished ingest, and the second press runs it."""
    from gradio_client import Client

    demo, root = served
    app = demo.space_app
    a, b = Client(demo.local_url, verbose=False), Client(demo.local_url, verbose=False)
    owner_a = "anon-" + SESSION_A
    out = a.predict(SESSION_A, *settings(), api_name="/run_ingest")
    assert "Started" in out, out
    assert "No job yet" in b.predict(SESSION_B, api_name="/status")[1]
    assert "No job" in b.predict(SESSION_B, api_name="/cancel")
    assert app.pool.manager(owner_a).current().status == "running"
    assert "finished" in wait_done(app, owner_a)
    assert (root / owner_a / "run" / "stages" / "ingest" / "manifest.json").is_file()
    assert not (root / ("anon-" + SESSION_B) / "run").exists()

    same = a.predict(SESSION_A, *settings(), api_name="/run_ingest")
    assert "Started" in same  # nothing changed: a no-op run, no question
    wait_done(app, owner_a)
    changed = settings(advanced="ingest.chunk_sentences=3")
    ask = a.predict(SESSION_A, *changed, api_name="/run_ingest")
    assert "differ from your finished run" in ask and "chunk_sentences" in ask, ask
    assert app.pool.manager(owner_a).current().status == "finished"  # nothing started, nothing archived
    assert not (root / owner_a / "run" / "archive").exists()
    go = a.predict(SESSION_A, *changed, api_name="/run_ingest")
    assert "Started" in go, go
    assert "finished" in wait_done(app, owner_a)
    assert (root / owner_a / "run" / "archive").is_dir()  # the earlier ingest, kept
    assert rerun_changes(app.job_config(owner_a), "ingest") == []


def test_bad_input_is_reported_not_raised(served):
    from gradio_client import Client

    demo, root = served
    client = Client(demo.local_url, verbose=False)
    out = client.predict("c" * 32, *settings(source="/etc"), api_name="/run_ingest")
    assert "Not started" in out and "hub:<dataset id>" in out
    out = client.predict("c" * 32, *settings(source="data:no-such-corpus"), api_name="/run_ingest")
    assert "Started" in out
    line = wait_done(demo.space_app, "anon-" + "c" * 32)
    assert "failed" in line and str(root) not in line, line


def test_a_signed_in_job_pushes_with_the_login_token_to_the_users_namespace(tmp_path, monkeypatch):
    """The run function's declared gr.OAuthProfile / gr.OAuthToken reach the job: the publish stage
    pushes with that token (never the HF_TOKEN secret) under the signed-in user's name."""
    from tests.hub_server import HubServer, cleanup
    from tests.publish_fixtures import build_run

    token = "hf_OAuthLoginTokenForAlice0123456789"
    hub = HubServer.start(token=token)
    hub.user = "alice"
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        for k, v in {"HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "DOMAIN_EMBED_OFFLINE": "0",
                     "TRANSFORMERS_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                     "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": "hf_TheSpaceSecretNotAlice000000"}.items():
            monkeypatch.setenv(k, v)
        app = SpaceApp(tmp_path / "root", scheduler=False)
        run_dir = app.run_dir("user-alice")
        cfg = build_run(run_dir)
        (run_dir / "job-config.yaml").write_text(cfg.to_yaml())
        profile = gr.OAuthProfile({"preferred_username": "alice", "name": "Alice", "picture": "", "profile": ""})
        oauth = gr.OAuthToken(token=token, scope="openid profile manage-repos", expires_at=int(time.time()) + 3600)
        msg, _ = app.start("publish", "", "", profile, oauth, values(owner="", private=True))
        assert msg.startswith("Started"), msg
        job = app.pool.manager("user-alice").wait(timeout=300)
        assert job.status == "finished", app.pool.manager("user-alice").log_tail(40)
        assert hub.repo("alice/minilm-medical-test").private
        assert f"Bearer {token}" in hub.auth_headers
        assert not any("TheSpaceSecret" in h for h in hub.auth_headers)
        assert "alice/minilm-medical-test](" in app.published("user-alice")
        for f in run_dir.rglob("*"):
            if f.is_file():
                assert token.encode() not in f.read_bytes(), f
    finally:
        cleanup(hub)


def _start_app(tmp_path, extra):
    script = (
        "import urllib.request, urllib.error\n"
        "from spaces.ui import build_demo\n"
        f"demo = build_demo({str(tmp_path / 'root')!r})\n"
        "demo.queue().launch(server_name='127.0.0.1', prevent_thread_lock=True, quiet=True)\n"
        "assert urllib.request.urlopen(demo.local_url).status == 200\n"
        "class NoRedirect(urllib.request.HTTPRedirectHandler):\n"
        "    def redirect_request(self, *a, **k): return None\n"
        "try:\n"
        "    r = urllib.request.build_opener(NoRedirect).open(demo.local_url + 'login/huggingface')\n"
        "    code, where = r.status, ''\n"
        "except urllib.error.HTTPError as e:\n"
        "    code, where = e.code, e.headers.get('location', '')\n"
        "print('LOGIN', code, 'Sign in with Hugging Face' in str(demo.config['components']), where)\n"
        "demo.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf-home"))
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    code, button, *where = out.stdout.split("LOGIN")[1].split()
    return int(code), button == "True", (where or [""])[0]


def test_the_app_starts_on_a_space_with_oauth(tmp_path):
    """A Space with `hf_oauth: true` (SYSTEM=spaces, SPACE_ID and the OAUTH_* variables): the page serves,
    with the sign-in button and gradio's OAuth login route (it redirects to the Hub; gradio's oauth extra
    is installed). With SPACE_ID alone, off a Space and without a local Hub login, it starts too."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Provider(BaseHTTPRequestHandler):  # the Hub's OpenID metadata, as authlib fetches it
        def do_GET(self):
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            body = json.dumps({"issuer": base, "authorization_endpoint": base + "/oauth/authorize",
                               "token_endpoint": base + "/oauth/token", "jwks_uri": base + "/jwks"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    provider = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{provider.server_address[1]}"
    try:
        code, button, where = _start_app(tmp_path, {
            "SYSTEM": "spaces", "SPACE_ID": "tester/domain-embed", "OAUTH_CLIENT_ID": "client-id",
            "OAUTH_CLIENT_SECRET": "client-secret", "OAUTH_SCOPES": "openid profile manage-repos",
            "OPENID_PROVIDER_URL": url})
    finally:
        provider.shutdown()
    assert button and code in (302, 307), code  # gradio's login route sends the visitor to the Hub
    assert where.startswith(url + "/oauth/authorize") and "manage-repos" in where, where
    code, button, where = _start_app(tmp_path, {"SPACE_ID": "tester/domain-embed"})
    assert not button  # no sign-in to offer (gradio's local mock needs a Hub login); the page served


def test_a_downloaded_model_zip_loads_with_sentence_transformers(served, tmp_path):
    import zipfile

    from gradio_client import Client
    from sentence_transformers import SentenceTransformer

    from tests.publish_fixtures import build_run

    demo, _ = served
    session = "d" * 32
    run_dir = demo.space_app.run_dir("anon-" + session)
    cfg = build_run(run_dir)
    (run_dir / "job-config.yaml").write_text(cfg.to_yaml())
    files = Client(demo.local_url, verbose=False).predict(session, api_name="/downloads")
    names = {Path(f).name for f in files}
    assert {"model.zip", "report.json"} <= names, names
    with zipfile.ZipFile(next(f for f in files if Path(f).name == "model.zip")) as z:
        z.extractall(tmp_path / "dl")
    folder = next(p.parent for p in (tmp_path / "dl").rglob("modules.json"))
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    assert model.encode(["a query"]).shape == (1, 384)
    other = Client(demo.local_url, verbose=False).predict("e" * 32, api_name="/downloads")
    assert not other  # another session gets nothing of this run


def test_front_matter_asks_for_the_scopes_publishing_needs():
    head = Path(REPO, "README.md").read_text().split("---")[1]
    assert "hf_oauth: true" in head and "manage-repos" in head  # repo creation needs manage-repos
