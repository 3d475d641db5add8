"""The Space builds and its ingest action runs the real pipeline, driven through gradio_client."""

import pytest


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from spaces.ui import build_demo

    demo = build_demo(str(tmp_path_factory.mktemp("space-run")))
    demo.queue().launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


def test_ingest_through_gradio_client(served, tmp_path):
    from gradio_client import Client

    client = Client(served.local_url, verbose=False)
    status, counts, sample = client.predict("builtin:python-docs", None, str(tmp_path / "run"), api_name="/ingest")
    assert "ran" in status
    assert counts["documents"] > 50 and counts["chunks"] > counts["documents"]
    assert len(sample["data"]) == 10

    status, counts, _ = client.predict(str(tmp_path / "missing"), None, str(tmp_path / "run2"), api_name="/ingest")
    assert status.startswith("**Error:**") and "not found" in status and counts == {}
