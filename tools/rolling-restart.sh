#!/usr/bin/env bash
# Copyright sessiond authors. Licensed under the Apache License 2.0.
#
# Restarts every node of a running sessiond cluster, one at a time, never
# losing quorum (docs/OPERATIONS.md, "Rolling upgrade"). It talks to the
# cluster only through sessionctl (and reads its --json output with jq); the
# restart itself is the operator's command.
#
#   tools/rolling-restart.sh --restart-cmd 'CMD' [--endpoints LIST] [OPTIONS]
#
#   --restart-cmd CMD   how to restart one node, run with `bash -c` on this
#                       machine once per node; {id}, {host}, {client} and
#                       {peer} become the node's id, its client host, its
#                       client host:port and its peer host:port (as
#                       `sessionctl status` shows them). It must return once
#                       the node was stopped and started again, e.g.
#                         'ssh {host} sudo systemctl restart sessiond'
#                         'tools/dev.sh cluster stop {id} && tools/dev.sh cluster restart {id}'
#   --endpoints LIST    the nodes' client addresses for sessionctl (else
#                       SESSIOND_ENDPOINTS, else sessionctl's config file)
#   --nodes 1,2,3       restart only these node ids (default: every voter
#                       and every learner that answers)
#   --timeout S         how long one node may take to come back: serving on
#                       its client port, caught up, a leader known (300)
#   --settle S          how long to wait for a healthy cluster before each
#                       node, when it is only catching up or electing (30)
#   --max-lag N         "caught up": at most N entries behind the leader's
#                       commit index (1000, what PromoteMember accepts)
#   --sessionctl PATH   the sessionctl binary (else $SESSIONCTL, else
#                       sessionctl on PATH, else build-release/tools/)
#   --dry-run           check the cluster and print the plan; restart nothing
#
# For each node, followers (and learners) first and the leader last: the
# whole cluster must be healthy (every voter reachable, caught up, no full
# disk, all agreeing on one leader that reports itself as leader); a leader
# hands leadership over first (`sessionctl leader transfer any`); then the
# restart command runs; then the script waits, printing progress, until the
# node serves again on its client port, is caught up and knows the leader,
# and the whole cluster is healthy, before it goes on to the next.
#
# Exit codes: 0 every node restarted; 1 refused, nothing restarted (the
# cluster is not healthy, or has fewer than 3 voters); 2 usage; 3 stopped
# part way (a restart command failed, a node did not come back within
# --timeout, leadership did not move, the cluster became unhealthy): the
# message says which nodes were restarted and which were not; 130
# interrupted (Ctrl-C).
#
# The jq programs are in single quotes on purpose: their $names are jq's.
# shellcheck disable=SC2016
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG=rolling-restart

RESTART_CMD=""
EP_ARGS=()
NODES_ARG=""
TIMEOUT_S=300
SETTLE_S=30
MAX_LAG=1000
DRY_RUN=0
SESSIONCTL_BIN="${SESSIONCTL:-}"
POLL_S=1
PROGRESS_EVERY_S=5
CALL_TIMEOUT=5s

