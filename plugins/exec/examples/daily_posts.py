#!/usr/bin/env python3
"""daily_posts: an exec-protocol source in Python (standard library only).

Reads the daily post count of one account from a JSON API,
GET {POSTS_API}?day=YYYY-MM-DD answering {"posts": 3}, for every day of the
window tally asks for, and prints one observation per day on stdout.

Configured as an `exec` source:

    [sources.settings]
    command = "plugins/exec/examples/daily_posts.py"
    env = { POSTS_API = "http://127.0.0.1:9471/api/posts", POSTS_TOKEN = "${env:POSTS_TOKEN}" }
    indicators = ["posts"]

The exec protocol (version 1, plugins/README.md): the window arrives in
TALLY_FROM and TALLY_TO, the last resume state in TALLY_STATE; stdout carries
JSON lines (observations, and {"state": ...}); stderr lines go to the daemon's
log; a non-zero exit fails the run. Check it with
`tallyd plugins --check-exec plugins/exec/examples/daily_posts.py`.
"""

import datetime
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

INDICATOR = "posts"


def days(first, last):
    day = first
    while day <= last:
        yield day
        day += datetime.timedelta(days=1)


def fetch(api, token, day):
    url = api + "?" + urllib.parse.urlencode({"day": day.isoformat()})
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.load(response)


def main():
    first = datetime.date.fromisoformat(os.environ["TALLY_FROM"])
    last = datetime.date.fromisoformat(os.environ["TALLY_TO"])
    state = json.loads(os.environ.get("TALLY_STATE") or "null") or {}
    api = os.environ.get("POSTS_API")
    if not api:
        # Without the API there is nothing to ask: fail the run, saying why.
        print("error: POSTS_API is not set (the source's env setting)", file=sys.stderr)
        return 2
    token = os.environ.get("POSTS_TOKEN", "")
    # The API names the endpoint, never the token, in what reaches the log.
    endpoint = api.split("?")[0]
    for day in days(first, last):
        try:
            answer = fetch(api, token, day)
        except (urllib.error.URLError, OSError, ValueError) as e:
            print(f"error: {endpoint} day={day}: {e}", file=sys.stderr)
            return 1
        posts = answer.get("posts")
        if not isinstance(posts, (int, float)) or isinstance(posts, bool):
            # One bad day spoils that day only: say so and go on.
            print(f"warning: {endpoint} day={day}: no number in \"posts\": {answer!r}", file=sys.stderr)
            continue
        print(json.dumps({"indicator": INDICATOR, "day": day.isoformat(), "value": posts}))
    runs = state.get("runs", 0) + 1
    print(json.dumps({"state": {"runs": runs, "last_day": last.isoformat()}}))
    print(f"{endpoint}: {first}..{last} read (run {runs})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
