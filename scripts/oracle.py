#!/usr/bin/env python3
"""nudgeflow reference implementation ("oracle") of docs/semantics.md.

Independent of the Rust code: written only from docs/semantics.md, the
spec-format reference, DESIGN.md section 4 "Fallback", section 5 "Analytics"
(with sections 3 and 4), the `replay --out` paragraph of section 8 "Query
API" and the project decisions listed below.  Standard library only.  Of
section 5 the churn risk signals (A18-A27) and the answers `replay --out`
writes (retention.json, delivery.json, churn.jsonl; A28-A36) are
implemented; the query API's server is not.

Usage:
    python3 scripts/oracle.py --spec SPEC.toml --fixture DIR --out OUTDIR
                              [--as-of TIME]

Reads DIR/{events,preferences,consent,receipts,erasures}.jsonl (any may be
missing), writes OUTDIR/{dispatches,suppressions,dead_letters}.jsonl, and
OUTDIR/churn_signals.jsonl when the spec has an [analytics.churn] table
(compact JSON, one object a line, lines sorted by their UTF-8 bytes;
suppressions carry the `detail` described at the end of this text) and prints
{"dispatches":N,"suppressions":N,"dead_letters":N,"duplicates_dropped":N,
"churn_signals":N}.  When the spec has an [analytics] table it also writes
OUTDIR/retention.json and OUTDIR/delivery.json (one compact JSON object and a
newline) and, with [analytics.churn], OUTDIR/churn.jsonl (one compact object
a line, ordered by user), all as of --as-of TIME or by default 1 ms after the
largest time of an admitted input record (A28-A36, B23-B29).

Ambiguities in docs/semantics.md and how this oracle resolves them
-----------------------------------------------------------
Project decisions (given to the oracle author, followed exactly):
 A1. Internal time is integer ms since the epoch; input fraction digits beyond
     ms are truncated toward -inf (floor).  Times must be RFC 3339 with an
     offset (Z or +-HH:MM); anything else is an unparsable time.
 A2. Each input file is one source partition.  Walking the file in line
     order, the watermark is (largest time among records of that file seen so
     far that were fully valid) - allowed_lateness; a valid record with
     time < watermark is late.  Late events -> suppression "late" (rule null,
     user = subject, time = event time); late non-events -> dead letter whose
     reason contains "late".  Late records change no state (and do not move
     the watermark, nor "last seen" for duplicates).
 A3. Per-user order: (time, stream rank), then events by event key, then by
     line in the file.  Consent/preferences at equal time: later line wins.
 A4. Field requirements: events need string id, source, type, subject, time
     ("data" optional, any JSON).  Preferences: user, time required; channels
     (list of channel names), quiet_hours {start, end "HH:MM", tz optional
     IANA name, default UTC}, muted_rules (list of strings), locale (string),
     deleted (bool) optional; deleted=true removes the preferences.  Consent:
     user, channel (channel or "*"), purpose, granted (bool), time.
     Erasures: user, time.  Receipts: dispatch_id, status, time.  Unknown
     channels/purposes/statuses/zones, bad HH:MM, wrong JSON types, missing
     required fields, invalid JSON -> dead letter.  Unknown extra fields are
     ignored.
 A5. Event-key duplicates are dropped silently (counted only); they neither
     create candidates nor cancel; they still refresh "last seen".
 A6. Per-rule dedup key: compared as JSON values, numbers by value; a
     missing/null key field is the key "none", which equals only other
     missing/null keys (a sentinel, NOT the string "none").
 A7. Quiet-hours deferral: first instant strictly after t whose local wall
     time is `end`:00.000 (on a repeated hour: the first such occurrence
     after t); if on some day `end` falls in a skipped interval, that day's
     candidate instant is the instant the clocks jump.  A deferred candidate
     is re-decided from step 1 at the new time; cancellation applies until
     the final decision.
 A8. At an instant t: apply all records at t (erasure, consent, prefs,
     events) first, then decide candidates due at t in order (decision time,
     event time, event key, rule order).  Candidates created at t with
     decision time t are decided at t.
 A9. Caps count all dispatches (all are first attempts here) by decision time
     in (t - per, t]; dispatches decided earlier at the same instant count.
     Channel caps count dispatches on that channel of any purpose.  Critical
     bypasses purpose caps, channel caps and quiet hours but still counts.
 A10. Erasure at t: pending candidates -> "erased" (time = erasure time);
     preferences, consent, cap history, dedup history and last-seen event
     keys are forgotten.
 A11. A rule with `at` whose data field is missing / not an RFC 3339 time
     does not match; decision time = max(event time, at_time - before).
 A12. Fallback: a rule's `fallback_after` is a duration d.  Rules without it
     make attempt 1 only, and receipts change nothing for them.  Receipts
     are validated and late-checked like any record (A2, A4); a receipt is
     matched by its dispatch_id against the ids of the attempts made
     (section "Output records": UUID v5 of
     nudgeflow:dispatch:{user}:{event_key}:{rule}:{attempt}).  Receipts for
     ids that match no attempt change nothing.
 A13. Attempt k made at time t on channel c: the receipts for its id with
     time r in [t, t + d] are taken in order of (time, line in
     receipts.jsonl).  The first `delivered`, `opened` or `clicked` ends the
     attempt as succeeded (later receipts change nothing).  If instead the
     first decisive one is `failed` or `bounced` at r, attempt k+1 is made
     at r.  `complained` is neither (ignored).  No decisive receipt in the
     window: attempt k+1 is made at t + d.  A receipt at exactly t counts
     (once the dispatch exists it applies, although at instant t receipts
     rank before decisions): a `failed` receipt at t makes attempt k+1 at t.
     A receipt before t does not count for the attempt.
 A14. Attempt k+1 goes to the next channel after c in the candidate's channel
     order, fixed at attempt 1: the rule's channels as restricted and
     reordered by the user's `channels` preference at attempt 1 (B6), NOT
     filtered by consent or caps.  The first channel after c in that order
     that has consent for the rule's purpose as of the attempt's time
     (records at that instant count, as for step 5) is taken; so a channel
     skipped for lack of consent is not tried by a later attempt.
 A15. Attempt k+1 is a dispatch with attempt = k+1, channel = that channel,
     decision_time = the attempt's time, dispatch_id computed with attempt
     k+1, locale = the user's preference locale as of the attempt's time
     (null if none), and event_key, event_time, vars, rule, template,
     purpose and priority as the candidate.  It is not subject to muting,
     holdout, caps, dedup, quiet hours or cancellation, and does not count
     toward caps or per-rule dedup (they count first attempts only).  It
     has its own window d and can itself fall back.
 A16. No channel left for attempt k+1: suppression reason "undeliverable",
     detail {}, time = the time the attempt would have been made.
 A17. Erasure of the user at time e ends every attempt in flight: no further
     attempts and no suppression for them.  An erasure at exactly the
     instant an attempt would be made (e = r or e = t + d) comes first
     (rank 0), so no attempt is made.
 A18. Churn risk (DESIGN.md section 5) is configured by the spec's
     [analytics] table: `activity` (a glob or a non-empty list of globs, as
     in `on`; required), `segment` (a string, optional), `bucket` (day, week
     or month, default week), and [analytics.churn] with `r`, `alpha`, `a`,
     `b` (positive finite numbers, required), `unit` (day or week, default
     week) and `threshold` (a number strictly between 0 and 1, required).
     A missing required key or a bad value is a spec error.  `segment` and
     `bucket` (retention) change nothing here.
 A19. Activity: a non-duplicate (A5), non-late (A2) event whose type matches
     an `activity` glob.  It is bucketed by its UTC day, floor(time / 1 day);
     per user: first active day f, last active day l, n distinct days.
 A20. P(alive) at instant tau: e = floor(tau / 1 day), x = n - 1,
     t_x = (l - f)/u, T = (e - f)/u, u = 1 (unit day) or 7 (week), as floats
     (fractions kept); P = 1 when x = 0, else
     1 / (1 + a/(b + x - 1) * ((alpha + T)/(alpha + t_x))^(r + x)).
 A21. The signal is due at the first UTC midnight M strictly after day l at
     which P(alive) < threshold (strictly below: P equal to the threshold is
     not a signal).  Activity at or before M moves it: it is recomputed from
     the new l, and activity at exactly M counts (the records at an instant
     are applied before what is due then).  The oracle finds M by scanning
     the midnights l + 1, l + 2, ... .
 A22. Output: churn_signals.jsonl, one
     {"user","time","p_alive","signal":"churn.risk_high"} per signal, time
     RFC 3339 UTC with ms, p_alive the float P(alive) at M written as a JSON
     number (Python's repr), lines sorted like the other outputs.
 A23. The signal is also an event of the user at M:
     {"id": "churn.risk_high:{user}:{YYYY-MM-DD}" (M's UTC date),
     "source": "nudgeflow", "type": "churn.risk_high", "time": M,
     "subject": user, "data": {"p_alive": P}}, event key
     "nudgeflow/churn.risk_high:{user}:{YYYY-MM-DD}".  It is applied after
     all of the user's input records at M and before the candidates due at
     M are decided, and goes through event-key duplicate detection (A5,
     B9), cancellation (B10) and rule matching (`where` may test
     `p_alive`) like an input event.
 A24. Erasure forgets the user's activity (f, l, n) and the signal due: a
     signal due after the erasure is not emitted unless activity after it
     makes one; activity after the erasure starts afresh.
 A25. The churn event is not activity: with [analytics.churn], an
     `activity` glob that matches "churn.risk_high" is a spec error.
 A26. Without [analytics.churn] no signal is computed and no
     churn_signals.jsonl is written.
 A27. A replay decides everything: a signal due after the last input record
     is still emitted (as delays are), and so are the dispatches its event
     leads to.
 A28. as_of: `replay --out` answers as of `--as-of TIME` when given, else as of
     1 ms after the largest `time` of any admitted input record of any stream
     (events, preferences, consent, receipts, erasures; late records included;
     dead letters -- malformed, missing/bad time, unknown channel, ... -- not).
     It counts exactly what happened at times < as_of: activity events with
     time < as_of, dispatch attempts with decision time < as_of, receipts with
     time < as_of, erasures with time < as_of. `as_of` is rendered like every
     other output time: RFC 3339 UTC with milliseconds, e.g.
     "2026-03-09T10:00:00.001Z".
 A29. Activity: an event counts as activity when its `type` matches one of the
     `[analytics] activity` globs and it is neither a duplicate (dropped before
     anything else, DESIGN.md section 4) nor late. The synthetic `churn.risk_high` event never
     counts as activity. Activity after an erasure starts a new user.
 A30. Segment: the `segment` field (dotted path into `data`) of the user's first
     activity event (the first in the per-user order of DESIGN.md section 4: time, then event
     key). A string is used as it is; any other non-null JSON value as its
     compact JSON text (the number 5 becomes "5", true becomes "true"); absent
     or null -> null.
 A31. Group: "holdout" when the user is in the holdout of DESIGN.md section 4 step 2 (FNV-1a 64
     of the user id's UTF-8 bytes mod 10000 < floor(holdout * 10000 + 0.5)),
     else "treated" (every user is treated when the spec has no holdout).
 A32. Retention buckets: day = UTC day; week = ISO week starting Monday (UTC);
     month = calendar month (UTC). The cohort is written as the bucket's first
     day "YYYY-MM-DD". retained[k] for k = 0..K counts the cohort's users (of
     that segment and group) with at least one activity in bucket cohort + k;
     it is null when bucket cohort + k is after the bucket of the as-of
     instant itself (the bucket of UTC day floor(as_of / 1 day)). K defaults
     to 12; `retention.json` uses K = 12 and the spec's bucket. Only
     (cohort, segment, group) rows with size > 0 appear. Order: cohort,
     then segment (null first, then by UTF-8 bytes), then group ("holdout"
     before "treated").
     retention.json = {"as_of","bucket","rows":[{"cohort","segment","group","size","retained":[...]}]}
     with bucket "day" | "week" | "month".
 A33. Churn answers (churn.jsonl, only when the spec has [analytics.churn]):
     one line per user with activity before as_of (since their last erasure),
     ordered by user id bytes:
     {"as_of","user","p_alive","x","t_x","T","first_active","last_active"}
     with e = floor(as_of / 1 day) (days since 1970-01-01), f/l first/last
     active UTC day, n distinct active days, x = n - 1 (integer),
     t_x = (l - f)/u, T = (e - f)/u as JSON numbers (floats), first_active and
     last_active as "YYYY-MM-DD", P(alive) by the DESIGN.md section 5 formula (1 when x = 0).
 A34. Delivery (delivery.json):
     {"as_of","channels":{CHANNEL:{"dispatched","delivered","failed","success_rate"}},
      "rules":{RULE:{same four}},"notifications":{"total","succeeded"}}.
     - An attempt is a dispatch record (any attempt number) with decision
       time < as_of. dispatched counts attempts, under its channel and under
       its rule (by name).
     - An attempt's receipt window is [t, t + fallback_after] for a rule with
       `fallback_after`, and [t, t + 7 days] for a rule without (the contract
       names no window there; receipts arrive within minutes to hours in
       practice). A receipt counts for an attempt when its dispatch_id is the
       attempt's, its time is in the window and < as_of.
     - delivered: attempts with at least one delivered/opened/clicked receipt
       that counts (even if a failure came first and made attempt k+1).
       failed: attempts with at least one failed/bounced receipt that counts
       and no success receipt that counts. complained counts as neither.
     - success_rate = delivered / dispatched (a float).
     - Only channels and rules with dispatched > 0 appear (object keys:
       channel names as in the output records, rule names).
     - notifications.total: candidates with an attempt 1 before as_of;
       succeeded: those with at least one delivered attempt (as above).
 A35. Erasure at e retracts the user's every contribution made before e:
     cohort membership and retained counts, delivery counts of the user's
     attempts (and their receipts), notifications, churn state. Receipts
     after an erasure for the attempts made before it count for nothing.
     Activity at or after e starts a new user: a new cohort (from the bucket of
     that activity), a new segment, churn state afresh.
 A36. `undeliverable` and suppressions are not attempts; they count nowhere in
     delivery.
Oracle author's own choices (docs/semantics.md and the decisions above are silent):
 B1. `T`/`t` and `Z`/`z` are accepted (RFC 3339 allows lower case); a space
     instead of `T` is rejected.  Seconds must be 00-59 (leap second 60 is
     rejected); offsets +-00:00..23:59 ("-00:00" = UTC).  The fraction, if
     present, needs >= 1 digit.  A time whose UTC value falls outside years
     0000-9999 is unparsable (it could not be written back in RFC 3339).
 B2. Lines are split on "\n"; one trailing "\r" is removed.  A line holding
     only JSON whitespace (space, tab) is blank and skipped.  The dead-letter
     "record" is the line without its line terminator.  Invalid UTF-8 is a
     dead letter (record decoded with U+FFFD replacements).  A last line
     without a trailing newline is processed normally if it is complete,
     valid JSON (a truncated one fails to parse -> dead letter).
 B3. JSON is strict RFC 8259: NaN/Infinity, numbers overflowing a double, and
     lone UTF-16 surrogate escapes are invalid JSON; a non-object top level is
     a dead letter.  Duplicate object keys: the last one wins.
 B4. An optional field given as JSON null is treated as absent (e.g.
     "locale":null, "tz":null, "data":null -> vars null).  A required field
     that is null counts as missing.
 B5. `deleted:false` is an ordinary preference record.  A preference record
     with deleted:true is still fully validated (bad other fields -> dead
     letter).  `channels` may repeat names; only the first occurrence counts.
 B6. Channel restriction: the order of the user's `channels` list, keeping
     only channels that are also in the rule's list.
 B7. Quiet-hours membership uses the full local time of day (ms precision):
     in quiet hours iff start <= local < end (start < end) or local >= start
     or local < end (start > end).  "24:00" is not a valid HH:MM.
 B8. `at.before` defaults to 0 when omitted; `at.field` and the dedup `key`
     use the same dotted-path lookup into `data` as `where` fields.
 B9. Duplicate check: an event is dropped iff its key was last seen (for the
     same user) at s with t - dedup_horizon < s <= t; horizon 0 drops
     nothing.  Late/invalid records never update "last seen".
 B10. Cancellation: a non-duplicate event at t cancels every pending
     candidate of the same user whose rule's cancel_on matches the event type
     and whose event time < t (pending implies decision time >= t).
 B11. Step 5 result when no channel is left: "rate_limited" iff at least one
     channel (after the preference restriction) had consent, else
     "no_channel".  Purpose caps (step 6) are checked only once a channel is
     left.
 B12. Output numbers in `vars` are re-serialised by Python's json module
     (e.g. 1e20 is written 1e+20), so compare `vars` as parsed JSON values.
     Non-ASCII is written as raw UTF-8 (ensure_ascii=False).
 B13. Time-zone data is the host's (zoneinfo / tzdata); local-time
     computations outside Python's datetime range (years 1-9999) are treated
     as "not in quiet hours", and so are instants after 9999-12-30T22:00Z,
     where the engine's tz database ends; a quiet-hours end on a local date
     past 9999-12-31 or after the last instant defers nothing.  Known
     difference: in the year 0000 the engine applies quiet hours, the oracle
     (no year 0 in Python) does not.
 B15. Outputs are not de-duplicated: e.g. the same event re-sent after the
     dedup horizon and then cancelled yields two identical suppression lines.
 B16. A `data` that is not an object makes every `where`/`at`/dedup-key field
     missing.  Order of checks per line: UTF-8, JSON, fields, then lateness.
 B14. Spec: unknown keys are ignored (the [analytics] keys of A18 are read,
     others in it too are ignored).  Durations are one or more
     <integer><unit> groups, units ms, s, m, h, d.
 B17. A fallback window that ends past the last representable instant
     (9999-12-31T23:59:59.999Z) ends at that instant, as a delay does.
 B18. An attempt made at the instant e of an erasure of its user (made after
     the records of e, the erasure included) is not in flight at that
     erasure: a `failed` or `bounced` receipt at e for it still makes
     attempt k+1 at e (A13, A17).
 B19. A signal whose event is dropped as a duplicate (an event with the
     same key seen within the horizon, e.g. an input event from source
     "nudgeflow" with that id at M or shortly before) is still written to
     churn_signals.jsonl: duplicate detection drops the event, not the
     signal.  The event still refreshes "last seen" (A5).
 B20. An erasure at exactly M comes first (rank 0, A24): no signal at M.
 B21. Only midnights up to the last representable instant
     (9999-12-31T23:59:59.999Z) are scanned; if P(alive) is not below the
     threshold at any of them, no signal.  A power that overflows a double
     makes P(alive) 0.
 B22. One signal per last active day: once emitted, the next signal needs
     new activity (which sets a later l).
Oracle author's own choices for the analytics answers (A28-A36 are silent):
 B23. `--as-of` is parsed as a record time (A1, B1); a bad one exits 2.  With
     no admitted input record at all the default as_of is 0
     (1970-01-01T00:00:00.000Z).
 B24. Key order in retention.json, delivery.json and churn.jsonl is the
     order A32-A34 list; the CHANNEL and RULE keys of delivery.json are
     sorted by name (UTF-8 bytes).  A row's `retained` counts only k <= 12;
     activity in later buckets is not shown.
 B25. The segment text of a non-string value is Python's compact JSON
     (ensure_ascii=False): 5 -> "5", 5.0 -> "5.0", 1e20 -> "1e+20" (cf. B12;
     the fixtures use integers, strings, booleans and null only).
 B26. A candidate is one notification: an event re-sent after the dedup
     horizon and decided again is a second notification whose attempts have
     the same dispatch ids as the first; a receipt for such an id counts for
     every attempt with that id whose window holds it.  A receipt window
     that ends past the last representable instant ends there (B17).
 B27. The last erasure of the user with time < as_of is the cut: attempts
     with decision time < it are retracted (an attempt made at the instant
     of the erasure, after it, B18, is not); activity at or after it is the
     user's current life.  An erasure at or after as_of retracts nothing.
 B28. Without [analytics.churn] the activity globs still count (an input
     event of type churn.risk_high matching one is activity; only the
     nudgeflow churn event never is, A29, A25); retention.json and
     delivery.json are written, churn.jsonl is not.
 B29. The printed summary gains "as_of" and "retention_rows" (and
     "churn_users" with [analytics.churn]) after its other keys when the spec
     has [analytics]; without it the summary is unchanged.

The `detail` of a suppression
-----------------------------
The contract says what `detail` explains; its exact shape is the project's
choice (docs/semantics.md, "Suppressions"), given to the oracle author and
followed exactly, as below.
Every suppression is {"user","rule","event_key","time","reason","detail"} in
this key order, and `detail` is always a JSON object:
 D1. muted, holdout, erased, late: {}.
 D2. cancelled: {"cancelled_by": event key of the cancelling event}.
 D3. duplicate: {"dispatch_id": id of the most recent earlier dispatch of the
     same user, rule and dedup key whose decision time is in the window}, the
     id computed as for a dispatch (attempt 1).
 D4. no_channel, and rate_limited from step 5 (every consented channel
     capped): {"channels": [{"channel": C, "ruled_out": WHY}, ...]}, one entry
     per channel of the rule, in the rule's own `channels` order (not the
     preference order).  WHY is "not_in_preferences" if the user has a
     `channels` preference that does not list C, else "no_consent" if C has
     no consent for the rule's purpose as of t, else "cap", and that entry
     gets one more key "cap": {"channel": C, "max": M, "per": P} naming the
     first cap on C, in spec file order, that is full at t.  Critical
     candidates bypass caps, so for them WHY is never "cap".
 D5. rate_limited from step 6: {"cap": {"purpose": P, "max": M, "per": D}},
     the first cap of that purpose, in spec file order, that is full at t.
 D6. A cap is full at t when its count over (t - per, t] is >= max (A9).
     `per` is written canonically: the milliseconds split into d (24 h), h,
     m, s, ms from largest to smallest, zero units omitted ("1h30m", "1d",
     "1d1h1m1s1ms"); zero is "0s".  So a cap written "90m" reads "1h30m".
"""

