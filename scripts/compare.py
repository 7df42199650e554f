#!/usr/bin/env python3
"""Compare two nudgeflow output directories as sets of decisions.

Dispatches and suppressions compare as whole parsed JSON objects, every
field included (a suppression's `detail` too), as multisets: line order, key
order and number formatting do not matter, repeated lines do. Dead letters
compare by (stream, file, line) only, since their reason texts are
free-form. Exit status 1 and a readable list of differences when they differ.

usage: scripts/compare.py EXPECTED_DIR ACTUAL_DIR
"""
import json
import sys
from collections import Counter


def load(path, dead_letters):
    out = Counter()
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                o = json.loads(line)
                if dead_letters:
                    o = {k: o[k] for k in ("stream", "file", "line")}
                out[json.dumps(o, sort_keys=True)] += 1
    except FileNotFoundError:
        pass
    return out


def main():
    a_dir, b_dir = sys.argv[1], sys.argv[2]
    bad = 0
    for name in ("dispatches", "suppressions", "dead_letters"):
        a = load(f"{a_dir}/{name}.jsonl", name == "dead_letters")
        b = load(f"{b_dir}/{name}.jsonl", name == "dead_letters")
        if a == b:
            print(f"{name}: {sum(a.values())} identical")
            continue
        bad += 1
        only_a, only_b = a - b, b - a
        print(f"{name}: {sum(only_a.values())} only in {a_dir}, {sum(only_b.values())} only in {b_dir}")
        for line in sorted(only_a)[:20]:
            print(f"  - {line}")
        for line in sorted(only_b)[:20]:
            print(f"  + {line}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
