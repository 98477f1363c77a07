#!/usr/bin/env bash
# Start/stop a real single-node Slurm (slurmctld + slurmd + munged) on this Debian machine, as root.
# Usage: scripts/slurm-local.sh install|start|stop|status
# State, spool, logs and pid files live in $PYEXP_SLURM_DIR (default /tmp/pyexp-slurm);
# the config goes to /etc/slurm/slurm.conf, where plain sbatch/squeue look for it.
# The Slurm tests run only when asked (PYEXP_TEST_SLURM=1), never because this Slurm is up.
set -euo pipefail

DIR=${PYEXP_SLURM_DIR:-/tmp/pyexp-slurm}
CONF=/etc/slurm/slurm.conf
SOCK=/run/munge/munge.socket.2 # default socket, so clients and munge/unmunge need no options
HOST=$(hostname -s)

log() { echo "slurm-local: $*" >&2; }

install() {
  command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v munged >/dev/null && return 0
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update only if the lists are missing, or if the install fails (stale lists).
  if ! apt-cache show slurm-wlm >/dev/null 2>&1; then apt-get update -qq >/dev/null; fi
  apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq slurm-wlm munge >/dev/null; }
}

# A daemon stays a zombie until PID 1 reaps it, so kill -0 alone is not enough.
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }
alive() { [[ -s $1 ]] && running "$(cat "$1")"; }

write_conf() {
  local cpus mem over=""
  # PYEXP_SLURM_CPUS > nproc oversubscribes the cores (more array tasks at once); slurmd must then
  # trust the config instead of the hardware, or it drains the node.
  cpus=${PYEXP_SLURM_CPUS:-$(nproc)}
  ((cpus > $(nproc))) && over="SlurmdParameters=config_overrides"
  # RealMemory must not exceed what slurmd detects, or the node is drained: use 3/4 of MemTotal.
  mem=$(awk '/^MemTotal:/ {print int($2 / 1024 * 3 / 4)}' /proc/meminfo)
  mkdir -p /etc/slurm
  cat >"$CONF.new" <<EOF
# Written by pyexp scripts/slurm-local.sh (state in $DIR)
ClusterName=pyexp
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCK
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job with no --mem takes the whole node's memory and jobs run one at a time.
DefMemPerCPU=100
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_min_interval=0,batch_sched_delay=0,default_queue_depth=1000
MinJobAge=300
MaxArraySize=1001
MaxJobCount=20000
KillWait=10
SlurmdTimeout=60
SlurmctldTimeout=60
InactiveLimit=0
ReturnToService=2
$over
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  if cmp -s "$CONF.new" "$CONF"; then rm -f "$CONF.new"; return 1; fi
  mv "$CONF.new" "$CONF"
}

start_munge() {
  mkdir -p /run/munge "$DIR/munge" && chmod 700 "$DIR/munge"
  munge -n -S "$SOCK" 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 && return 0 # one already answers
  local key=$DIR/munge/munge.key
  if [[ ! -s $key ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key" --force
    else dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; fi
    chmod 400 "$key"
  fi
  munged --force -S "$SOCK" --key-file="$key" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
}

node_state() { sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1; }

fail() {
  log "$*"
  for f in "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log "$DIR"/munge/munged.log; do
    [[ -f $f ]] && { echo "== tail $f" >&2; tail -n 25 "$f" >&2; }
  done
  exit 1
}

start() {
  command -v sbatch >/dev/null || install
  mkdir -p "$DIR"/{state,spool,log,run}
  # A changed config (e.g. other CPU count) needs a restart of running daemons.
  if write_conf && alive "$DIR/run/slurmctld.pid"; then log "config changed, restarting"; stop; fi
  start_munge || fail "munged did not start"
  alive "$DIR/run/slurmctld.pid" || slurmctld || fail "slurmctld did not start"
  alive "$DIR/run/slurmd.pid" || slurmd || fail "slurmd did not start"
  local s="" i
  for ((i = 0; i < 120; i++)); do
    s=$(node_state)
    case $s in
      idle | mix | alloc) return 0 ;;
      down* | drain* | drng* | fail*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  fail "node $HOST not idle after 60 s (state: ${s:-none})"
}

kill_pidfile() {
  local f=$1 pid i
  alive "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do running "$pid" || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

stop() {
  kill_pidfile "$DIR/run/slurmd.pid"
  kill_pidfile "$DIR/run/slurmctld.pid"
  kill_pidfile "$DIR/munge/munged.pid"
}

status() {
  local f rc=0
  for f in run/slurmctld.pid run/slurmd.pid munge/munged.pid; do
    if alive "$DIR/$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$DIR/$f"))"
    else echo "$(basename "$f" .pid): stopped"; rc=3; fi
  done
  echo "node $HOST: $(node_state || true)"
  return $rc
}

case ${1:-} in
  install | start | stop | status) "$1" ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