import argparse
import bisect
import decimal
import heapq
import json
import os
import re
import sys
import tomllib
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

CHANNELS = ("push", "email", "sms", "in_app", "webhook")
PURPOSES = ("marketing", "transactional")
PRIORITIES = ("normal", "high", "critical")
STATUSES = ("delivered", "failed", "bounced", "opened", "clicked", "complained")
SUCCESS = ("delivered", "opened", "clicked")   # A13
FAILURE = ("failed", "bounced")
STREAMS = ("erasures", "consent", "preferences", "receipts", "events")
RANK = {s: i for i, s in enumerate(STREAMS)}
INPUT_ORDER = ("events", "preferences", "consent", "receipts", "erasures")

MS_MIN = None  # set below: 0000-01-01T00:00:00.000Z
MS_MAX = None  # 9999-12-31T23:59:59.999Z


class SpecError(Exception):
    pass


class BadRecord(Exception):
    pass


# ----------------------------------------------------------------------------
# Time
# ----------------------------------------------------------------------------

def days_from_civil(y, m, d):
    y -= 1 if m <= 2 else 0
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + (1 if m <= 2 else 0), m, d)


MS_MIN = days_from_civil(0, 1, 1) * 86400000
MS_MAX = days_from_civil(10000, 1, 1) * 86400000 - 1
# The engine's tz database (jiff) ends at 9999-12-30T22:00:00.999Z: after that
# instant no quiet hours apply (README, Times).
TZ_CALENDAR_END = days_from_civil(9999, 12, 30) * 86400000 + 22 * 3600000 + 999

RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


def is_leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def month_days(y, m):
    return [31, 29 if is_leap(y) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]


def parse_time(s):
    """RFC 3339 string -> epoch ms (floor), or None."""
    if not isinstance(s, str):
        return None
    mt = RFC3339.fullmatch(s)
    if not mt:
        return None
    y, mo, d, h, mi, se = (int(mt.group(i)) for i in range(1, 7))
    if not (1 <= mo <= 12) or not (1 <= d <= month_days(y, mo)):
        return None
    if h > 23 or mi > 59 or se > 59:
        return None
    frac = mt.group(7)
    ms = int((frac[1:] + "000")[:3]) if frac else 0
    off = mt.group(8)
    if off in ("Z", "z"):
        off_min = 0
    else:
        oh, om = int(off[1:3]), int(off[4:6])
        if oh > 23 or om > 59:
            return None
        off_min = (oh * 60 + om) * (1 if off[0] == "+" else -1)
    t = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + se
    t = t * 1000 + ms - off_min * 60000
    if t < MS_MIN or t > MS_MAX:
        return None
    return t


def fmt_time(t):
    days, rem = divmod(t, 86400000)
    y, m, d = civil_from_days(days)
    hh, rem = divmod(rem, 3600000)
    mm, rem = divmod(rem, 60000)
    ss, ms = divmod(rem, 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (y, m, d, hh, mm, ss, ms)


DUR_PART = re.compile(r"(\d+)(ms|s|m|h|d)", re.ASCII)
DUR_UNIT = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}


def fmt_duration(ms):
    """Canonical duration text: units d, h, m, s, ms from largest to smallest,
    zero units omitted; 0 is "0s"."""
    if ms == 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s", "ms"):
        n, ms = divmod(ms, DUR_UNIT[unit])
        if n:
            out.append("%d%s" % (n, unit))
    return "".join(out)


