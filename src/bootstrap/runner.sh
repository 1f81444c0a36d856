#!/bin/sh
# capd-rs bootstrap runner (generated from src/bootstrap/runner.sh): runs steps 1..@TOTAL@ in
# order, each once.
# Progress (kept across node restarts): "done" holds the last finished step; "failed" the step
# (0: after the last one), its exit code and the tail of its output; "sentinel-seen" that a step
# left the success sentinel; "succeeded" that all steps ran and the sentinel had been written.
# @RUN_DIR@ (emptied by a node restart) holds the lock with the running runner's pid, its step's
# pid, and "ran" (this boot of the node has run the runner). Safe to start again: finished steps
# are skipped; after a node restart the finished steps that wrote to /run or /tmp run again.
cd @DIR@ || exit 1
[ -f succeeded ] && exit 0
mkdir -p @RUN_DIR@
# One runner at a time: the lock directory is made atomically and holds the runner's pid. A lock
# left by a killed runner is never taken over (that could run a step twice): the bootstrap then
# stops advancing and bootstrapTimeout reports it.
mkdir @RUN_DIR@/lock 2>/dev/null || exit 0
echo $$ > @RUN_DIR@/lock/pid
[ -f started ] || date +%s > started
rm -f failed
fail() {  # step, exit code, output file
  { echo "$1 $2"; tail -n 20 "$3"; } > failed.tmp && mv failed.tmp failed
  rm -rf @RUN_DIR@/lock @RUN_DIR@/step-pid
  exit "$2"
}
input_of() { if [ -f "step-$1.in" ]; then echo "step-$1.in"; else echo /dev/null; fi; }
read last < done 2>/dev/null || last=0
if [ ! -f @RUN_DIR@/ran ] && [ "$last" -gt 0 ]; then
  # The node restarted mid-bootstrap: what finished steps wrote to its tmpfs is gone.
  j=1
  while [ "$j" -le "$last" ]; do
    if [ -f "step-$j.replay" ]; then
      sh "step-$j.sh" < "$(input_of "$j")" > "step-$j.out" 2>&1 || fail "$j" "$?" "step-$j.out"
    fi
    j=$((j + 1))
  done
fi
touch @RUN_DIR@/ran
session=$(command -v setsid || true)
i=$((last + 1))
while [ "$i" -le @TOTAL@ ]; do
  attempt=0
  while :; do
    $session sh "step-$i.sh" < "$(input_of "$i")" > "step-$i.out" 2>&1 &
    echo $! > @RUN_DIR@/step-pid
    wait $!
    code=$?
    rm -f @RUN_DIR@/step-pid
    [ "$code" -eq 0 ] && break
    attempt=$((attempt + 1))
    if [ "$attempt" -gt "$(cat "step-$i.retries")" ]; then
      fail "$i" "$code" "step-$i.out"
    fi
    sleep 5
  done
  [ -f @SUCCESS_SENTINEL@ ] && touch sentinel-seen
  echo "$i" > done.tmp && mv done.tmp done
  i=$((i + 1))
done
if [ ! -f sentinel-seen ]; then
  echo "all @TOTAL@ steps ran, but none wrote @SUCCESS_SENTINEL@" > end.out
  fail 0 1 end.out
fi
touch succeeded
rm -rf @RUN_DIR@/lock
