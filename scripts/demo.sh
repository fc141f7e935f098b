#!/usr/bin/env bash
# Set up (scripts/setup.sh), then a short real training of Dreamer on dmc_walker_walk with a
# small model: prefill, pretraining, updates, evaluations and checkpoints in a few minutes on a
# CPU. The published configuration is `--configs defaults dmc` (see README).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
LOGDIR="${LOGDIR:-$ROOT/Dreamer/log/demo_walker_walk/dreamer/$(date +%Y%m%d-%H%M%S)}"
cd "$ROOT/Dreamer"
start=$(date +%s)
"$ROOT/.venv/bin/python" dreamerv2/train.py --logdir "$LOGDIR" --task dmc_walker_walk \
  --configs defaults dmc --precision 32 \
  --steps 4000 --prefill 1000 --eval_every 2000 --eval_eps 1 --log_every 500 --pretrain 20 \
  --train_every 10 --dataset.batch 8 --dataset.length 16 --imag_horizon 8 \
  --rssm.hidden 64 --rssm.deter 64 --rssm.stoch 16 --encoder.depth 8 --decoder.depth 8 \
  --reward_head.units 64 --reward_head.layers 2 --actor.units 64 --actor.layers 2 \
  --critic.units 64 --critic.layers 2 "$@"
echo
echo "Demo finished in $(( $(date +%s) - start )) s. Logs, replay and checkpoint: $LOGDIR"
echo "Watch it with:  $ROOT/.venv/bin/tensorboard --logdir $LOGDIR"
