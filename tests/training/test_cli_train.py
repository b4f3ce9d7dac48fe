"""``reverie train``: a run, resume with ``--resume``, and exit code 2 for bad input."""

from __future__ import annotations

import json

import pytest
from training_testing import CONFIG, toy_args

from reverie.cli import main


def test_train_then_resume_from_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "toy", "--config", str(CONFIG), *toy_args(run, "trainer.max_steps=2")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and summary["checkpoint"].endswith("step_00000002")
    assert main([*argv[:-1], "trainer.max_steps=3", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    assert main([*argv[:-1], "trainer.max_steps=4"]) == 2  # an existing run without --resume
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "stage, overrides, message",
    [
        ("vae2", [], "unknown training stage 'vae2'"),
        ("toy", ["optim.lrr=1e-4"], "unknown config key 'optim.lrr'"),
        ("toy", ["trainer.max_steps=1.5"], "trainer.max_steps: expected an integer"),
        ("toy", ["trainer.max_steps"], "not of the form key=value"),
        ("toy", ["trainer.distributed=fsdp"], "needs a torchrun launch"),
    ],
)
def test_bad_input_exits_2(tmp_path, capsys, stage, overrides, message):
    argv = ["train", stage, "--config", str(CONFIG), *toy_args(tmp_path / "run"), *overrides]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("reverie train: error:") and message in err
    assert not (tmp_path / "run").exists()


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["train", "toy", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no config file" in capsys.readouterr().err
