"""Drift under traffic: the settle time and the looks that tell a key still in flight (the
pipeline catching up) from real drift. The rules are in syncer/reconcile/run.py's
docstring."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from syncer.models import (
    KeyState,
)
from syncer.reconcile.repair import drifts_report
from syncer.reconcile.report import Drift, MappingReport, ReconcileOptions
from syncer.reconcile.scan import MYSQL_CHUNK, canonical_text, spill_row
from syncer.registry import Mapping
from syncer.store.dynamo import items_fetch
from syncer.store.sql import consistent_reads

# The settle time (seconds) when --settle is not given: SETTLE_FACTOR x the sync lag p99 of
# the last hour, within [SETTLE_MIN, SETTLE_MAX]; SETTLE_UNMEASURED when nothing was applied
# in that hour (no measure: be generous; a quiet system has little to recheck anyway).
SETTLE_FACTOR = 4.0


SETTLE_MIN = 2.0


SETTLE_MAX = 60.0


SETTLE_UNMEASURED = 10.0


RECHECK_ROUNDS = 4  # looks after the compare, at most, for keys that keep moving


def settle_default(*, now=None) -> float:
    """RECONCILE_SETTLE_SECONDS when set, else SETTLE_FACTOR x the sync lag p99 of the last
    hour, within [SETTLE_MIN, SETTLE_MAX]."""
    from django.conf import settings

    from syncer.ops.dashboard import lag_summary_get

    if getattr(settings, "RECONCILE_SETTLE_SECONDS", None) is not None:
        return settings.RECONCILE_SETTLE_SECONDS
    lag = lag_summary_get(now=now)
    if lag.p99 is None:
        return SETTLE_UNMEASURED
    return round(min(SETTLE_MAX, max(SETTLE_MIN, SETTLE_FACTOR * lag.p99)), 2)


def settle_seconds(options: ReconcileOptions) -> float:
    return options.settle if options.settle is not None else settle_default()


def sleep_until(deadline: float) -> None:
    delay = deadline - time.time()
    if delay > 0:
        _sleep(delay)


_sleep = time.sleep  # tests replace it to act "while reconcile waits"


@dataclass
class Seen:
    """What one look (the scan, or a recheck) saw of a key in DynamoDB, and by when."""

    present: bool
    version: int | None
    text: str  # mapped values as canonical JSON text, or the mapping's error
    at: float  # epoch seconds at which the look had ended


def seen_by_scan(drift: Drift, finished: float) -> Seen:
    present = drift.kind != "missing_in_dynamo"
    text = drift.error or (canonical_text(drift.dynamo) if drift.dynamo is not None else "")
    return Seen(present=present, version=drift.version if present else None, text=text,
                 at=finished)  # fmt: skip


@dataclass
class Look:
    """One look at a key: MySQL's row and key state, then DynamoDB (consistent)."""

    key: str
    pk: Any
    mysql: dict[str, Any] | None
    mysql_text: str | None
    dynamo: Seen
    error: str
    applied_version: int | None  # the key state's item version
    deleted: bool  # the key state is a tombstone
    applied_time: float | None  # epoch: stream time of the last applied change


def keys_look(mapping: Mapping, keys: list[str]) -> dict[str, Look]:
    """MySQL first, DynamoDB after: whatever MySQL holds then was already in DynamoDB.
    The rows and their key states are read in one snapshot: an apply committing between
    the two reads would pair an old row with the new state's version (rule 3's "applied
    this very version, MySQL differs anyway": false drift)."""
    model = mapping.get_model()
    fields = [fm.field for fm in mapping.fields]
    rows: dict[str, tuple[Any, str]] = {}
    states: dict[str, KeyState] = {}
    with consistent_reads():
        for start in range(0, len(keys), MYSQL_CHUNK):
            chunk = keys[start : start + MYSQL_CHUNK]
            for pk, key, *values in model.objects.filter(
                **{f"{mapping.key_field}__in": chunk}
            ).values_list("pk", mapping.key_field, *fields):
                rows[key] = (pk, canonical_text(dict(zip(fields, values, strict=True))))
            states.update(
                (s.key, s) for s in KeyState.objects.filter(mapping=mapping.name, key__in=chunk)
            )
    items = items_fetch(mapping=mapping, keys=keys)
    at = time.time()
    looks = {}
    for key in keys:
        item = items.get(key)
        values, error, version = "", "", None
        if item is not None:
            _, _, _, _, _, values, error, version = spill_row(0, mapping, 0, item)
        pk, mysql_text = rows.get(key, (None, None))
        state = states.get(key)
        stamp = (state.source_time or state.applied_at) if state is not None else None
        looks[key] = Look(
            key=key,
            pk=pk,
            mysql=json.loads(mysql_text) if mysql_text is not None else None,
            mysql_text=mysql_text,
            dynamo=Seen(
                present=item is not None, version=version, text=error or values, at=at
            ),  # fmt: skip
            error=error,
            applied_version=state.item_version if state is not None else None,
            deleted=bool(state and state.deleted),
            applied_time=stamp.timestamp() if stamp is not None else None,
        )
    return looks


