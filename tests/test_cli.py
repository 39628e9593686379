"""The CLI as a user meets it: real data, bad inputs give a message and a non-zero exit, never a traceback."""

import json

from typer.testing import CliRunner

from edgecap import __version__
from edgecap.cli import app

runner = CliRunner()


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


def test_data_stats_on_shared(iu_data, tmp_path):
    r = runner.invoke(app, ["data", "stats", str(iu_data), "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert "openi" in r.output and "3955" in r.output and "7470 / 14 / 7456" in r.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["studies"] == 3955 and s["empty_findings"] == 530 and s["both_views"] == 2


def test_data_stats_bad_path(tmp_path):
    r = runner.invoke(app, ["data", "stats", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "no such file" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["data", "stats", str(tmp_path)])
    assert r.exit_code == 2 and "no IU X-Ray layout" in r.output


def test_train_bad_inputs(tmp_path):
    r = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--config", "tiny"])
    assert r.exit_code == 2 and "no IU X-Ray layout" in r.output
    r = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--config", "huge"])
    assert r.exit_code == 2 and "unknown config preset" in r.output


def test_evaluate_not_a_run(tmp_path, iu_data):
    r = runner.invoke(app, ["evaluate", "--run", str(tmp_path), "--data", str(iu_data)])
    assert r.exit_code == 2 and "not a run directory" in r.output


def test_fetch_unknown_dataset(tmp_path):
    r = runner.invoke(app, ["data", "fetch", "mimic", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "only 'iu-xray'" in r.output


def test_the_program_imports_only_its_commands_module():
    """`edgecap caption ...` registers and imports the caption command only (a one-image report starts without
    the conversion, bench, server, app or training code); `edgecap --help` and a mistyped command get every
    command, as a library import of `app` does."""
    import subprocess
    import sys

    probe = (
        "import json, sys; sys.argv = ['edgecap'] + sys.argv[1:]; import edgecap.cli as c, typer.main as t; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('edgecap.cli.', 'edgecap.convert', "
        "'edgecap.serve', 'edgecap.benchmarks', 'edgecap.training'))))); "
        "print(json.dumps(sorted(t.get_command(c.app).commands)))"
    )

    def run(*argv):
        out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True)
        modules, commands = out.stdout.splitlines()
        return json.loads(modules), json.loads(commands)

    modules, commands = run("caption", "x.png")
    assert commands == ["caption"]
    assert modules == ["edgecap.cli.caption", "edgecap.cli.common"]
    every = {"app", "bench", "bundle", "caption", "convert", "data", "demo", "device-check", "evaluate", "label",
             "serve", "train"}  # fmt: skip
    for argv in (["--help"], ["captoin", "x.png"], []):
        assert set(run(*argv)[1]) == every
    assert set(typer_commands()) == every


def typer_commands():
    import typer.main

    return typer.main.get_command(app).commands
