#!/bin/bash
# v5 student: warm start from the shipped v3 student (EMA), the same teacher-forced x0 / pixel-loss
# recipe on 20-latent-frame clips, batch 8, lr 2e-4 with cosine decay to 2e-5 over the run.
set -e
cd /work/main
export OMP_NUM_THREADS=2
run=runs/v5/student
reverie train student --config configs/tiny/student.yaml --resume trainer.device=cpu trainer.precision=bf16 \
  model.preset=tiny-patch4 model.prediction=x0 teacher=runs/v2/teacher \
  model.init=runs/v3/tf-x0-pixel/checkpoints/step_00003800/student.ema.safetensors \
  data.trajectories=null data.latents=runs/v3/latents trainer.run_dir=$run \
  data.batch_size=8 data.clip_latent_frames=20 trainer.max_steps=${STEPS:-3000} trainer.checkpoint_every=100 \
  trainer.log_every=20 trainer.ema_decay=0.995 hybrid.teacher_forcing=true optim.lr=2e-4 optim.warmup_steps=10 \
  optim.decay_steps=${STEPS:-3000} optim.final_lr_fraction=0.1 loss_weighting=pixel > $run.log 2>&1
echo done > $run.done
