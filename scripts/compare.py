#!/usr/bin/env python3
"""Compare two nudgeflow output directories as sets of decisions.

Dispatches and suppressions compare as whole parsed JSON objects, every
field included (a suppression's `detail` too), as multisets: line order, key
order and number formatting do not matter, repeated lines do. Dead letters
compare by (stream, file, line) only, since their reason texts are
free-form. Churn signals (churn_signals.jsonl) are compared when either
directory has that file (a missing one is empty): as multisets of whole
objects, `p_alive` equal to 1e-12 relative and every other field exactly.
Exit status 1 and a readable list of differences when they differ.

usage: scripts/compare.py EXPECTED_DIR ACTUAL_DIR
"""
import json
import os
import sys
from collections import Counter

P_ALIVE_RTOL = 1e-12


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


def load_signals(path):
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def p_close(p, q):
    if isinstance(p, bool) or isinstance(q, bool) \
            or not isinstance(p, (int, float)) or not isinstance(q, (int, float)):
        return False
    return abs(p - q) <= P_ALIVE_RTOL * max(abs(p), abs(q))


def compare_signals(a_dir, b_dir):
    """Pairs every signal of a_dir with one of b_dir equal in every field but
    `p_alive`, and with `p_alive` within P_ALIVE_RTOL; returns the unpaired
    ones of each side."""
    a = load_signals(f"{a_dir}/churn_signals.jsonl")
    b = load_signals(f"{b_dir}/churn_signals.jsonl")

    def rest(o):
        return json.dumps({k: v for k, v in o.items() if k != "p_alive"}, sort_keys=True)

    pool = {}
    for o in b:
        pool.setdefault(rest(o), []).append(o)
    only_a = []
    for o in a:
        cands = pool.get(rest(o), [])
        for i, q in enumerate(cands):
            if p_close(o.get("p_alive"), q.get("p_alive")):
                del cands[i]
                break
        else:
            only_a.append(o)
    only_b = [o for cands in pool.values() for o in cands]
    return len(a), only_a, only_b


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
    if any(os.path.exists(f"{d}/churn_signals.jsonl") for d in (a_dir, b_dir)):
        n, only_a, only_b = compare_signals(a_dir, b_dir)
        if not only_a and not only_b:
            print(f"churn_signals: {n} identical (p_alive to {P_ALIVE_RTOL:g} relative)")
        else:
            bad += 1
            print(f"churn_signals: {len(only_a)} only in {a_dir}, {len(only_b)} only in {b_dir}")
            for o in sorted(only_a, key=lambda o: json.dumps(o, sort_keys=True))[:20]:
                print(f"  - {json.dumps(o, sort_keys=True)}")
            for o in sorted(only_b, key=lambda o: json.dumps(o, sort_keys=True))[:20]:
                print(f"  + {json.dumps(o, sort_keys=True)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
