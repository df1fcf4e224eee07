#!/usr/bin/env bash
# A throw-away Slurm cluster on ONE Debian 12 host, for CI (root, no systemd, no cgroups).
#
#   bash .ci/slurm-cluster.sh up       install packages if missing, start the daemons, wait until nodes are idle
#   bash .ci/slurm-cluster.sh down     stop exactly the daemons `up` started (recorded PIDs), undo /etc/hosts
#   bash .ci/slurm-cluster.sh status   what we started and what sinfo says
#
# Daemons: munged -> mariadbd -> slurmdbd -> slurmctld -> one slurmd per emulated node.
# Accounting (mariadb + slurmdbd) is not optional here: without it `sacct` does not work and submitit never
# sees CANCELLED / TIMEOUT / FAILED (job.state stays UNKNOWN and waiting on a cancelled job hangs).
#
# Environment:
#   SLURM_CI_NODES=1     number of nodes. 1 = a normal single slurmd named after the host.
#                        >1 = that many `slurmd -N nX` daemons on this host, registering as nodes n1..nN
#                        (Slurm's "multiple slurmd" mode), each on its own port / spool / pid / log (%n).
#   SLURM_CI_CPUS=8      CPUs advertised per node (deliberately more than the real cores: config_overrides lets
#                        a 2-task job or a small array fit on a 2-core CI box).
#   SLURM_CI_WAIT=60     seconds to wait for the nodes to become idle before failing.
#
# Files: config in /etc/slurm, state in /var/lib/slurm-ci, logs in /var/log/slurm-ci, PIDs in /run/slurm-ci.
# Everything listens on 127.0.0.1 or unix sockets.
set -euo pipefail

NNODES=${SLURM_CI_NODES:-1}
CPUS=${SLURM_CI_CPUS:-8}
WAIT=${SLURM_CI_WAIT:-60}

HOST=$(hostname -s)
CONF=/etc/slurm
RUN=/run/slurm-ci
STATE=/var/lib/slurm-ci
LOG=/var/log/slurm-ci
HOSTS_TAG="# slurm-ci (added by .ci/slurm-cluster.sh)"
# slurmd ports for emulated nodes: 7001.. . They must stay outside 15000-60000, where Lightning picks
# MASTER_PORT (15000 + job id digits) and submitit a random port; all "nodes" share one network namespace.
PORT0=7000

log() { echo "[slurm-ci] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------- helpers
# is_running PID NAME: a live (non-zombie) process whose comm starts with NAME. Checking the name guards
# against a recycled PID belonging to somebody else.
is_running() {
  local pid=$1 name=$2 state
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z && $state != X ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]]
}
read_pid() { [[ -s $1 ]] && tr -dc '0-9' <"$1" || true; }

