#!/usr/bin/env bash
# Train the shipped default world model (the tiny recipe, docs/training.md) from scratch on CPU
# and package it into src/reverie/assets/default (reverie.WorldModel.from_pretrained()).
#
#   bash scripts/train_default.sh                 # everything; re-running resumes every stage
#   TEACHER_STEPS=50 STUDENT_STEPS=50 bash scripts/train_default.sh   # shorter
#
# The tokenizer is the linear patch tokenizer (`reverie fit-tokenizer`: whitened PCA of 4x4 RGB
# patches, seconds to fit; 16 x 16 x 16 latents for 64x64 video), and the DiT the `tiny-patch4`
# preset (patch 1x4x4: 16 tokens per latent frame). The learned Wan VAE stays available
# (`reverie train vae`, configs/tiny/vae.yaml). Every stage is resumable (`--resume`, sharded
# encode/ODE outputs), so an interrupted run continues where it stopped. Stage step counts are the values used for the shipped model
# (docs/model_card.md has the wall times measured on the 2-core CPU machine).
# Training scenes: `reverie render --seed 0` (scene seeds from episode_seeds(0, i)); evaluation
# uses the held-out scene seeds 1_000_000 + i (reverie.evaluation.heldout), never seen here.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/default}
OUT=${OUT:-src/reverie/assets/default}
EPISODES=${EPISODES:-400}           # x 20 s at 16 fps, 64x64 (~2.2 h of video)
FIT_EPISODES=${FIT_EPISODES:-96}    # episodes the tokenizer's PCA is fitted on
TEACHER_STEPS=${TEACHER_STEPS:-2000}
TEACHER_BATCH=${TEACHER_BATCH:-16}  # x 20 latent frames x 16 tokens
ODE=${ODE:-0}                       # 1: ODE init from teacher samples (RELIC §4.4.1); 0: data-forced
ODE_SHARDS=${ODE_SHARDS:-112}       # x 4 clips of 20 latent frames (ODE=1 only)
STUDENT_STEPS=${STUDENT_STEPS:-3800}
STUDENT_BATCH=${STUDENT_BATCH:-4}  # x 2 copies (teacher forcing) x 20 latent frames x 16 tokens
CONTINUE_STEPS=${CONTINUE_STEPS:-3000}  # then batch 8, lr 2e-4 decayed by cosine to 2e-5
CONTINUE_BATCH=${CONTINUE_BATCH:-8}
MAG_STEPS=${MAG_STEPS:-300}
RETRIEVAL_STEPS=${RETRIEVAL_STEPS:-2000}
PROBE_STEPS=${PROBE_STEPS:-2000}
DEVICE=${DEVICE:-cpu}               # cuda trains the same recipe on a GPU
# 2 threads on an otherwise idle 2-core machine; use 1 if anything else runs beside it
# (2-thread OpenMP steps collapse to less than half speed under contention).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

DATA=$WORK/data/worlds
common="trainer.device=$DEVICE trainer.precision=bf16"
dit="model.preset=tiny-patch4"
log() { echo "[train_default $(date +%H:%M:%S)] $*"; }
mkdir -p "$WORK"
# timed NAME CMD...: run CMD, append {"stage", "seconds", "finished"} to $WORK/stage_times.jsonl
timed() {
  local name=$1 t0 t1; shift
  t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N)
  printf '{"stage": "%s", "seconds": %.1f, "finished": "%s"}\n' "$name" \
    "$(python -c "print($t1 - $t0)")" "$(date -u +%FT%TZ)" >> "$WORK/stage_times.jsonl"
}

log "1/9 render $EPISODES training episodes"
timed render reverie render --out "$DATA" --episodes "$EPISODES" --seconds 20 --resolution 64 \
  --workers 2 --trajectory mixed --seed 0

log "2/9 tokenizer: whitened PCA of 4x4 patches on $FIT_EPISODES episodes"
timed tokenizer reverie fit-tokenizer --data "$DATA" --out "$WORK/vae" --channels 16 --patch 4 \
  --episodes "$FIT_EPISODES"

log "3/9 encode latents"
timed encode reverie encode --data "$DATA" --vae "$WORK/vae" --out "$WORK/latents" --device "$DEVICE"

log "4/9 teacher ($TEACHER_STEPS steps)"
timed teacher reverie train teacher --config configs/tiny/teacher.yaml --resume $common $dit \
  data.latents="$WORK/latents" trainer.run_dir="$WORK/teacher" data.batch_size="$TEACHER_BATCH" \
  trainer.max_steps="$TEACHER_STEPS" trainer.checkpoint_every=100 trainer.log_every=20

