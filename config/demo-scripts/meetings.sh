#!/bin/sh
# A demo source for tally's `exec` plugin: prints a made-up but stable number
# of meetings for every day of the window, one JSON line a day:
#
#   {"indicator": "meetings", "day": "2026-11-27", "value": 2}
#
# tallyd passes the window as TALLY_FROM and TALLY_TO (YYYY-MM-DD, both
# inclusive). Plain POSIX sh, no `date`: its options differ between systems.
# MEETINGS_INDICATOR names another indicator (set it in the source's `env`).
set -eu

: "${TALLY_FROM:?is not set: run this script through tallyd's exec plugin}"
: "${TALLY_TO:?is not set: run this script through tallyd's exec plugin}"
indicator="${MEETINGS_INDICATOR:-meetings}"

# "08" -> 8: sh reads a number with a leading 0 as octal.
num() {
    n="$1"
    while [ "${n#0}" != "$n" ]; do n="${n#0}"; done
    echo "${n:-0}"
}

days_in_month() {
    case "$2" in
        4|6|9|11) echo 30 ;;
        2)
            if [ $(($1 % 4)) -eq 0 ] && { [ $(($1 % 100)) -ne 0 ] || [ $(($1 % 400)) -eq 0 ]; }; then
                echo 29
            else
                echo 28
            fi ;;
        *) echo 31 ;;
    esac
}

y=$(num "${TALLY_FROM%%-*}")
rest="${TALLY_FROM#*-}"
m=$(num "${rest%%-*}")
d=$(num "${rest#*-}")
ty=$(num "${TALLY_TO%%-*}")
rest="${TALLY_TO#*-}"
tm=$(num "${rest%%-*}")
td=$(num "${rest#*-}")
end=$((ty * 10000 + tm * 100 + td))

days=0
while [ $((y * 10000 + m * 100 + d)) -le "$end" ]; do
    # 0 to 3 meetings, the same for a day whenever it is asked for.
    value=$(((y + m * 31 + d) % 4))
    printf '{"indicator": "%s", "day": "%04d-%02d-%02d", "value": %d}\n' "$indicator" "$y" "$m" "$d" "$value"
    days=$((days + 1))
    d=$((d + 1))
    if [ "$d" -gt "$(days_in_month "$y" "$m")" ]; then
        d=1
        m=$((m + 1))
        if [ "$m" -gt 12 ]; then
            m=1
            y=$((y + 1))
        fi
    fi
done
echo "meetings.sh: $days days from $TALLY_FROM to $TALLY_TO" >&2
