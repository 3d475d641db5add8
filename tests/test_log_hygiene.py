"""The live log (console, job.log, run.log) shows the trainer's own lines, each once; library warnings go to
<run>/warnings.log unless --verbose."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = r"""
import logging, sys, warnings
from pathlib import Path
from trainer.logs import attach_run_log, get_logger, library_warnings, setup_console

run = Path(sys.argv[1])
setup_console()
with library_warnings(run, verbose=sys.argv[2] == "1") as lib:
    handler = attach_run_log(run)
    # what onnxruntime's quantizer does during export: module-level logging.info (installs a root stderr
    # handler when the root logger has none)
    logging.info('Quantization parameters for tensor:"x" not specified')
    warnings.warn("TracerWarning-like library warning")
    logging.getLogger("sentence_transformers.backend").warning("st backend advice")
    from transformers.utils import logging as hf_logging
    hf_logging.get_logger("transformers.modeling_utils").warning("`torch_dtype` is deprecated!")
    logging.getLogger().addHandler(logging.StreamHandler())  # as logging.basicConfig() in a library would
    get_logger().info("export: ONE LINE")
    get_logger().removeHandler(handler)
print(lib.count)
get_logger().info("after: ONE LINE")
"""


def _run(tmp_path, verbose: bool) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "1" if verbose else "0"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res


def test_library_warnings_go_to_a_file_and_each_line_shows_once(tmp_path):
    res = _run(tmp_path, verbose=False)
    assert res.stderr.count("export: ONE LINE") == 1, res.stderr
    assert res.stderr.count("after: ONE LINE") == 1, res.stderr
    for noise in ("TracerWarning-like", "st backend advice", "torch_dtype", "Quantization parameters"):
        assert noise not in res.stderr
    assert int(res.stdout.strip()) == 3  # the three warnings (logging.info is below WARNING: dropped)
    log = (tmp_path / "warnings.log").read_text()
    assert "TracerWarning-like" in log and "st backend advice" in log and "torch_dtype" in log
    assert "export: ONE LINE" not in log
    run_log = (tmp_path / "run.log").read_text()
    assert run_log.count("export: ONE LINE") == 1 and "TracerWarning-like" not in run_log


def test_verbose_shows_library_warnings_on_the_console(tmp_path):
    res = _run(tmp_path, verbose=True)
    assert "TracerWarning-like" in res.stderr and "torch_dtype" in res.stderr
    assert res.stderr.count("export: ONE LINE") == 1
    assert not (tmp_path / "warnings.log").exists()
