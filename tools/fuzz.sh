#!/usr/bin/env bash
# Run every fuzz target of the module, one after another, each for
# FUZZTIME (default 30s; CI uses a few seconds). A target is any
# `func FuzzXxx(f *testing.F)` in a _test.go file; new ones are found
# without editing this script.
#
#   tools/fuzz.sh [PACKAGE_PATTERN ...]   (default ./...)
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-30s}
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
n=0
for pkg in $(go list "${pkgs[@]}"); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for name in $(grep -ho '^func Fuzz[A-Za-z0-9_]*(f \*testing\.F)' "$dir"/*_test.go 2>/dev/null | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/' | sort -u); do
		echo "fuzz: $pkg $name for $t"
		# A finding writes its failing input; a run that failed without
		# one (Go's coordinator can time out waiting for a worker on a
		# loaded machine: "context deadline exceeded") is run once more.
		if ! out=$(go test -run '^$' -fuzz "^$name\$" -fuzztime "$t" "$pkg" 2>&1); then
			echo "$out"
			case $out in *"Failing input written"*) exit 1 ;; esac
			echo "fuzz: $name failed without a failing input; running it again"
			go test -run '^$' -fuzz "^$name\$" -fuzztime "$t" "$pkg"
		else
			echo "$out" | tail -2
		fi
		n=$((n + 1))
	done
done
echo "fuzz: $n targets ran"
[ "$n" -gt 0 ]
