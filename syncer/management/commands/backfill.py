"""Initial load of one store from the other: batched, throttled, resumable."""

import sys

from django.core.management.base import CommandError

from syncer.aws import DynamoUnavailable
from syncer.backfill import BackfillError, BackfillResult, backfill_run
from syncer.management.base import StatusCommand
from syncer.models import AuditEntry
from syncer.ops.audit import audit_record, command_actor
from syncer.ops.progress import Progress
from syncer.reconcile.report import ReconcileError, mappings_resolve

EXIT_DONE, EXIT_FAILED_ITEMS = 0, 1  # a run that could not go on: EXIT_ERROR (2)


class Command(StatusCommand):
    help = (
        "Load one store from the other for each mapping (default: all). --to mysql scans "
        "DynamoDB into MySQL; --to dynamo writes MySQL rows absent in DynamoDB (rows without "
        "a key, as in an adopted legacy table, get one from the mapping's key rule). Existing "
        "items are never overwritten. Progress is checkpointed after every batch: after an "
        "interruption, run the same command again to continue (--restart starts over). "
        "Exit status: 0 = done, 1 = done but some items failed (listed), 2 = error."
    )

    def add_arguments(self, parser):
        parser.add_argument("mappings", nargs="*", metavar="MAPPING")
        parser.add_argument("--to", choices=("mysql", "dynamo"), required=True, dest="to")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument(
            "--rate", type=float, default=None, help="At most this many items per second."
        )
        parser.add_argument(
            "--restart", action="store_true", help="Ignore the checkpoint and start over."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be read; write nothing."
        )

    def handle(self, *args, **options):
        try:
            mappings = mappings_resolve(options["mappings"])
        except ReconcileError as exc:
            raise CommandError(str(exc)) from exc
        verbosity = options["verbosity"]
        direction = options["to"]
        failed = 0
        for mapping in mappings:
            # Progress on stderr, unstyled: a bar on a terminal, else a line every few
            # seconds. To MySQL the total is DynamoDB's approximate item count.
            progress = Progress(
                self.stderr._out,
                enabled=verbosity >= 1 and not options["dry_run"],
                approximate=lambda _phase: direction == "mysql",
            )
            phase = f"{mapping.name} -> {direction}"

            def on_batch(result: BackfillResult, progress=progress, phase=phase) -> None:
                progress.update(phase, result.read, max(result.total, result.read))

            try:
                result = backfill_run(
                    mapping=mapping,
                    direction=direction,
                    batch_size=options["batch_size"],
                    rate=options["rate"],
                    restart=options["restart"],
                    dry_run=options["dry_run"],
                    progress=on_batch,
                )
            except (BackfillError, DynamoUnavailable) as exc:
                if not options["dry_run"]:
                    self._audit(mapping.name, options["to"], AuditEntry.Outcome.FAILED, str(exc))
                raise CommandError(f"{mapping.name}: {exc}") from exc
            finally:
                progress.close()
            if not options["dry_run"]:
                self._audit(
                    mapping.name,
                    options["to"],
                    AuditEntry.Outcome.PARTIAL if result.failed else AuditEntry.Outcome.OK,
                    f"{result.read} read, {result.written} written, {result.current} already "
                    f"current, {result.kept} kept, {result.failed} failed, "
                    f"{result.keyed} given a key",
                    count=result.written,
                )
            if options["dry_run"]:
                self.stdout.write(
                    f"{mapping.name} -> {direction}: would read about {result.read} "
                    f"item(s)" + (f", {result.keyed} row(s) without a key" if result.keyed else "")
                )
                continue
            failed += result.failed
            if verbosity >= 1:
                self._write_result(mapping.name, direction, result)
        if failed:
            sys.exit(EXIT_FAILED_ITEMS)

    def _write_result(self, name: str, direction: str, result: BackfillResult) -> None:
        style = self.style.WARNING if result.failed or result.kept else self.style.SUCCESS
        self.stdout.write(
            style(
                f"{name} -> {direction}: done{' (resumed)' if result.resumed else ''}; "
                f"{result.read} read, {result.written} written, {result.current} already "
                f"current, {result.kept} kept (other values, not overwritten), "
                f"{result.failed} failed, {result.keyed} given a key"
            )
        )
        for outcome in ("failed", "kept", "current"):
            for sample in result.samples[outcome]:
                self.stdout.write(f"  {outcome}: {sample}")
        if result.failed:
            self.stdout.write(
                self.style.ERROR(
                    f"{name}: {result.failed} item(s) failed"
                    + (" (first ones above)" if result.samples["failed"] else "")
                    + "; exit status 1"
                )
            )

    @staticmethod
    def _audit(mapping: str, to: str, outcome: str, detail: str, *, count: int = 0) -> None:
        audit_record(
            action=f"backfill to {to}",
            target=mapping,
            via=AuditEntry.Via.COMMAND,
            actor=command_actor(command="backfill"),
            outcome=outcome,
            count=count,
            detail=detail,
        )
