"""Moving the test database between migration states (the data-migration tests)."""

from __future__ import annotations

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(executor: MigrationExecutor, targets) -> MigrationExecutor:
    """Migrate to `targets`; returns a fresh executor, whose loader sees what was applied."""
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection)


def state_apps(executor: MigrationExecutor, targets):
    """The historical apps at `targets`."""
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps
