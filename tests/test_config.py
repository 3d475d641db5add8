import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from trainer import config
from trainer.config import Config, explain, load_config, parse_override
from trainer.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_follow_the_published_recipe():
    cfg = Config()
    assert cfg.ingest.chunk_sentences == 5
    assert (cfg.generate.min_hops, cfg.generate.max_hops) == (1, 3)
    assert cfg.generate.judge_threshold == 7.0
    assert cfg.mine.num_negatives == 5
    assert cfg.mine.margin == 0.95 and cfg.mine.margin_type == "perc"
    assert cfg.train.temperature == 0.02
    assert cfg.train.lr == 1e-5
    assert cfg.train.epochs == 3
    assert cfg.mine.test_fraction == 0.2


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("domain: legal\ntrain:\n  lr: 3.0e-5\n  epochs: 1\ningest:\n  source: data:scifact\n")
    cfg = load_config(path, ["train.lr=2e-5", "mine.mode=bm25", "train.matryoshka_dims=[128, 64]"])
    assert cfg.domain == "legal"
    assert cfg.train.lr == 2e-5  # the command line wins over the file
    assert cfg.train.epochs == 1
    assert cfg.mine.mode == "bm25"
    assert cfg.train.matryoshka_dims == [128, 64]
    assert cfg.ingest.source == "data:scifact"


