#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the profile test (Debian, root, no systemd).
#   local_cluster.sh start   install slurm + munge from Debian, write slurm.conf, (re)start the daemons
#   local_cluster.sh stop    cancel jobs, stop the daemons this script started (by their PID files)
# Proctrack/task plugins that need cgroups are avoided (they fail in containers); there is no
# accounting daemon, so the test tells the plugin to poll squeue instead of sacct.
set -euo pipefail

start() {
  stop  # daemons left by an earlier run
  export DEBIAN_FRONTEND=noninteractive
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  munge -n | unmunge >/dev/null
  install -d -o slurm -g slurm /var/spool/slurmctld /var/log/slurm
  install -d /var/spool/slurmd
  local host cpus memory
  host=$(hostname -s)
  cpus=$(nproc)
  memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=diffxai-test
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/var/spool/slurmctld/slurmctld.pid
SlurmdPidFile=/var/spool/slurmd/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=300
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  slurmctld
  slurmd
  for _ in $(seq 120); do
    [ "$(sinfo -h -N -o %T 2>/dev/null)" = idle ] && return 0
    sleep 0.5
  done
  echo "the node did not become idle:" >&2
  sinfo >&2 || true
  return 1
}

stop() {
  scancel --user="$(id -un)" 2>/dev/null || true
  local file pid
  for file in /var/spool/slurmd/slurmd.pid /var/spool/slurmctld/slurmctld.pid /run/munge/munged.pid; do
    [ -s "$file" ] || continue
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    rm -f "$file"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
