"""Compare each mapped DynamoDB table with its MySQL table, report drift, optionally repair."""

import json
import sys
from contextlib import nullcontext

from django.core.management.base import CommandError

from syncer.aws import DynamoUnavailable
from syncer.management.base import StatusCommand
from syncer.models import AuditEntry
from syncer.ops.audit import AuditResult, audited, command_actor
from syncer.ops.progress import Progress
from syncer.reconcile.report import (
    REPAIR_DIRECTIONS,
    SAMPLED_KINDS,
    ReconcileError,
    ReconcileOptions,
    ReconcileReport,
    mappings_resolve,
)
from syncer.reconcile.run import reconcile_run

EXIT_IN_SYNC, EXIT_DRIFT = 0, 1  # as with diff; any failure: EXIT_ERROR (2)

KIND_LABELS = {
    "equal": "equal",
    "settled": "in flight (settled)",
    "in_flight": "in flight (still moving)",
    "missing_in_mysql": "missing in MySQL",
    "missing_in_dynamo": "missing in DynamoDB",
    "different": "different",
    "tombstoned": "key present in a tombstone",
    "unkeyed": "MySQL rows without a key",
}


class Command(StatusCommand):
    errors = (ReconcileError, DynamoUnavailable)
    unexpected_errors = True

    help = (
        "Compare each mapped DynamoDB table (parallel Scan) with its MySQL table, field by "
        "field through the mapping, and report what differs; optionally repair it. "
        "Exit status, like diff: 0 = in sync (or every difference was repaired), "
        "1 = drift found, 2 = error. Under traffic, what differs is looked at again after "
        "--settle seconds: changes still in flight are counted as such, never as drift."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "mappings", nargs="*", metavar="MAPPING", help="Mapping names. Default: all."
        )
        parser.add_argument(
            "--segments", type=int, default=4, help="Parallel Scan segments (default 4)."
        )
        parser.add_argument(
            "--consistent", action="store_true", help="Strongly consistent Scan reads."
        )
        parser.add_argument(
            "--bucket-rows",
            type=int,
            default=20_000,
            help="Keys per compare bucket: bounds memory (default 20000).",
        )
        parser.add_argument(
            "--buckets", type=int, default=None, help="Fixed number of compare buckets."
        )
        parser.add_argument(
            "--samples", type=int, default=5, help="Samples shown per kind (default 5)."
        )
        parser.add_argument(
            "--repair",
            choices=REPAIR_DIRECTIONS,
            help="to-mysql: DynamoDB wins (key resync); to-dynamo: MySQL wins (outbox), "
            "each write conditioned on what the scan read.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="With --repair: print what would change."
        )
        parser.add_argument(
            "--distributed",
            action="store_true",
            help="Run scan segments and compare buckets as Celery tasks on the broker.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=3600.0,
            help="--distributed: seconds to wait for each phase's tasks (default 3600).",
        )
        parser.add_argument(
            "--settle",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Look again at what differs no sooner than this after the scan, so changes "
            "in flight reach MySQL first. Default: 4 x the sync lag p99 of the last hour, "
            "between 2 and 60 (10 when nothing was applied in that hour).",
        )
        parser.add_argument("--format", choices=("text", "json"), default="text")

    def handle(self, *args, **options):
        if options["dry_run"] and not options["repair"]:
            raise CommandError("--dry-run needs --repair to-mysql|to-dynamo")
        verbosity = options["verbosity"]
        reconcile_options = ReconcileOptions(
            segments=options["segments"],
            consistent=options["consistent"],
            bucket_rows=options["bucket_rows"],
            buckets=options["buckets"],
            samples=options["samples"],
            repair=options["repair"],
            dry_run=options["dry_run"],
            settle=options["settle"],
        )
        if reconcile_options.settle is not None and not 0 <= reconcile_options.settle <= 3600:
            raise CommandError("--settle must be between 0 and 3600 seconds")
        mappings = mappings_resolve(options["mappings"])
        as_text = options["format"] == "text"
        # Progress on stderr (stdout is the report), unstyled: a bar on a terminal, else a
        # plain line every few seconds. The scan's total is DynamoDB's approximate count.
        progress = Progress(
            self.stderr._out,
            enabled=verbosity > 0,
            unit={
                "scan": "segments" if options["distributed"] else "items",
                "compare": "buckets",
                "recheck": "keys",
            },
            approximate=lambda phase: phase == "scan" and not options["distributed"],
        )

        def on_action(line: str) -> None:
            # Every planned or made change, on stdout in text mode (stderr next to JSON).
            if verbosity >= 1 and (reconcile_options.dry_run or verbosity >= 2):
                (self.stdout if as_text else self.stderr).write(line)

        # A real repair is an operator action: kept in the audit trail, also when it fails.
        audit = (
            audited(
                action=f"repair {reconcile_options.repair}",
                target=",".join(m.name for m in mappings),
                via=AuditEntry.Via.COMMAND,
                actor=command_actor(command="reconcile"),
            )
            if reconcile_options.repair and not reconcile_options.dry_run
            else nullcontext(AuditResult())
        )
        with audit as audit_result:
            try:
                report = reconcile_run(
                    mappings=mappings,
                    options=reconcile_options,
                    distributed=options["distributed"],
                    progress=progress.update,
                    on_action=on_action,
                    timeout=options["timeout"],
                )
            finally:
                progress.close()
            audit_result.count = sum(m.drifted for m in report.mappings)
            audit_result.failed = report.unrepaired
            audit_result.detail = f"run {report.run_id}; " + "; ".join(
                f"{m.mapping}: {m.drifted} drifted, "
                + ", ".join(f"{k}={v}" for k, v in m.repairs.items())
                for m in report.mappings
            )
        if options["format"] == "json":
            self.stdout.write(json.dumps(report.as_dict(), indent=2, default=str))
        elif verbosity > 0:
            self._write_text(report, verbosity)
        self.stdout.flush()
        if report.unrepaired:
            sys.exit(EXIT_DRIFT)

    def _write_text(self, report: ReconcileReport, verbosity: int) -> None:
        for m in report.mappings:
            style = self.style.WARNING if m.drift else self.style.SUCCESS
            self.stdout.write(
                style(
                    f"{m.mapping} (DynamoDB {m.table} <-> {m.model}): "
                    f"{'in sync' if not m.drift else f'{m.drift} difference(s)'}; "
                    f"{m.dynamo_items} item(s), {m.mysql_rows} row(s), "
                    f"{m.segments} segment(s), {m.buckets} bucket(s)"
                )
            )
            for kind, label in KIND_LABELS.items():
                self.stdout.write(f"  {label:28} {m.counts[kind]}")
            if report.options.get("repair"):
                done = ", ".join(f"{k}={v}" for k, v in m.repairs.items() if v)
                self.stdout.write(f"  repair: {done or 'nothing to do'}")
            for kind in SAMPLED_KINDS:
                for sample in m.samples[kind]:
                    self.stdout.write(f"  [{KIND_LABELS[kind]}] {json.dumps(sample, default=str)}")
        settled = sum(m.counts["settled"] + m.counts["in_flight"] for m in report.mappings)
        if settled or verbosity > 1:
            self.stdout.write(
                f"{settled} key(s) in flight were looked at again after "
                f"{report.options['settle']}s and not counted as drift (--settle)"
            )
        if verbosity > 1:
            self.stdout.write(f"run {report.run_id}")