log() {
  if [ -t 2 ]; then
    printf '\033[1m[%s]\033[0m %s\n' "$PROG" "$*" >&2
  else
    printf '[%s] %s\n' "$PROG" "$*" >&2
  fi
}
usage_error() {
  echo "$PROG: $*" >&2
  echo "$PROG: see '$0 --help'" >&2
  exit 2
}
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
  case "$1" in
    --restart-cmd) [ $# -ge 2 ] || usage_error "$1 needs a value"; RESTART_CMD="$2"; shift 2 ;;
    --restart-cmd=*) RESTART_CMD="${1#*=}"; shift ;;
    --endpoints) [ $# -ge 2 ] || usage_error "$1 needs a value"; EP_ARGS=(--endpoints "$2"); shift 2 ;;
    --endpoints=*) EP_ARGS=(--endpoints "${1#*=}"); shift ;;
    --nodes) [ $# -ge 2 ] || usage_error "$1 needs a value"; NODES_ARG="$2"; shift 2 ;;
    --nodes=*) NODES_ARG="${1#*=}"; shift ;;
    --timeout) [ $# -ge 2 ] || usage_error "$1 needs a value"; TIMEOUT_S="$2"; shift 2 ;;
    --timeout=*) TIMEOUT_S="${1#*=}"; shift ;;
    --settle) [ $# -ge 2 ] || usage_error "$1 needs a value"; SETTLE_S="$2"; shift 2 ;;
    --settle=*) SETTLE_S="${1#*=}"; shift ;;
    --max-lag) [ $# -ge 2 ] || usage_error "$1 needs a value"; MAX_LAG="$2"; shift 2 ;;
    --max-lag=*) MAX_LAG="${1#*=}"; shift ;;
    --sessionctl) [ $# -ge 2 ] || usage_error "$1 needs a value"; SESSIONCTL_BIN="$2"; shift 2 ;;
    --sessionctl=*) SESSIONCTL_BIN="${1#*=}"; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '4,/^# interrupted/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done

