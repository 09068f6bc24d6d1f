"""What the sync's operator commands (reconcile, backfill) share: an exit status that says
more than pass or fail."""

from django.core.management.base import BaseCommand, CommandError

EXIT_ERROR = 2


class StatusCommand(BaseCommand):
    """Exit status 1 is the command's own finding (drift found, items failed), so an error
    exits with EXIT_ERROR: a CommandError, one of `errors` (its message as it is), and, with
    `unexpected_errors`, any other exception (named; --traceback shows it instead)."""

    errors: tuple[type[Exception], ...] = ()
    unexpected_errors = False

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            exc.returncode = EXIT_ERROR
            raise
        except self.errors as exc:
            raise CommandError(str(exc), returncode=EXIT_ERROR) from exc
        except Exception as exc:
            if not self.unexpected_errors or options.get("traceback"):
                raise
            raise CommandError(f"{type(exc).__name__}: {exc}", returncode=EXIT_ERROR) from exc
