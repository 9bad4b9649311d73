#!/bin/sh
# Prints each argument on its own line, bracketed, and where it ran.
echo "report.sh: $# argument(s), cwd=/$(git rev-parse --show-prefix)"
for arg in "$@"; do
  printf '  [%s]\n' "$arg"
done
