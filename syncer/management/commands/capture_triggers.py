"""manage.py capture_triggers: show, (re)create or drop the triggers that capture every
write to the mapped legacy tables into the outbox (syncer/outbox/capture.py)."""

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from syncer.outbox.capture import (
    trigger_names,
    triggers_drop_sql,
    triggers_install,
    triggers_present,
    triggers_remove,
    triggers_sql,
)
from syncer.registry import registry


class Command(BaseCommand):
    help = (
        "Show the capture triggers of each mapped legacy table (default), create them again "
        "(--install; migrations create them) or drop them (--drop: writes that bypass Django "
        "then no longer reach DynamoDB, and neither do Django's own legacy writes)."
    )

    def add_arguments(self, parser):
        parser.add_argument("mappings", nargs="*", help="Mapping names (default: all).")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--install", action="store_true", help="Drop and create them.")
        action.add_argument("--drop", action="store_true", help="Drop them.")
        parser.add_argument("--dry-run", action="store_true", help="Print the SQL; change nothing.")

    def handle(self, *args, mappings, install, drop, dry_run, verbosity, **kw):
        try:
            chosen = [registry.get(n) for n in mappings] if mappings else registry.all()
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        try:
            for mapping in chosen:
                table = mapping.get_model()._meta.db_table
                if install or drop:
                    sql = triggers_drop_sql(table=table)
                    if install:
                        sql += triggers_sql(mapping=mapping)
                    if dry_run:
                        for statement in sql:
                            self.stdout.write(f"{statement};")
                        continue
                    if install:
                        triggers_install(mapping=mapping)
                    else:
                        triggers_remove(table=table)
                present = triggers_present(table=table)
                expected = trigger_names(table)
                state = (
                    self.style.SUCCESS("all present")
                    if present == expected
                    else self.style.WARNING(f"{len(present)} of {len(expected)} present")
                )
                self.stdout.write(f"{mapping.name} ({table}): {state}")
                if verbosity >= 2:
                    for name in expected:
                        mark = "present" if name in present else "missing"
                        self.stdout.write(f"  {name}: {mark}")
        except DatabaseError as exc:
            raise CommandError(f"database error: {exc}") from exc