def parse_duration(s, where):
    if not isinstance(s, str) or not s:
        raise SpecError("%s: duration must be a string like \"30m\" or \"1h30m\"" % where)
    pos, total = 0, 0
    while pos < len(s):
        mt = DUR_PART.match(s, pos)
        if not mt:
            raise SpecError("%s: bad duration %r (use e.g. \"90s\", \"1h30m\", \"2d\")" % (where, s))
        total += int(mt.group(1)) * DUR_UNIT[mt.group(2)]
        pos = mt.end()
    return total


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MS = timedelta(milliseconds=1)


def utc_dt(t):
    return EPOCH + timedelta(milliseconds=t)


def dt_ms(dt):
    return (dt - EPOCH) // ONE_MS


def local_ms_of_day(t, zone):
    loc = utc_dt(t).astimezone(zone)
    return ((loc.hour * 60 + loc.minute) * 60 + loc.second) * 1000 + loc.microsecond // 1000


def wall_instants(day, minute_of_day, zone):
    """UTC ms instants at which local wall time on `day` is minute_of_day:00.000.
    Two on a repeated hour, one normally; in a gap: [the instant the clocks jump]."""
    h, m = divmod(minute_of_day, 60)
    found = []
    us = []
    for fold in (0, 1):
        naive = datetime(day.year, day.month, day.day, h, m, fold=fold, tzinfo=zone)
        u = naive.astimezone(timezone.utc)
        us.append(dt_ms(u))
        back = u.astimezone(zone)
        if (back.year, back.month, back.day, back.hour, back.minute, back.second,
                back.microsecond) == (day.year, day.month, day.day, h, m, 0, 0):
            found.append(dt_ms(u))
    if found:
        return sorted(set(found))
    # Skipped wall time: binary-search the transition between the two mappings.
    lo, hi = min(us), max(us)

    def off(x):
        return utc_dt(x).astimezone(zone).utcoffset()

    off_lo = off(lo)
    if off(hi) == off_lo:
        return []  # should not happen
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if off(mid) == off_lo:
            lo = mid
        else:
            hi = mid
    return [hi]


def next_wall_time(t, minute_of_day, zone):
    """First instant > t at which local time is minute_of_day (A7)."""
    d0 = utc_dt(t).astimezone(zone).date()
    best = None
    k = -1
    while True:
        try:
            day = d0 + timedelta(days=k)
            insts = wall_instants(day, minute_of_day, zone)
        except (OverflowError, ValueError):
            insts = []  # a local date past year 9999: no end there
        for inst in insts:
            if t < inst <= MS_MAX and (best is None or inst < best):
                best = inst
        if best is not None and k >= 2:
            return best
        k += 1
        if k > 800:
            return best


# ----------------------------------------------------------------------------
# JSON helpers
# ----------------------------------------------------------------------------

def _bad_constant(name):
    raise ValueError("invalid JSON literal %s" % name)


def _parse_float(s):
    v = float(s)
    if v in (float("inf"), float("-inf")):
        raise ValueError("number out of range: %s" % s)
    return v


def _has_surrogate(v):
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in x):
                return True
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
    return False


def load_json(text):
    try:
        v = json.loads(text, parse_constant=_bad_constant, parse_float=_parse_float)
    except RecursionError:
        raise BadRecord("invalid JSON: nested too deeply")
    except ValueError as e:
        raise BadRecord("invalid JSON: %s" % e)
    if _has_surrogate(v):
        raise BadRecord("invalid JSON: lone surrogate in string")
    return v


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def json_eq(a, b):
    if is_num(a) and is_num(b):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_eq(a[k], b[k]) for k in a)
    return False


_MISSING = object()
_ALL = object()


def lookup(data, path):
    """Dotted path into data; JSON null counts as missing."""
    cur = data
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return _MISSING if cur is None else cur


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# ----------------------------------------------------------------------------
# Spec
# ----------------------------------------------------------------------------

def compile_glob(pat, where):
    if not isinstance(pat, str):
        raise SpecError("%s: event type pattern must be a string" % where)
    rx = ".*".join(re.escape(p) for p in pat.split("*"))
    return re.compile(rx, re.DOTALL)


def glob_list(v, where):
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v:
        raise SpecError("%s: expected a string or a non-empty list of strings" % where)
    return [compile_glob(p, where) for p in v]


def to_json_value(v, where):
    if isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, list):
        return [to_json_value(x, where) for x in v]
    if isinstance(v, dict):
        return {k: to_json_value(x, where) for k, x in v.items()}
    raise SpecError("%s: unsupported value type %s" % (where, type(v).__name__))


OPS = ("=", "!=", "<", "<=", ">", ">=", "in", "exists", "not_exists")


class Rule:
    pass


class Cap:
    pass


class Spec:
    pass


