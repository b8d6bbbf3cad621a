import subprocess
import sys

from mono_utils import cli, stages


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mono_utils", *args], capture_output=True, text=True, env=env)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for c in ["build", "info", "run-notebooks", "export", "import", "app"]:
        assert c in r.stdout


def test_unknown_preset_is_one_readable_line():
    r = run("build", "--preset", "huge")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown preset 'huge': choose one of smoke, default, paper, paper-dry"
    assert "Traceback" not in r.stderr


def test_info_on_empty_store(tmp_path):
    r = run("info", "--artifacts", str(tmp_path / "none"))
    assert r.returncode == 0 and "nothing built yet" in r.stdout


def test_build_and_info_smoke(smoke_store, smoke_model, capsys):
    # artifacts already built by the fixture: build reuses them, info lists them
    assert cli.main(["build", "--preset", "smoke", "--only", "corpus", "tokenizer", "model",
                     "--artifacts", str(smoke_store.root)]) == 0
    assert cli.main(["info", "--artifacts", str(smoke_store.root)]) == 0
    out = capsys.readouterr().out
    assert "model/modelA-smoke" in out and "val_loss=" in out and "ok" in out


def test_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "cmd_info", lambda args: (_ for _ in ()).throw(ValueError("bad thing: do X")))
    p = cli.make_parser()
    monkeypatch.setattr(cli, "make_parser", lambda: p)
    for action in p._subparsers._group_actions[0].choices.values():
        if action.prog.endswith("info"):
            action.set_defaults(fn=cli.cmd_info)
    assert cli.main(["info"]) == 1
    assert capsys.readouterr().err.strip() == "error: bad thing: do X"


def test_stage_dependencies_cover_every_stage_in_order():
    from mono_utils.pipeline.presets import get_preset
    from mono_utils.store.artifacts import ArtifactStore
    names = [n for n, _ in stages.build_stages(get_preset("smoke"), ArtifactStore("/nonexistent"))]
    assert set(names) == set(stages.STAGE_DEPS)
    for i, n in enumerate(names):  # every dependency comes earlier: the sequential order is valid too
        assert all(d in names[:i] for d in stages.STAGE_DEPS[n]), n


def test_recipes_stage_comes_after_the_saes_it_reuses():
    # get_recipe_runs reuses the TopK side run (and the paper2023 run on paper): built side by side
    # under --jobs 2, the recipes stage would only wait on their locks, holding a worker
    # and seed 0 of the seed runs, its batchtopk entry
    assert {"SAE A/1 TopK", "SAE A/1 paper2023", "SAE A/1 seeds"} <= set(stages.STAGE_DEPS["SAE recipes"])


def test_the_paper_recipe_is_built_and_compared_beside_a1():
    # issue 16: A/1 takes the preset's recipe; the paper's stays built at A/1's width and is set
    # beside it in the proxies (notebook 02) and the autointerp scores (notebook 03)
    assert stages.STAGE_DEPS["index A/1 paper2023"] == ("SAE A/1 paper2023",)
    assert "index A/1 paper2023" in stages.STAGE_DEPS["proxy table paper2023"]
    assert "index A/1 paper2023" in stages.STAGE_DEPS["autointerp offline"]


def test_parallel_build_runs_stages_in_worker_processes(smoke_store, smoke_model):
    import os
    env = dict(os.environ, MONO_ARTIFACTS=str(smoke_store.root))
    r = run("build", "--preset", "smoke", "--jobs", "2", "--only", "corpus", "tokenizer", "tokens", "model",
            "--artifacts", str(smoke_store.root), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for stage in ("corpus", "tokenizer", "tokens", "model A", "model B"):
        assert f"   {stage} done in" in r.stdout
    assert "total wall time (2 jobs" in r.stdout


def test_run_notebooks_rejects_zero_jobs(capsys, tmp_path):
    assert cli.main(["run-notebooks", "--preset", "smoke", "--jobs", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--jobs 0" in capsys.readouterr().err


def test_build_rejects_zero_jobs(capsys):
    assert cli.main(["build", "--preset", "smoke", "--jobs", "0"]) == 2   # a usage error, like an unknown preset
    assert capsys.readouterr().err.strip() == "error: --jobs must be at least 1, got 0"
