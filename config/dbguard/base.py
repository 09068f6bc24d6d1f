"""The MySQL backend with the MySQL 8.0 dialect guard (see config/dbguard/__init__.py)."""

from __future__ import annotations

from django.db.backends.mysql import base, features

from config.dbguard.checks import statement_check


class DatabaseFeatures(features.DatabaseFeatures):
    # What MariaDB has and MySQL 8.0.11 lacks: off, so the ORM generates what both accept.
    can_return_columns_from_insert = False  # INSERT ... RETURNING
    can_return_rows_from_bulk_insert = False
    update_can_self_select = False  # UPDATE t ... WHERE x IN (SELECT ... FROM t)
    supports_select_intersection = False  # INTERSECT: MySQL 8.0.31+
    supports_select_difference = False  # EXCEPT: MySQL 8.0.31+
    has_native_uuid_field = False  # MariaDB 10.7+ UUID column type


def _guard(execute, sql, params, many, context):
    statement_check(sql)
    return execute(sql, params, many, context)


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.execute_wrappers.append(_guard)
