"""The ``reverie`` command line: a small render, resume, and clear errors for bad input."""

import json

import pytest

from reverie.cli import main


def test_render_then_resume(tmp_path, capsys):
    out = tmp_path / "ds"
    argv = [
        "render",
        "--out",
        str(out),
        "--episodes",
        "2",
        "--seconds",
        "0.5",
        "--resolution",
        "32",
        "--world",
        "rooms",
        "--trajectory",
        "random",
    ]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["episodes"] == 2 and first["frames"] == 16
    assert main(argv) == 0  # nothing left to do: same manifest
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--resolution", "50"], "multiple of 16"),
        (["--episodes", "0"], "episodes"),
        (["--seconds", "0"], "seconds"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, flags, message):
    assert main(["render", "--out", str(tmp_path / "x"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_unknown_world_is_rejected_by_the_parser(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["render", "--out", str(tmp_path), "--world", "mars"])
    assert e.value.code == 2


def test_resume_with_other_settings_is_an_error(tmp_path, capsys):
    out = str(tmp_path / "ds")
    base = ["render", "--out", out, "--episodes", "1", "--seconds", "0.25", "--resolution", "32"]
    assert main(base) == 0
    assert main([*base[:-1], "64"]) == 2
    assert "other settings" in capsys.readouterr().err
