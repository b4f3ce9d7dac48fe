"""DDP and FSDP2 on 2 CPU processes (gloo) follow the single-process run over the same global
batch, and checkpoints move between modes (a single-process checkpoint resumed under FSDP).

The ranks are forked from the test process (what torchrun would start, minus ~5 s of importing
torch per process); they run single-threaded torch only, which is fork-safe.
"""

from __future__ import annotations

import shutil
import socket

import pytest
import torch
import torch.distributed.checkpoint.state_dict  # noqa: F401 - imported once, before the fork
import torch.distributed.fsdp  # noqa: F401
import torch.multiprocessing as mp
from training_testing import CONFIG, distributed_worker, losses, run_toy, toy_args, weights

from reverie.cli import main

SETTINGS = [
    "trainer.max_steps=6",
    "trainer.checkpoint_every=3",
    "trainer.ema_modules=[model]",
    "data.batch_size=16",  # 8 samples per rank
    "data.jitter=0.1",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_and_fsdp_match_the_single_process_run(tmp_path):
    single = tmp_path / "single"
    run_toy(single, *SETTINGS, "trainer.max_steps=3")
    fsdp = tmp_path / "fsdp"  # starts from the single-process checkpoint of step 3
    shutil.copytree(single / "checkpoints", fsdp / "checkpoints")
    run_toy(single, *SETTINGS, resume=True)

    def argv(run_dir, mode, *extra):
        mode_args = [f"trainer.distributed={mode}"]
        return [
            "train",
            "toy",
            "--config",
            str(CONFIG),
            *toy_args(run_dir, *SETTINGS, *mode_args),
            *extra,
        ]

    runs = [argv(tmp_path / "ddp", "ddp"), argv(fsdp, "fsdp", "--resume")]
    mp.start_processes(
        distributed_worker,
        args=(2, [free_port(), free_port()], runs),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    expected = losses(single)
    for run in (tmp_path / "ddp", fsdp):
        for name in ("model", "model.ema"):
            for k, v in weights(single, 6, name).items():
                torch.testing.assert_close(weights(run, 6, name)[k], v, rtol=1e-5, atol=1e-6)
        got = losses(run)
        assert sorted(got) == ([1, 2, 3, 4, 5, 6] if run.name == "ddp" else [4, 5, 6])
        assert all(got[s] == pytest.approx(expected[s], rel=1e-5) for s in got)


def test_ddp_without_torchrun_is_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["train", "toy", "--config", str(CONFIG), *toy_args(tmp_path, "trainer.distributed=ddp")]
    assert main(argv) == 2
    assert "torchrun" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_the_documented_torchrun_launch(tmp_path):
    """``torchrun --standalone --nproc_per_node 2 -m reverie.cli train ...`` (~20 s: each rank
    imports torch)."""
    import os
    import subprocess

    run = tmp_path / "run"
    args = toy_args(run, *SETTINGS, "trainer.max_steps=2", "trainer.distributed=ddp")
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "reverie.cli"]
    done = subprocess.run(
        [*cmd, "train", "toy", "--config", str(CONFIG), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summaries = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # rank 0 only
    assert sorted(losses(run)) == [1, 2]
