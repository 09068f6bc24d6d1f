"""manage.py outbox_sweep: publish again the outbox entries whose task was lost or whose
last attempt failed (the same logic the beat task `syncer.outbox_sweep` runs)."""

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from syncer.outbox.sweep import outbox_due, outbox_sweep


class Command(BaseCommand):
    help = (
        "Publish again the pending outbox entries that are due (task lost, or a failed "
        "attempt's backoff over): enqueue them, or publish them here with --inline."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--inline", action="store_true", help="Publish in this process, not via Celery."
        )
        parser.add_argument("--limit", type=int, default=1000, help="Rows per run.")
        parser.add_argument("--dry-run", action="store_true", help="Only list what is due.")

    def handle(self, *args, inline: bool, limit: int, dry_run: bool, verbosity: int, **kw):
        if limit < 1:
            raise CommandError("--limit must be at least 1")
        try:
            if dry_run:
                due = list(outbox_due().order_by("pk")[:limit])
                for entry in due:
                    if verbosity >= 2:
                        self.stdout.write(f"due: {entry} (attempts {entry.attempts})")
                self.stdout.write(f"{len(due)} outbox entr(y/ies) due; nothing published.")
                return
            count = outbox_sweep(inline=inline, limit=limit)
        except DatabaseError as exc:
            raise CommandError(f"database error: {exc}") from exc
        verb = "published" if inline else "enqueued"
        self.stdout.write(self.style.SUCCESS(f"{count} legacy row(s) {verb} again."))