# The student regresses with hybrid forcing either onto teacher ODE samples (ODE=1) or onto real
# clips (ODE=0, the default: at this compute the teacher's samples from noise are not scenes
# yet, see docs/model_card.md).
if [ "$ODE" = "1" ]; then
  log "5/9 teacher ODE trajectories ($ODE_SHARDS shards)"
  timed ode reverie train ode --config configs/tiny/ode.yaml --resume trainer.device="$DEVICE" \
    ode.teacher="$WORK/teacher" ode.latents="$WORK/latents" ode.out="$WORK/ode" \
    trainer.run_dir="$WORK/ode-run" trainer.max_steps="$ODE_SHARDS"
  student_data="data.trajectories=$WORK/ode"
else
  log "5/9 (no ODE trajectories: the student is data-forced)"
  student_data="data.trajectories=null data.latents=$WORK/latents"
fi

# Teacher forcing (every block noisy, clean context before it), x0 prediction (JiT) and the
# decoded video's MSE as the loss (pixel weighting of the PCA channels); docs/model_card.md.
log "6/9 student: teacher-forced x0 regression ($STUDENT_STEPS steps, $student_data)"
timed student reverie train student --config configs/tiny/student.yaml --resume $common $dit \
  teacher="$WORK/teacher" $student_data trainer.run_dir="$WORK/student" \
  data.batch_size="$STUDENT_BATCH" model.prediction=x0 hybrid.teacher_forcing=true \
  loss_weighting=pixel optim.lr=2e-4 trainer.log_every=20 \
  trainer.max_steps="$STUDENT_STEPS" trainer.checkpoint_every=100

# The fourth default model continued the student from its EMA weights (session 6): larger
# batches and a decaying learning rate, same objective.
FIRST_CKPT=$(ls -d "$WORK"/student/checkpoints/step_* | sort | tail -1)
log "6b/9 student, continued ($CONTINUE_STEPS steps, batch $CONTINUE_BATCH, cosine lr decay)"
timed student_continued reverie train student --config configs/tiny/student.yaml --resume $common $dit \
  teacher="$WORK/teacher" $student_data trainer.run_dir="$WORK/student2" \
  model.init="$FIRST_CKPT/student.ema.safetensors" data.batch_size="$CONTINUE_BATCH" \
  model.prediction=x0 hybrid.teacher_forcing=true loss_weighting=pixel optim.lr=2e-4 \
  optim.warmup_steps=10 optim.decay_steps="$CONTINUE_STEPS" optim.final_lr_fraction=0.1 \
  trainer.ema_decay=0.995 trainer.log_every=20 trainer.max_steps="$CONTINUE_STEPS" \
  trainer.checkpoint_every=100

STUDENT_CKPT=$(ls -d "$WORK"/student2/checkpoints/step_* | sort | tail -1)
log "7/9 MAG memory model ($MAG_STEPS steps, from $STUDENT_CKPT)"
timed mag reverie train mag --config configs/tiny/mag.yaml --resume $common $dit \
  model.prediction=x0 model.init="$STUDENT_CKPT/student.ema.safetensors" data.latents="$WORK/latents" \
  trainer.run_dir="$WORK/mag" trainer.max_steps="$MAG_STEPS" trainer.checkpoint_every=50 \
  eval.every="$MAG_STEPS"

log "8/9 retrieval embedder ($RETRIEVAL_STEPS steps)"
timed retrieval reverie train retrieval --config configs/tiny/retrieval.yaml --resume $common \
  data.latents="$WORK/latents" trainer.run_dir="$WORK/retrieval" \
  trainer.max_steps="$RETRIEVAL_STEPS" trainer.checkpoint_every=50

# The package leaves MAG's memory model out (PACKAGE_MAG=1 puts it in): at this scale the
# generator was never trained to read the cache it writes, and writing with it lowered revisit
# PSNR by 4.4 dB against the generator's own caption-conditioned write (docs/model_card.md).
# `mag` then keeps the generator's K/V of the last frame of every 3 latent frames.
mag_run=() memory='{"relic": {"max_tokens": 400}, "mag": {"block_frames": 3, "write_with_empty_text": false}}'
if [ "${PACKAGE_MAG:-0}" = "1" ]; then
  mag_run=(--mag "$WORK/mag") memory='{"relic": {"max_tokens": 400}}'
fi
log "9/9 package into $OUT"
python -m reverie.training.export --vae "$WORK/vae" --latents "$WORK/latents" \
  --student "$WORK/student2" "${mag_run[@]}" --retrieval "$WORK/retrieval" --out "$OUT" \
  --memory "$memory"
if reverie eval train-probe --help >/dev/null 2>&1; then
  log "pose probe for reverie eval actions ($PROBE_STEPS steps)"
  timed probe reverie eval train-probe --data "$DATA" --out "$WORK/probe" --steps "$PROBE_STEPS" --stride 4
fi
log "done: reverie explore --scene 1000003 --out out.mp4"
