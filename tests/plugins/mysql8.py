"""The MySQL 8.0 dialect guard for the whole suite, on by default (DESIGN.md invariant 7).

Loaded with `-p tests.plugins.mysql8` before pytest-django reads the settings: it sets
`BACKSYNC_SQL_GUARD=mysql8`, so the settings use the guarded backend (config/dbguard) in
this process and in every worker, relay, web and manage.py process the tests start (they
inherit the environment). `BACKSYNC_SQL_GUARD=off make test` turns it off, e.g. to show
what it catches.

The header names the database server the run uses (engine and version), so a run against
a real MySQL 8.0 (`DATABASE_URL=mysql://...`) says so at its start.
"""

from __future__ import annotations

import os

os.environ.setdefault("BACKSYNC_SQL_GUARD", "mysql8")


def pytest_report_header(config) -> list[str]:
    from django.conf import settings

    try:
        from syncer.ops.selectors import database_server_info

        info = database_server_info(settings_dict=settings.DATABASES["default"])
        server = f"{info['engine']} {info['version']}"
    except Exception as exc:  # noqa: BLE001 - the header must not break the run
        server = f"not reachable ({type(exc).__name__}: {exc})"
    return [
        f"database server: {server}",
        f"MySQL 8.0 dialect guard: {os.environ.get('BACKSYNC_SQL_GUARD') or 'off'}",
    ]
