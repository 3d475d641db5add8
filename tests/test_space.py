"""The Space: built from spaces/, driven through gradio_client like a user's browser would."""

import time

import pytest

from spaces.ui import SETTINGS, config_from


def settings(run_dir, **over):
    values = {
        "domain": "code", "source": "builtin:python-docs", "uploads": None, "run_dir": str(run_dir),
        "endpoint": "", "endpoint_model": "tgi", "generator": "smollm2-135m-instruct-q4_1",
        "questions_per_chunk": 1, "query_types": ["factual", "contextual", "multi_hop"], "sample_documents": 2,
        "mine_mode": "hybrid", "num_negatives": 2,
        "margin": 0.95, "profile": "cpu", "epochs": 1, "lr": 1e-5, "owner": "", "repo_name": "", "private": True,
        "onnx": True, "advanced": "",
    }
    values.update(over)
    return [values[k] for k in SETTINGS]


def test_ui_fields_make_the_same_config_as_the_cli(tmp_path):
    cfg = config_from(dict(zip(SETTINGS, settings(tmp_path, endpoint="http://127.0.0.1:9/v1"), strict=True)))
    assert cfg.domain == "code" and cfg.ingest.source == "builtin:python-docs"
    assert cfg.generate.endpoint == "http://127.0.0.1:9/v1" and cfg.generate.sample_documents == 2
    assert cfg.mine.num_negatives == 2 and cfg.train.profile == "cpu" and cfg.publish.private is True
    assert cfg.generate.query_types is None  # all three ticked: the recipe's rotation
    claims = config_from(dict(zip(SETTINGS, settings(tmp_path, query_types=["factual"]), strict=True)))
    assert claims.generate.query_types == ["factual"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from spaces.ui import build_demo

    root = tmp_path_factory.mktemp("space")
    demo = build_demo(str(root), state_dir=str(root / "state"))
    demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


def wait_done(client, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = client.predict(api_name="/status")
        if "running" not in out[0]:
            return out
        time.sleep(1)
    raise TimeoutError(out[0])


def test_ingest_and_generate_through_gradio_client(served, tmp_path):
    from gradio_client import Client

    client = Client(served.local_url, verbose=False)
    msg = client.predict(*settings(tmp_path), api_name="/run_ingest")
    assert msg.startswith("Started")
    out = wait_done(client)
    assert "finished" in out[0], out[1]
    assert out[3]["documents"] > 50

    msg = client.predict(*settings(tmp_path), api_name="/run_generate")
    assert msg.startswith("Started")
    busy = client.predict(*settings(tmp_path), api_name="/run_generate")
    assert "already running" in busy
    out = wait_done(client)
    assert "finished" in out[0], out[1]
    assert out[4]["queries"] >= 1 and len(out[5]["data"]) >= 1
    assert any(row[0] == "generate" and row[1] == "complete" for row in out[2]["data"])


def test_bad_input_is_reported_not_raised(served, tmp_path):
    from gradio_client import Client

    client = Client(served.local_url, verbose=False)
    msg = client.predict(*settings(tmp_path, source=str(tmp_path / "missing")), api_name="/run_ingest")
    assert msg.startswith("Started")
    out = wait_done(client)
    assert "failed" in out[0] and "corpus not found" in out[1]


TINY = "\n".join([
    "train.max_seq_length=48", "train.batch_size=4", "train.num_negatives=2", "train.val_fraction=0",
    "train.matryoshka_dims=[384, 64]", "evaluate.mteb=false", "export.parity_passages=40",
    "export.retrieval_check=off", "mine.candidates=20",
])


@pytest.mark.slow
def test_the_whole_flow_through_gradio_client(served, tmp_path):
    """Every step, ingest to publish, on a tiny corpus with the embedded generator (no Hub token: the
    publish step writes the folders it would push)."""
    from gradio_client import Client

    client = Client(served.local_url, verbose=False)
    values = settings(tmp_path, sample_documents=12, questions_per_chunk=2, advanced=TINY)
    msg = client.predict(*values, api_name="/run_publish")
    assert msg.startswith("Started"), msg
    out = wait_done(client, timeout=1500)
    assert "finished" in out[0], out[1]
    states = {row[0]: row[1] for row in out[2]["data"]}
    assert all(states[s] == "complete" for s in ("ingest", "generate", "mine", "train", "evaluate", "export",
                                                 "publish")), states
    assert out[6]["train_rows"] > 0 and out[7]["steps"] >= 1
    assert "Evaluation" in out[8]
    publish = tmp_path / "stages" / "publish"
    assert (publish / "model" / "README.md").is_file() and (publish / "PUSH.md").is_file()
