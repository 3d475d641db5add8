import logging

from trainer.errors import TrainerError
from trainer.logs import attach_run_log, get_logger, redact, register_secret

UNUSUAL = "tgi-Zx9Qm2LpR7tVbN4cKw8YjH3sDf6GaE1uW5"  # an endpoint key of no known prefix


def test_redact_token_shapes_and_env_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "sekret-value-1234567")
    text = "token hf_abcdefghijklmnopqrstuvwxyz012345 and sekret-value-1234567 and api_org_ABCDEFGHIJKL"
    clean = redact(text)
    assert "hf_abc" not in clean and "sekret-value" not in clean and "api_org_ABC" not in clean
    assert clean.count("***") == 3


def test_run_log_never_holds_the_token(tmp_path, monkeypatch):
    token = "hf_PlantedFakeToken0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", token)
    handler = attach_run_log(tmp_path)
    try:
        log = get_logger()
        log.warning("pushing with %s", token)
        logging.getLogger("trainer.sub").warning("child logger %s", token)
        log.info(str(TrainerError(f"auth failed for {token}")))
    finally:
        get_logger().removeHandler(handler)
        handler.close()
    text = (tmp_path / "run.log").read_text()
    assert "pushing with ***" in text
    assert token not in text


def test_redact_covers_token_shapes_other_than_the_hubs():
    text = (f"key {UNUSUAL}; openai sk-proj-AbCdEfGhIjKlMnOpQrSt1234; header Authorization: Bearer abc.DEF-123_xyz; "
            "url https://bob:hunter2pass@tgi.example.com/v1 and https://tgi.example.com/v1?api_key=abc12345&x=1")
    clean = redact(text)
    for secret in ("Zx9Qm2LpR7tVbN4cKw8YjH3sDf6GaE1uW5", "AbCdEfGhIjKlMnOpQrSt1234", "abc.DEF-123_xyz", "hunter2pass",
                   "bob:", "abc12345"):
        assert secret not in clean, secret
    assert "https://***@tgi.example.com/v1" in clean and "?api_key=***&x=1" in clean and "Bearer ***" in clean
    # what is not a secret stays readable: digests, model ids, paths, loopback URLs, settings
    benign = ("sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855, sentence-transformers/"
              "all-MiniLM-L6-v2, Meta-Llama-3.1-8B-Instruct, runs/scifact/stages/export/onnx, "
              "http://127.0.0.1:8080/v1, max_tokens=256, HUGGINGFACEHUB_API_TOKEN")
    assert redact(benign) == benign


def test_a_registered_secret_never_reaches_the_run_log(tmp_path):
    secret = "0f3c9a7e51d2b84c"  # lowercase hex: no shape gives it away
    register_secret(secret)  # what the chat client does with the endpoint's token
    handler = attach_run_log(tmp_path)
    try:
        get_logger().warning("endpoint answered 401 for key %s", secret)
    finally:
        get_logger().removeHandler(handler)
        handler.close()
    text = (tmp_path / "run.log").read_text()
    assert "endpoint answered 401 for key ***" in text and secret not in text
