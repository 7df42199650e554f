#!/usr/bin/env python3
"""Compare two nudgeflow output directories as sets of decisions.

Dispatches and suppressions compare as whole parsed JSON objects, every
field included (a suppression's `detail` too), as multisets: line order, key
order and number formatting do not matter, repeated lines do. Dead letters
compare by (stream, file, line) only, since their reason texts are
free-form. Churn signals (churn_signals.jsonl) are compared when either
directory has that file (a missing one is empty), as multisets of whole
objects too.

P(alive) is a floating-point model output that DESIGN.md §5 asks to agree
with its formula to 1e-9 relative, not bit for bit, so wherever it appears
it compares numerically, to 1e-12 relative: the `p_alive` of a churn signal,
and `vars.p_alive` of a dispatch whose event is a churn event (event key
`nudgeflow/churn.risk_high:...`). Every other field compares exactly.
Exit status 1 and a readable list of differences when they differ.

usage: scripts/compare.py EXPECTED_DIR ACTUAL_DIR
"""
import json
import os
import sys

P_ALIVE_RTOL = 1e-12
CHURN_EVENT_KEY = "nudgeflow/churn.risk_high:"


def load(path):
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def p_close(p, q):
    if p is None or q is None:
        return p is None and q is None
    return is_num(p) and is_num(q) and abs(p - q) <= P_ALIVE_RTOL * max(abs(p), abs(q))


# Each splits a record into (the part compared exactly, as canonical JSON;
# the P(alive) compared to P_ALIVE_RTOL, or None).

def split_dead_letter(o):
    return json.dumps({k: o[k] for k in ("stream", "file", "line")}, sort_keys=True), None


def split_plain(o):
    return json.dumps(o, sort_keys=True), None


def split_signal(o):
    if not is_num(o.get("p_alive")):
        return split_plain(o)
    rest = {k: v for k, v in o.items() if k != "p_alive"}
    return json.dumps(rest, sort_keys=True), o["p_alive"]


def split_dispatch(o):
    v = o.get("vars")
    if not (str(o.get("event_key", "")).startswith(CHURN_EVENT_KEY)
            and isinstance(v, dict) and is_num(v.get("p_alive"))):
        return split_plain(o)
    rest = dict(o)
    rest["vars"] = {k: x for k, x in v.items() if k != "p_alive"}
    return json.dumps(rest, sort_keys=True), v["p_alive"]


def compare(a, b, split):
    """Pairs each record of a with an unpaired one of b that is equal in its
    exact part and close in its P(alive); returns the unpaired of each side."""
    pool = {}
    for o in b:
        key, p = split(o)
        pool.setdefault(key, []).append((p, o))
    only_a = []
    for o in a:
        key, p = split(o)
        cands = pool.get(key, [])
        for i, (q, _) in enumerate(cands):
            if p_close(p, q):
                del cands[i]
                break
        else:
            only_a.append(o)
    only_b = [o for cands in pool.values() for (_, o) in cands]
    return only_a, only_b


FILES = (
    ("dispatches", split_dispatch),
    ("suppressions", split_plain),
    ("dead_letters", split_dead_letter),
    ("churn_signals", split_signal),
)


def main():
    a_dir, b_dir = sys.argv[1], sys.argv[2]
    bad = 0
    for name, split in FILES:
        path_a, path_b = f"{a_dir}/{name}.jsonl", f"{b_dir}/{name}.jsonl"
        if name == "churn_signals" and not (os.path.exists(path_a) or os.path.exists(path_b)):
            continue
        a, b = load(path_a), load(path_b)
        only_a, only_b = compare(a, b, split)
        if not only_a and not only_b:
            print(f"{name}: {len(a)} identical")
            continue
        bad += 1
        print(f"{name}: {len(only_a)} only in {a_dir}, {len(only_b)} only in {b_dir}")

        def show(o):
            if split is split_dead_letter:
                return split(o)[0]
            return json.dumps(o, sort_keys=True)

        for line in sorted(map(show, only_a))[:20]:
            print(f"  - {line}")
        for line in sorted(map(show, only_b))[:20]:
            print(f"  + {line}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
