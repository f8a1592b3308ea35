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
#
# Each figure is measured CANVAS_SCALE_ROUNDS times (5 by default) on the
# one seeded server, and printed as median (min–max): the chat opened
# again after another chat, the list reloaded, the folded team (a tenth
# of the fleet) opened.
#
# Bounded: at most 50,000 messages, 10,000 workspaces and 20 rounds, and run.sh's
# 11-minute backstop. The long-chat step still asserts what it asserts in
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
trap 'rm -f "$LOG"' EXIT
status=0
bash tests/canvas/run.sh 2>&1 | tee "$LOG" || status=$?
echo
echo "== canvas scale (${CANVAS_LONG_CHAT} messages, ${CANVAS_SCALE_WORKSPACES} workspaces)"
grep -E 'the server answers the newest page|newest on screen|first contentful paint' "$LOG" | sed 's/^ *//' \
  || echo "(no figures: see the run above)"
exit "$status"
