"""Initial load of one store from the other: batched, throttled, resumable."""

from django.core.management.base import BaseCommand, CommandError

from syncer.audit import audit_record, command_actor
from syncer.aws import DynamoUnavailable
from syncer.backfill import BackfillError, BackfillResult, backfill_run
from syncer.models import AuditEntry
from syncer.reconcile import ReconcileError, mappings_resolve


class Command(BaseCommand):
    help = (
        "Load one store from the other for each mapping (default: all). --to mysql scans "
        "DynamoDB into MySQL; --to dynamo writes MySQL rows absent in DynamoDB (rows without "
        "a key, as in an adopted legacy table, get one from the mapping's key rule). Existing "
        "items are never overwritten. Progress is checkpointed after every batch: after an "
        "interruption, run the same command again to continue (--restart starts over)."
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

        def progress(result: BackfillResult) -> None:
            if verbosity >= 1:
                self.stdout.write(
                    f"{result.mapping} -> {result.direction}: {result.read} read, "
                    f"{result.written} written, {result.skipped} skipped"
                )
                self.stdout.flush()

        for mapping in mappings:
            try:
                result = backfill_run(
                    mapping=mapping,
                    direction=options["to"],
                    batch_size=options["batch_size"],
                    rate=options["rate"],
                    restart=options["restart"],
                    dry_run=options["dry_run"],
                    progress=progress,
                )
            except (BackfillError, DynamoUnavailable) as exc:
                if not options["dry_run"]:
                    self._audit(mapping.name, options["to"], AuditEntry.Outcome.FAILED, str(exc))
                raise CommandError(f"{mapping.name}: {exc}") from exc
            if not options["dry_run"]:
                self._audit(
                    mapping.name,
                    options["to"],
                    AuditEntry.Outcome.OK,
                    f"{result.read} read, {result.written} written, {result.keyed} given a key, "
                    f"{result.skipped} skipped (existing items are never overwritten)",
                    count=result.written,
                )
            if options["dry_run"]:
                self.stdout.write(
                    f"{mapping.name} -> {options['to']}: would read about {result.read} "
                    f"item(s)" + (f", {result.keyed} row(s) without a key" if result.keyed else "")
                )
                continue
            style = self.style.WARNING if result.skipped else self.style.SUCCESS
            if verbosity >= 1:
                self.stdout.write(
                    style(
                        f"{mapping.name} -> {options['to']}: done"
                        f"{' (resumed)' if result.resumed else ''}; {result.read} read, "
                        f"{result.written} written, {result.keyed} given a key, "
                        f"{result.skipped} skipped"
                    )
                )
                for sample in result.samples:
                    self.stdout.write(f"  skipped: {sample}")

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
