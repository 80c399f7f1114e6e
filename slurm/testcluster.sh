#!/usr/bin/env bash
# A single-node, loopback-only Slurm for tests: munged + slurmctld + slurmd, everything under $SLURM_DIR.
#
#   SLURM_DIR=$(mktemp -d) slurm/testcluster.sh start   # installs slurm-wlm + munge with apt if missing
#   eval "$(SLURM_DIR=... slurm/testcluster.sh env)"     # SLURM_CONF and PATH (with the sacct stand-in)
#   SLURM_DIR=... slurm/testcluster.sh stop              # TERM (then KILL) each daemon by its PID file
#
# Exit status 77 means "Slurm cannot be started here" (not root, no apt-get, install failed); the pytest
# fixture turns it into a skip that prints the reason. Any other failure is a real error.
#
# Job states without slurmdbd: Debian's Slurm has no file-based accounting, and without `sacct` submitit
# never learns that a cancelled or killed job ended (it waits forever). $SLURM_DIR/bin/sacct answers the
# one query submitit makes from slurmctld's memory (finished jobs stay there MinJobAge seconds).
set -euo pipefail

S=${SLURM_DIR:-$PWD/.slurm}
CMD=${1:-}
cannot() { echo "testcluster: cannot start Slurm: $*" >&2; exit 77; }

print_env() {
  echo "export SLURM_CONF=$S/slurm.conf"
  echo "export PATH=$S/bin:\$PATH"
}

stop() {
  if [ -f "$S/slurm.conf" ] && command -v scancel >/dev/null; then
    SLURM_CONF=$S/slurm.conf timeout 5 scancel --user="$(id -un)" 2>/dev/null || true
  fi
  for name in slurmd slurmctld munged; do
    pf=$S/run/$name.pid
    [ -s "$pf" ] || continue
    pid=$(cat "$pf")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pf"
  done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

install_if_missing() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return 0
  [ "$(id -u)" = 0 ] || cannot "slurm-wlm/munge are not installed and installing them needs root (uid $(id -u))"
  command -v apt-get >/dev/null || cannot "slurm-wlm/munge are not installed and apt-get is not available"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; } \
    || cannot "apt-get install slurm-wlm munge failed"
}

write_config() {
  local host cpus mem ctld_port d_port
  host=$(hostname -s); cpus=$(nproc); mem=$(( $(free -m | awk '/^Mem:/{print $2}') / 2 ))
  # Private ports: two test sessions on one machine must not talk to each other's daemons.
  ctld_port=$(free_port); d_port=$(free_port)
  cat > "$S/slurm.conf" <<CONF
ClusterName=testcluster
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again only after cred_expire seconds (default 120).
AuthInfo=cred_expire=10,socket=$S/munge/munge.socket.2
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MaxArraySize=1001
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
MessageTimeout=10
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=600
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

write_sacct_standin() {
  cat > "$S/bin/sacct" <<'SH'
#!/usr/bin/env bash
# Stand-in for `sacct -o JobID,State,NodeList --parsable2 -j ID [-j ID ...]` (the query submitit makes),
# answered from slurmctld's memory.
ids=()
while [ $# -gt 0 ]; do case "$1" in
  -j|--jobs) ids+=("$2"); shift 2;; -j*) ids+=("${1#-j}"); shift;; --jobs=*) ids+=("${1#--jobs=}"); shift;;
  *) shift;;
esac; done
echo "JobID|State|NodeList"
[ ${#ids[@]} -eq 0 ] && exit 0
IFS=,; joined="${ids[*]}"; unset IFS
squeue --states=all -h -j "$joined" -o "%i|%T|%N" 2>/dev/null
exit 0
SH
  chmod 755 "$S/bin/sacct"
}

start() {
  install_if_missing
  [ "$(id -u)" = 0 ] || cannot "the daemons run as root here (SlurmUser=root); uid is $(id -u)"
  mkdir -p "$S"/{state,spool,log,run,munge,bin}
  # If anything below fails, take down what did start.
  trap 'stop' ERR
  write_config
  write_sacct_standin
  export SLURM_CONF=$S/slurm.conf
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --force && chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  # munged runs as user munge: every parent of its socket must be traversable.
  chown munge:munge "$S/munge"; chmod 755 "$S" "$S/munge"
  runuser -u munge -- munged --socket="$S/munge/munge.socket.2" --pid-file="$S/munge/munged.pid" \
    --log-file="$S/munge/munged.log" --seed-file="$S/munge/munged.seed"
  for _ in $(seq 1 50); do [ -s "$S/munge/munged.pid" ] && break; sleep 0.1; done
  cp "$S/munge/munged.pid" "$S/run/munged.pid"
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  # Every wait is bounded: without a live slurmctld each client call blocks MessageTimeout seconds.
  for _ in $(seq 1 60); do
    if timeout 3 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)$'; then
      trap - ERR
      return 0
    fi
    sleep 0.5
  done
  echo "testcluster: slurm did not come up; last lines of $S/log/slurmctld.log:" >&2
  tail -5 "$S/log/slurmctld.log" >&2 || true
  stop
  exit 1
}

case "$CMD" in
  start) start; print_env ;;
  stop) stop ;;
  env) print_env ;;
  *) echo "usage: SLURM_DIR=DIR $0 start|stop|env" >&2; exit 2 ;;
esac