def test_parse_override_reads_scientific_notation_and_strings():
    assert parse_override("train.lr=1e-5") == ("train.lr", 1e-5)
    assert parse_override("ingest.source=data:scifact") == ("ingest.source", "data:scifact")
    assert parse_override("publish.private=false") == ("publish.private", False)
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_override("train.lr")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "train.lrr: unknown setting"),
        ("train.lr=fast", "train.lr"),
        ("mine.mode=magic", "mine.mode"),
        ("generate.min_hops=3", "min_hops (3) is larger than max_hops"),
        ("generate.query_types=[multi_hop]", "query_types has multi_hop but max_hops < 2"),
        ("generate.query_types=[]", "must be a non-empty list"),
        ("generate.query_types=[claim]", "generate.query_types"),
    ],
)
def test_invalid_settings_give_clear_errors(override, message):
    extra = (["generate.max_hops=2"] if "min_hops" in override
             else ["generate.max_hops=1"] if "query_types" in override else [])
    with pytest.raises(ConfigError) as info:
        load_config(None, [override, *extra])
    assert message in str(info.value)


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path, cli):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("domain: code\n# r\u00e9sum\u00e9 of the run\ntrain:\n  lr: 2e-5\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml is not UTF-8 text \(byte 0xe9 on line 2\)"):
        load_config(path)
    res = cli("config", "-c", str(path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and "save it as UTF-8" in res.stderr and str(path) in res.stderr


def test_section_hash_changes_only_with_its_section():
    a, b = Config(), load_config(None, ["train.lr=2e-5"])
    assert a.section_hash("ingest") == b.section_hash("ingest")
    assert a.section_hash("train") != b.section_hash("train")
    assert a.section_hash("model.name") == b.section_hash("model.name")


def test_saved_yaml_round_trips(tmp_path):
    cfg = load_config(None, ["train.lr=2e-5", "run.dir=x/y"])
    path = tmp_path / "saved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_explain_covers_every_setting_with_a_description():
    rows = explain()
    keys = {k for k, _, _ in rows}
    assert {"train.lr", "ingest.source", "mine.margin", "run.dir", "domain"} <= keys
    assert all(desc for _, _, desc in rows), [k for k, _, d in rows if not d]


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs, "configs/ should ship example configs"
    for path in configs:
        load_config(path)


def test_hardware_profile_applies_under_the_users_settings(tmp_path):
    cpu = load_config(None, ["train.profile=cpu"])
    assert cpu.train.max_seq_length == 128 and cpu.train.precision == "fp32"
    mine = load_config(None, ["train.profile=cpu", "train.max_seq_length=256"])
    assert mine.train.max_seq_length == 256  # the user's value wins over the profile's
    t4 = tmp_path / "t4.yaml"
    t4.write_text("train:\n  profile: t4\n  epochs: 1\n")
    cfg = load_config(t4)
    assert cfg.train.precision == "fp16" and cfg.train.loss == "cached_mnrl" and cfg.train.epochs == 1
    assert load_config().train.profile is None and load_config().train.epochs == 3  # recipe by default
    with pytest.raises(ConfigError, match=r"train\.profile='tpu': no such hardware profile \(known: a100, cpu, "
                       r"multi-gpu, t4\)"):
        load_config(None, ["train.profile=tpu"])


def test_a_missing_profile_file_is_an_error_not_nothing_applied(tmp_path, monkeypatch):
    # an install without its package data: the profile named is valid, its file is not there
    monkeypatch.setattr(config, "HARDWARE_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"train\.profile='t4': no hardware profiles in .*incomplete.*reinstall"):
        load_config(None, ["train.profile=t4"])
    (tmp_path / "t4.yaml").write_text("precision: fp16\n")  # not under train:
    with pytest.raises(ConfigError, match=r"t4\.yaml must hold a train: section"):
        load_config(None, ["train.profile=t4"])


_PROBE = """
import json, sys
from trainer import config
from trainer.config import ACCELERATE_DIR, load_config
from trainer.errors import ConfigError
t = load_config(None, ["train.profile=t4"]).train
try:
    load_config(None, ["train.profile=tpu"])
    unknown = "no error"
except ConfigError as exc:
    unknown = str(exc)
print(json.dumps({"module": config.__file__, "train": t.model_dump(mode="json"), "unknown": unknown,
                  "accelerate": sorted(p.name for p in ACCELERATE_DIR.glob("*.yaml"))}))
"""


def test_the_wheel_ships_the_hardware_profiles(tmp_path):
    """A non-editable install (the built wheel, unpacked) applies train.profile=t4, away from the repository."""
    src = tmp_path / "src"
    src.mkdir()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in project["tool"]["setuptools"]["packages"]:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("domain_embed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"trainer/profiles/hardware/t4.yaml", "trainer/profiles/accelerate/multi-gpu.yaml"} <= set(names)

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    away = tmp_path / "elsewhere"  # neither the repository nor the unpacked wheel is the working directory
    away.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run([sys.executable, "-c", _PROBE], cwd=away, env=env, capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    out = json.loads(probe.stdout)
    assert Path(out["module"]).is_relative_to(site)  # the installed copy, not the checkout
    t4 = out["train"]
    assert t4["profile"] == "t4" and t4["precision"] == "fp16" and t4["loss"] == "cached_mnrl"
    assert t4["mini_batch_size"] == 64 and t4["max_batch_size"] == 256
    assert "no such hardware profile (known: a100, cpu, multi-gpu, t4)" in out["unknown"]
    assert out["accelerate"] == ["cpu-2proc.yaml", "multi-gpu.yaml"]


def test_on_off_words_stay_words_for_text_settings():
    cfg = load_config(None, ["export.retrieval_check=off", "generate.judge=on", "publish.private=no"])
    assert cfg.export.retrieval_check == "off" and cfg.generate.judge == "on" and cfg.publish.private is False


PASTED = ["hf_PlantedFakeTokenDoNotLeak0123456789", "sk-proj-AbCdEfGhIjKlMnOpQrSt1234",
          "tgi-Zx9Qm2LpR7tVbN4cKw8YjH3sDf6GaE1uW5", "Zx9Qm2LpR7tVbN4cKw8YjH3sDf6GaE1uW5", "0f3c9a7e51d2b84c0f3c9a7e"]


@pytest.mark.parametrize("key", ["generate.token_env", "publish.token_env"])
@pytest.mark.parametrize("value", PASTED)
def test_token_env_settings_refuse_a_pasted_token(key, value, tmp_path):
    """A token pasted where a variable's NAME belongs would be stored in config.yaml, manifests and PUSH.md."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}={value}"])
    message = str(info.value)
    assert f"{key}:" in message and "put the token in an environment variable and give its name" in message
    assert value not in message
    section, name = key.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {name}: {value}\n")
    with pytest.raises(ConfigError, match="give its name"):
        load_config(path)


def test_token_env_settings_take_variable_names():
    cfg = load_config(None, ["generate.token_env=TGI_TOKEN", "publish.token_env=hf_write_token"])
    assert (cfg.generate.token_env, cfg.publish.token_env) == ("TGI_TOKEN", "hf_write_token")
    assert Config().generate.token_env == "HF_TOKEN"


@pytest.mark.parametrize("key", ["generate.endpoint", "generate.judge_endpoint"])
@pytest.mark.parametrize(("url", "message"), [
    ("http://bob:{t}@tgi.example.com:8080/v1", "the URL holds credentials"),
    ("https://{t}@tgi.example.com/v1", "the URL holds credentials"),
    ("https://tgi.example.com/v1?api_key={t}", "looks like a token"),
])
def test_endpoint_urls_refuse_credentials(key, url, message):
    token = "Zx9Qm2LpR7tVbN4cKw8YjH3sDf6GaE1uW5"
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}={url.format(t=token)}"])
    assert f"{key}:" in str(info.value) and message in str(info.value) and "generate.token_env" in str(info.value)
    assert token not in str(info.value)
    cfg = load_config(None, [f"{key}=https://tgi.example.com/v1"])
    with pytest.raises(ValueError):  # set in code, it is checked too (validate_assignment)
        cfg.generate.endpoint = url.format(t=token)
