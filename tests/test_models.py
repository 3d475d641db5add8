import hashlib
from pathlib import Path

import pytest

from trainer.errors import ModelResolutionError
from trainer.models import assemble_verified, model_max_length, resolve_model


def test_offline_known_id_resolves_to_packaged_weights():
    path = Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True))
    assert (path / "model.safetensors").is_file()
    assert (path / "modules.json").is_file()
    assert resolve_model("all-MiniLM-L6-v2", offline=True) == str(path)  # short alias
    assert model_max_length(str(path)) == 256


def test_online_keeps_the_hub_id():
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=False) == \
        "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_model("all-MiniLM-L6-v2", offline=False) == "sentence-transformers/all-MiniLM-L6-v2"


def test_hub_offline_env_is_respected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2").endswith("model")


def test_unknown_model_offline_says_how_to_fix():
    with pytest.raises(ModelResolutionError) as info:
        resolve_model("acme/unknown-embedder", offline=True)
    msg = str(info.value)
    assert "not reachable" in msg and "model.name=/path/to/model" in msg


def test_local_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelResolutionError, match="holds no model"):
        resolve_model(str(empty))


def test_assemble_verified_checks_sha256(tmp_path):
    parts = []
    for i, chunk in enumerate([b"abc" * 1000, b"def" * 1000, b"g"]):
        p = tmp_path / f"part{i}"
        p.write_bytes(chunk)
        parts.append(p)
    good = hashlib.sha256(b"abc" * 1000 + b"def" * 1000 + b"g").hexdigest()
    dest = assemble_verified(parts, tmp_path / "out" / "model.gguf", good)
    assert dest.read_bytes() == b"abc" * 1000 + b"def" * 1000 + b"g"
    assert assemble_verified(parts, dest, good) == dest  # reused

    bad_dest = tmp_path / "bad.gguf"
    with pytest.raises(ModelResolutionError, match="refusing to load"):
        assemble_verified(list(reversed(parts)), bad_dest, good)
    assert not bad_dest.exists() and not (tmp_path / "bad.gguf.partial").exists()
    with pytest.raises(ModelResolutionError, match="missing parts"):
        assemble_verified([tmp_path / "nope"], bad_dest, good)
