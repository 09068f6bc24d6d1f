"""The MySQL 8.0 dialect guard (config/dbguard): on for this whole suite, and able to fail."""

from __future__ import annotations

import os

import pytest
from django.db import connection

from chefs.models import Chef
from config.dbguard.checks import MySQL8DialectError, statement_violations

REFUSED = [
    "INSERT INTO t (a) VALUES (1) RETURNING id",
    "DELETE FROM t WHERE a = 1 RETURNING a",
    "ALTER TABLE t ADD COLUMN IF NOT EXISTS b INT",
    "ALTER TABLE t DROP COLUMN IF EXISTS b",
    "CREATE INDEX IF NOT EXISTS i ON t (a)",
    "CREATE UNIQUE INDEX IF NOT EXISTS i ON t (a)",
    "DROP INDEX IF EXISTS i ON t",
    "CREATE OR REPLACE TABLE t (a INT)",
    "CREATE OR REPLACE TRIGGER tr AFTER INSERT ON t FOR EACH ROW SET @x = 1",
    "CREATE TRIGGER IF NOT EXISTS tr AFTER INSERT ON t FOR EACH ROW SET @x = 1",
    "CREATE SEQUENCE s",
    "SELECT NEXTVAL(s)",
    "SELECT NEXT VALUE FOR s",
    "CREATE TABLE t (a VARCHAR(5)) COLLATE utf8mb4_uca1400_ai_ci",
    "ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4 COLLATE 'utf8mb4_uca1400_as_cs'",
    "SELECT a FROM t INTERSECT SELECT a FROM u",
    "SELECT a FROM t EXCEPT SELECT a FROM u",
    "SELECT a FROM t ORDER BY a OFFSET 1 ROWS FETCH NEXT 2 ROWS ONLY",
    "SET STATEMENT max_statement_time=1 FOR SELECT 1",
    "SELECT JSON_DETAILED(j) FROM t",
]

ACCEPTED = [
    # What the project writes by hand, in the form MySQL 8.0 takes.
    "INSERT INTO `k` (`a`, `sequence`) VALUES ('x', 1) "
    "ON DUPLICATE KEY UPDATE `sequence` = GREATEST(`sequence`, VALUES(`sequence`))",
    "SELECT `key` FROM `k` FORCE INDEX (`u`) WHERE `key` IN ('a') FOR UPDATE",
    "CREATE TABLE IF NOT EXISTS cheftable(id BIGINT AUTO_INCREMENT PRIMARY KEY)",
    "DROP TABLE IF EXISTS cheftable",
    "DROP TRIGGER IF EXISTS tr",
    # The forbidden words as data, in comments or as quoted names.
    "INSERT INTO t (a, b) VALUES ('RETURNING id', 'CREATE OR REPLACE x')",
    'SELECT `returning`, "EXCEPT" FROM t /* INTERSECT */ -- RETURNING',
    "INSERT INTO t (a) VALUES ('it''s a sequence: NEXTVAL(s) \\' RETURNING')",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_refuses_what_mysql8_rejects(sql):
    assert statement_violations(sql), sql


@pytest.mark.parametrize("sql", ACCEPTED)
def test_accepts_portable_sql(sql):
    assert statement_violations(sql) == [], sql


def test_the_suite_runs_with_the_guard():
    assert os.environ["BACKSYNC_SQL_GUARD"] == "mysql8"
    assert connection.settings_dict["ENGINE"] == "config.dbguard"
    # The ORM is told what MySQL 8.0 lacks, so it sends none of it.
    features = connection.features
    assert features.can_return_columns_from_insert is False
    assert features.can_return_rows_from_bulk_insert is False
    assert features.update_can_self_select is False
    assert features.has_native_uuid_field is False


@pytest.mark.django_db
def test_a_refused_statement_fails_loudly_and_shows_itself():
    with (
        pytest.raises(MySQL8DialectError, match=r"RETURNING[\s\S]*cheftable"),
        connection.cursor() as cur,
    ):
        cur.execute("DELETE FROM cheftable WHERE id = -1 RETURNING id")


@pytest.mark.django_db
def test_bulk_create_sends_no_returning():
    # On plain MariaDB Django would use INSERT ... RETURNING here; the guard would refuse it.
    chefs = Chef.objects.bulk_create([Chef(first_name="A", last_name="B") for _ in range(3)])
    assert len(chefs) == 3 and Chef.objects.count() == 3
