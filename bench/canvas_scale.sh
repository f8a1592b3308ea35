#!/usr/bin/env bash
# The canvas at scale, in Chromium (issue 30): runs the canvas suite's two
# scale steps (tests/canvas/run.sh with CANVAS_ONLY, after its setup steps)
# with a 10,000-message chat and 1,000 workspaces, and prints the figures
# they record: the server's time for the long chat's newest page, the
# page's open time to the newest message on screen with the long tasks on
# the way, and the workspace list's first paint from a reload (first
# contentful paint, first row, settled with its counts read, rows in the
# DOM, long tasks) and the time to open a folded team.
#
#   bash bench/canvas_scale.sh                 # 10,000 messages, 1,000 workspaces
#   CANVAS_LONG_CHAT=5000 CANVAS_SCALE_WORKSPACES=500 bash bench/canvas_scale.sh
#   CANVAS_TRACE=1 bash bench/canvas_scale.sh  # and Chrome's trace, main's page against this one
#
# CANVAS_TRACE=1 adds a traced step (tests/canvas/scale_trace.mjs): the
# page's start (a fresh load, to one second after the list settled) and
# the long chat's opening (after another chat; first after the load, then
# again), each in Chrome's trace, with per round the longest task of the
# renderer's main thread by wall clock and by its own CPU time, and how
# many tasks exceed 50 ms either way; printed as median (min–max), with
# what the longest task on the CPU was made of. It compares the `web/` of
# each git revision of CANVAS_TRACE_REVS (default "3012fa5 ." : main's page
# before the long-task work, and this working tree's), served by route in
# place of the binary's, against the one seeded server, rounds alternating.
# `uptime` is printed at the run's start and end.
#
# Each figure is measured CANVAS_SCALE_ROUNDS times (5 by default) on the
# one seeded server, and printed as median (min–max): the chat opened
# again after another chat, the list reloaded, the folded team (a tenth
# of the fleet) opened.
#
# Bounded: at most 50,000 messages, 10,000 workspaces and 20 rounds, and run.sh's
# backstop (15 minutes; 30 with CANVAS_TRACE=1). The long-chat step still asserts what it asserts in
# the suite (one page read to open, older pages on scroll-up); the list's
# step records and does not assert. It uses the debug build that run.sh
# builds: figures are for comparing pages, not release numbers.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CANVAS_LONG_CHAT=${CANVAS_LONG_CHAT:-10000}
export CANVAS_SCALE_WORKSPACES=${CANVAS_SCALE_WORKSPACES:-1000}
export CANVAS_SCALE_ROUNDS=${CANVAS_SCALE_ROUNDS:-5}
if ! [[ $CANVAS_LONG_CHAT =~ ^[0-9]+$ ]] || ((CANVAS_LONG_CHAT < 1 || CANVAS_LONG_CHAT > 50000)); then
  echo "CANVAS_LONG_CHAT must be a whole number from 1 to 50000 (got '$CANVAS_LONG_CHAT')" >&2
  exit 2
fi
if ! [[ $CANVAS_SCALE_WORKSPACES =~ ^[0-9]+$ ]] || ((CANVAS_SCALE_WORKSPACES < 2 || CANVAS_SCALE_WORKSPACES > 10000)); then
  echo "CANVAS_SCALE_WORKSPACES must be a whole number from 2 to 10000 (got '$CANVAS_SCALE_WORKSPACES')" >&2
  exit 2
fi
if ! [[ $CANVAS_SCALE_ROUNDS =~ ^[0-9]+$ ]] || ((CANVAS_SCALE_ROUNDS < 1 || CANVAS_SCALE_ROUNDS > 20)); then
  echo "CANVAS_SCALE_ROUNDS must be a whole number from 1 to 20 (got '$CANVAS_SCALE_ROUNDS')" >&2
  exit 2
fi
# The setup steps, then only the two scale steps; seeding takes minutes,
# so the suite's longer time bound (CANVAS_KEEP_GOING=1) applies.
export CANVAS_ONLY='message chat opens on its newest page|^scale: '
export CANVAS_KEEP_GOING=1
LOG=$(mktemp "${TMPDIR:-/tmp}/molecule-canvas-scale.XXXXXX")
PAGES=$(mktemp -d "${TMPDIR:-/tmp}/molecule-canvas-pages.XXXXXX")
trap 'rm -rf "$LOG" "$PAGES"' EXIT
if [ "${CANVAS_TRACE:-}" = 1 ]; then
  # Each revision's web/ in a folder of its own ("." : the working tree's).
  export CANVAS_TRACE_PAGES=""
  for rev in ${CANVAS_TRACE_REVS:-3012fa5 .}; do
    if [ "$rev" = . ]; then
      name=worktree
      mkdir -p "$PAGES/$name" && cp -R web "$PAGES/$name/"
    else
      name=$(git rev-parse --short "$rev^{commit}")
      mkdir -p "$PAGES/$name" && git archive "$rev" web | tar -x -C "$PAGES/$name"
    fi
    CANVAS_TRACE_PAGES="${CANVAS_TRACE_PAGES:+$CANVAS_TRACE_PAGES,}$name=$PAGES/$name/web"
  done
fi
echo "load at the start: $(uptime)" | tee "$LOG"
status=0
bash tests/canvas/run.sh 2>&1 | tee -a "$LOG" || status=$?
echo "load at the end: $(uptime)" | tee -a "$LOG"
echo
echo "== canvas scale (${CANVAS_LONG_CHAT} messages, ${CANVAS_SCALE_WORKSPACES} workspaces)"
grep -E 'load at the|the server answers the newest page|newest on screen|first contentful paint| trace ' "$LOG" | sed 's/^ *//' \
  || echo "(no figures: see the run above)"
exit "$status"