[ -n "$RESTART_CMD" ] || usage_error "--restart-cmd is required (how to restart one node, e.g. 'ssh {host} sudo systemctl restart sessiond')"
{ is_uint "$TIMEOUT_S" && [ "$TIMEOUT_S" -ge 1 ]; } || usage_error "--timeout must be a whole number of seconds >= 1, not '$TIMEOUT_S'"
is_uint "$SETTLE_S" || usage_error "--settle must be a whole number of seconds, not '$SETTLE_S'"
is_uint "$MAX_LAG" || usage_error "--max-lag must be a whole number of entries, not '$MAX_LAG'"
if [ -n "$NODES_ARG" ] && ! [[ "$NODES_ARG" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  usage_error "--nodes must be node ids separated by commas (1,2,3), not '$NODES_ARG'"
fi
command -v jq >/dev/null || usage_error "jq is missing (sudo apt-get install jq)"
if [ -z "$SESSIONCTL_BIN" ]; then
  if command -v sessionctl >/dev/null; then
    SESSIONCTL_BIN="$(command -v sessionctl)"
  elif [ -x "$ROOT/build-release/tools/sessionctl" ]; then
    SESSIONCTL_BIN="$ROOT/build-release/tools/sessionctl"
  else
    usage_error "sessionctl not found: put it on PATH, or give --sessionctl PATH (build it: tools/dev.sh build Release sessionctl)"
  fi
fi
[ -x "$SESSIONCTL_BIN" ] || usage_error "$SESSIONCTL_BIN is not an executable sessionctl"

# ---------------------------------------------------------------- sessionctl

# ctl ARGS...: sessionctl; stdout to $CTL_OUT, its error on one line (the
# first lines of stderr, before the advice) to $CTL_ERR; returns
# sessionctl's exit code.
CTL_OUT=""
CTL_ERR=""
ctl() {
  local errfile rc=0
  errfile="$(mktemp)"
  CTL_OUT="$("$SESSIONCTL_BIN" "$@" 2>"$errfile")" || rc=$?
  CTL_ERR="$(sed -e '/^Check /,$d' -e 's/^sessionctl: //' -e 's/^ *//' "$errfile" |
    grep -v '^$' | head -n 4 | paste -sd' ' || true)"
  rm -f "$errfile"
  return "$rc"
}

# status: the cluster's `sessionctl status --json` into $STATUS; returns
# non-zero (message in $CTL_ERR) when no endpoint answered.
STATUS=""
status() {
  if ctl "${EP_ARGS[@]}" --timeout "$CALL_TIMEOUT" status --json; then
    STATUS="$CTL_OUT"
    return 0
  fi
  STATUS=""
  return 1
}

# q JQ-ARGS...: jq -r on $STATUS.
q() { jq -r "$@" <<<"$STATUS"; }

# Everything wrong with the cluster in $STATUS, one line each (nothing:
# healthy). Voters and answering learners count; a non-voter that does not
# answer is an address the cluster still knows (an old --initial_cluster
# entry, a removed member) or a learner that is down, and cannot cost quorum.
PROBLEMS_JQ='
  . as $s
  | ([.members[] | select(.node_id == $s.leader and .role == "leader")] | length) as $ok
  | (if $s.leader == 0 then
       "no leader: node \($s.answered_by) (which answered) knows none (an election, or no quorum)"
     elif $ok == 0 then
       "node \($s.leader) is named leader by node \($s.answered_by) but does not report itself as leader (an election in progress?)"
     else empty end),
    (.members[] | select(.voter or .role == "learner")
     | if (.reachable | not) then
         "node \(.node_id) (\(.client_address)) is unreachable: \(.error)"
       elif .disk_full then
         "node \(.node_id) has a full disk: \(.disk_condition)"
       elif .lag > $maxlag then
         "node \(.node_id) lags \(.lag) entries behind the leader (more than --max-lag \($maxlag))"
       elif .leader != $s.leader then
         "node \(.node_id) knows leader \(.leader), node \($s.answered_by) knows \($s.leader)"
       else empty end)'

problems() { q --argjson maxlag "$MAX_LAG" "$PROBLEMS_JQ"; }

# member_field ID FIELD: one field of a member in $STATUS ("" when absent).
member_field() {
  q --argjson id "$1" --arg f "$2" \
    '[.members[] | select(.node_id == $id)][0] // {} | .[$f] // "" | tostring'
}

# counters ID: the sum of a member's metrics counters, which restart from 0
# with its process ("" when it did not answer).
counters() {
  q --argjson id "$1" \
    '[.members[] | select(.node_id == $id and .reachable)][0].metrics // null
     | if . == null then "" else ([.[]] | add | tostring) end'
}

describe_leader() { q '"leader \(.leader) (term \(.term))"'; }

host_of() {
  local a="$1"
  if [[ "$a" == \[* ]]; then a="${a#[}"; echo "${a%%]*}"; else echo "${a%:*}"; fi
}

# wait_healthy SECONDS WHAT: polls until the cluster has no problem; an
# unreachable member ends the wait at once when FAIL_FAST_UNREACHABLE=1.
# Returns 0 healthy, 1 not (the last problems in $LAST_PROBLEMS).
LAST_PROBLEMS=""
FAIL_FAST_UNREACHABLE=0
wait_healthy() {
  local bound="$1" what="$2" start now last_print=0 p
  start=$SECONDS
  while true; do
    if status; then
      p="$(problems)"
    else
      p="no endpoint answered sessionctl status: $CTL_ERR"
    fi
    LAST_PROBLEMS="$p"
    [ -z "$p" ] && return 0
    now=$SECONDS
    if [ "$FAIL_FAST_UNREACHABLE" -eq 1 ] && grep -q "unreachable\|no endpoint answered" <<<"$p"; then
      return 1
    fi
    if [ $((now - start)) -ge "$bound" ]; then return 1; fi
    if [ $((now - last_print)) -ge "$PROGRESS_EVERY_S" ]; then
      log "$what: waiting for a healthy cluster ($((now - start)) s of $bound s): $(head -n1 <<<"$p")"
      last_print=$now
    fi
    sleep "$POLL_S"
  done
}

# ---------------------------------------------------------------- the plan

RESTARTED=()
REMAINING=()
CURRENT=""
PHASE=""

join() { local IFS=,; echo "$*"; }

report_position() {
  log "restarted so far: ${RESTARTED[*]:-none}; not (fully) restarted: ${REMAINING[*]:-none}"
  if [ "${#REMAINING[@]}" -gt 0 ]; then
    log "once the cluster is healthy again (sessionctl status), continue with: $0 --nodes $(join "${REMAINING[@]}") ..."
  fi
}

stop_run() {
  log "STOPPED: $*"
  report_position
  exit 3
}

on_interrupt() {
  trap - INT TERM
  echo >&2
  log "interrupted${CURRENT:+ while node $CURRENT was $PHASE}"
  if [ -n "$CURRENT" ]; then
    log "node $CURRENT may be down or restarting: check it with 'sessionctl status' before anything else"
  fi
  if [ -n "${RESTART_PID:-}" ] && kill -0 "$RESTART_PID" 2>/dev/null; then
    log "its restart command (pid $RESTART_PID) was left running, so that it does not leave the node half restarted"
  fi
  report_position
  exit 130
}
trap on_interrupt INT TERM

# ---------------------------------------------------------------- preflight

FAIL_FAST_UNREACHABLE=1
if ! wait_healthy "$SETTLE_S" "before starting"; then
  log "REFUSED: the cluster is not healthy, nothing was restarted:"
  while IFS= read -r line; do log "  $line"; done <<<"$LAST_PROBLEMS"
  log "restarting a node now could cost the quorum; bring every node back (sessionctl status) and run this again"
  exit 1
fi
FAIL_FAST_UNREACHABLE=0

mapfile -t VOTERS < <(q '[.members[] | select(.voter) | .node_id] | sort | .[]')
mapfile -t LEARNERS < <(q '[.members[] | select(.voter | not) | select(.role == "learner") | .node_id] | sort | .[]')
mapfile -t SILENT < <(q '[.members[] | select((.voter | not) and .role != "learner") | .node_id] | sort | .[]')
log "cluster $(q .cluster_id), $(describe_leader); voters: ${VOTERS[*]}${LEARNERS[*]:+; learners: ${LEARNERS[*]}}; healthy"
if [ "${#VOTERS[@]}" -lt 3 ]; then
  log "REFUSED: the cluster has ${#VOTERS[@]} voter(s); with fewer than 3, restarting one loses the quorum (writes stop until it is back). Add voters first, or restart it by hand during a quiet period"
  exit 1
fi
if [ "${#SILENT[@]}" -gt 0 ]; then
  log "skipped: node(s) ${SILENT[*]}: listed by the cluster but neither a voter nor an answering learner (an old address, or a learner that is down)"
fi

if [ -n "$NODES_ARG" ]; then
  IFS=, read -r -a WANTED <<<"$NODES_ARG"
  for id in "${WANTED[@]}"; do
    if [[ " ${VOTERS[*]} ${LEARNERS[*]} " != *" $id "* ]]; then
      usage_error "--nodes: node $id is not a voter or an answering learner of this cluster (voters: ${VOTERS[*]}${LEARNERS[*]:+, learners: ${LEARNERS[*]}})"
    fi
    [[ " ${REMAINING[*]:-} " == *" $id "* ]] || REMAINING+=("$id")
  done
else
  REMAINING=("${LEARNERS[@]}" "${VOTERS[@]}")
fi

# expand ID: the restart command for a node, placeholders filled in.
expand() {
  local id="$1" client peer cmd
  client="$(member_field "$id" client_address)"
  peer="$(member_field "$id" peer_address)"
  cmd="$RESTART_CMD"
  cmd="${cmd//\{id\}/$id}"
  cmd="${cmd//\{host\}/$(host_of "${client:-$peer}")}"
  cmd="${cmd//\{client\}/$client}"
  cmd="${cmd//\{peer\}/$peer}"
  printf '%s' "$cmd"
}

# next_node: the next node to restart, a learner or follower before the
# leader (the leader of now: it may have moved since the last node).
next_node() {
  local leader id
  leader="$(q .leader)"
  for id in "${REMAINING[@]}"; do
    if [ "$id" != "$leader" ]; then echo "$id"; return; fi
  done
  echo "${REMAINING[0]}"
}

remove_remaining() {
  local keep=() id
  for id in "${REMAINING[@]}"; do [ "$id" = "$1" ] || keep+=("$id"); done
  REMAINING=("${keep[@]}")
}

LEADER_NOW="$(q .leader)"
PLAN=()
for id in "${REMAINING[@]}"; do [ "$id" = "$LEADER_NOW" ] || PLAN+=("$id"); done
for id in "${REMAINING[@]}"; do [ "$id" != "$LEADER_NOW" ] || PLAN+=("$id (the leader: leadership handed over first)"); done
log "plan: $(join "${PLAN[@]}" | sed 's/,/, then /g'); at most $TIMEOUT_S s for each node to come back"
if [ "$DRY_RUN" -eq 1 ]; then
  for id in "${REMAINING[@]}"; do log "node $id: would run: $(expand "$id")"; done
  log "dry run: nothing was restarted"
  exit 0
fi

# ---------------------------------------------------------------- the run

# transfer_away ID: moves leadership off node ID (bounded: 3 attempts).
transfer_away() {
  local id="$1" attempt
  for attempt in 1 2 3; do
    log "node $id leads: handing leadership to the most caught-up other voter (sessionctl leader transfer any)"
    if ctl "${EP_ARGS[@]}" --timeout 10s leader transfer any --json; then
      :
    else
      log "leader transfer failed (attempt $attempt of 3): $CTL_ERR"
    fi
    if wait_healthy "$SETTLE_S" "node $id"; then
      if [ "$(q .leader)" != "$id" ]; then
        log "leadership moved: $(describe_leader)"
        return 0
      fi
    fi
    sleep 1
  done
  return 1
}

# run_restart ID CMD: runs the restart command (at most --timeout) while
# asking the node's client port, every 0.3 s, whether it answers: a node seen
# down is proof that the command restarted it ($SEEN_DOWN=1). Returns the
# command's success; $RESTART_RC holds its exit code, or "timeout".
SEEN_DOWN=0
RESTART_RC=0
RESTART_PID=""
run_restart() {
  local id="$1" cmd="$2" client start
  client="$(member_field "$id" client_address)"
  SEEN_DOWN=0
  RESTART_RC=0
  start=$SECONDS
  bash -c "$cmd" </dev/null &
  RESTART_PID=$!
  while kill -0 "$RESTART_PID" 2>/dev/null; do
    if [ $((SECONDS - start)) -ge "$TIMEOUT_S" ]; then
      kill -TERM "$RESTART_PID" 2>/dev/null || true
      wait "$RESTART_PID" 2>/dev/null || true
      RESTART_PID=""
      RESTART_RC=timeout
      return 1
    fi
    if [ "$SEEN_DOWN" -eq 0 ] && [ -n "$client" ] &&
        ! ctl --endpoints "$client" --timeout 1s status --json; then
      SEEN_DOWN=1
    fi
    sleep 0.3
  done
  wait "$RESTART_PID" || RESTART_RC=$?
  RESTART_PID=""
  [ "$RESTART_RC" -eq 0 ]
}

# wait_back ID BEFORE SEEN_DOWN: waits until node ID was restarted and is
# back. BEFORE: the sum of its counters before the restart command;
# SEEN_DOWN: 1 when it was already seen not answering.
wait_back() {
  local id="$1" before="$2" evidence="$3" client start now next_print state p own own_leader sum
  client="$(member_field "$id" client_address)"
  start=$SECONDS
  next_print=$start
  while true; do
    now=$SECONDS
    state=""
    # Its own client port: it serves, and knows a leader.
    if [ -n "$client" ]; then
      if ctl --endpoints "$client" --timeout 2s status --json; then
        own="$(jq -r .answered_by <<<"$CTL_OUT")"
        own_leader="$(jq -r .leader <<<"$CTL_OUT")"
        if [ "$own" != "$id" ]; then
          state="$client is answered by node $own, not node $id"
        elif [ "$own_leader" = "0" ]; then
          state="serving on $client, no leader known yet"
        fi
      else
        evidence=1
        state="not serving on $client: $CTL_ERR"
      fi
    fi
    # The cluster: it sees the node reachable and caught up, and is healthy.
    if status; then
      sum="$(counters "$id")"
      if [ -z "$sum" ]; then
        evidence=1
      elif [ -n "$before" ] && [ "$sum" -lt "$before" ]; then
        evidence=1
      fi
      p="$(problems)"
      if [ -z "$state" ] && [ -n "$p" ]; then state="$(head -n1 <<<"$p")"; fi
    else
      state="${state:-no endpoint answered sessionctl status: $CTL_ERR}"
    fi
    if [ -z "$state" ] && [ "$evidence" -eq 0 ]; then
      # Serving and healthy, but it never stopped answering and its
      # counters did not restart: the command may have returned before
      # the restart. Give it the settle time to go down, then go on.
      if [ $((now - start)) -ge "$SETTLE_S" ]; then
        log "WARNING: node $id answered throughout and its counters did not restart: could not confirm that the restart command restarted it (it must return only once the node was stopped and started again)"
        evidence=1
      else
        state="serving, but not seen restarting yet"
      fi
    fi
    if [ -z "$state" ]; then
      log "node $id: back after $((now - start)) s: $(member_field "$id" role), lag $(member_field "$id" lag), $(describe_leader)"
      return 0
    fi
    if [ $((now - start)) -ge "$TIMEOUT_S" ]; then
      LAST_PROBLEMS="$state"
      return 1
    fi
    if [ "$now" -ge "$next_print" ]; then
      log "node $id: waiting until it is back ($((now - start)) s of $TIMEOUT_S s): $state"
      next_print=$((now + PROGRESS_EVERY_S))
    fi
    sleep "$POLL_S"
  done
}

RUN_START=$SECONDS
while [ "${#REMAINING[@]}" -gt 0 ]; do
  if ! wait_healthy "$SETTLE_S" "before the next node"; then
    stop_run "the cluster is not healthy, so no further node is restarted: $(tr '\n' ';' <<<"$LAST_PROBLEMS" | sed 's/;$//; s/;/; /g')"
  fi
  id="$(next_node)"
  CURRENT="$id"
  if [ "$(q .leader)" = "$id" ]; then
    PHASE="handing over leadership"
    transfer_away "$id" || stop_run "leadership did not move off node $id (last: $(tr '\n' ';' <<<"$LAST_PROBLEMS")); it was not restarted"
  fi
  before="$(counters "$id")"
  cmd="$(expand "$id")"
  PHASE="restarting (its restart command was running)"
  log "node $id ($(member_field "$id" role), $(member_field "$id" client_address)): running: $cmd"
  node_start=$SECONDS
  if ! run_restart "$id" "$cmd"; then
    if [ "$RESTART_RC" = timeout ]; then
      stop_run "the restart command for node $id still ran after $TIMEOUT_S s (stopped with SIGTERM); node $id may be down: check it (sessionctl status, its log) and start it by hand"
    fi
    stop_run "the restart command for node $id exited with $RESTART_RC; node $id may be down: check it (sessionctl status, its log) and start it by hand"
  fi
  PHASE="coming back"
  if ! wait_back "$id" "$before" "$SEEN_DOWN"; then
    stop_run "node $id did not come back within $TIMEOUT_S s (last: $LAST_PROBLEMS); look at its log (journalctl -u sessiond on its machine), start it if it is down; the other nodes were not touched"
  fi
  RESTARTED+=("$id")
  remove_remaining "$id"
  CURRENT=""
  log "node $id: done in $((SECONDS - node_start)) s (${#RESTARTED[@]} of $((${#RESTARTED[@]} + ${#REMAINING[@]})))"
done

status || true
log "done: restarted $(join "${RESTARTED[@]}") in $((SECONDS - RUN_START)) s; ${STATUS:+$(describe_leader)}"