# retry SECONDS CMD...: poll CMD every 0.2 s until it succeeds or time runs out.
retry() {
  local secs=$1 i; shift
  for ((i = 0; i < secs * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

# We only ever stop what we started: each daemon we launch gets a file $RUN/ours.<name> with its PID.
remember() { echo "$2" >"$RUN/ours.$1"; }

stop_ours() {  # stop_ours RECORD COMM
  local rec=$RUN/ours.$1 comm=$2 pid i
  [[ -f $rec ]] || return 0
  pid=$(read_pid "$rec")
  if is_running "$pid" "$comm"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do is_running "$pid" "$comm" || break; sleep 0.2; done
    if is_running "$pid" "$comm"; then
      log "$1 (pid $pid) ignored SIGTERM for 20 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$rec"
}

node_names() {  # the node names for the current layout, one per line
  if ((NNODES == 1)); then echo "$HOST"; else for ((i = 1; i <= NNODES; i++)); do echo "n$i"; done; fi
}

# ---------------------------------------------------------------------------------------------- install
install_packages() {
  local want=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server) missing=() p
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  # --no-install-recommends: 8+2 packages instead of ~42. Package scripts do not start daemons in containers
  # (policy-rc.d) and there is no systemd; we start everything ourselves below.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------- config
# write_file PATH MODE < content. Returns 0 when the file changed, so callers know to restart.
write_file() {
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  install -m "$2" "$tmp" "$1"; rm -f "$tmp"
}

write_config() {
  local mem nodeline
  mkdir -p "$CONF" "$RUN" "$STATE/ctld" "$STATE/spool" "$LOG"
  # 85% of RAM, split between the emulated nodes
  mem=$(($(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 * 85 / 100 / NNODES))
  if ((NNODES == 1)); then
    nodeline="NodeName=$HOST NodeAddr=127.0.0.1 Port=$((PORT0 + 1)) CPUs=$CPUS RealMemory=$mem State=UNKNOWN"
  else
    nodeline="NodeName=n[1-$NNODES] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((PORT0 + 1))-$((PORT0 + NNODES))"
    nodeline+=" CPUs=$CPUS RealMemory=$mem State=UNKNOWN"
  fi
  LAYOUT_CHANGED=0
  # unquoted heredoc: a backtick or $ in a comment below would be executed/expanded
  write_file "$CONF/slurm.conf" 644 <<EOF && LAYOUT_CHANGED=1 || true
# Generated by .ci/slurm-cluster.sh ($NNODES node(s) on one host). CI only: root-run, no cgroups.
ClusterName=ci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=6817
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
# %n expands to the node name, so several slurmd on one host keep separate files
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.%n.log
# no cgroups in a container: track processes by /proc, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SchedulerType=sched/backfill
# start jobs within ~0.5 s instead of 1-2.5 s
SchedulerParameters=batch_sched_delay=0,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# advertise CPUs=$CPUS even though the host has fewer cores
SlurmdParameters=config_overrides
ReturnToService=2
# a job asking for more nodes/CPUs than exist is rejected at submission instead of pending forever
EnforcePartLimits=ALL
# submitit ignores SIGTERM: after scancel a node stays COMPLETING for KillWait seconds (default 30)
KillWait=2
# stated explicitly: the launcher reads it from 'scontrol show config'
MaxArraySize=1001
$nodeline
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  write_file "$CONF/slurmdbd.conf" 600 <<EOF || true
# Generated by .ci/slurm-cluster.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmci
StorageLoc=slurm_acct_db
EOF
}

# Emulated node names (n1, n2, ...) must resolve: submitit and Lightning use the first node's name as
# MASTER_ADDR. One tagged line in /etc/hosts, removed again by `down`. /etc/hosts is often a bind mount in
# containers, which `sed -i` cannot replace, so rewrite it in place.
hosts_remove() {
  grep -qF "$HOSTS_TAG" /etc/hosts 2>/dev/null || return 0
  local tmp; tmp=$(mktemp)
  grep -vF "$HOSTS_TAG" /etc/hosts >"$tmp" || true
  cat "$tmp" >/etc/hosts; rm -f "$tmp"
}
hosts_add() {
  hosts_remove
  ((NNODES > 1)) || return 0
  echo "127.0.0.1 $(node_names | tr '\n' ' ')$HOSTS_TAG" >>/etc/hosts
}

# ---------------------------------------------------------------------------------------------- daemons
start_munged() {
  if is_running "$(read_pid /run/munge/munged.pid)" munged; then log "munged already running"; return; fi
  if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey -c -f -k /etc/munge/munge.key 2>/dev/null ||
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 755 /run/munge
  runuser -u munge -- /usr/sbin/munged   # forks into the background, writes its pidfile
  retry 10 munge -n || die "munged did not start"
  remember munged "$(read_pid /run/munge/munged.pid)"
}

start_mariadbd() {
  if is_running "$(read_pid /run/mysqld/mysqld.pid)" mariadbd; then
    log "mariadbd already running"
  else
    install -d -o mysql -g root -m 755 /run/mysqld
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >/dev/null
    # unix socket only; mariadbd does not daemonize by itself
    setsid nohup /usr/sbin/mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/mysqld.pid \
      >"$LOG/mariadb.log" 2>&1 </dev/null &
    retry 60 mariadb-admin ping || die "mariadbd did not start, see $LOG/mariadb.log"
    remember mariadbd "$(read_pid /run/mysqld/mysqld.pid)"
  fi
  # Wiped controller state restarts job ids at 1; old accounting rows would then collide in `sacct -j ID`.
  # So controller state and accounting database always go together.
  if [[ ! -e $STATE/ctld/job_state ]] && ! is_running "$(read_pid $RUN/slurmdbd.pid)" slurmdbd; then
    mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db;"
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmci';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  if is_running "$(read_pid $RUN/slurmdbd.pid)" slurmdbd; then log "slurmdbd already running"; return; fi
  /usr/sbin/slurmdbd
  retry 60 sacctmgr -n show cluster || die "slurmdbd did not start, see $LOG/slurmdbd.log"
  remember slurmdbd "$(read_pid $RUN/slurmdbd.pid)"
}

stop_slurmds() {  # every slurmd we recorded, whatever the node count was then
  local rec
  for rec in "$RUN"/ours.slurmd.*; do
    [[ -e $rec ]] || continue
    stop_ours "${rec#"$RUN"/ours.}" slurmd
  done
}

start_slurm() {
  local ctld_pid; ctld_pid=$(read_pid $RUN/slurmctld.pid)
  if is_running "$ctld_pid" slurmctld && ((LAYOUT_CHANGED)); then
    # Slurm 22.05 cannot add or remove nodes with `scontrol reconfigure`: restart controller and nodes.
    [[ $(read_pid $RUN/ours.slurmctld) == "$ctld_pid" ]] ||
      die "a slurmctld we did not start (pid $ctld_pid) is running with another config; stop it first"
    log "node layout changed: restarting slurmctld and slurmd"
    stop_slurmds
    stop_ours slurmctld slurmctld
  fi
  if is_running "$(read_pid $RUN/slurmctld.pid)" slurmctld; then
    log "slurmctld already running"
  else
    /usr/sbin/slurmctld
    retry 30 scontrol ping || die "slurmctld did not start, see $LOG/slurmctld.log"
    remember slurmctld "$(read_pid $RUN/slurmctld.pid)"
  fi
  local n
  for n in $(node_names); do
    mkdir -p "$STATE/spool/$n"
    if is_running "$(read_pid "$RUN/slurmd.$n.pid")" slurmd; then log "slurmd $n already running"; continue; fi
    /usr/sbin/slurmd -N "$n"   # -N also works for the single node (its name is the host name)
    retry 10 test -s "$RUN/slurmd.$n.pid" || die "slurmd $n did not start, see $LOG/slurmd.$n.log"
    remember "slurmd.$n" "$(read_pid "$RUN/slurmd.$n.pid")"
  done
}

# all nodes idle (or busy); nodes left DOWN/DRAINED by an earlier run are resumed
nodes_ready() {
  local ready=0 name st
  while read -r name st; do
    case $st in
      idle* | mix* | alloc*) ready=$((ready + 1)) ;;
      down* | drain* | drng* | fail*) scontrol update NodeName="$name" State=RESUME >/dev/null 2>&1 || true ;;
    esac
  done < <(sinfo -h -N -o '%N %t' 2>/dev/null || true)
  ((ready == NNODES))
}

wait_for_nodes() {
  local i
  for ((i = 0; i < WAIT * 5; i++)); do nodes_ready && return 0; sleep 0.2; done
  sinfo -N >&2 || true
  die "nodes not idle after ${WAIT}s, see $LOG/slurmctld.log and $LOG/slurmd.*.log"
}

# ---------------------------------------------------------------------------------------------- commands
cmd_up() {
  [[ $(id -u) == 0 ]] || die "must run as root"
  [[ $NNODES =~ ^[1-9][0-9]*$ ]] || die "SLURM_CI_NODES must be a positive integer, got '$NNODES'"
  local t0=$SECONDS t1
  install_packages
  write_config
  hosts_add
  t1=$SECONDS
  start_munged
  start_mariadbd
  start_slurmdbd
  start_slurm
  wait_for_nodes
  log "up: $NNODES node(s) idle; install/config $((t1 - t0))s, daemons $((SECONDS - t1))s"
}

cmd_down() {
  local t0=$SECONDS
  if [[ -f $RUN/ours.slurmctld ]] && scontrol ping >/dev/null 2>&1; then
    # this is our private CI cluster, so every job on it is ours to cancel
    squeue -h -o %A 2>/dev/null | xargs -r scancel 2>/dev/null || true
    retry 15 bash -c '[[ -z $(squeue -h -o %A 2>/dev/null) ]]' || true
  fi
  stop_slurmds
  stop_ours slurmctld slurmctld
  stop_ours slurmdbd slurmdbd
  stop_ours mariadbd mariadbd
  stop_ours munged munged
  hosts_remove
  log "down in $((SECONDS - t0))s"
}

cmd_status() {
  local rec name pid
  for rec in "$RUN"/ours.*; do
    [[ -e $rec ]] || { echo "nothing started by us"; break; }
    name=${rec#"$RUN"/ours.}; pid=$(read_pid "$rec")
    if is_running "$pid" "${name%%.*}"; then
      echo "$name: running (pid $pid)"
    else
      echo "$name: recorded but not running"
    fi
  done
  # sinfo retries for a long time when no controller answers
  timeout 5 sinfo -N 2>/dev/null || echo "sinfo: no controller reachable"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: [SLURM_CI_NODES=N] $0 up|down|status" >&2; exit 2 ;;
esac
