#!/usr/bin/env bash
# Installs Debian's slurm-wlm (slurmctld, slurmd, the client commands; munge comes with it) the
# first time, as root. Idempotent: does nothing when sbatch, slurmctld and slurmd are there.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
if have sbatch && have slurmctld && have slurmd && have munged; then exit 0; fi
if [[ $(id -u) != 0 ]]; then echo "slurm-install: run as root to install slurm-wlm" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
# The packages' own services are not started: the test starts its daemons with its own config.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1; fi
trap '[[ $made_policy = 1 ]] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null ||
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
have sbatch && have slurmctld && have slurmd && have munged
