#!/usr/bin/env bash
# Black-box test of `admit tokens`: counts of stdin and of a file, --encoding, --model (exact and
# an estimate, noted on stderr), --json, --ids, --chat (a request body with OpenAI's overhead),
# and the exit codes of a missing file (1), bad JSON (1) and a bad command line (2).
# Usage: bash tests/tokens/admit_tokens_test.sh path/to/admit
set -uo pipefail
BIN=${1:?usage: admit_tokens_test.sh ADMIT_BINARY}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() { fail=$((fail + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && echo "       $2"; }

# run INPUT ARGS...: runs admit with INPUT on stdin, setting RC, OUT and ERR.
run() {
  local input=$1
  shift
  printf '%s' "$input" | "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
  RC=$?
  OUT=$(cat "$TMP/out")
  ERR=$(cat "$TMP/err")
}
# expect NAME CODE OUT [ERR]: the last run exited with CODE, printed exactly OUT on stdout and
# (if given) something containing ERR on stderr.
expect() {
  if [ "$RC" -eq "$2" ] && [ "$OUT" = "$3" ] && { [ -z "${4:-}" ] || grep -qF -- "$4" <<<"$ERR"; }; then
    ok "$1"
  else
    ko "$1" "exit $RC (want $2), stdout: $OUT (want $3), stderr: $ERR"
  fi
}

# Counts and ids as js-tiktoken gives them (tests/tokens/tokens_test.cpp has more).
run "hello world" tokens
expect "stdin, o200k_base by default" 0 "2"
run "hello world" tokens -
expect "- is stdin" 0 "2"
run "hello world" tokens --encoding cl100k_base --ids
expect "--encoding cl100k_base --ids" 0 "15339 1917"
run "hello world" tokens --json
expect "--json" 0 '{"tokens":2,"encoding":"o200k_base","estimate":false}'
run "hello world" tokens --model gpt-4 --json --ids
expect "--model gpt-4 --json --ids" 0 '{"tokens":2,"encoding":"cl100k_base","estimate":false,"ids":[15339,1917]}'
run "hello world" tokens --model claude-sonnet-4 --json
expect "--model of another family: an estimate" 0 \
  '{"tokens":2,"encoding":"o200k_base","estimate":true}' "is an estimate"
run "<|endoftext|>" tokens
expect "special tokens are text" 0 "7"
printf 'a\xffb' >"$TMP/invalid.txt"
run "" tokens "$TMP/invalid.txt" --ids
expect "invalid UTF-8: U+FFFD" 0 "64 3251 65"
: >"$TMP/empty.txt"
run "" tokens "$TMP/empty.txt"
expect "an empty file" 0 "0"

# The cookbook's example: 81 prompt tokens for gpt-4, 79 for gpt-4o.
cat >"$TMP/chat.json" <<'JSON'
{"model": "gpt-4-0613", "messages": [
 {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
 {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
 {"role": "system", "name": "example_assistant", "content": [{"type": "text", "text": "Things working well together will increase revenue."}]},
 {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}]}
JSON
run "" tokens --chat "$TMP/chat.json" --json
expect "--chat: the body's model" 0 '{"tokens":81,"encoding":"cl100k_base","estimate":false}'
run "" tokens --chat --model gpt-4o "$TMP/chat.json"
expect "--chat --model overrides" 0 "79"
run "" tokens --chat --encoding o200k_base "$TMP/chat.json"
expect "--chat --encoding overrides" 0 "79"
run '{"messages": []}' tokens --chat
expect "--chat, no messages: the reply's 3" 0 "3"

run "" tokens "$TMP/missing.txt"
expect "a missing file: exit 1" 1 "" "cannot read"
run '{"messages": 3}' tokens --chat
expect "--chat without a messages array: exit 1" 1 "" "no \"messages\" array"
run 'not json' tokens --chat
expect "--chat, not JSON: exit 1" 1 "" "not JSON"
run "x" tokens --encoding p50k_base
expect "an unknown encoding: exit 2" 2 "" "unknown encoding"
run "x" tokens --model gpt-4 --encoding cl100k_base
expect "--model with --encoding: exit 2" 2 "" "excludes"
run "x" tokens --chat --ids
expect "--chat with --ids: exit 2" 2 "" "--ids"
run "" tokens --help
if [ "$RC" -eq 0 ] && grep -qF -- "--encoding" <<<"$OUT"; then ok "--help"; else ko "--help" "$OUT"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
