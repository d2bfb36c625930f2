#!/usr/bin/env bash
# Sabotage checks (issue 22): for each break of test/sabotage/breaks.mjs, a copy of the
# repository gets that one break, is built, and the test file that should catch it is run
# there. Prints a table: caught (the test failed), MISSED (it passed), or why it could not tell.
# Not part of `npm test`. As root, like the tests. Takes about 15 minutes for all breaks.
#
#   test/sabotage/run.sh                 every break
#   test/sabotage/run.sh ID...           only these
#   test/sabotage/run.sh --baseline      first run each test file unbroken (it must pass)
#
# The copy is of the working tree (src, test, docs, the bench farm and the build files), in a
# temporary folder; node_modules is linked. Nothing in the repository is changed. Each test's
# output is kept in $SABOTAGE_LOGS (default /tmp/vunify-sabotage-logs), as ID.log, to see
# what caught a break. "caught" needs a failing test, not just a failing file (an import).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
baseline=0
if [ "${1:-}" = --baseline ]; then baseline=1; shift; fi
work=$(mktemp -d /tmp/vunify-sabotage.XXXXXX)
trap 'chattr -R -i "$work" 2>/dev/null; rm -rf "$work"' EXIT
pristine=$work/pristine
copy=$work/copy
logs=${SABOTAGE_LOGS:-/tmp/vunify-sabotage-logs}
mkdir -p "$pristine" "$logs"
(cd "$repo" && cp -a src test docs native-free-bench completion README.md package.json package-lock.json tsconfig.json vitest.config.ts "$pristine"/)
ln -s "$repo/node_modules" "$pristine/node_modules"

build() { # the project's build, with unused locals allowed (a break may leave one)
  (cd "$1" && rm -rf dist && node_modules/.bin/tsc -p tsconfig.json --noUnusedLocals false >"$work/build.log" 2>&1 && chmod +x dist/cli.js)
}
runtest() { # dir, test file, -t filter; the test's exit code
  local dir=$1 file=$2 only=$3
  if [ -n "$only" ]; then
    (cd "$dir" && timeout 900 node_modules/.bin/vitest run "$file" -t "$only" >"$work/test.log" 2>&1)
  else
    (cd "$dir" && timeout 900 node_modules/.bin/vitest run "$file" >"$work/test.log" 2>&1)
  fi
}
fresh() { rm -rf "$copy"; cp -a "$pristine" "$copy"; }
# vitest's summary line: "Tests  N failed | M passed (K)" (colours removed).
failedTests() { sed 's/\x1b\[[0-9;]*m//g' "$work/test.log" | grep -Eo 'Tests +([0-9]+ failed)' | grep -Eo '[0-9]+' || echo 0; }
passedTests() { sed 's/\x1b\[[0-9;]*m//g' "$work/test.log" | grep -E '^ +Tests ' | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || echo 0; }
mapfile -t rows < <(node "$repo/test/sabotage/apply.mjs" --list "$@")
[ ${#rows[@]} -gt 0 ] || { echo "no such break: $*" >&2; exit 2; }

if [ $baseline = 1 ]; then
  fresh
  build "$copy" || { echo "the unbroken copy does not build:"; cat "$work/build.log"; exit 1; }
  printf '%-34s %-36s %s\n' 'baseline (no break)' 'test' 'result'
  for row in "${rows[@]}"; do
    IFS=$'\t' read -r id file only <<<"$row"
    key="$file|$only"
    case " ${seen:-} " in *" $key "*) continue;; esac
    seen="${seen:-} $key"
    start=$SECONDS
    if runtest "$copy" "$file" "$only" && [ "$(passedTests)" -gt 0 ]; then r="passed ($(passedTests) tests)"; else r="FAILED (a break there proves nothing)"; tail -30 "$work/test.log"; fi
    printf '%-34s %-36s %s (%ss)\n' "${only:-all}" "$file" "$r" $((SECONDS - start))
  done
  echo
fi

printf '%-34s %-36s %-9s %s\n' 'break' 'test' 'result' 'time'
missed=0
for row in "${rows[@]}"; do
  IFS=$'\t' read -r id file only <<<"$row"
  start=$SECONDS
  fresh
  if ! node "$repo/test/sabotage/apply.mjs" "$copy" "$id" 2>"$work/apply.log"; then
    r="NOT-APPLIED ($(cat "$work/apply.log"))"; missed=$((missed + 1))
  elif ! build "$copy"; then
    r="BUILD-FAILED ($(grep -m1 error "$work/build.log"))"; missed=$((missed + 1))
  elif runtest "$copy" "$file" "$only"; then
    r=MISSED; missed=$((missed + 1))
  elif [ "$(failedTests)" -gt 0 ]; then
    r=caught
  else
    # The file failed with no test failing (an import or a hook): not proof of a check.
    r="FILE-FAILED (no test failed; see $logs/$id.log)"; missed=$((missed + 1))
  fi
 cp "$work/test.log" "$logs/$id.log" 2>/dev/null
  printf '%-34s %-36s %-9s %ss\n' "$id" "$file${only:+ -t '$only'}" "$r" $((SECONDS - start))
done
echo "$missed of ${#rows[@]} not caught"
[ $missed = 0 ]
