"""A corpus of bad input for every entry point (GitHub issue 13).

Each case runs ``reverie.cli.main`` in-process with a damaged file or a bad argument and asserts
the contract of the error boundary: exit code 2, exactly one line on stderr of the form
``reverie CMD: error: ...`` naming the culprit, no traceback, and no output file left behind.
The play server's WebSocket corpus is in ``tests/play/test_play_bad_inputs.py``.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reverie.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ the inputs
def png(path: Path, size=(40, 40)) -> Path:
    Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(path)
    return path


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid small PNG whose header claims ``side x side`` pixels."""
    data = bytearray(png(path).read_bytes())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", side, side)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A packaged untrained tiny model (``WorldModel.save_pretrained``)."""
    from reverie.engine import WorldModel

    return WorldModel.random(0).save_pretrained(tmp_path_factory.mktemp("models") / "good")


def damaged_copy(model_dir: Path, tmp: Path, how: str) -> Path:
    import shutil

    out = tmp / f"model-{how}"
    shutil.copytree(model_dir, out)
    if how == "truncated":
        weights = out / "dit" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "config-mismatch":
        config = json.loads((out / "dit" / "config.json").read_text())
        config["num_layers"] += 1
        (out / "dit" / "config.json").write_text(json.dumps(config))
    elif how == "resolution":
        meta = json.loads((out / "world_model.json").read_text())
        meta["resolution"] = 72  # 9-pixel latents: the DiT's 2x2 patches do not tile them
        (out / "world_model.json").write_text(json.dumps(meta))
    elif how == "bad-json":
        (out / "world_model.json").write_text("{")
    return out


# ------------------------------------------------------------------------------ the contract
def run_bad(argv: list[str], capsys, culprit: str, out_dir: Path | None = None) -> str:
    """``main(argv)`` must fail cleanly; returns the message."""
    before = None if out_dir is None else sorted(p.name for p in out_dir.iterdir())
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, (argv, err)
    assert "Traceback" not in err and "Traceback" not in captured.out
    progress = ("it/s]", "s/it]")  # progress bars of model loading are not messages
    lines = [line for line in err.splitlines() if line.strip() and not line.endswith(progress)]
    assert len(lines) == 1, err  # one line
    assert lines[0].startswith(f"reverie {argv[0]}"), err
    assert ": error: " in lines[0] and culprit in lines[0], (culprit, err)
    if out_dir is not None:  # nothing written, no temporary file left
        assert sorted(p.name for p in out_dir.iterdir()) == before, "files were left behind"
    return lines[0]


EXPLORE = ["explore", "--quiet"]


@pytest.mark.parametrize(
    "extra, culprit",
    [
        (["--random", "--scene", "1", "--seconds", "1e9"], "--seconds"),
        (["--random", "--scene", "1", "--seconds", "nan"], "--seconds"),
        (["--random", "--scene", "1", "--seconds", "inf"], "--seconds"),
        (["--random", "--scene", "1", "--actions", "pan_left*100000000"], "--actions"),
        (["--random", "--scene", "1", "--actions", "pan_left*7"], "use 5 or 9 frames"),
        (["--random", "--scene", "1", "--actions", "pan_left*8", "--seconds", "3"], "--seconds"),
        (["--random", "--scene", "1", "--actions", "fly*4"], "unknown action 'fly'"),
        (["--random", "--scene", "1", "--gamma", "100"], "--gamma"),
        (["--random", "--scene", "1", "--gamma", "nan"], "--gamma"),
        (["--random", "--scene", "1", "--threads", "0"], "--threads"),
        (["--random", "--scene", "1", "--prompt", "bad \udcff utf-8"], "--prompt"),
        (["--random", "--scene", "1", "--prompt", "x" * 5000], "--prompt"),
        (["--random"], "exactly one of --scene"),
        (["--random", "--scene", "1", "--out", "video.avi"], ".mp4"),
    ],
)
def test_explore_arguments(tmp_path, capsys, monkeypatch, extra, culprit):
    monkeypatch.chdir(tmp_path)
    run_bad([*EXPLORE, "--out", str(tmp_path / "o.mp4"), *extra], capsys, culprit, tmp_path)


def test_explore_output_paths_are_checked_first(tmp_path, capsys):
    (tmp_path / "a-dir.mp4").mkdir()
    (tmp_path / "file").write_text("")
    base = [*EXPLORE, "--random", "--scene", "1"]
    run_bad([*base, "--out", str(tmp_path / "a-dir.mp4")], capsys, "is a directory", tmp_path)
    run_bad([*base, "--out", str(tmp_path / "file" / "o.mp4")], capsys, "is a file", tmp_path)
    argv = [*base, "--out", str(tmp_path / "o.mp4"), "--json", str(tmp_path)]
    run_bad(argv, capsys, "--json", tmp_path)
    argv = [*base, "--out", str(tmp_path / "o.mp4"), "--json", str(tmp_path / "o.mp4")]
    run_bad(argv, capsys, "--json", tmp_path)