def look_drift(look: Look, mapping: Mapping) -> Drift | None:
    """The drift one look shows (None: the stores agree), as the compare would report it."""
    seen = look.dynamo
    dynamo = json.loads(seen.text) if seen.present and not look.error else None
    if look.pk is None and not seen.present:
        return None
    if look.pk is None:
        drift = Drift("missing_in_mysql", look.key, dynamo=dynamo, version=seen.version,
                       error=look.error)  # fmt: skip
    elif not seen.present:
        drift = Drift("missing_in_dynamo", look.key, pk=look.pk, mysql=look.mysql)
    elif look.error:
        drift = Drift("different", look.key, pk=look.pk, mysql=look.mysql,
                       version=seen.version, error=look.error)  # fmt: skip
    else:
        differ = [fm.field for fm in mapping.fields
                  if look.mysql.get(fm.field) != dynamo.get(fm.field)]  # fmt: skip
        if not differ and not look.deleted:
            return None
        kind = "different" if differ else "tombstoned"
        drift = Drift(kind, look.key, pk=look.pk, mysql=look.mysql, dynamo=dynamo,
                       version=seen.version, fields=differ)  # fmt: skip
    drift.tombstoned = look.deleted
    return drift


def _caught_up(prev: Seen, look: Look) -> bool:
    """Has MySQL applied (at least) what the previous look saw in DynamoDB?"""
    if prev.present and prev.version is not None:
        return (
            not look.deleted
            and look.applied_version is not None
            and look.applied_version >= prev.version
        )
    if not prev.present and look.deleted:
        return True  # the removal the previous look saw was applied
    # No version to go by: a change applied whose stream time is after the previous look.
    return look.applied_time is not None and look.applied_time >= prev.at


def _verdict(prev: Seen, look: Look, drift: Drift | None) -> str:
    """One of settled, drift or moving (rules 1, 3-5 of the module docstring)."""
    if drift is None:
        return "settled"  # rule 1
    now = look.dynamo
    if (now.present, now.version, now.text) == (prev.present, prev.version, prev.text):
        return "drift"  # rule 3: DynamoDB did not move, MySQL still differs
    if look.deleted and look.pk is not None:
        return "drift"  # rule 3: a row the sync says was removed
    if now.version is not None and look.applied_version == now.version:
        return "drift"  # rule 3: the sync applied this very version, MySQL differs anyway
    if not _caught_up(prev, look):
        return "drift"  # rule 4: what the previous look saw was not applied within settle
    return "moving"  # rule 5


def recheck_first(
    mapping: Mapping, scanned: dict[str, Seen], report: MappingReport
) -> tuple[list[Drift], list[dict[str, Any]]]:
    """The first look after the compare: counts settled keys in `report`, returns the drift
    and the keys still moving (JSON, for the coordinator's next look)."""
    drifts: list[Drift] = []
    deferred = [
        {"key": key, "seen": look.dynamo.__dict__}
        for key, _prev, look, _drift in _looks_judged(
            mapping, scanned, list(scanned), report=report, drifts=drifts
        )
    ]
    return drifts, deferred


def _looks_judged(
    mapping: Mapping,
    previous: dict[str, Seen],
    keys: list[str],
    *,
    report: MappingReport,
    drifts: list[Drift],
) -> Iterator[tuple[str, Seen, Look, Drift | None]]:
    """Look at `keys` again and judge each against its previous look: settled keys are
    counted in `report`, drift goes to `drifts`; the keys still moving are yielded."""
    looks = keys_look(mapping, keys)
    for key, prev in previous.items():
        look = looks[key]
        drift = look_drift(look, mapping)
        verdict = _verdict(prev, look, drift)
        if verdict == "settled":
            report.counts["settled"] += 1
        elif verdict == "drift":
            drifts.append(drift)
        else:
            yield key, prev, look, drift


def recheck_deferred(
    *,
    mapping: Mapping,
    deferred: list[dict[str, Any]],
    options: ReconcileOptions,
    on_action: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Look again, `settle` after the previous look, at the keys that were still moving;
    returns a partial report. A key found moving again within 2 x settle of its previous
    look is in flight (rule 5); after RECHECK_ROUNDS looks in all, so is one still moving."""
    settle = settle_seconds(options)
    report = MappingReport(mapping=mapping.name)
    drifts: list[Drift] = []
    in_flight: list[Drift] = []
    pending = {d["key"]: Seen(**d["seen"]) for d in deferred}
    for look_number in range(2, RECHECK_ROUNDS + 1):
        if not pending:
            break
        sleep_until(max(s.at for s in pending.values()) + settle)
        moving: dict[str, Seen] = {}
        judged = _looks_judged(mapping, pending, sorted(pending), report=report, drifts=drifts)
        for key, prev, look, drift in judged:
            if look.dynamo.at - prev.at <= 2 * settle or look_number == RECHECK_ROUNDS:
                in_flight.append(drift)
            else:
                moving[key] = look.dynamo  # the previous look was long ago: once more
        pending = moving
    drifts_report(report, drifts, in_flight, mapping=mapping, options=options,
                   on_action=on_action)  # fmt: skip
    return report.as_dict()
