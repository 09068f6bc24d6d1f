"""Legacy write services: a write the database rolls back for a lock is run again."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from django.db import OperationalError, connection

from chefs import services
from chefs.models import Chef
from tests.conftest import server_connection


def _hold_row_lock(chef_pk: int, locked: threading.Event, release: threading.Event) -> None:
    """Another client holding the row's lock until told (a long legacy batch job, say)."""
    conn = server_connection()
    try:
        cur = conn.cursor()
        cur.execute(f"USE `{connection.settings_dict['NAME']}`")
        cur.execute("START TRANSACTION")
        cur.execute("SELECT id FROM cheftable WHERE id = %s FOR UPDATE", [chef_pk])
        locked.set()
        release.wait(30)
        conn.rollback()
    finally:
        conn.close()


@pytest.fixture
def short_lock_wait(transactional_db):
    with connection.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
    yield
    connection.close()  # the session setting goes with the connection


def test_a_write_that_times_out_on_a_lock_is_run_again(aws, short_lock_wait, monkeypatch):
    chef = services.chef_create(first_name="Lock", last_name="Wait")
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_row_lock, args=(chef.pk, locked, release))
    holder.start()
    assert locked.wait(10)
    attempts = []

    def backoff(seconds):
        attempts.append(seconds)
        release.set()  # the other client finishes; the next attempt gets the lock
        holder.join(10)

    monkeypatch.setattr(services, "time", SimpleNamespace(sleep=backoff))
    try:
        services.chef_update(chef=chef, first_name="Retried")
    finally:
        release.set()
        holder.join(10)
    assert len(attempts) == 1  # the first attempt hit the real lock wait timeout (1205)
    assert Chef.objects.get(pk=chef.pk).first_name == "Retried"


def test_the_last_attempt_is_not_retried(aws, short_lock_wait, monkeypatch):
    chef = services.chef_create(first_name="Lock", last_name="Held")
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_row_lock, args=(chef.pk, locked, release))
    holder.start()
    assert locked.wait(10)
    monkeypatch.setattr(services, "WRITE_ATTEMPTS", 2)
    monkeypatch.setattr(services, "time", SimpleNamespace(sleep=lambda seconds: None))
    try:
        with pytest.raises(OperationalError) as caught:
            services.chef_update(chef=chef, first_name="Never")
    finally:
        release.set()
        holder.join(10)
    assert caught.value.args[0] == 1205
    assert Chef.objects.get(pk=chef.pk).first_name == "Lock"
