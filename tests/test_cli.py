import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert config.strip() == explain_table().strip(), "run: python scripts/update_docs.py"
    assert _between(text, "stage-contracts").strip() == contracts_table().strip(), \
        "run: python scripts/update_docs.py"


def test_run_to_a_stage_runs_every_stage_before_it_in_order():
    from trainer.pipeline import STAGE_NAMES, chain

    assert STAGE_NAMES == ["ingest", "generate", "mine", "train", "evaluate", "export", "publish"]
    assert [s.name for s in chain("publish")] == STAGE_NAMES
    assert [s.name for s in chain("mine")] == ["ingest", "generate", "mine"]


# --- failures from outside (the disk): one message with the fix, exit 2, no traceback ---------------


def _one_error(res) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr[-3000:]
    return errors[0]


def test_a_file_given_as_the_run_dir(cli, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    msg = _one_error(cli("run", "--to", "ingest", "--run-dir", str(path), "--source", "builtin:python-docs"))
    assert f"File exists ({path})" in msg and "a file is in the way" in msg and "--run-dir" in msg
    assert path.read_text() == "not a folder"


def test_a_run_dir_that_cannot_be_created(cli, tmp_path):
    (tmp_path / "somefile").write_text("x")  # tests run as root: a path under a file is what cannot be made
    msg = _one_error(cli("run", "--to", "ingest", "--run-dir", str(tmp_path / "somefile/run"),
                         "--source", "builtin:python-docs"))
    assert "Not a directory" in msg and str(tmp_path / "somefile") in msg and "choose another run directory" in msg


def test_disk_errors_map_to_a_message_with_the_fix():
    import errno

    from trainer.errors import StorageError, disk_error

    full = disk_error(OSError(errno.ENOSPC, "No space left on device", "/runs/a/stages/ingest/chunks"))
    assert isinstance(full, StorageError)
    assert str(full).startswith("No space left on device (/runs/a/stages/ingest/chunks): the disk is full")
    assert "run the same command again" in str(full)
    denied = disk_error(PermissionError(errno.EACCES, "Permission denied", "/runs/a"))
    assert "Permission denied (/runs/a): permission denied: make it readable and writable" in str(denied)
    try:  # a library that re-wraps the OSError (and drops its errno) is still seen through
        try:
            raise OSError("[Errno 28] No space left on device")
        except OSError as exc:
            raise RuntimeError("writing the shard failed") from exc
    except RuntimeError as exc:
        assert "the disk is full" in str(disk_error(exc))
    assert disk_error(ValueError("a bug")) is None
    assert disk_error(FileNotFoundError(errno.ENOENT, "No such file or directory", "x")) is None


@pytest.fixture
def small_disk(tmp_path):
    """Runs a shell script in a new user and mount namespace where ``tmp_path/disk`` is a tmpfs of SIZE:
    a real full disk (ENOSPC) without root or a loop device. Skipped where user namespaces are off."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("unshare -rm (user namespaces) is not available here")
    disk = tmp_path / "disk"
    disk.mkdir()

    def run(size: str, script: str) -> subprocess.CompletedProcess:
        full = f"set -u\nmount -t tmpfs -o size={size} tmpfs {disk}\n{script}"
        return subprocess.run(["unshare", "-rm", "sh", "-c", full], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)

    return disk, run


def test_disk_full_during_ingest(small_disk):
    disk, run = small_disk
    res = run("256k", f"{sys.executable} -m trainer run --to ingest --run-dir {disk}/run "
                      "--source builtin:python-docs --set domain=code")
    msg = _one_error(res)
    assert "No space left on device" in msg and "the disk is full" in msg and "run the same command again" in msg
    assert "stage ingest: starting" in res.stderr  # it failed inside the stage, not before


def test_disk_full_during_generate(small_disk, cli, tmp_path):
    from .fault_proxy import FaultProxy

    disk, run = small_disk
    common = ["--source", "builtin:python-docs", "--set", "domain=code"]
    assert cli("run", "--to", "ingest", "--run-dir", str(tmp_path / "src"), *common).returncode == 0
    with FaultProxy("http://127.0.0.1:9/v1") as proxy:  # instant answers (unusable ones): no LLM needed
        proxy.garbage = 10**6
        args = " ".join([*common, "--set", f"generate.endpoint={proxy.base_url}", "--set", "generate.judge=off",
                         "--set", "generate.sample_documents=20", "--set", "generate.max_chunks_per_document=1",
                         "--set", "generate.concurrency=1", "--set", "generate.structured_output=off"])
        # the ingested run on a 4 MiB disk filled up to its last 16 KiB: generate's writes fill it
        res = run("4m", f"cp -a {tmp_path}/src {disk}/run\n"
                        f"dd if=/dev/zero of={disk}/filler bs=4k 2>/dev/null; truncate -s -16K {disk}/filler\n"
                        f"{sys.executable} -m trainer run --to generate --run-dir {disk}/run {args}; rc=$?\n"
                        f"echo cached=$(cat {disk}/run/cache/llm/*.jsonl | wc -l) >&2; exit $rc")
    msg = _one_error(res)
    assert "No space left on device" in msg and "the disk is full" in msg
    assert "stage generate: starting" in res.stderr and proxy.requests > 0
    assert int(res.stderr.rsplit("cached=", 1)[1]) > 0  # answers were stored before the disk was full
