import re
from pathlib import Path

from trainer.cli import explain_table
from trainer.pipeline import contracts_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _between(text: str, marker: str) -> str:
    return text.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]


def test_help_explains_commands_and_options(cli):
    res = cli("--help")
    assert res.returncode == 0
    for word in ("ingest", "run", "status", "config", "examples:"):
        assert word in res.stdout
    res = cli("ingest", "--help")
    for opt in ("--config", "--run-dir", "--set", "--force", "--source"):
        assert opt in res.stdout


def test_config_prints_resolved_yaml_with_overrides(cli):
    res = cli("config", "-c", "configs/quickstart.yaml", "--set", "train.lr=2e-5")
    assert res.returncode == 0
    assert "source: builtin:python-docs" in res.stdout and "lr: 2.0e-05" in res.stdout


def test_status_lists_stages(cli, tmp_path):
    res = cli("status", "--run-dir", str(tmp_path))
    assert res.returncode == 0 and re.search(r"ingest\s+missing", res.stdout)


def test_readme_has_space_front_matter_and_current_config_reference():
    text = README.read_text()
    front = text.split("---")[1]
    for key in ("sdk: gradio", "app_file: app.py", "suggested_hardware:"):
        assert key in front
    config = _between((ROOT / "docs" / "CONFIG.md").read_text(), "config-reference")
    assert config.strip() == explain_table().strip(), "run: python -m trainer config --explain --markdown"
    assert _between(text, "stage-contracts").strip() == contracts_table().strip(), \
        "paste trainer.pipeline.contracts_table() into the README"


def test_run_to_a_stage_runs_every_stage_before_it_in_order():
    from trainer.pipeline import STAGE_NAMES, chain

    assert STAGE_NAMES == ["ingest", "generate", "mine", "train", "evaluate", "export", "publish"]
    assert [s.name for s in chain("publish")] == STAGE_NAMES
    assert [s.name for s in chain("mine")] == ["ingest", "generate", "mine"]
