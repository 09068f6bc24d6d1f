"""MySQL 8.0 dialect guard: a MySQL backend that refuses what MySQL 8.0 (Aurora MySQL 3) rejects.

The suite runs on MariaDB, production on MySQL 8.0. With `BACKSYNC_SQL_GUARD=mysql8` the
settings swap the database ENGINE for `config.dbguard`, which
- turns off the ORM features that MariaDB has and MySQL 8.0.11 lacks, so Django sends no
  MariaDB-only SQL (e.g. `INSERT ... RETURNING`), and
- checks every statement (ORM and hand-written alike) and raises `MySQL8DialectError`,
  showing the statement, for the MariaDB-only forms in `checks.FORBIDDEN`.
The test suite turns it on by default (tests/plugins/mysql8.py); the worker, relay and web
processes the tests start inherit the variable. Production never needs it.
"""
