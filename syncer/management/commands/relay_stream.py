"""Relay the DynamoDB streams of the mapped tables to the stream handler (local Lambda)."""

import logging
import signal

from django.core.management.base import BaseCommand, CommandError

from syncer.local.relay import STARTING_POSITIONS, RelayError, StreamRelay

VERBOSITY_LEVELS = {0: logging.ERROR, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


class Command(BaseCommand):
    help = (
        "Poll the DynamoDB stream of each mapped table like Lambda's event source mapping "
        "and hand the records to the stream handler (SQS FIFO). Stops on SIGTERM/SIGINT."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--table",
            action="append",
            dest="tables",
            help="Only this DynamoDB table (repeatable). Default: every mapped table.",
        )
        parser.add_argument("--batch-size", type=int, default=100)
        parser.add_argument(
            "--batching-window",
            type=float,
            default=0.0,
            help="Seconds to gather records before handing on a batch that is not full.",
        )
        parser.add_argument(
            "--starting-position", choices=STARTING_POSITIONS, default="TRIM_HORIZON"
        )
        parser.add_argument("--max-retries", type=int, default=3)
        parser.add_argument("--retry-backoff", type=float, default=0.5, help="Seconds, doubled.")
        parser.add_argument("--poll-interval", type=float, default=1.0, help="Seconds when idle.")
        parser.add_argument("--rediscover-interval", type=float, default=30.0)
        parser.add_argument(
            "--once", action="store_true", help="Drain what the streams hold now, then exit."
        )

    def handle(self, *args, **options):
        logging.getLogger("syncer").setLevel(VERBOSITY_LEVELS.get(options["verbosity"], 10))
        try:
            relay = StreamRelay(
                tables=options["tables"],
                batch_size=options["batch_size"],
                batching_window=options["batching_window"],
                starting_position=options["starting_position"],
                max_retries=options["max_retries"],
                retry_backoff=options["retry_backoff"],
                poll_interval=options["poll_interval"],
                rediscover_interval=options["rediscover_interval"],
            )
            tables = relay.table_names()
        except RelayError as exc:
            raise CommandError(str(exc)) from exc
        if not tables:
            self.stderr.write(self.style.WARNING("No mapped tables registered; nothing to relay."))

        def on_signal(signum, _frame):
            self.stdout.write(f"{signal.Signals(signum).name} received; stopping", ending="\n")
            relay.stop()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        if options["verbosity"]:
            self.stdout.write(
                f"Relaying {', '.join(tables) or 'nothing'} "
                f"({'once' if options['once'] else 'until stopped'})"
            )
            self.stdout.flush()
        try:
            stats = relay.run(once=options["once"])
        except RelayError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        style = self.style.WARNING if stats.failed else self.style.SUCCESS
        if options["verbosity"]:
            self.stdout.write(
                style(
                    f"Relay stopped: {stats.records} record(s) in {stats.batches} batch(es), "
                    f"{stats.failed} kept as failed changes, {stats.retries} retries."
                )
            )
