import logging

from trainer.errors import TrainerError
from trainer.logs import attach_run_log, get_logger, redact


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
