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

The analytics answers (DESIGN.md §5 and §8, `replay --out`) are compared
when either directory has them: retention.json and delivery.json as whole
parsed JSON objects (key order does not matter, list order does),
churn.jsonl as the list of its parsed lines, in order. In them the floats
`p_alive`, `t_x`, `T` and `success_rate` compare to 1e-12 relative; every
other value compares exactly (1 and 1.0 differ). A file that one directory
has and the other lacks is a difference.

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


# Analytics answers: compared as parsed JSON, in order, with these keys'
# numbers to P_ALIVE_RTOL.
CLOSE_KEYS = ("p_alive", "t_x", "T", "success_rate")
ANSWERS = ("retention.json", "delivery.json", "churn.jsonl")


def load_answer(path):
    """The parsed file: one JSON value (.json) or the list of its lines'
    values (.jsonl); None when missing; a str saying why when unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except ValueError as e:
        return f"unreadable JSON: {e}"


def show_value(v):
    return json.dumps(v, sort_keys=True)


def diff_json(a, b, path, out, close=False):
    """Appends to out a line for every place where a and b differ."""
    if close and is_num(a) and is_num(b):
        if not p_close(a, b):
            out.append(f"{path}: {show_value(a)} != {show_value(b)} (beyond 1e-12 relative)")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{k}" if path else k
            if k not in b:
                out.append(f"{sub}: only in the first ({show_value(a[k])})")
            elif k not in a:
                out.append(f"{sub}: only in the second ({show_value(b[k])})")
            else:
                diff_json(a[k], b[k], sub, out, k in CLOSE_KEYS)
        return
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            sub = f"{path}[{i}]"
            if i >= len(b):
                out.append(f"{sub}: only in the first ({show_value(a[i])})")
            elif i >= len(a):
                out.append(f"{sub}: only in the second ({show_value(b[i])})")
            else:
                diff_json(a[i], b[i], sub, out)
        return
    if show_value(a) != show_value(b):
        out.append(f"{path or '(top)'}: {show_value(a)} != {show_value(b)}")


def compare_answer(name, a_dir, b_dir):
    """Prints the comparison of one analytics answer; True when they differ."""
    a = load_answer(os.path.join(a_dir, name))
    b = load_answer(os.path.join(b_dir, name))
    if a is None and b is None:
        return False
    if a is None or b is None:
        print(f"{name}: missing in {a_dir if a is None else b_dir}")
        return True
    for d, v in ((a_dir, a), (b_dir, b)):
        if isinstance(v, str):
            print(f"{name}: {v} in {d}")
            return True
    out = []
    diff_json(a, b, "", out)
    if not out:
        what = f"{len(a)} lines" if isinstance(a, list) else "object"
        print(f"{name}: {what} identical")
        return False
    print(f"{name}: {len(out)} differences ({a_dir} first, {b_dir} second)")
    for line in out[:40]:
        print(f"  {line}")
    if len(out) > 40:
        print(f"  ... and {len(out) - 40} more")
    return True


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
    for name in ANSWERS:
        bad += compare_answer(name, a_dir, b_dir)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
