#!/usr/bin/env bash
# Regenerates the key table of docs/config.md from `moerun --config-reference`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MOERUN_BIN:-build/release/bin/moerun}
table=$("$bin" --config-reference)
/usr/bin/python3 - "$table" <<'PY'
import sys
begin, end = "<!-- BEGIN GENERATED: launch/update-config-doc.sh -->", "<!-- END GENERATED -->"
path = "docs/config.md"
text = open(path).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(head + begin + "\n" + sys.argv[1] + "\n" + end + tail)
PY
echo "docs/config.md updated"
