"""The shared loop: accumulation, bf16 autocast, several optimizers with an update ratio, EMA,
metrics, and every bad input rejected before the first forward pass."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from training_testing import CONFIG, losses, run_toy, toy_args, weights

from reverie.training import (
    EMA,
    OptimConfig,
    Stage,
    Trainer,
    TrainerConfig,
    build_optimizer,
    load_experiment,
    make_loader,
    read_metrics,
    register_stage,
)
from reverie.training.stages.toy import ToyStage


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    run_toy(tmp_path / "full", "trainer.max_steps=4", "data.batch_size=16")
    run_toy(tmp_path / "accum", "trainer.max_steps=4", "data.batch_size=8", "trainer.grad_accum=2")
    a, b = weights(tmp_path / "full", 4), weights(tmp_path / "accum", 4)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    for step, loss in losses(tmp_path / "full").items():
        assert losses(tmp_path / "accum")[step] == pytest.approx(loss, rel=1e-5)


def test_bf16_autocast_trains_fp32_weights_close_to_fp32(tmp_path, monkeypatch):
    seen = []
    original = ToyStage.loss

    def spy(self, update, batch):
        seen.append(self.model(batch[0]).dtype)
        return original(self, update, batch)

    monkeypatch.setattr(ToyStage, "loss", spy)
    run_toy(tmp_path / "bf16", "trainer.max_steps=3", "trainer.precision=bf16")
    monkeypatch.setattr(ToyStage, "loss", original)
    run_toy(tmp_path / "fp32", "trainer.max_steps=3")
    assert set(seen) == {torch.bfloat16}
    assert all(w.dtype == torch.float32 for w in weights(tmp_path / "bf16", 3).values())
    low, full = losses(tmp_path / "bf16"), losses(tmp_path / "fp32")
    assert low != full and all(low[s] == pytest.approx(full[s], rel=0.05) for s in full)


def test_metrics_rows_and_the_run_config(tmp_path):
    result = run_toy(tmp_path / "run", "trainer.max_steps=4", "trainer.log_every=2")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [2, 4]
    assert {"model/loss", "model/grad_norm", "lr/model", "steps_per_s", "samples_per_s"} <= set(
        rows[0]
    )
    assert result.metrics == rows[-1]
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["stage"] == "toy" and stored["config"]["trainer"]["max_steps"] == 4


def test_ema_follows_the_closed_form():
    module = nn.Linear(2, 1)
    ema = EMA({"m": module}, decay=0.5)
    start = module.weight.detach().clone()
    with torch.no_grad():
        module.weight.fill_(1.0)
    ema.update()
    ema.update()  # ema = 0.25 * start + 0.75 * 1
    torch.testing.assert_close(ema.shadow["m"]["weight"], 0.25 * start + 0.75)
    state = ema.full_state_dict("m")
    other = EMA({"m": nn.Linear(2, 1)}, decay=0.5)
    other.load_full_state_dict("m", state)
    torch.testing.assert_close(other.shadow["m"]["weight"], ema.shadow["m"]["weight"])
    with pytest.raises(ValueError, match="weight"):
        other.load_full_state_dict("m", {**state, "weight": torch.zeros(3, 3)})


def test_data_stream_splits_global_batches_over_ranks_and_resumes():
    data = list(range(10))

    def take(loader, n):
        it = iter(loader)
        return [next(it).tolist() for _ in range(n)]

    single = take(make_loader(data, 4, seed=3), 6)
    ranks = [take(make_loader(data, 4, rank=r, world_size=2, seed=3), 6) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == single
    assert take(make_loader(data, 4, seed=3, start=2), 4) == single[2:]
    assert sorted(sum(single[:5], [])[:10]) == data  # the first epoch is a permutation
    with pytest.raises(ValueError, match="multiple of the world size"):
        make_loader(data, 3, rank=0, world_size=2)


# ----------------------------------------------------------------- several optimizers, 5:1 ratio
@dataclass(frozen=True)
class TwoOptConfig:
    trainer: TrainerConfig
    critic: OptimConfig = field(default_factory=OptimConfig)
    generator: OptimConfig = field(default_factory=OptimConfig)
    ratio: int = 5


@register_stage("test_two_optimizers")
class TwoOptStage(Stage):
    """Self-Forcing-shaped schedule: the critic every step, the generator every `ratio`-th."""

    config_class = TwoOptConfig

    def __init__(self, config, dist):
        super().__init__(config, dist)
        self.gen, self.critic = dist.wrap(nn.Linear(3, 3)), dist.wrap(nn.Linear(3, 1))
        self.opts = {
            "critic": build_optimizer(self.critic.parameters(), config.critic)[0],
            "generator": build_optimizer(self.gen.parameters(), config.generator)[0],
        }

    def modules(self):
        return {"generator": self.gen, "critic": self.critic}

    def optimizers(self):
        return self.opts

    def updates(self, step):
        return ("critic", "generator") if step % self.config.ratio == 0 else ("critic",)

    def batches(self, start):
        return iter(make_loader(torch.randn(32, 3), 4, seed=1, start=start))

    def loss(self, update, batch):
        fake = self.gen(batch)
        if update == "critic":
            return {"loss": F.mse_loss(self.critic(fake.detach()), torch.zeros(len(batch), 1))}
        return {"loss": -self.critic(fake).mean()}


def test_update_ratio_steps_each_optimizer_on_its_schedule(tmp_path):
    config = TwoOptConfig(
        trainer=TrainerConfig(
            run_dir=tmp_path / "run", max_steps=6, log_every=1, progress=False, device="cpu"
        )
    )
    trainer = Trainer(TwoOptStage, config)
    trainer.run()
    opts = trainer.stage.optimizers()
    assert int(opts["critic"].state_dict()["state"][0]["step"]) == 6
    assert int(opts["generator"].state_dict()["state"][0]["step"]) == 2  # steps 0 and 5
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows if "generator/loss" in r] == [1, 6]
    assert all("critic/loss" in r for r in rows)


# ----------------------------------------------------------------- errors before any compute
@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (["optim.lrr=1e-4"], ValueError, r"unknown config key 'optim.lrr'.*known: \['betas'"),
        (["trainer.max_steps=ten"], ValueError, r"config.trainer.max_steps: expected an integer"),
        (["trainer.precision=fp8"], ValueError, r"trainer.precision: 'fp8' not in"),
        (["trainer.ema_modules=[generator]"], ValueError, "not modules of toy"),
        (["trainer.distributed=ddp"], RuntimeError, "needs a torchrun launch"),
        (["data.batch_size=0"], ValueError, r"config.data: batch_size must be >= 1"),
        (["optim.lr=-1"], ValueError, "lr must be > 0"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        stage_cls, config = load_experiment("toy", CONFIG, toy_args(tmp_path / "run", *overrides))
        Trainer(stage_cls, config)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_unknown_stage_and_a_dataset_of_another_resolution(tmp_path):
    with pytest.raises(ValueError, match=r"unknown training stage 'vea'; known: \[.*'toy'"):
        load_experiment("vea", CONFIG)
    ds = tmp_path / "ds"
    ds.mkdir()
    row = {"index": 0, "id": "000000", "height": 32, "width": 32, "frames": 16}
    (ds / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="is 32x32 but 64x64 was expected"):
        run_toy(tmp_path / "run", f"data.dataset={ds}", "data.resolution=64")
    with pytest.raises(FileNotFoundError, match="no manifest"):
        run_toy(tmp_path / "run", f"data.dataset={tmp_path / 'nowhere'}")
    result = run_toy(
        tmp_path / "run", f"data.dataset={ds}", "data.resolution=32", "trainer.max_steps=1"
    )
    assert result.step == 1


def test_lr_schedule_warms_up_decays_by_cosine_and_holds():
    param = nn.Parameter(torch.zeros(1))
    opt, sched = build_optimizer(
        [param], OptimConfig(lr=1.0, warmup_steps=4, decay_steps=12, final_lr_fraction=0.1)
    )
    rates = []
    for _ in range(16):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    middle = 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 4 / 8)).item())
    assert rates[8] == pytest.approx(middle)  # halfway through the decay: 0.55
    assert all(a >= b for a, b in zip(rates[3:], rates[4:], strict=False))
    assert rates[12:] == pytest.approx([0.1] * 4)  # held at the final rate


def test_constant_lr_without_decay_steps():
    param = nn.Parameter(torch.zeros(1))
    opt, sched = build_optimizer([param], OptimConfig(lr=0.5, warmup_steps=2))
    rates = []
    for _ in range(5):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([0.25, 0.5, 0.5, 0.5, 0.5])
