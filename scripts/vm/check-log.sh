#!/usr/bin/env bash
# Usage: check-log.sh SERIAL_LOG PROGRAMS
# The verdict on one VM run, from the guest's serial console alone: every
# program named in PROGRAMS must have printed "VMTEST <name> rc=0", the guest
# must have printed "VMTEST DONE" and no "VMTEST SETUP FAILED". Prints one
# line per program and "vm: N passed, N failed"; exits 0 only when all passed.
set -euo pipefail
log=$1 programs=$2

# The serial console ends lines with \r\n. A marker may follow a program's
# unterminated last line, so markers are matched at the end of a line.
text=$(tr -d '\r' <"$log" 2>/dev/null || true)
passed=0 failed=0
while read -r name _; do
	rc=$(sed -n "s/^.*VMTEST $name rc=\([0-9]*\)\$/\1/p" <<<"$text" | tail -n 1)
	if [ "$rc" = 0 ]; then
		echo "vm: $name passed"
		passed=$((passed + 1))
	elif [ -n "$rc" ]; then
		echo "vm: $name FAILED (exit status $rc)"
		failed=$((failed + 1))
	else
		echo "vm: $name FAILED (no result: it did not run to its end)"
		failed=$((failed + 1))
	fi
done < <(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$programs")

status=0
if grep -q '^VMTEST SETUP FAILED' <<<"$text"; then
	grep '^VMTEST SETUP FAILED' <<<"$text" | sed 's/^VMTEST /vm: /'
	status=1
elif ! grep -q 'VMTEST DONE$' <<<"$text"; then
	echo "vm: the guest did not reach the end (no VMTEST DONE): crash, hang or timeout"
	status=1
fi
echo "vm: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && exit "$status"
exit 1