def test_explore_files(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    base = [*EXPLORE, "--random", "--out", str(out / "o.mp4"), "--seconds", "0.25"]
    bomb = bomb_png(inputs / "bomb.png")
    run_bad([*base, "--image", str(bomb)], capsys, "bomb.png", out)
    (inputs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    run_bad([*base, "--image", str(inputs / "corrupt.png")], capsys, "corrupt.png", out)
    run_bad([*base, "--image", str(inputs / "missing.png")], capsys, "missing.png", out)
    good = png(inputs / "good.png")
    traj = inputs / "traj.json"
    eye = np.eye(3).tolist()
    traj.write_text(json.dumps({"R": [eye] * 6, "P": [[0.0, 0.0, 0.01 * i] for i in range(6)]}))
    argv = [*EXPLORE, "--random", "--image", str(good), "--trajectory", str(traj)]
    run_bad([*argv, "--out", str(out / "o.mp4")], capsys, "traj.json gives 6 frames", out)
    traj.write_text("[" * 100_000)
    run_bad([*argv, "--out", str(out / "o.mp4")], capsys, "traj.json", out)


@pytest.mark.parametrize(
    "how, culprit",
    [
        ("truncated", "model.safetensors is truncated"),
        ("config-mismatch", "dit"),
        ("resolution", "world_model.json does not match its weights"),
        ("bad-json", "world_model.json"),
    ],
)
def test_explore_damaged_checkpoints(tmp_path, capsys, model_dir, how, culprit):
    bad = damaged_copy(model_dir, tmp_path, how)
    out = tmp_path / "out"
    out.mkdir()
    argv = [*EXPLORE, "--checkpoint", str(bad), "--scene", "1", "--out", str(out / "o.mp4")]
    run_bad(argv, capsys, culprit, out)


def test_explore_outputs_appear_together_or_not_at_all(tmp_path, capsys, monkeypatch):
    """A failure writing the JSON (the last output) leaves none of the mp4s."""
    import reverie.io

    def disk_full(path, obj, indent=2):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(reverie.io, "atomic_write_json", disk_full)
    argv = [*EXPLORE, "--random", "--scene", "1", "--seconds", "0.25",
            "--out", str(tmp_path / "o.mp4"), "--json", str(tmp_path / "m.json")]  # fmt: skip
    run_bad(argv, capsys, "No space left on device", tmp_path)


def test_sigterm_removes_temporary_files(tmp_path, capsys, monkeypatch):
    """SIGTERM during writing: the boundary turns it into an exit (143) that runs cleanups."""
    import reverie.explore
    from reverie.io import atomic_outputs

    def killed_while_writing(args):
        with atomic_outputs() as outs:
            outs.path(tmp_path / "o.mp4").write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("SIGTERM was not delivered")

    monkeypatch.setattr(reverie.explore, "explore", killed_while_writing)
    assert main([*EXPLORE, "--random", "--scene", "1", "--out", str(tmp_path / "o.mp4")]) == 143
    err = capsys.readouterr().err
    assert "terminated; no output was written" in err and "resume" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "extra, culprit",
    [
        (["--resolution", "100000"], "--resolution"),
        (["--resolution", "50"], "--resolution"),
        (["--seconds", "1e9"], "--seconds"),
        (["--seconds", "nan"], "--seconds"),
        (["--episodes", "0"], "--episodes"),
        (["--workers", "0"], "--workers"),
        (["--fps", "0"], "--fps"),
    ],
)
def test_render_arguments(tmp_path, capsys, extra, culprit):
    run_bad(["render", "--out", str(tmp_path / "ds"), *extra], capsys, culprit, tmp_path)


def test_render_out_is_a_file(tmp_path, capsys):
    (tmp_path / "ds").write_text("")
    run_bad(["render", "--out", str(tmp_path / "ds")], capsys, "is a file", tmp_path)


def test_a_killed_render_leaves_no_temporary_directories(tmp_path, capsys):
    out = tmp_path / "ds"
    argv = ["render", "--out", str(out), "--episodes", "1", "--seconds", "0.25",
            "--resolution", "32", "--world", "rooms"]  # fmt: skip
    (out / "episodes" / ".tmp-000003-abc").mkdir(parents=True)  # what a kill -9 leaves
    assert main(argv) == 0
    assert [p.name for p in (out / "episodes").iterdir()] == ["000000"]
    mode = (out / "episodes" / "000000").stat().st_mode & 0o777
    assert mode == 0o777 & ~_umask()  # not mkdtemp's 0700


@pytest.mark.parametrize(
    "argv, culprit",
    [
        (["toy2"], "unknown training stage 'toy2'"),
        (["toy", "optim.lrr=1"], "optim.lrr"),
        (["toy", "trainer.max_steps=-"], "trainer.max_steps"),
        (["toy", "--resume=must"], "--resume=must"),
    ],
)
def test_train_arguments(tmp_path, capsys, argv, culprit):
    run = tmp_path / "run"
    full = ["train", argv[0], "--config", str(CONFIG), f"trainer.run_dir={run}", *argv[1:]]
    run_bad(full, capsys, culprit, tmp_path)


def test_train_config_files(tmp_path, capsys):
    run_bad(["train", "toy", "--config", str(tmp_path / "none.yaml")], capsys, "none.yaml")
    (tmp_path / "bad.yaml").write_text("trainer: [unclosed\n")
    run_bad(["train", "toy", "--config", str(tmp_path / "bad.yaml")], capsys, "bad.yaml")


def test_train_help_lists_every_stage(capsys):
    from reverie.training import stage_names

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out.split("stages:")[1]
    for name in stage_names():
        assert f"\n  {name} " in text


@pytest.mark.parametrize(
    "argv, culprit",
    [
        (["speed", "--random", "--threads", "0"], "--threads"),
        (["revisit", "--random", "--scenes", "0"], "scenes"),
        (["speed", "--random", "--minutes", "-1"], "minutes"),
        (["speed", "--checkpoint", "/nonexistent/model"], "/nonexistent/model"),
    ],
)
def test_eval_arguments(tmp_path, capsys, argv, culprit):
    full = ["eval", *argv, "--out", str(tmp_path / "r.json"), "--no-progress"]
    run_bad(full, capsys, culprit, tmp_path)


def test_eval_out_is_checked_before_work(tmp_path, capsys, model_dir):
    argv = ["eval", "speed", "--checkpoint", str(model_dir), "--out", str(tmp_path)]
    run_bad(argv, capsys, "is a directory", tmp_path)


@pytest.mark.skipif(HAS_CUDA, reason="checks the message of a machine without CUDA")
def test_cuda_without_cuda(tmp_path, capsys, model_dir):
    argv = ["eval", "speed", "--checkpoint", str(model_dir), "--device", "cuda",
            "--out", str(tmp_path / "r.json")]  # fmt: skip
    run_bad(argv, capsys, "CUDA is not available", tmp_path)
    run_bad(["play", "--checkpoint", str(model_dir), "--device", "cuda"], capsys, "CUDA")


@pytest.mark.parametrize(
    "extra, culprit",
    [
        (["--port", "99999"], "--port"),
        (["--port", "0"], "--port"),
        (["--clip-seconds", "inf"], "--clip-seconds"),
        (["--clip-seconds", "nan"], "--clip-seconds"),
        (["--max-sessions", "0"], "--max-sessions"),
        (["--token", "short"], "--token"),
        (["--allow-origin", "evil.example"], "--allow-origin"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_play_arguments(capsys, extra, culprit):
    run_bad(["play", "--random", *extra], capsys, culprit)


def test_a_real_process_exits_2_with_one_line(tmp_path):
    """The same boundary in a real ``python -m reverie.cli`` process."""
    proc = subprocess.run(
        [sys.executable, "-m", "reverie.cli", "render", "--out", str(tmp_path / "ds"),
         "--resolution", "100000"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--resolution" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "ds").exists()
    debug = subprocess.run(
        [sys.executable, "-m", "reverie.cli", "render", "--out", str(tmp_path / "ds"),
         "--resolution", "100000"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "REVERIE_DEBUG": "1"},
    )  # fmt: skip
    assert "Traceback" in debug.stderr  # REVERIE_DEBUG=1 shows it


def _umask() -> int:
    from reverie.io import umask

    return umask()


def test_atomic_writes_use_the_umask(tmp_path):
    from reverie.io import atomic_outputs, atomic_write_text, make_temp_dir

    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_outputs() as outs:
        outs.path(tmp_path / "b.mp4").write_bytes(b"x")
    for name in ("a.txt", "b.mp4"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert make_temp_dir(".t", tmp_path).stat().st_mode & 0o777 == 0o777 & ~_umask()
