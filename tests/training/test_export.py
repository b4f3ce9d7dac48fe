"""`reverie.training.export`: training runs -> a packaged `WorldModel` (tiny runs, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_stage_mag import FakeTextEncoder, run_mag
from test_stage_ode import make_trajectories
from test_stage_retrieval import run_retrieval
from test_stage_student import student_args
from test_stage_teacher import fake_text_encoder

from reverie.engine import WorldModel
from reverie.training import train
from reverie.training.export import component_stages, export, main
from reverie.training.stages import mag as mag_module
from reverie.training.stages.mag import memory_model_from_run
from reverie.training.stages.retrieval import retrieval_embedder_from_run

STUDENT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "student.yaml"


def test_export_packages_the_student_and_the_component_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(mag_module, "get_text_encoder", lambda name, **kw: FakeTextEncoder())
    latents, teacher, trajectories = make_trajectories(tmp_path)
    student = tmp_path / "student"
    with fake_text_encoder():
        args = student_args(student, (teacher, trajectories), "trainer.max_steps=1")
        train("student", STUDENT_CONFIG, args)
    run_mag(tmp_path / "mag", "trainer.max_steps=1")
    run_retrieval(tmp_path / "retrieval", "trainer.max_steps=1")
    assert component_stages() == ["mag", "retrieval"]

    out = tmp_path / "model"
    code = main(
        ["--vae", str(tmp_path / "vae"), "--latents", str(latents), "--student", str(student)]
        + ["--mag", str(tmp_path / "mag"), "--retrieval", str(tmp_path / "retrieval")]
        + ["--out", str(out)]
    )
    assert code == 0
    meta = json.loads((out / "world_model.json").read_text())
    assert meta["memory"] == {"mag": {"block_frames": 2}}  # the mag run's b
    assert set(meta["provenance"]["runs"]) == {"vae", "student", "mag", "retrieval"}
    model = WorldModel.from_pretrained(out)
    assert set(model.components) == {"memory_model", "retrieval_embedder"}
    for key, trained in (
        ("memory_model", memory_model_from_run(tmp_path / "mag")),
        ("retrieval_embedder", retrieval_embedder_from_run(tmp_path / "retrieval")),
    ):
        state = model.components[key].state_dict()
        for name, value in trained.state_dict().items():  # stored in bf16
            torch.testing.assert_close(state[name], value.bfloat16().float())

    bare = export(vae=tmp_path / "vae", latents=latents, student=student, out=tmp_path / "bare")
    assert bare.components == {} and bare.config.memory == {}
    options = json.dumps(
        {"mag": {"block_frames": 3, "write_with_empty_text": False}, "relic": {"max_tokens": 9}}
    )
    code = main(
        ["--vae", str(tmp_path / "vae"), "--latents", str(latents), "--student", str(student)]
        + ["--memory", options, "--out", str(tmp_path / "configured")]
    )
    configured = WorldModel.from_pretrained(tmp_path / "configured")
    assert code == 0 and configured.components == {}
    assert configured.config.memory == json.loads(options)
    policy = configured.make_policy("mag")
    assert policy.writer is None and not policy.write_spec.empty_text
    assert configured.make_policy("relic").config.max_tokens == 9
    for bad, match in (({"nope": {}}, "unknown memory policy"), ({"relic": {"x": 1}}, "x")):
        with pytest.raises(ValueError, match=match):
            export(
                vae=tmp_path / "vae",
                latents=latents,
                student=student,
                out=tmp_path / "bad",
                memory_options=bad,
            )
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="trains no component"):
        export(
            vae=tmp_path / "vae",
            latents=latents,
            student=student,
            out=tmp_path / "bad",
            component_runs={"teacher": teacher},
        )
