"""The ``student`` stage (ODE init with hybrid forcing, RELIC §4.4.1) on trajectories of a small
teacher (CPU, seconds): the split into clean context and noisy blocks, the model inputs, the
teacher initialisation, a falling loss, resume and bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_stage_ode import make_trajectories
from test_stage_teacher import BACKBONE, fake_text_encoder

from reverie.diffusion import (
    BlockInputs,
    FewStepSchedule,
    denoise_step,
    video_frame_range,
    write_denoised,
)
from reverie.memory import get_policy
from reverie.training import load_experiment, read_metrics, train
from reverie.training.common import encode_text, load_teacher
from reverie.training.distributed import DistContext
from reverie.training.seeding import seed_everything
from reverie.training.stages.student import StudentStage

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "student.yaml"
TIMES = FewStepSchedule().times


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    _, teacher, trajectories = make_trajectories(tmp_path_factory.mktemp("student"))
    return teacher, trajectories


@pytest.fixture(autouse=True)
def fake_text():
    with fake_text_encoder():
        yield


def student_args(run_dir: Path, setup: tuple[Path, Path], *extra: str) -> list[str]:
    teacher, trajectories = setup
    return [
        f"trainer.run_dir={run_dir}",
        f"teacher={teacher}",
        f"data.trajectories={trajectories}",
        f"model.overrides={BACKBONE}",
        "frames_per_block=2",
        "trainer.progress=false",
        "trainer.log_every=1",
        "trainer.device=cpu",
        *extra,
    ]


def build(run_dir: Path, setup, *extra: str) -> StudentStage:
    _, config = load_experiment("student", CONFIG, student_args(run_dir, setup, *extra))
    seed_everything(0)
    StudentStage.check_config(config, DistContext())
    return StudentStage(config, DistContext())


def test_hybrid_split_keeps_clean_context_before_noisy_blocks(setup, tmp_path):
    stage = build(tmp_path, setup, "frames_per_block=1", "hybrid.min_noisy_blocks=2")
    noisy, step = stage.hybrid_split(64, 4)  # (64, 4) each, 4 blocks of 1 frame
    k = noisy.sum(1)
    assert k.min() == 2 and k.max() == 4  # K ~ U{2..4}
    assert (noisy == (torch.arange(4)[None] >= 4 - k[:, None])).all()  # the last K blocks
    assert step.min() == 0 and step.max() == len(TIMES) - 1
    stage = build(tmp_path, setup)  # 2 frames per block: one time per block
    noisy, step = stage.hybrid_split(64, 4)
    assert (noisy[:, 0::2] == noisy[:, 1::2]).all() and (step[:, 0::2] == step[:, 1::2]).all()


def test_inputs_are_clean_context_and_trajectory_states(setup, tmp_path):
    stage = build(tmp_path, setup, "hybrid.max_noisy_blocks=1")  # K = 1 of 2 blocks
    batch = next(stage.batches(0))
    seen = {}

    def record(module, args, kwargs):
        seen["x"], seen["t"] = args[0].detach(), args[1].detach()

    stage.student.register_forward_pre_hook(record, with_kwargs=True)
    out = stage.loss("student", batch)
    traj = batch.trajectory  # (2, 5, 4, 16, 4, 4)
    x, t = seen["x"], seen["t"]  # (2, 4, 16, 4, 4), (2, 4)
    torch.testing.assert_close(x[:, :2], traj[:, -1, :2])  # context: the ODE's clean x0
    assert (t[:, :2] == 0).all() and float(out["noisy_fraction"]) == 0.5
    for b in range(2):
        (step,) = [i for i, time in enumerate(TIMES) if abs(time - float(t[b, 2])) < 1e-6]
        assert float(t[b, 3]) == float(t[b, 2])  # one time per block
        torch.testing.assert_close(x[b, 2:], traj[b, step, 2:])  # noisy: x at that time


def test_starts_from_the_teacher_and_regresses_onto_the_ode(setup, tmp_path):
    stage = build(tmp_path, setup, "optim.lr=3e-3", "optim.warmup_steps=0")
    teacher, _ = load_teacher(setup[0])
    for (name, a), b in zip(
        stage.student.state_dict().items(), teacher.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    # the small teacher's flow is nearly straight, so its own one-step x0 is already close:
    # move the student away from it and check that the regression brings it back
    torch.manual_seed(1)
    with torch.no_grad():
        for p in stage.student.head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = next(stage.batches(0))

    def measure() -> torch.Tensor:
        torch.manual_seed(0)  # the same split and times each time
        return stage.loss("student", batch)["loss"]

    first = measure()
    for _ in range(10):
        stage.optimizers()["student"].zero_grad(set_to_none=True)
        measure().backward()
        stage.optimizers()["student"].step()
    assert measure() < 0.7 * first


def test_resume(setup, tmp_path):
    train("student", CONFIG, student_args(tmp_path, setup, "trainer.max_steps=1"))
    result = train(
        "student", CONFIG, student_args(tmp_path, setup, "trainer.max_steps=2"), resume=True
    )
    assert result.step == 2 and [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_bad_inputs_are_clear_errors(setup, tmp_path):
    def run(*extra: str) -> None:
        train("student", CONFIG, student_args(tmp_path, setup, *extra))

    other = "{dim: 32, ffn_dim: 64, num_heads: 2, num_layers: 3, text_dim: 32}"
    with pytest.raises(ValueError, match="another backbone.*num_layers: 2 there, 3 here"):
        run(f"model.overrides={other}")
    with pytest.raises(ValueError, match="another backbone.*dim: 32 there, 256 here"):
        run("model.overrides={}")  # the plain tiny preset
    with pytest.raises(ValueError, match="schedule.times"):
        run("schedule.timesteps=[1000, 500]")
    with pytest.raises(ValueError, match="do not split into blocks of 3"):
        run("frames_per_block=3")
    with pytest.raises(ValueError, match="max_noisy_blocks=3 > 2 blocks"):
        run("hybrid.max_noisy_blocks=3")


def data_forced_args(setup, *extra: str) -> tuple[str, ...]:
    latents = setup[1].parent / "latents"  # make_trajectories' encode output
    return (
        "data.trajectories=null",
        f"data.latents={latents}",
        "data.clip_latent_frames=4",
        "data.resolution=32",
        *extra,
    )


def test_data_forced_inputs_are_real_context_and_forward_process_samples(setup, tmp_path):
    """`data.latents`: clean context = the real clip; noisy blocks = (1 - t) x0 + t noise."""
    stage = build(tmp_path, setup, *data_forced_args(setup, "hybrid.max_noisy_blocks=1"))
    batch = next(stage.batches(0))
    seen = {}

    def record(module, args, kwargs):
        seen["x"], seen["t"] = args[0].detach(), args[1].detach()

    stage.student.register_forward_pre_hook(record, with_kwargs=True)
    torch.manual_seed(3)
    out = stage.loss("student", batch)
    x0, x, t = batch.latents, seen["x"], seen["t"]  # (2, 4, 16, 4, 4), same, (2, 4)
    torch.testing.assert_close(x[:, :2], x0[:, :2])  # context: real, clean
    assert (t[:, :2] == 0).all() and float(out["noisy_fraction"]) == 0.5
    for b in range(2):
        tb = float(t[b, 2])
        assert any(abs(tb - s) < 1e-6 for s in TIMES) and float(t[b, 3]) == tb
        noise = (x[b, 2:] - (1 - tb) * x0[b, 2:]) / tb  # what was mixed in: unit Gaussian
        assert 0.6 < float(noise.std()) < 1.4
    assert torch.isfinite(out["loss"])


def test_data_forced_trains_and_needs_one_source(setup, tmp_path):
    result = train(
        "student",
        CONFIG,
        student_args(tmp_path, setup, *data_forced_args(setup, "trainer.max_steps=2")),
    )
    assert result.step == 2 and all(
        torch.isfinite(torch.tensor(r["student/loss"])) for r in read_metrics(tmp_path)
    )
    with pytest.raises(ValueError, match="exactly one of data.trajectories and data.latents"):
        train("student", CONFIG, student_args(tmp_path / "b", setup, f"data.latents={tmp_path}"))


def test_teacher_forcing_noises_every_block_with_clean_context(setup, tmp_path):
    """`hybrid.teacher_forcing`: every block noisy, the real clip passed as `clean=`."""
    stage = build(tmp_path, setup, *data_forced_args(setup, "hybrid.teacher_forcing=true"))
    batch = next(stage.batches(0))
    seen = {}

    def record(module, args, kwargs):
        seen["t"], seen["clean"] = args[1].detach(), kwargs["clean"]

    stage.student.register_forward_pre_hook(record, with_kwargs=True)
    out = stage.loss("student", batch)
    assert float(out["noisy_fraction"]) == 1.0 and (seen["t"] > 0).all()
    torch.testing.assert_close(seen["clean"], batch.latents)
    assert torch.isfinite(out["loss"])


def test_pixel_weighting_needs_patch_latents(setup, tmp_path):
    with pytest.raises(ValueError, match="patch tokenizer"):
        build(tmp_path, setup, *data_forced_args(setup, "loss_weighting=pixel"))


def test_rollout_context_reaches_the_sequential_one_step_rollout(setup, tmp_path):
    """`hybrid.rollout_depth`: after as many Jacobi passes as generated blocks, the context is
    the engine's one-step rollout from the same noise: each generated block is the
    x0-prediction at t = 1 with the memorized and earlier generated blocks in the cache; the
    memorized prefix stays real."""
    extra = ("hybrid.teacher_forcing=true", "hybrid.rollout_depth=2")
    stage = build(tmp_path, setup, *data_forced_args(setup, *extra))
    clip = next(stage.batches(0))
    real, b, frames = clip.latents, *clip.latents.shape[:2]
    text = encode_text(stage.text, clip.caption, torch.device("cpu"))
    torch.manual_seed(5)
    context = stage.rollout_context(real, text, clip)
    torch.manual_seed(5)  # the same draws: the prefix, then the noise
    memorized = stage.memorized_prefix(b, frames)  # (B, T) bool, whole blocks of 2
    noise = torch.randn_like(real)
    model, policy = stage.student, get_policy("full")
    for i in range(b):
        p = int(memorized[i].sum())
        assert p in (2,) and torch.equal(context[i, :p], real[i, :p])
        cache = model.new_cache()
        row = slice(i, i + 1)

        def inputs(start: int, end: int, row=row) -> BlockInputs:
            video = video_frame_range(start, end)
            return BlockInputs(
                text[row],
                actions=clip.actions[row, video],
                poses=(clip.R[row, video], clip.P[row, video]),
            )

        with torch.no_grad():
            write_denoised(model, cache, policy, real[row, :p], inputs(0, p), 0)
            for start in range(p, frames, 2):  # generated blocks, sequentially
                x = noise[row, start : start + 2]
                x0 = denoise_step(model, x, TIMES[0], cache, inputs(start, start + 2), start)
                torch.testing.assert_close(
                    context[row, start : start + 2], x0, atol=1e-4, rtol=1e-4
                )
                write_denoised(model, cache, policy, x0, inputs(start, start + 2), start)
    assert not torch.allclose(context[:, 2:], real[:, 2:])


def test_memory_policies_narrow_the_teacher_forced_context(setup, tmp_path):
    """`hybrid.memory` as policies: each sample's forward gets one policy's context visibility
    (read off the policy), drawn per sample; without teacher forcing, or with a policy that
    pools tokens, the config is refused."""
    extra = (
        "hybrid.teacher_forcing=true",
        "hybrid.memory=[window, full]",
        "hybrid.memory_options={window: {sink_frames: 0, window_frames: 1}}",
    )
    stage = build(tmp_path, setup, *data_forced_args(setup, *extra))
    window = torch.zeros(4, 4, dtype=torch.bool)
    window[2:, 1] = True  # block 1 (frames 2, 3) keeps only frame 1
    full = torch.ones(4, 4, dtype=torch.bool).tril(-1)
    full[1, 0] = full[3, 2] = False  # a block's own frames are the mask's, not the memory's
    seen = []

    def record(module, args, kwargs):
        seen.extend(kwargs["context_visible"])
        assert kwargs["pooled_context"] is None

    stage.student.register_forward_pre_hook(record, with_kwargs=True)
    batch = next(stage.batches(0))
    for _ in range(6):
        assert torch.isfinite(stage.loss("student", batch)["loss"])
    kinds = {("window" if v.equal(window) else "full" if v.equal(full) else "?") for v in seen}
    assert kinds == {"window", "full"}
    with pytest.raises(ValueError, match="teacher_forcing"):
        build(tmp_path, setup, *data_forced_args(setup, "hybrid.memory=window"))
    with pytest.raises(ValueError, match="empty prompt"):  # MAG's own write pass
        build(tmp_path, setup, *data_forced_args(setup, *extra[:1], "hybrid.memory=mag"))
    with pytest.raises(ValueError, match="not in hybrid.memory"):
        build(
            tmp_path, setup, *data_forced_args(setup, *extra[:2], "hybrid.memory_options={mag: {}}")
        )


def test_relic_trains_on_its_pooled_memory(setup, tmp_path):
    """`hybrid.memory=[relic, window]`: relic samples see the frames past its window as pooled
    copies (`pooled_context` columns of their own), window samples none of them."""
    extra = (
        "hybrid.teacher_forcing=true",
        "hybrid.memory=[relic, window]",
        "hybrid.memory_options={relic: {window_frames: 1, schedule: [1, 2]}, "
        "window: {sink_frames: 0, window_frames: 1}}",
        "frames_per_block=1",
    )
    stage = build(tmp_path, setup, *data_forced_args(setup, *extra))
    seen = []

    def record(module, args, kwargs):
        seen.append((kwargs["context_visible"], kwargs["pooled_context"]))

    stage.student.register_forward_pre_hook(record, with_kwargs=True)
    batch = next(stage.batches(0))
    for _ in range(4):
        assert torch.isfinite(stage.loss("student", batch)["loss"])
    pooled_rows = 0
    for visible, pooled in seen:
        assert pooled is not None and pooled.pool.shape[1] % 4 == 0  # 4 frames of tokens
        torch.testing.assert_close(pooled.pool.sum(1), torch.ones(len(pooled.pool)))  # means
        for v, p in zip(visible, pooled.visible, strict=True):
            if p.any():  # relic: the newest frame whole, older ones pooled unless factor 1
                pooled_rows += 1
                assert v[3].tolist() == [True, False, True, False]  # frame 1 is pooled
            else:  # window: only the previous frame
                assert v[3].tolist() == [False, False, True, False]
    assert pooled_rows > 0
