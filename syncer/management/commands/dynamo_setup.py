"""Create or update the DynamoDB tables and SQS queues of the sync; safe to run twice."""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from syncer.aws import DynamoUnavailable, aws_endpoint
from syncer.local.provision import aws_resources_ensure


class Command(BaseCommand):
    help = "Create or update (idempotently) the mapped DynamoDB tables and the SQS queues."

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change; change nothing."
        )

    def handle(self, *args, dry_run: bool = False, **options):
        endpoint = aws_endpoint()
        self.stdout.write(f"AWS endpoint: {endpoint.url or 'AWS'} (region {endpoint.region})")
        try:
            report = aws_resources_ensure(stdout=self.stdout, dry_run=dry_run)
        except (DynamoUnavailable, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc
        if not report.resources:
            raise CommandError("no mapping is registered: nothing to set up")
        summary = "dry run, nothing changed" if dry_run else "all resources exist"
        self.stdout.write(self.style.SUCCESS(summary))
