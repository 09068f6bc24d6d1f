"""What a reconcile run reports: options, per-mapping and run reports, drift kinds and repair
outcomes, a drifted key (Drift), and resolving the mappings a run covers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syncer.registry import Mapping, registry

# Drift kinds, in report order. "tombstoned": the key exists in a store while its key
# state says the item was removed (a lost REMOVE, or a resurrection).
DRIFT_KINDS = (
    "missing_in_mysql",
    "missing_in_dynamo",
    "different",
    "tombstoned",
    "unkeyed",
)


# Not drift: "settled" differed in the compare and agreed when looked at again; "in_flight"
# was still moving with the sync applying it (module docstring, rules 1 and 5).
KINDS = ("equal", "settled", "in_flight", *DRIFT_KINDS)


SAMPLED_KINDS = (*DRIFT_KINDS, "in_flight")


REPAIR_DIRECTIONS = ("to-mysql", "to-dynamo")


REPAIR_OUTCOMES = ("repaired", "would_repair", "would_fail", "skipped", "failed")


class ReconcileError(Exception):
    """The run cannot go on (bad options, a task failed, DynamoDB unreachable)."""


@dataclass(frozen=True)
class ReconcileOptions:
    segments: int = 4
    consistent: bool = False
    bucket_rows: int = 20_000
    buckets: int | None = None  # fixed bucket count (tests); None: from the row counts
    samples: int = 5
    repair: str | None = None  # "to-mysql" | "to-dynamo"
    dry_run: bool = False
    settle: float | None = None  # seconds; None: settle_default() when the run starts

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class MappingReport:
    mapping: str
    table: str = ""
    model: str = ""
    segments: int = 0
    buckets: int = 0
    dynamo_items: int = 0
    mysql_rows: int = 0
    drifted: int = 0  # keys (and unkeyed rows) with any drift; a key counts once
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    samples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {k: [] for k in SAMPLED_KINDS}
    )
    repairs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPAIR_OUTCOMES, 0))

    @property
    def drift(self) -> int:
        return sum(self.counts[k] for k in DRIFT_KINDS)

    def merge(self, other: dict[str, Any], *, samples: int) -> None:
        """Add a partial report (as_dict of a bucket); samples stay the first by key."""
        self.dynamo_items += other.get("dynamo_items", 0)
        self.mysql_rows += other.get("mysql_rows", 0)
        self.drifted += other.get("drifted", 0)
        for kind, n in other["counts"].items():
            self.counts[kind] += n
        for kind, items in other["samples"].items():
            merged = self.samples[kind] + items
            self.samples[kind] = sorted(merged, key=_sample_order)[:samples]
        for outcome, n in other.get("repairs", {}).items():
            self.repairs[outcome] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "table": self.table,
            "model": self.model,
            "segments": self.segments,
            "buckets": self.buckets,
            "dynamo_items": self.dynamo_items,
            "mysql_rows": self.mysql_rows,
            "drifted": self.drifted,
            "counts": dict(self.counts),
            "drift": self.drift,
            "samples": {k: list(v) for k, v in self.samples.items()},
            "repairs": dict(self.repairs),
        }


def _sample_order(sample: dict[str, Any]) -> tuple:
    pk = sample.get("pk")
    return (str(sample.get("key") or ""), pk if isinstance(pk, int) else -1, str(pk or ""))


@dataclass
class ReconcileReport:
    run_id: int
    options: dict[str, Any]
    mappings: list[MappingReport]

    @property
    def drift(self) -> int:
        return sum(m.drift for m in self.mappings)

    @property
    def unrepaired(self) -> int:
        """Drift that is still there after the run (all of it without a real repair)."""
        if not self.options.get("repair") or self.options.get("dry_run"):
            return self.drift
        return sum(m.drifted - m.repairs["repaired"] for m in self.mappings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "options": self.options,
            "in_sync": self.drift == 0,
            "drift": self.drift,
            "mappings": [m.as_dict() for m in self.mappings],
        }


@dataclass
class Drift:
    kind: str
    key: str
    pk: Any = None
    mysql: dict[str, Any] | None = None
    dynamo: dict[str, Any] | None = None
    version: int | None = None  # item version the scan read
    error: str = ""
    tombstoned: bool = False
    fields: list[str] = field(default_factory=list)

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if self.pk is not None:
            out["pk"] = self.pk
        if self.fields:
            out["fields"] = self.fields
        out["mysql"] = self.mysql
        out["dynamo"] = self.dynamo
        if self.version is not None:
            out["version"] = self.version
        if self.error:
            out["error"] = self.error
        return out


def mappings_resolve(names: list[str] | None) -> list[Mapping]:
    if not names:
        return sorted(registry.all(), key=lambda m: m.name)
    out = []
    for name in names:
        try:
            out.append(registry.get(name))
        except LookupError as exc:
            known = ", ".join(sorted(m.name for m in registry.all())) or "none"
            raise ReconcileError(f"{exc} (registered: {known})") from None
    return out


def options_validate(options: ReconcileOptions) -> None:
    if options.segments < 1 or options.segments > 1_000_000:
        raise ReconcileError("segments must be between 1 and 1,000,000")
    if options.bucket_rows < 1:
        raise ReconcileError("bucket rows must be at least 1")
    if options.buckets is not None and options.buckets < 1:
        raise ReconcileError("buckets must be at least 1")
    if options.samples < 0:
        raise ReconcileError("samples must not be negative")
    if options.repair not in (None, *REPAIR_DIRECTIONS):
        raise ReconcileError(f"repair must be one of {', '.join(REPAIR_DIRECTIONS)}")
