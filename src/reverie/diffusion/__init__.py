"""Flow matching for the world model: Wan2.1's shifted schedule, samplers, the block rollout.

Public API:
- schedule: `shift_time`/`unshift_time`, `noisy_sample`, `velocity_target`,
  `x0_from_velocity`/`noise_from_velocity`/`velocity_from_x0`, `expand_time`,
  `sampling_times`, `FewStepSchedule`, `DEFAULT_SHIFT`;
- training time: `TimeSamplingConfig`, `TimeDistribution`, `sample_training_time`,
  `per_block_time`;
- samplers: `VelocityFn`, `classifier_free_guidance`, `euler_sample`, `few_step_sample`,
  `fresh_noise`;
- rollout (the one block loop of inference and training, Self Forcing): `rollout`,
  `rollout_block`, `denoise_block`, `denoise_step`, `write_denoised`, `BlockInputs`,
  `BlockOutput`, `block_spans`, `split_per_block`, `video_frame_range`.
"""

from reverie.diffusion.rollout import (
    BlockInputs,
    BlockOutput,
    block_spans,
    denoise_block,
    denoise_step,
    rollout,
    rollout_block,
    split_per_block,
    video_frame_range,
    write_denoised,
)
from reverie.diffusion.samplers import (
    VelocityFn,
    classifier_free_guidance,
    euler_sample,
    few_step_sample,
    fresh_noise,
)
from reverie.diffusion.schedule import (
    DEFAULT_SHIFT,
    FewStepSchedule,
    expand_time,
    noise_from_velocity,
    noisy_sample,
    sampling_times,
    shift_time,
    unshift_time,
    velocity_from_x0,
    velocity_target,
    x0_from_velocity,
)
from reverie.diffusion.time_sampling import (
    TimeDistribution,
    TimeSamplingConfig,
    per_block_time,
    sample_training_time,
)

__all__ = [
    "BlockInputs",
    "BlockOutput",
    "DEFAULT_SHIFT",
    "FewStepSchedule",
    "TimeDistribution",
    "TimeSamplingConfig",
    "VelocityFn",
    "block_spans",
    "classifier_free_guidance",
    "euler_sample",
    "expand_time",
    "denoise_block",
    "denoise_step",
    "few_step_sample",
    "fresh_noise",
    "noise_from_velocity",
    "noisy_sample",
    "per_block_time",
    "rollout",
    "rollout_block",
    "sample_training_time",
    "sampling_times",
    "shift_time",
    "split_per_block",
    "unshift_time",
    "velocity_from_x0",
    "velocity_target",
    "video_frame_range",
    "write_denoised",
    "x0_from_velocity",
]
