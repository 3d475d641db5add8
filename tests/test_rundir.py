"""Stage mechanics: no-op when up to date, archive on change, downstream staleness, resume, lock."""

import pytest

from trainer.config import load_config
from trainer.errors import StageError
from trainer.rundir import Input, RunDir, Stage, run_stage, stage_status


def toy_stages(calls):
    def run_a(ctx):
        calls.append(("a", ctx.resumed))
        (ctx.dir / "out.txt").write_text(f"lr={ctx.cfg.train.lr}")
        return {"rows": 1}

    def run_b(ctx):
        calls.append(("b", ctx.resumed))
        up = ctx.input("a", "out.txt").read_text()
        (ctx.dir / "out.txt").write_text(up + f" k={ctx.cfg.mine.num_negatives}")
        return {"rows": 2}

    a = Stage(name="a", run=run_a, sections=("train.lr",), writes=("out.txt",))
    b = Stage(name="b", run=run_b, sections=("mine",), reads=(Input("a", "out.txt"),), writes=("out.txt",))
    return a, b


def test_second_run_is_a_noop(tmp_path):
    calls = []
    a, _ = toy_stages(calls)
    cfg, rd = load_config(), RunDir(tmp_path)
    first = run_stage(a, cfg, rd)
    mtime = (rd.stage_dir("a") / "out.txt").stat().st_mtime_ns
    second = run_stage(a, cfg, rd)
    assert (first.action, second.action) == ("ran", "skipped")
    assert calls == [("a", False)]
    assert (rd.stage_dir("a") / "out.txt").stat().st_mtime_ns == mtime
    assert second.manifest["key"] == first.manifest["key"]
    m = rd.manifest("a")
    assert m["status"] == "complete" and m["counts"] == {"rows": 1} and "torch" in m["versions"]
    assert m["finished"] >= m["started"]


def test_unrelated_setting_does_not_rerun(tmp_path):
    calls = []
    a, _ = toy_stages(calls)
    rd = RunDir(tmp_path)
    run_stage(a, load_config(), rd)
    assert run_stage(a, load_config(None, ["train.epochs=1"]), rd).action == "skipped"


def test_changed_setting_reruns_and_archives_the_old_output(tmp_path):
    calls = []
    a, _ = toy_stages(calls)
    rd = RunDir(tmp_path)
    run_stage(a, load_config(), rd)
    out = run_stage(a, load_config(None, ["train.lr=2e-5"]), rd)
    assert out.action == "ran"
    assert (rd.stage_dir("a") / "out.txt").read_text() == "lr=2e-05"
    archived = list((tmp_path / "archive").glob("a-*/out.txt"))
    assert len(archived) == 1 and archived[0].read_text() == "lr=1e-05"


def test_downstream_goes_stale_and_reruns(tmp_path):
    calls = []
    a, b = toy_stages(calls)
    rd = RunDir(tmp_path)
    cfg = load_config()
    run_stage(a, cfg, rd)
    run_stage(b, cfg, rd)
    assert stage_status(b, cfg, rd) == "complete"
    cfg2 = load_config(None, ["train.lr=3e-5"])
    run_stage(a, cfg2, rd)
    assert stage_status(b, cfg2, rd).startswith("stale")
    assert run_stage(b, cfg2, rd).action == "ran"
    assert (rd.stage_dir("b") / "out.txt").read_text() == "lr=3e-05 k=5"


def test_missing_upstream_is_an_actionable_error(tmp_path):
    _, b = toy_stages([])
    with pytest.raises(StageError, match="python -m trainer run --to b"):
        run_stage(b, load_config(), RunDir(tmp_path))


def test_force_reruns_and_keeps_the_old_output(tmp_path):
    calls = []
    a, _ = toy_stages(calls)
    rd = RunDir(tmp_path)
    run_stage(a, load_config(), rd)
    assert run_stage(a, load_config(), rd, force=True).action == "ran"
    assert len(calls) == 2 and len(list((tmp_path / "archive").iterdir())) == 1


def test_tampered_output_is_detected(tmp_path):
    calls = []
    a, _ = toy_stages(calls)
    rd = RunDir(tmp_path)
    run_stage(a, load_config(), rd)
    (rd.stage_dir("a") / "out.txt").write_text("edited by hand")
    assert run_stage(a, load_config(), rd).action == "ran"
    assert next((tmp_path / "archive").glob("a-*/out.txt")).read_text() == "edited by hand"


def test_crashed_stage_resumes_with_its_work_folder(tmp_path):
    state = {"fail": True}

    def run(ctx):
        marker = ctx.work / "half.txt"
        if state["fail"]:
            marker.write_text("half done")
            raise RuntimeError("boom")
        assert ctx.resumed and marker.read_text() == "half done"
        (ctx.dir / "out.txt").write_text("done")
        return {}

    stage = Stage(name="c", run=run, sections=("train",))
    rd = RunDir(tmp_path)
    with pytest.raises(RuntimeError):
        run_stage(stage, load_config(), rd)
    assert rd.manifest("c")["status"] == "failed" and rd.manifest("c")["error"] == "RuntimeError: boom"
    assert stage_status(stage, load_config(), rd) == "failed: RuntimeError: boom (run it again to resume)"
    state["fail"] = False
    out = run_stage(stage, load_config(), rd)
    assert out.action == "resumed" and out.manifest["attempts"] == 2
    assert not (rd.stage_dir("c") / "_work").exists()