def load_spec(path):
    with open(path, "rb") as f:
        try:
            doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise SpecError("%s: invalid TOML: %s" % (path, e))
    sp = Spec()
    sp.dedup_horizon = parse_duration(doc.get("dedup_horizon", "24h"), "dedup_horizon")
    sp.allowed_lateness = parse_duration(doc.get("allowed_lateness", "0s"), "allowed_lateness")
    h = doc.get("holdout", 0.0)
    if not is_num(h) or not (0 <= h <= 1):
        raise SpecError("holdout must be a number in [0, 1]")
    # On the decimal as written (the shortest repr of the float), not in
    # binary floating point, where 0.00015 * 10000 + 0.5 < 2.
    sp.holdout_bp = int((decimal.Decimal(repr(float(h))) * 10000 + decimal.Decimal("0.5")) // 1)
    sp.rules = []
    names = set()
    for i, r in enumerate(doc.get("rule", [])):
        w = "rule #%d" % (i + 1)
        if not isinstance(r, dict):
            raise SpecError("%s: must be a table" % w)
        ru = Rule()
        ru.index = i
        ru.name = r.get("name")
        if not isinstance(ru.name, str) or not ru.name:
            raise SpecError("%s: `name` (string) is required" % w)
        w = "rule %r" % ru.name
        if ru.name in names:
            raise SpecError("%s: duplicate rule name" % w)
        names.add(ru.name)
        if "on" not in r:
            raise SpecError("%s: `on` is required" % w)
        ru.on = glob_list(r["on"], w + " on")
        ru.where = []
        conds = r.get("where", [])
        if not isinstance(conds, list):
            raise SpecError("%s: `where` must be a list of conditions" % w)
        for c in conds:
            if not isinstance(c, dict) or not isinstance(c.get("field"), str):
                raise SpecError("%s: condition needs a string `field`" % w)
            op = c.get("op")
            if op not in OPS:
                raise SpecError("%s: condition op must be one of %s" % (w, OPS))
            if op in ("exists", "not_exists"):
                val = None
            else:
                if "value" not in c:
                    raise SpecError("%s: condition with op %s needs a `value`" % (w, op))
                val = to_json_value(c["value"], w)
                if op == "in" and not isinstance(val, list):
                    raise SpecError("%s: op `in` needs a list value" % w)
            ru.where.append((c["field"], op, val))
        ru.template = r.get("template", ru.name)
        if not isinstance(ru.template, str):
            raise SpecError("%s: template must be a string" % w)
        ru.purpose = r.get("purpose")
        if ru.purpose not in PURPOSES:
            raise SpecError("%s: purpose must be marketing or transactional" % w)
        ru.priority = r.get("priority", "normal")
        if ru.priority not in PRIORITIES:
            raise SpecError("%s: priority must be normal, high or critical" % w)
        ch = r.get("channels")
        if not isinstance(ch, list) or not ch or any(c not in CHANNELS for c in ch):
            raise SpecError("%s: channels must be a non-empty list of %s" % (w, CHANNELS))
        ru.channels = []
        for c in ch:
            if c not in ru.channels:
                ru.channels.append(c)
        if "delay" in r and "at" in r:
            raise SpecError("%s: `delay` and `at` together" % w)
        ru.delay = parse_duration(r["delay"], w + " delay") if "delay" in r else 0
        ru.at = None
        if "at" in r:
            a = r["at"]
            if not isinstance(a, dict) or not isinstance(a.get("field"), str):
                raise SpecError("%s: `at` must be { field = \"...\", before = \"...\" }" % w)
            ru.at = (a["field"], parse_duration(a.get("before", "0s"), w + " at.before"))
        ru.cancel_on = glob_list(r["cancel_on"], w + " cancel_on") if "cancel_on" in r else []
        ru.dedup = None
        if "dedup" in r:
            d = r["dedup"]
            if not isinstance(d, dict) or "window" not in d:
                raise SpecError("%s: dedup must be { window = \"24h\", key = \"...\" }" % w)
            key = d.get("key")
            if key is not None and not isinstance(key, str):
                raise SpecError("%s: dedup key must be a string" % w)
            ru.dedup = (parse_duration(d["window"], w + " dedup.window"), key)
        ru.fallback = None
        if "fallback_after" in r:
            ru.fallback = parse_duration(r["fallback_after"], w + " fallback_after")
        sp.rules.append(ru)
    sp.purpose_caps = {p: [] for p in PURPOSES}
    sp.channel_caps = {c: [] for c in CHANNELS}
    for i, c in enumerate(doc.get("cap", [])):
        w = "cap #%d" % (i + 1)
        if not isinstance(c, dict) or (("purpose" in c) == ("channel" in c)):
            raise SpecError("%s: exactly one of purpose / channel is required" % w)
        mx = c.get("max")
        if not isinstance(mx, int) or isinstance(mx, bool) or mx < 0:
            raise SpecError("%s: max must be an integer >= 0" % w)
        per = parse_duration(c.get("per"), w + " per")
        if "purpose" in c:
            if c["purpose"] not in PURPOSES:
                raise SpecError("%s: unknown purpose" % w)
            sp.purpose_caps[c["purpose"]].append((mx, per))
        else:
            if c["channel"] not in CHANNELS:
                raise SpecError("%s: unknown channel" % w)
            sp.channel_caps[c["channel"]].append((mx, per))
    sp.churn = load_churn(doc)
    sp.analytics = load_analytics(doc)
    return sp


CHURN_TYPE = "churn.risk_high"
DAY_MS = 86400000


class Churn:
    pass


def load_churn(doc):
    """The [analytics] table (A18): the churn model, or None without
    [analytics.churn] (or without [analytics])."""
    if "analytics" not in doc:
        return None
    an = doc["analytics"]
    if not isinstance(an, dict):
        raise SpecError("analytics: must be a table")
    if "activity" not in an:
        raise SpecError("analytics: `activity` (event types) is required")
    activity = glob_list(an["activity"], "analytics activity")
    if "segment" in an and not isinstance(an["segment"], str):
        raise SpecError("analytics: `segment` must be a string (a field path of data)")
    if an.get("bucket", "week") not in ("day", "week", "month"):
        raise SpecError("analytics: `bucket` must be day, week or month")
    if "churn" not in an:
        return None
    c = an["churn"]
    if not isinstance(c, dict):
        raise SpecError("analytics.churn: must be a table")
    ch = Churn()
    ch.activity = activity
    for k in ("r", "alpha", "a", "b"):
        v = c.get(k)
        if not is_num(v) or not (0 < v < float("inf")):
            raise SpecError("analytics.churn: `%s` must be a positive finite number" % k)
        setattr(ch, k, float(v))
    unit = c.get("unit", "week")
    if unit not in ("day", "week"):
        raise SpecError("analytics.churn: `unit` must be day or week")
    ch.u = 1 if unit == "day" else 7
    th = c.get("threshold")
    if not is_num(th) or not (0 < th < 1):
        raise SpecError("analytics.churn: `threshold` must be a number in (0, 1)")
    ch.threshold = float(th)
    if any(g.fullmatch(CHURN_TYPE) for g in activity):          # A25
        raise SpecError("analytics activity: a glob matches %s, the churn event" % CHURN_TYPE)
    return ch


class Analytics:
    pass


def load_analytics(doc):
    """The [analytics] table for retention and delivery (A18, A28-A36): its
    activity globs, segment path and bucket, or None without [analytics].
    The keys are validated by load_churn."""
    if "analytics" not in doc:
        return None
    an = doc["analytics"]
    a = Analytics()
    a.activity = glob_list(an["activity"], "analytics activity")
    a.segment = an.get("segment")
    a.bucket = an.get("bucket", "week")
    return a


def p_alive(ch, f, l, n, e):
    """BG/NBD P(alive) at UTC day e of a user with first active day f, last
    active day l and n distinct active days (A20)."""
    x = n - 1
    if x == 0:
        return 1.0
    t_x = (l - f) / ch.u
    T = (e - f) / ch.u
    try:
        power = ((ch.alpha + T) / (ch.alpha + t_x)) ** (ch.r + x)
    except OverflowError:
        return 0.0                                              # B21
    return 1.0 / (1.0 + ch.a / (ch.b + x - 1) * power)


def churn_due(ch, days):
    """(M, P(alive) at M): the first UTC midnight after the last active day
    at which P(alive) < threshold, found by scanning midnights (A21, B21),
    or None."""
    if len(days) < 2:
        return None                                             # P = 1
    f, l, n = min(days), max(days), len(days)
    e = l + 1
    while e * DAY_MS <= MS_MAX:
        p = p_alive(ch, f, l, n, e)
        if p < ch.threshold:
            return (e * DAY_MS, p)
        e += 1
    return None


def cond_holds(data, cond):
    field, op, val = cond
    v = lookup(data, field)
    if op == "not_exists":
        return v is _MISSING
    if v is _MISSING:
        return False
    if op == "exists":
        return True
    if op == "=":
        return json_eq(v, val)
    if op == "!=":
        return not json_eq(v, val)
    if op == "in":
        return any(json_eq(v, x) for x in val)
    if is_num(v) and is_num(val):
        pass
    elif isinstance(v, str) and isinstance(val, str):
        pass
    else:
        return False
    if op == "<":
        return v < val
    if op == "<=":
        return v <= val
    if op == ">":
        return v > val
    return v >= val


def fnv1a64(b):
    h = 0xCBF29CE484222325
    for x in b:
        h ^= x
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# ----------------------------------------------------------------------------
# Record validation
# ----------------------------------------------------------------------------

def req_str(o, k):
    v = o.get(k)
    if v is None:
        raise BadRecord("missing required field `%s`" % k)
    if not isinstance(v, str):
        raise BadRecord("field `%s` must be a string" % k)
    return v


def req_time(o, k="time"):
    s = req_str(o, k)
    t = parse_time(s)
    if t is None:
        raise BadRecord("unparsable time in `%s`: %r (need RFC 3339 with offset)" % (k, s))
    return t


HHMM = re.compile(r"(\d{2}):(\d{2})", re.ASCII)


def parse_hhmm(s, k):
    if not isinstance(s, str):
        raise BadRecord("quiet_hours.%s must be a string HH:MM" % k)
    mt = HHMM.fullmatch(s)
    if not mt or int(mt.group(1)) > 23 or int(mt.group(2)) > 59:
        raise BadRecord("quiet_hours.%s is not a valid HH:MM: %r" % (k, s))
    return int(mt.group(1)) * 60 + int(mt.group(2))


_ZONES = {}


def get_zone(name):
    if name not in _ZONES:
        try:
            _ZONES[name] = ZoneInfo(name) if name else None
        except Exception:
            _ZONES[name] = None
    return _ZONES[name]


def validate(stream, o):
    if not isinstance(o, dict):
        raise BadRecord("record is not a JSON object")
    r = {"stream": stream}
    if stream == "events":
        for k in ("id", "source", "type", "subject"):
            r[k] = req_str(o, k)
        r["time"] = req_time(o)
        r["user"] = r["subject"]
        r["key"] = r["source"] + "/" + r["id"]
        r["data"] = o.get("data")
    elif stream == "preferences":
        r["user"] = req_str(o, "user")
        r["time"] = req_time(o)
        deleted = o.get("deleted")
        if deleted is not None and not isinstance(deleted, bool):
            raise BadRecord("field `deleted` must be a boolean")
        r["deleted"] = bool(deleted)
        ch = o.get("channels")
        if ch is not None:
            if not isinstance(ch, list):
                raise BadRecord("field `channels` must be a list")
            for c in ch:
                if not isinstance(c, str):
                    raise BadRecord("field `channels` must hold strings")
                if c not in CHANNELS:
                    raise BadRecord("unknown channel %r" % c)
            seen = []
            for c in ch:
                if c not in seen:
                    seen.append(c)
            ch = seen
        r["channels"] = ch
        q = o.get("quiet_hours")
        if q is not None:
            if not isinstance(q, dict):
                raise BadRecord("field `quiet_hours` must be an object")
            if q.get("start") is None or q.get("end") is None:
                raise BadRecord("quiet_hours needs `start` and `end`")
            start = parse_hhmm(q["start"], "start")
            end = parse_hhmm(q["end"], "end")
            tzname = q.get("tz")
            if tzname is None:
                zone = timezone.utc
            else:
                if not isinstance(tzname, str):
                    raise BadRecord("quiet_hours.tz must be a string")
                zone = get_zone(tzname)
                if zone is None:
                    raise BadRecord("unknown time zone %r" % tzname)
            q = (start, end, zone)
        r["quiet"] = q
        mr = o.get("muted_rules")
        if mr is not None:
            if not isinstance(mr, list) or any(not isinstance(x, str) for x in mr):
                raise BadRecord("field `muted_rules` must be a list of strings")
            mr = set(mr)
        r["muted"] = mr or set()
        loc = o.get("locale")
        if loc is not None and not isinstance(loc, str):
            raise BadRecord("field `locale` must be a string")
        r["locale"] = loc
    elif stream == "consent":
        r["user"] = req_str(o, "user")
        ch = req_str(o, "channel")
        if ch != "*" and ch not in CHANNELS:
            raise BadRecord("unknown channel %r" % ch)
        r["channel"] = ch
        p = req_str(o, "purpose")
        if p not in PURPOSES:
            raise BadRecord("unknown purpose %r" % p)
        r["purpose"] = p
        g = o.get("granted")
        if g is None:
            raise BadRecord("missing required field `granted`")
        if not isinstance(g, bool):
            raise BadRecord("field `granted` must be a boolean")
        r["granted"] = g
        r["time"] = req_time(o)
    elif stream == "receipts":
        r["dispatch_id"] = req_str(o, "dispatch_id")
        st = req_str(o, "status")
        if st not in STATUSES:
            raise BadRecord("unknown status %r" % st)
        r["status"] = st
        r["time"] = req_time(o)
    elif stream == "erasures":
        r["user"] = req_str(o, "user")
        r["time"] = req_time(o)
    return r


# ----------------------------------------------------------------------------
# Engine
# ----------------------------------------------------------------------------

class Candidate:
    __slots__ = ("rule", "user", "event", "dt", "alive", "dkey", "nid")


class UserState:
    def __init__(self):
        self.reset()

    def reset(self):
        self.prefs = None
        self.consent = {}      # (channel|"*", purpose) -> (time, seq, granted)
        self.last_seen = {}    # event key -> time
        self.by_purpose = {}   # purpose -> [decision times]
        self.by_channel = {}   # channel -> [decision times]
        self.by_rule = {}      # rule name -> [(decision time, dedup key, event key)]
        # Attempts in flight (A13-A17): a heap of (time of the next attempt,
        # seq, candidate, channel order, next attempt number, channel of the
        # previous attempt).  Erasure drops them all.
        self.fallbacks = []
        # Churn risk (A19-A24): the UTC days of the user's activity and the
        # signal due, (M, P(alive) at M) or None.  Erasure forgets both.
        self.active_days = set()
        self.churn_due = None


class Engine:
    def __init__(self, spec):
        self.spec = spec
        self.dispatches = []
        self.suppressions = []
        self.dead = []
        self.duplicates = 0
        self.seq = 0
        self.receipts = {}     # dispatch id -> [(time, line, status)] sorted (A12, A13)
        self.signals = []      # churn signals (A22)
        # Analytics (A28-A36): the largest time of an admitted input record
        # (A28), per user the erasures and activity in the order applied,
        # ("erase", t) or ("act", t, segment) (A29, A30, A35), and every
        # attempt made (A34).
        self.max_time = None
        self.an_log = {}
        self.attempt_log = []  # (user, rule, channel, attempt, decision time,
        #                         dispatch id, candidate number, end of the
        #                         receipt window)
        self.ncand = 0

    # -- output ---------------------------------------------------------------
    def suppress(self, user, rule, event_key, t, reason, detail):
        self.suppressions.append({"user": user, "rule": rule, "event_key": event_key,
                                  "time": fmt_time(t), "reason": reason, "detail": detail})

    def dead_letter(self, stream, line_no, reason, raw):
        self.dead.append({"stream": stream, "file": stream + ".jsonl", "line": line_no,
                          "reason": reason, "record": raw})

    # -- input ----------------------------------------------------------------
    def read_file(self, stream, path):
        out = []
        if not os.path.exists(path):
            return out
        with open(path, "rb") as f:
            blob = f.read()
        lines = blob.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        max_seen = None
        for i, bl in enumerate(lines):
            line_no = i + 1
            if bl.endswith(b"\r"):
                bl = bl[:-1]
            try:
                text = bl.decode("utf-8")
            except UnicodeDecodeError:
                self.dead_letter(stream, line_no, "invalid UTF-8", bl.decode("utf-8", "replace"))
                continue
            if text.strip(" \t\r\n") == "":
                continue
            try:
                rec = validate(stream, load_json(text))
            except BadRecord as e:
                self.dead_letter(stream, line_no, str(e), text)
                continue
            t = rec["time"]
            if self.max_time is None or t > self.max_time:      # A28: late ones too
                self.max_time = t
            if max_seen is not None and t < max_seen - self.spec.allowed_lateness:
                if stream == "events":
                    self.suppress(rec["user"], None, rec["key"], t, "late", {})
                else:
                    self.dead_letter(stream, line_no,
                                     "late record: time %s is before the watermark %s"
                                     % (fmt_time(t), fmt_time(max_seen - self.spec.allowed_lateness)),
                                     text)
                continue
            if max_seen is None or t > max_seen:
                max_seen = t
            rec["line"] = line_no
            out.append(rec)
        return out

    def run(self, fixture):
        per_user = {}
        for stream in INPUT_ORDER:
            recs = self.read_file(stream, os.path.join(fixture, stream + ".jsonl"))
            if stream == "receipts":
                for r in recs:
                    self.receipts.setdefault(r["dispatch_id"], []).append(
                        (r["time"], r["line"], r["status"]))
                for v in self.receipts.values():
                    v.sort()
                continue
            for r in recs:
                per_user.setdefault(r["user"], []).append(r)
        for user in sorted(per_user):
            recs = per_user[user]
            recs.sort(key=lambda r: (r["time"], RANK[r["stream"]],
                                     r["key"] if r["stream"] == "events" else "", r["line"]))
            self.run_user(user, recs)

    # -- per-user loop ----------------------------------------------------------
    def run_user(self, user, recs):
        st = UserState()
        heap = []        # (dt, event time, event key, rule index, seq, cand)
        pending = {}     # rule index -> {candidate id: live candidate}
        i, n = 0, len(recs)
        while True:
            heap_t = None
            while heap and not heap[0][-1].alive:
                heapq.heappop(heap)
            if heap:
                heap_t = heap[0][0]
            rec_t = recs[i]["time"] if i < n else None
            fb_t = st.fallbacks[0][0] if st.fallbacks else None
            churn_t = st.churn_due[0] if st.churn_due else None
            if heap_t is None and rec_t is None and fb_t is None and churn_t is None:
                break
            t = min(x for x in (heap_t, rec_t, fb_t, churn_t) if x is not None)
            # 1. apply all records at t
            while i < n and recs[i]["time"] == t:
                self.apply(st, user, recs[i], heap, pending)
                i += 1
            # 1b. the churn signal due at t, if the records at t (activity,
            #     an erasure) left it due at t: after them, before the
            #     decisions (A21, A23, A24, B20)
            if st.churn_due is not None and st.churn_due[0] == t:
                p = st.churn_due[1]
                st.churn_due = None                             # B22
                self.signals.append({"user": user, "time": fmt_time(t), "p_alive": p,
                                     "signal": CHURN_TYPE})
                eid = "%s:%s:%s" % (CHURN_TYPE, user, fmt_time(t)[:10])
                self.apply(st, user, {
                    "stream": "events", "id": eid, "source": "nudgeflow", "type": CHURN_TYPE,
                    "time": t, "subject": user, "user": user, "key": "nudgeflow/" + eid,
                    "data": {"p_alive": p}, "line": None, "churn": True}, heap, pending)
            # 2. decide candidates due at t (new ones due at t included)
            while True:
                while heap and not heap[0][-1].alive:
                    heapq.heappop(heap)
                if not heap or heap[0][0] != t:
                    break
                entry = heapq.heappop(heap)
                c = entry[-1]
                self.decide(st, c, t, heap)
                if not c.alive:
                    del pending[c.rule.index][id(c)]
            # 3. further attempts due at t (A13-A17), those that attempts made
            #    at t schedule at t (a failure receipt at t) included
            while st.fallbacks and st.fallbacks[0][0] == t:
                self.fall_back(st, heapq.heappop(st.fallbacks))

    def push(self, heap, c):
        self.seq += 1
        heapq.heappush(heap, (c.dt, c.event["time"], c.event["key"], c.rule.index, self.seq, c))

    def apply(self, st, user, r, heap, pending):
        s = r["stream"]
        t = r["time"]
        if s == "erasures":
            for group in pending.values():
                for c in group.values():
                    c.alive = False
                    self.suppress(user, c.rule.name, c.event["key"], t, "erased", {})
            pending.clear()
            st.reset()
            if self.spec.analytics is not None:
                self.an_log.setdefault(user, []).append(("erase", t))     # A35
        elif s == "consent":
            self.seq += 1
            st.consent[(r["channel"], r["purpose"])] = (t, self.seq, r["granted"])
        elif s == "preferences":
            st.prefs = None if r["deleted"] else r
        elif s == "events":
            key = r["key"]
            last = st.last_seen.get(key)
            st.last_seen[key] = t
            if last is not None and t - self.spec.dedup_horizon < last <= t:
                self.duplicates += 1
                return
            # activity for retention and the churn answers (A29, A30)
            an = self.spec.analytics
            if an is not None and not r.get("churn") \
                    and any(g.fullmatch(r["type"]) for g in an.activity):
                self.an_log.setdefault(user, []).append(
                    ("act", t, segment_of(r["data"], an.segment)))
            # activity (A19, A21): moves the churn signal due
            ch = self.spec.churn
            if ch is not None and not r.get("churn") \
                    and any(g.fullmatch(r["type"]) for g in ch.activity):
                day = t // DAY_MS
                if day not in st.active_days:
                    st.active_days.add(day)
                    st.churn_due = churn_due(ch, st.active_days)
            # cancellation
            for ru in self.spec.rules:
                group = pending.get(ru.index)
                if not group or not any(g.fullmatch(r["type"]) for g in ru.cancel_on):
                    continue
                for cid, c in list(group.items()):
                    if c.event["time"] < t and c.dt >= t:
                        c.alive = False
                        del group[cid]
                        self.suppress(user, ru.name, c.event["key"], t, "cancelled",
                                      {"cancelled_by": key})
            # candidates
            data = r["data"]
            for ru in self.spec.rules:
                if not any(g.fullmatch(r["type"]) for g in ru.on):
                    continue
                if not all(cond_holds(data, cd) for cd in ru.where):
                    continue
                if ru.at is not None:
                    v = lookup(data, ru.at[0])
                    at_t = parse_time(v) if isinstance(v, str) else None
                    if at_t is None:
                        continue
                    dt = max(t, at_t - ru.at[1])
                else:
                    # The engine's choice (README, Times): a delay past the
                    # last representable instant decides at that instant.
                    dt = min(t + ru.delay, MS_MAX)
                c = Candidate()
                c.rule, c.user, c.event, c.dt, c.alive = ru, user, r, dt, True
                self.ncand += 1
                c.nid = self.ncand
                if ru.dedup is None:
                    c.dkey = None
                elif ru.dedup[1] is None:
                    c.dkey = _ALL          # no key field: all events share one key
                else:
                    c.dkey = lookup(data, ru.dedup[1])   # _MISSING = the key "none"
                pending.setdefault(ru.index, {})[id(c)] = c
                self.push(heap, c)

    def consent_ok(self, st, channel, purpose, t):
        a = st.consent.get((channel, purpose))
        b = st.consent.get(("*", purpose))
        best = None
        for x in (a, b):
            if x is not None and x[0] <= t and (best is None or (x[0], x[1]) > (best[0], best[1])):
                best = x
        if best is None:
            return purpose == "transactional"
        return best[2]

    @staticmethod
    def count(times, t, per):
        return len(times) - bisect.bisect_right(times, t - per)

    @classmethod
    def first_full(cls, times, t, caps):
        """The first (max, per) of caps, in spec file order, that is full at t
        (count in (t - per, t] >= max), or None."""
        for (mx, per) in caps:
            if cls.count(times, t, per) >= mx:
                return (mx, per)
        return None

    def decide(self, st, c, t, heap):
        ru = c.rule
        user = c.user
        ek = c.event["key"]
        prefs = st.prefs
        # 1. muted
        if prefs is not None and ru.name in prefs["muted"]:
            c.alive = False
            self.suppress(user, ru.name, ek, t, "muted", {})
            return
        # 2. holdout
        if ru.purpose == "marketing" and \
                fnv1a64(user.encode("utf-8")) % 10000 < self.spec.holdout_bp:
            c.alive = False
            self.suppress(user, ru.name, ek, t, "holdout", {})
            return
        # 3. per-rule dedup
        if ru.dedup is not None:
            window = ru.dedup[0]
            # Newest first, so the detail names the most recent earlier dispatch.
            for (dt, k, earlier_key) in reversed(st.by_rule.get(ru.name, [])):
                if dt <= t - window:
                    break
                if k is _MISSING or k is _ALL or c.dkey is _MISSING or c.dkey is _ALL:
                    same = k is c.dkey
                else:
                    same = json_eq(k, c.dkey)
                if same:
                    c.alive = False
                    self.suppress(user, ru.name, ek, t, "duplicate",
                                  {"dispatch_id": dispatch_id(user, earlier_key, ru.name, 1)})
                    return
        # 4. quiet hours
        critical = ru.priority == "critical"
        if ru.purpose == "marketing" and not critical and prefs is not None \
                and prefs["quiet"] is not None:
            start, end, zone = prefs["quiet"]
            if start != end:
                try:
                    if t > TZ_CALENDAR_END:
                        raise OverflowError("past the tz calendar (the engine's choice)")
                    lt = local_ms_of_day(t, zone)
                    s_ms, e_ms = start * 60000, end * 60000
                    inq = (s_ms <= lt < e_ms) if start < end else (lt >= s_ms or lt < e_ms)
                    new_t = next_wall_time(t, end, zone) if inq else None
                except (OverflowError, ValueError):
                    inq, new_t = False, None
                if inq and new_t is not None:
                    c.dt = new_t
                    self.push(heap, c)
                    return
        # 5. channels
        pref_chans = prefs["channels"] if prefs is not None else None
        chans = list(ru.channels)
        if pref_chans is not None:
            chans = [x for x in pref_chans if x in ru.channels]
        consented = [x for x in chans if self.consent_ok(st, x, ru.purpose, t)]
        left = []
        full = {}        # consented channel -> its first full cap
        for x in consented:
            cap = None if critical else \
                self.first_full(st.by_channel.get(x, []), t, self.spec.channel_caps[x])
            if cap is not None:
                full[x] = cap
                continue
            left.append(x)
        if not left:
            c.alive = False
            ruled_out = []
            for x in ru.channels:    # the rule's order, not the preference order
                if pref_chans is not None and x not in pref_chans:
                    ruled_out.append({"channel": x, "ruled_out": "not_in_preferences"})
                elif x not in consented:
                    ruled_out.append({"channel": x, "ruled_out": "no_consent"})
                else:
                    mx, per = full[x]
                    ruled_out.append({"channel": x, "ruled_out": "cap",
                                      "cap": {"channel": x, "max": mx,
                                              "per": fmt_duration(per)}})
            self.suppress(user, ru.name, ek, t, "rate_limited" if consented else "no_channel",
                          {"channels": ruled_out})
            return
        # 6. purpose caps
        cap = None if critical else \
            self.first_full(st.by_purpose.get(ru.purpose, []), t,
                            self.spec.purpose_caps[ru.purpose])
        if cap is not None:
            c.alive = False
            mx, per = cap
            self.suppress(user, ru.name, ek, t, "rate_limited",
                          {"cap": {"purpose": ru.purpose, "max": mx, "per": fmt_duration(per)}})
            return
        # 7. dispatch
        ch = left[0]
        c.alive = False
        st.by_purpose.setdefault(ru.purpose, []).append(t)
        st.by_channel.setdefault(ch, []).append(t)
        st.by_rule.setdefault(ru.name, []).append((t, c.dkey, ek))
        # The channel order of every later attempt is fixed now (A14):
        # `chans`, before consent and caps.
        self.attempt(st, c, chans, 1, ch, t)

    def attempt(self, st, c, order, k, ch, t):
        """Emits attempt k of candidate c on channel ch at t and, for a rule
        with fallback_after, schedules attempt k+1 (A12, A13, A15)."""
        ru = c.rule
        user = c.user
        ek = c.event["key"]
        did = dispatch_id(user, ek, ru.name, k)
        prefs = st.prefs
        self.dispatches.append({
            "dispatch_id": did,
            "user": user,
            "rule": ru.name,
            "template": ru.template,
            "channel": ch,
            "purpose": ru.purpose,
            "priority": ru.priority,
            "attempt": k,
            "event_key": ek,
            "event_time": fmt_time(c.event["time"]),
            "decision_time": fmt_time(t),
            "locale": prefs["locale"] if prefs is not None else None,
            "vars": c.event["data"],
        })
        win = ru.fallback if ru.fallback is not None else DELIVERY_WINDOW     # A34
        self.attempt_log.append((user, ru.name, ch, k, t, did, c.nid, min(t + win, MS_MAX)))
        if ru.fallback is None:
            return
        end = min(t + ru.fallback, MS_MAX)    # B17
        nxt = end
        for (r, _line, status) in self.receipts.get(did, ()):
            if r < t:
                continue      # before the dispatch: not in its window
            if r > end:
                break
            if status in SUCCESS:
                return        # succeeded: nothing more
            if status in FAILURE:
                nxt = r
                break
            # complained: neither
        self.seq += 1
        heapq.heappush(st.fallbacks, (nxt, self.seq, c, order, k + 1, ch))

    def fall_back(self, st, entry):
        """Makes attempt k (k >= 2) at time t on the next channel after the
        previous attempt's that has consent as of t, else suppresses the
        candidate as undeliverable (A14-A16)."""
        t, _seq, c, order, k, prev = entry
        ru = c.rule
        for x in order[order.index(prev) + 1:]:
            if self.consent_ok(st, x, ru.purpose, t):
                self.attempt(st, c, order, k, x, t)
                return
        self.suppress(c.user, ru.name, c.event["key"], t, "undeliverable", {})


# ----------------------------------------------------------------------------
# Analytics answers: retention, churn per user, delivery (A28-A36)
# ----------------------------------------------------------------------------

RETENTION_K = 12                    # A32
DELIVERY_WINDOW = 7 * DAY_MS        # A34: the receipt window of a rule without fallback_after


def segment_of(data, path):
    """The segment of an activity event (A30): a string as it is, any other
    non-null JSON value as its compact JSON text, absent or null -> None."""
    if path is None:
        return None
    v = lookup(data, path)
    if v is _MISSING:
        return None
    return v if isinstance(v, str) else dumps(v)


def bucket_of(day, bucket):
    """The bucket index of UTC day `day` (days since 1970-01-01) (A32)."""
    if bucket == "day":
        return day
    if bucket == "week":
        return (day + 3) // 7       # ISO weeks: day -3, 1969-12-29, is a Monday
    y, m, _d = civil_from_days(day)
    return y * 12 + (m - 1)


def bucket_first_day(b, bucket):
    if bucket == "day":
        return b
    if bucket == "week":
        return b * 7 - 3
    return days_from_civil(b // 12, b % 12 + 1, 1)


def fmt_day(day):
    return fmt_time(day * DAY_MS)[:10]


def life_as_of(log, as_of):
    """The user's activity [(time, segment)] since their last erasure before
    as_of, with time < as_of (A28, A35); the log is in time order."""
    acts = []
    for e in log:
        if e[1] >= as_of:
            break
        if e[0] == "erase":
            acts = []
        else:
            acts.append((e[1], e[2]))
    return acts


def last_erasure(log, as_of):
    ts = [e[1] for e in log if e[0] == "erase" and e[1] < as_of]
    return max(ts) if ts else None


def retention_answer(eng, as_of):
    """retention.json (A32, A31)."""
    an = eng.spec.analytics
    last = bucket_of(as_of // DAY_MS, an.bucket)
    rows = {}
    for user, log in eng.an_log.items():
        acts = life_as_of(log, as_of)
        if not acts:
            continue
        first_t, seg = acts[0]
        cohort = bucket_of(first_t // DAY_MS, an.bucket)
        group = "holdout" if fnv1a64(user.encode("utf-8")) % 10000 < eng.spec.holdout_bp \
            else "treated"
        row = rows.setdefault((cohort, seg, group), [0] * (RETENTION_K + 1))
        for b in {bucket_of(t // DAY_MS, an.bucket) for (t, _s) in acts}:
            if b - cohort <= RETENTION_K:
                row[b - cohort] += 1
    out = []
    for (cohort, seg, group) in sorted(
            rows, key=lambda r: (r[0], r[1] is not None, (r[1] or "").encode("utf-8"), r[2])):
        counts = rows[(cohort, seg, group)]
        out.append({"cohort": fmt_day(bucket_first_day(cohort, an.bucket)), "segment": seg,
                    "group": group, "size": counts[0],
                    "retained": [counts[k] if cohort + k <= last else None
                                 for k in range(RETENTION_K + 1)]})
    return {"as_of": fmt_time(as_of), "bucket": an.bucket, "rows": out}


def churn_answers(eng, as_of):
    """churn.jsonl (A33): one answer per user active since their last
    erasure, ordered by user id (code points order as UTF-8 bytes do)."""
    ch = eng.spec.churn
    e = as_of // DAY_MS
    out = []
    for user in sorted(eng.an_log):
        acts = life_as_of(eng.an_log[user], as_of)
        if not acts:
            continue
        days = {t // DAY_MS for (t, _s) in acts}
        f, l, n = min(days), max(days), len(days)
        out.append({"as_of": fmt_time(as_of), "user": user, "p_alive": p_alive(ch, f, l, n, e),
                    "x": n - 1, "t_x": (l - f) / ch.u, "T": (e - f) / ch.u,
                    "first_active": fmt_day(f), "last_active": fmt_day(l)})
    return out


def delivery_answer(eng, as_of):
    """delivery.json (A34-A36)."""
    cut = {user: last_erasure(log, as_of) for user, log in eng.an_log.items()}
    chans, rules, notes = {}, {}, {}
    for (user, rule, ch, k, t, did, nid, end) in eng.attempt_log:
        e = cut.get(user)
        if t >= as_of or (e is not None and t < e):
            continue
        ok = bad = False
        for (r, _line, status) in eng.receipts.get(did, ()):
            if t <= r <= end and r < as_of:
                if status in SUCCESS:
                    ok = True
                elif status in FAILURE:
                    bad = True
        for d in (chans.setdefault(ch, [0, 0, 0]), rules.setdefault(rule, [0, 0, 0])):
            d[0] += 1
            d[1] += ok
            d[2] += bad and not ok
        if k == 1:
            notes.setdefault(nid, False)
        if ok and nid in notes:
            notes[nid] = True

    def table(m):
        return {name: {"dispatched": d[0], "delivered": d[1], "failed": d[2],
                       "success_rate": d[1] / d[0]} for name, d in sorted(m.items())}

    return {"as_of": fmt_time(as_of), "channels": table(chans), "rules": table(rules),
            "notifications": {"total": len(notes), "succeeded": sum(notes.values())}}


def write_json(path, obj):
    with open(path, "wb") as f:
        f.write(dumps(obj).encode("utf-8") + b"\n")


def dispatch_id(user, event_key, rule, attempt):
    return str(uuid.uuid5(uuid.NAMESPACE_URL,
                          "nudgeflow:dispatch:%s:%s:%s:%d" % (user, event_key, rule, attempt)))


def write_jsonl(path, objs):
    lines = sorted(dumps(o).encode("utf-8") for o in objs)
    with open(path, "wb") as f:
        for ln in lines:
            f.write(ln + b"\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description="nudgeflow reference oracle (docs/semantics.md)")
    ap.add_argument("--spec", required=True)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--as-of", dest="as_of", metavar="TIME",
                    help="RFC 3339 time of the analytics answers (default: 1 ms after "
                         "the largest time of an admitted input record)")
    a = ap.parse_args(argv)
    as_of = None
    if a.as_of is not None:
        as_of = parse_time(a.as_of)
        if as_of is None:
            print("oracle: --as-of: not an RFC 3339 time with an offset: %r" % a.as_of,
                  file=sys.stderr)
            return 2
    try:
        spec = load_spec(a.spec)
    except (SpecError, OSError) as e:
        print("oracle: bad spec: %s" % e, file=sys.stderr)
        return 2
    eng = Engine(spec)
    eng.run(a.fixture)
    os.makedirs(a.out, exist_ok=True)
    write_jsonl(os.path.join(a.out, "dispatches.jsonl"), eng.dispatches)
    write_jsonl(os.path.join(a.out, "suppressions.jsonl"), eng.suppressions)
    write_jsonl(os.path.join(a.out, "dead_letters.jsonl"), eng.dead)
    if spec.churn is not None:                                  # A26
        write_jsonl(os.path.join(a.out, "churn_signals.jsonl"), eng.signals)
    summary = {"dispatches": len(eng.dispatches), "suppressions": len(eng.suppressions),
               "dead_letters": len(eng.dead), "duplicates_dropped": eng.duplicates,
               "churn_signals": len(eng.signals)}
    if spec.analytics is not None:
        if as_of is None:                                       # A28, B23
            as_of = eng.max_time + 1 if eng.max_time is not None else 0
        ret = retention_answer(eng, as_of)
        write_json(os.path.join(a.out, "retention.json"), ret)
        write_json(os.path.join(a.out, "delivery.json"), delivery_answer(eng, as_of))
        summary["as_of"] = fmt_time(as_of)
        summary["retention_rows"] = len(ret["rows"])
        if spec.churn is not None:
            answers = churn_answers(eng, as_of)
            with open(os.path.join(a.out, "churn.jsonl"), "wb") as f:
                for o in answers:
                    f.write(dumps(o).encode("utf-8") + b"\n")
            summary["churn_users"] = len(answers)
    print(dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
