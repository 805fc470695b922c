#!/bin/bash
# One p2p-fmtl run over two hosts (one task, i.e. one process, per host) with jax.distributed.
# The node axis is split over both hosts' devices; process 0 writes the run directory.
#
#   sbatch experiments/slurm/run_two_hosts.sh CONFIG.toml runs/NAME
#
# Each process uses the devices of its host: on CPU hosts one CPU device by default (set
# XLA_FLAGS=--xla_force_host_platform_device_count=K for K each); run.devices must be the
# total over all processes (2 here). Resume an unfinished run by submitting it again with
# RESUME=--resume.
#SBATCH --job-name=p2p-fmtl-2hosts
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=01:00:00
#SBATCH --output=p2p-fmtl-%j.log
set -euo pipefail

CONFIG=${1:?usage: sbatch run_two_hosts.sh CONFIG.toml OUT_DIR}
OUT=${2:?usage: sbatch run_two_hosts.sh CONFIG.toml OUT_DIR}
PORT=${PORT:-12345}
# process 0 runs on the first host of the allocation and hosts the coordinator
HOST0=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

srun --ntasks="$SLURM_NNODES" bash -c "p2p-fmtl run '$CONFIG' --set run.devices=$SLURM_NNODES \
  --coordinator $HOST0:$PORT --num-processes $SLURM_NNODES --process-id \$SLURM_PROCID \
  --out '$OUT' --quiet ${RESUME:-}"
