#!/usr/bin/env bash
# Runs a command that must fail: non-zero exit, and stderr+stdout containing PATTERN
# (an extended regex). Used by CTest for bad-input tests of the executables.
#   expect_failure.sh PATTERN command args...
set -u
pattern=$1
shift
output=$("$@" 2>&1)
code=$?
echo "$output"
if [ "$code" -eq 0 ]; then
  echo "expect_failure: the command exited 0, expected a failure" >&2
  exit 1
fi
if ! grep -Eq -- "$pattern" <<<"$output"; then
  echo "expect_failure: exit code $code but the output lacks /$pattern/" >&2
  exit 1
fi
echo "expect_failure: failed as expected (exit $code)"
