"""The Space: built from spaces/, driven through gradio_client like a user's browser would."""

import time

import pytest

from spaces.ui import SETTINGS, config_from


def settings(run_dir, **over):
    values = {
        "domain": "code", "source": "builtin:python-docs", "uploads": None, "run_dir": str(run_dir),
        "endpoint": "", "endpoint_model": "tgi", "generator": "smollm2-135m-instruct-q4_1",
        "questions_per_chunk": 1, "sample_documents": 2, "mine_mode": "hybrid", "num_negatives": 2,
        "margin": 0.95, "profile": "cpu", "epochs": 1, "lr": 1e-5, "owner": "", "repo_name": "", "private": True,
        "onnx": True,
    }
    values.update(over)
    return [values[k] for k in SETTINGS]


def test_ui_fields_make_the_same_config_as_the_cli(tmp_path):
    cfg = config_from(dict(zip(SETTINGS, settings(tmp_path, endpoint="http://127.0.0.1:9/v1"), strict=True)))
    assert cfg.domain == "code" and cfg.ingest.source == "builtin:python-docs"
    assert cfg.generate.endpoint == "http://127.0.0.1:9/v1" and cfg.generate.sample_documents == 2
    assert cfg.mine.num_negatives == 2 and cfg.train.profile == "cpu" and cfg.publish.private is True


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