def test_a_failed_stage_reads_its_one_line_redacted_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SecretTokenValue1234")

    def run(ctx):
        raise StageError("the endpoint refused hf_SecretTokenValue1234\nsecond line with details")

    stage = Stage(name="c", run=run, sections=())
    rd = RunDir(tmp_path)
    with pytest.raises(StageError):
        run_stage(stage, load_config(), rd)
    m = rd.manifest("c")
    assert m["status"] == "failed" and m["error"] == "the endpoint refused ***" and "failed" in m
    assert stage_status(stage, load_config(), rd) == "failed: the endpoint refused *** (run it again to resume)"
    assert "hf_Secret" not in (rd.stage_dir("c") / "manifest.json").read_text()


def test_a_killed_stage_reads_interrupted_and_a_live_one_running(tmp_path):
    """A kill records nothing: the manifest stays 'running'. With no process holding the run directory's lock
    it is "interrupted"; while one holds it, "running"."""
    def run(ctx):
        raise KeyboardInterrupt  # SIGTERM / Ctrl-C: not recorded as a failure

    stage = Stage(name="c", run=run, sections=())
    rd = RunDir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage, load_config(), rd)
    assert rd.manifest("c")["status"] == "running" and "error" not in rd.manifest("c")
    assert stage_status(stage, load_config(), rd) == "interrupted (run it again to resume)"
    with rd.lock():
        assert stage_status(stage, load_config(), rd) == "running"


def test_one_process_per_run_dir(tmp_path):
    rd = RunDir(tmp_path)
    with rd.lock(), pytest.raises(StageError, match="another process"), RunDir(tmp_path).lock():
        pass
    with rd.lock():  # released
        pass


def test_config_history_is_kept(tmp_path):
    rd = RunDir(tmp_path)
    rd.save_config(load_config())
    rd.save_config(load_config())
    assert not (tmp_path / "history").exists()
    rd.save_config(load_config(None, ["train.lr=2e-5"]))
    assert len(list((tmp_path / "history").iterdir())) == 1
    assert "lr: 2.0e-05" in (tmp_path / "config.yaml").read_text()


def test_an_undeclared_read_or_write_fails_loudly(tmp_path):
    calls = []
    a, _ = toy_stages(calls)
    rd = RunDir(tmp_path)
    run_stage(a, load_config(), rd)

    def sneaky_read(ctx):
        return {"text": ctx.input("a", "out.txt").read_text()}

    with pytest.raises(StageError, match=r"read a/out.txt, which it does not declare"):
        run_stage(Stage(name="c", run=sneaky_read, sections=()), load_config(), rd)

    def sneaky_write(ctx):
        ctx.output("other.txt").write_text("x")
        return {}

    with pytest.raises(StageError, match=r"wrote 'other.txt', which it does not declare"):
        run_stage(Stage(name="d", run=sneaky_write, sections=(), writes=("out.txt",)), load_config(), rd)

    def forgets(ctx):
        return {}

    with pytest.raises(StageError, match=r"without writing its declared outputs \['out.txt'\]"):
        run_stage(Stage(name="e", run=forgets, sections=(), writes=("out.txt",)), load_config(), rd)


def test_status_verifies_outputs_not_only_manifests(tmp_path):
    calls = []
    a, b = toy_stages(calls)
    rd, cfg = RunDir(tmp_path), load_config()
    run_stage(a, cfg, rd)
    run_stage(b, cfg, rd)
    (rd.stage_dir("b") / "out.txt").unlink()
    assert stage_status(b, cfg, rd) == "stale (output out.txt missing: run it again)"
    assert run_stage(b, cfg, rd).action == "ran"
    (rd.stage_dir("a") / "out.txt").write_text("edited")
    assert stage_status(a, cfg, rd) == "stale (output out.txt modified: run it again)"


def test_a_log_beside_an_output_does_not_rerun_downstream(tmp_path):
    """Only the outputs a stage reads are in its key: a log or undeclared file next to them changes nothing."""
    calls = []
    a, b = toy_stages(calls)
    rd, cfg = RunDir(tmp_path), load_config()
    run_stage(a, cfg, rd)
    key = run_stage(b, cfg, rd).manifest["key"]
    (rd.stage_dir("a") / "server.log").write_text("a log line the server wrote later")
    assert stage_status(b, cfg, rd) == "complete"
    again = run_stage(b, cfg, rd)
    assert again.action == "skipped" and again.manifest["key"] == key


def test_optional_inputs_are_absent_until_their_stage_finishes(tmp_path):
    calls = []
    a, _ = toy_stages(calls)
    seen = []

    def run(ctx):
        seen.append(ctx.input("a", "out.txt"))
        (ctx.dir / "x.txt").write_text("x")
        return {}

    c = Stage(name="c", run=run, sections=(), reads=(Input("a", "out.txt", optional=True),), writes=("x.txt",))
    rd, cfg = RunDir(tmp_path), load_config()
    first = run_stage(c, cfg, rd)
    assert seen == [None] and first.manifest["identity"]["upstream"] == {"a/out.txt": "absent"}
    run_stage(a, cfg, rd)
    assert stage_status(c, cfg, rd).startswith("stale")  # a new input appeared
    assert run_stage(c, cfg, rd).action == "ran" and seen[-1] == rd.stage_dir("a") / "out.txt"


def test_every_read_names_an_output_its_stage_declares(tmp_path):
    from trainer.pipeline import STAGE_NAMES, STAGES, output_path

    for stage in STAGES.values():
        for i in stage.reads:
            assert i.output in STAGES[i.stage].outputs, f"{stage.name} reads {i.stage}/{i.output}, never written"
            assert STAGE_NAMES.index(i.stage) < STAGE_NAMES.index(stage.name)
    assert output_path(tmp_path, "train", "model") == tmp_path / "stages" / "train" / "model"
    with pytest.raises(StageError, match="has no output 'models'"):
        output_path(tmp_path, "train", "models")
