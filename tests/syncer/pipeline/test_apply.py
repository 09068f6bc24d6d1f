"""The apply service against MariaDB, on a second mapping (syncer names no chef field)."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncer.models import AppliedBatch, FailedChange, KeyState
from syncer.pipeline.apply import changes_apply
from tests.stores import applied_more_than_once
from tests.syncer.conftest import gadget_change
from tests.testapp.models import Gadget

pytestmark = pytest.mark.django_db


def rows():
    return {g.sku: (g.name, g.count, g.active) for g in Gadget.objects.all()}


def test_insert_modify_remove(gadget_mapping):
    changes_apply(changes=[gadget_change("a", "INSERT", 10, name="one", count=3)])
    assert rows() == {"a": ("one", 3, True)}
    changes_apply(changes=[gadget_change("a", "MODIFY", 11, name="two", count=None)])
    assert rows() == {"a": ("two", None, True)}
    changes_apply(changes=[gadget_change("a", "REMOVE", 12)])
    assert rows() == {}
    state = KeyState.objects.get(mapping="gadget", key="a")
    assert state.deleted and state.sequence == 12


def test_duplicate_and_older_changes_change_nothing(gadget_mapping):
    newer = gadget_change("a", "MODIFY", 20, name="new")
    older = gadget_change("a", "MODIFY", 19, name="old")
    result = changes_apply(changes=[newer, older, newer])
    assert (result.applied, result.stale) == (1, 2)
    result = changes_apply(changes=[older])
    assert (result.applied, result.stale) == (0, 1)
    assert rows() == {"a": ("new", 1, True)}


def test_sequence_numbers_compare_as_integers(gadget_mapping):
    # As strings "9" > "10"; as integers it is the other way round.
    changes_apply(changes=[gadget_change("a", "INSERT", 9, name="nine")])
    changes_apply(changes=[gadget_change("a", "MODIFY", 10, name="ten")])
    assert rows()["a"][0] == "ten"
    big = 10**38
    changes_apply(changes=[gadget_change("a", "MODIFY", big + 1, name="big1")])
    changes_apply(changes=[gadget_change("a", "MODIFY", big, name="big0")])
    assert rows()["a"][0] == "big1"


def test_tombstone_blocks_stale_resurrection_but_not_recreation(gadget_mapping):
    changes_apply(changes=[gadget_change("a", "INSERT", 1), gadget_change("a", "REMOVE", 2)])
    changes_apply(changes=[gadget_change("a", "MODIFY", 1, name="zombie")])
    assert rows() == {}
    changes_apply(changes=[gadget_change("a", "INSERT", 3, name="again")])
    assert rows() == {"a": ("again", 1, True)}
    assert KeyState.objects.get(key="a").deleted is False


def test_poison_change_is_kept_and_the_rest_applied(gadget_mapping):
    good = [gadget_change(f"k{i}", "INSERT", 100 + i) for i in range(5)]
    poison = [
        gadget_change("p1", "INSERT", 1, name="x" * 21),  # too long for the column
        gadget_change("p2", "INSERT", 2, image={"Sku": {"S": "p2"}, "name": {"N": "5"}}),
        gadget_change("p3", "INSERT", 3, image={"Sku": {"S": "p3"}, "active": {"BOOL": True}}),
        {**gadget_change("p4", "INSERT", 4), "keys": {"Other": {"S": "p4"}}},
        {**gadget_change("p5", "INSERT", 5), "table": "nope"},
        {**gadget_change("p6", "INSERT", 6), "seq": "12abc"},
    ]
    result = changes_apply(changes=good[:2] + poison + good[2:])
    assert result.applied == 5 and result.failed == 6
    assert set(rows()) == {f"k{i}" for i in range(5)}
    failed = {f.event_id: f for f in FailedChange.objects.all()}
    assert set(failed) == {p["id"] for p in poison}
    assert "at most 20 characters" in failed[poison[0]["id"]].error
    assert "expected type S, got N" in failed[poison[1]["id"]].error
    assert "missing attribute" in failed[poison[2]["id"]].error
    assert "unknown key shape" in failed[poison[3]["id"]].error
    assert failed[poison[0]["id"]].payload == poison[0]
    # The same poison delivered again is one failed change with two attempts.
    changes_apply(changes=[poison[0]])
    assert FailedChange.objects.get(event_id=poison[0]["id"]).attempts == 2


@pytest.mark.django_db(transaction=True)  # ALTER TABLE commits: no test transaction to undo
def test_database_refusal_is_isolated_by_bisection(gadget_mapping):
    # A value the mapping accepts but the column refuses (the column is narrowed here).
    with connection.cursor() as cur:
        cur.execute("ALTER TABLE testapp_gadget MODIFY name VARCHAR(5) NOT NULL")
    changes = [gadget_change(f"k{i}", "INSERT", i + 1, name="short") for i in range(6)]
    changes[4] = gadget_change("k4", "INSERT", 5, name="toolong")
    try:
        result = changes_apply(changes=changes)
    finally:
        # Later tests need the real column back.
        with connection.cursor() as cur:
            cur.execute("ALTER TABLE testapp_gadget MODIFY name VARCHAR(20) NOT NULL")
    assert (result.applied, result.failed) == (5, 1)
    assert set(rows()) == {"k0", "k1", "k2", "k3", "k5"}
    assert FailedChange.objects.get().key == "k4"
    # The refused batches were rolled back whole (their key states too), and no transaction
    # was left open on the connection, which Django believes is in autocommit mode.
    assert not KeyState.objects.filter(key="k4").exists()
    assert connection.get_autocommit() and not connection.in_atomic_block
    with connection.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.innodb_trx"
            " WHERE trx_mysql_thread_id = CONNECTION_ID()"
        )
        assert cur.fetchone()[0] == 0


def test_bookkeeping_records_source_and_applied_times(gadget_mapping):
    changes_apply(changes=[gadget_change("a", "INSERT", 1, ts=1_700_000_000.5)])
    log = AppliedBatch.objects.get()
    (entry,) = log.entry_dicts()
    source_time = datetime.fromtimestamp(1_700_000_000.5, tz=UTC)
    lag = round((log.applied_at - source_time).total_seconds(), 3)
    assert entry["lag"] == lag > 0 and log.lag_max == lag
    assert log.lags == {str(round(lag * 1000)): 1}
    assert KeyState.objects.get().item_version is None


def test_one_log_row_per_batch_holds_every_change(gadget_mapping):
    """A batch logs one row: each change with its outcome, the counts, and the lags of the
    applied ones only (a change without a stream time has no lag)."""
    changes = [
        gadget_change("a", "INSERT", 5, ts=1_700_000_000),
        gadget_change("a", "MODIFY", 3, ts=1_700_000_000),  # older than 5: stale
        gadget_change("b", "INSERT", 1, ts=None),
        gadget_change("c", "REMOVE", 2, ts=1_700_000_001),
    ]
    result = changes_apply(changes=changes)
    assert (result.applied, result.stale) == (3, 1)
    log = AppliedBatch.objects.get()
    assert (log.applied, log.stale, log.changes) == (3, 1, 4)
    by_event = {e["event_id"]: e for e in log.entry_dicts()}
    logged = {i: (e["key"], e["sequence"], e["event"], e["outcome"]) for i, e in by_event.items()}
    assert logged == {
        c["id"]: (c["keys"]["Sku"]["S"], c["seq"], c["event"], "applied") for c in changes
    } | {changes[1]["id"]: ("a", "3", "MODIFY", "stale")}
    assert by_event[changes[2]["id"]]["lag"] is None
    lag_a, lag_c = by_event[changes[0]["id"]]["lag"], by_event[changes[3]["id"]]["lag"]
    assert log.lag_max == max(lag_a, lag_c) and lag_a == pytest.approx(lag_c + 1, abs=0.002)
    assert sum(log.lags.values()) == 2  # the stale change and the timeless one add none
    # A second batch is a second row; the first is untouched.
    changes_apply(changes=[gadget_change("d", "INSERT", 1)])
    assert AppliedBatch.objects.count() == 2


def _split(sql: str) -> list[str]:
    # The apply's round trips carry several statements; none of its literals holds ";\n".
    return [part.split(" ", 1)[0] for part in sql.split(";\n")]


def test_a_batch_is_two_round_trips_whatever_its_size(gadget_mapping):
    changes_apply(changes=[gadget_change(f"k{i}", "INSERT", i + 1) for i in range(100, 300)])
    changes = [gadget_change(f"k{i}", "INSERT", i + 1) for i in range(200)]
    changes += [gadget_change(f"k{i}", "REMOVE", 1000 + i) for i in range(50)]
    changes += [gadget_change(f"k{i}", "MODIFY", 2000 + i) for i in range(100, 300)]
    with CaptureQueriesContext(connection) as queries:
        result = changes_apply(changes=changes)
    trips = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]
    # 1: key-state upsert + locking read of what it found; 2: rows, deletes, change log.
    assert [_split(sql) for sql in trips] == [
        ["INSERT", "SELECT"],
        ["INSERT", "DELETE", "INSERT"],
    ], trips
    # Stale: k100-k199 INSERTs repeat the first batch's sequence numbers, and k0-k49 INSERTs
    # are superseded by their REMOVEs in the same batch.
    assert (result.applied, result.stale) == (300, 150)
    assert set(rows()) == {f"k{i}" for i in range(50, 300)}


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_batch_carries_its_own_begin_and_commit(gadget_mapping):
    assert connection.get_autocommit()
    with CaptureQueriesContext(connection) as queries:
        result = changes_apply(changes=[gadget_change(f"k{i}", "INSERT", i + 1) for i in range(5)])
    trips = [_split(q["sql"]) for q in queries]
    assert trips == [["START", "INSERT", "SELECT"], ["INSERT", "INSERT", "COMMIT"]], trips
    assert result.applied == 5 and set(rows()) == {f"k{i}" for i in range(5)}
    assert connection.get_autocommit() and not connection.in_atomic_block


def test_redelivery_of_the_applied_change_is_stale(gadget_mapping):
    change = gadget_change("a", "INSERT", 7, name="first")
    assert changes_apply(changes=[change]).applied == 1
    # Equal sequence number: the same change again, in a later batch.
    result = changes_apply(changes=[{**change, "image": {**change["image"], "name": {"S": "x"}}}])
    assert (result.applied, result.stale) == (0, 1)
    assert rows()["a"][0] == "first"
    assert KeyState.objects.get(key="a").sequence == 7


def test_guard_holds_with_simultaneous_assignment(gadget_mapping):
    # MariaDB's SIMULTANEOUS_ASSIGNMENT makes every SET see the old values; the guarded
    # upsert must decide the same either way (the sequence is assigned last).
    with connection.cursor() as cur:
        cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',SIMULTANEOUS_ASSIGNMENT')")
    try:
        changes_apply(changes=[gadget_change("a", "INSERT", 5, name="five")])
        result = changes_apply(
            changes=[gadget_change("a", "MODIFY", 4, name="four"), gadget_change("b", "INSERT", 1)]
        )
        assert (result.applied, result.stale) == (1, 1)
        changes_apply(changes=[gadget_change("a", "REMOVE", 6)])
        changes_apply(changes=[gadget_change("a", "MODIFY", 5, name="zombie")])
        assert rows() == {"b": ("g", 1, True)}
        state = KeyState.objects.get(key="a")
        assert (state.sequence, state.deleted) == (6, True)
    finally:
        with connection.cursor() as cur:
            cur.execute("SET SESSION sql_mode = REPLACE(@@sql_mode, 'SIMULTANEOUS_ASSIGNMENT', '')")


@pytest.mark.parametrize("seq", ["\u00b2", "1\u0663", "-5", "", "1" * 41])
def test_a_sequence_number_that_is_not_ascii_digits_is_a_failed_change(gadget_mapping, seq):
    # "²".isdigit() is True but int("²") raises: it must be a failed change, not a crash.
    result = changes_apply(changes=[{**gadget_change("a", "INSERT", 1), "seq": seq}])
    assert (result.applied, result.failed) == (0, 1)
    assert "bad sequence number" in FailedChange.objects.get().error


def test_text_values_are_escaped_not_interpreted(gadget_mapping):
    # The statements are built with the driver's escaping; quotes, backslashes, percent
    # signs and NUL must arrive as they are.
    nasty = ["it's", 'a"b', "back\\slash", "100%s", "x\x00y", "'); DROP TABLE x; --"]
    changes_apply(
        changes=[gadget_change(f"k{i}", "INSERT", i + 1, name=v) for i, v in enumerate(nasty)]
    )
    assert not FailedChange.objects.exists()
    assert [rows()[f"k{i}"][0] for i in range(len(nasty))] == nasty


NASTY_KEYS = ["it's", 'a"b', "back\\slash", "100%s%d%%", "é#ü", "'); DROP TABLE x; --"]


def test_keys_are_escaped_not_interpreted(gadget_mapping):
    # A key's literal is built once and serves the state upsert, its read-back and the row
    # (typed columns: the gadget mapping); a removal's key goes into the DELETE.
    changes_apply(changes=[gadget_change(k, "INSERT", i + 1) for i, k in enumerate(NASTY_KEYS)])
    assert not FailedChange.objects.exists()
    assert sorted(rows()) == sorted(NASTY_KEYS)
    changes_apply(changes=[gadget_change(k, "REMOVE", 100) for k in NASTY_KEYS[:3]])
    assert sorted(rows()) == sorted(NASTY_KEYS[3:])
    states = {s.key: (s.sequence, s.deleted) for s in KeyState.objects.all()}
    assert states == {k: (100 if i < 3 else i + 1, i < 3) for i, k in enumerate(NASTY_KEYS)}


def test_keys_are_escaped_on_the_text_only_path():
    # The chef mapping's columns are all text: its rows are formatted on the fast path.
    from chefs.models import Chef

    def change(key, seq):
        image = {"ChefId": {"S": key}, "firstName": {"S": key}, "lastName": {"S": "%s"}}
        return {
            "id": f"nasty-{seq}",
            "table": "chef",
            "event": "INSERT",
            "seq": str(seq),
            "keys": {"ChefId": {"S": key}},
            "image": image,
            "ts": 1_700_000_000.0,
        }

    changes_apply(changes=[change(k, i + 1) for i, k in enumerate(NASTY_KEYS)])
    assert not FailedChange.objects.exists()
    got = {c.chef_id: (c.first_name, c.last_name) for c in Chef.objects.all()}
    assert got == {k: (k, "%s") for k in NASTY_KEYS}


# --- property: any delivery order with duplicates converges -------------------------------

KEYS = ["a", "b", "c"]


@st.composite
def histories(draw):
    """Per key a history of create/update/delete in stream order, then a shuffled delivery
    of all changes with duplicates, some of them redelivered with a changed payload (same
    event id and sequence number, another name)."""
    seq = 0
    changes = []
    for key in KEYS:
        exists = False
        for _ in range(draw(st.integers(0, 6))):
            seq += draw(st.integers(1, 10**12))
            if exists and draw(st.booleans()):
                changes.append(gadget_change(key, "REMOVE", seq))
                exists = False
            else:
                name = draw(st.text("xyz", min_size=1, max_size=5))
                event = "MODIFY" if exists else "INSERT"
                changes.append(gadget_change(key, event, seq, name=name))
                exists = True
    delivered = draw(
        st.lists(st.sampled_from(changes), max_size=3 * len(changes)) if changes else st.just([])
    )
    upserts = [c for c in changes if c["event"] != "REMOVE"]
    changed = draw(st.lists(st.sampled_from(upserts), max_size=3) if upserts else st.just([]))
    for c in changed:
        name = draw(st.text("pq", min_size=1, max_size=3))  # never one of the history's names
        delivered.append({**c, "image": {**c["image"], "name": {"S": name}}})
    delivered = draw(st.permutations(changes + delivered))
    split = draw(st.integers(1, 4))
    return delivered, split


def first_delivered_newest(delivered: list[dict]) -> dict[str, dict]:
    """Per key, the first delivered change among those with the key's highest sequence
    number: the one the guard keeps (an equal sequence number later is stale)."""
    out: dict[str, dict] = {}
    for c in delivered:
        key = c["keys"]["Sku"]["S"]
        if key not in out or int(c["seq"]) > int(out[key]["seq"]):
            out[key] = c
    return out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories())
def test_any_delivery_order_converges(gadget_mapping, history):
    """Any order, duplicates, and a record redelivered with a changed payload: each key ends
    at its newest change, the first delivered of that sequence number winning; its key state
    holds that sequence number and tombstone; nothing failed; no event applied twice."""
    delivered, split = history
    Gadget.objects.all().delete()
    KeyState.objects.all().delete()
    AppliedBatch.objects.all().delete()
    size = max(1, len(delivered) // split)
    failed = 0
    for start in range(0, len(delivered), size):
        failed += changes_apply(changes=delivered[start : start + size]).failed
    assert failed == 0 and not FailedChange.objects.exists()
    newest = first_delivered_newest(delivered)
    assert {k: v[0] for k, v in rows().items()} == {
        k: c["image"]["name"]["S"] for k, c in newest.items() if c["event"] != "REMOVE"
    }
    states = {s.key: (int(s.sequence), s.deleted) for s in KeyState.objects.all()}
    assert states == {k: (int(c["seq"]), c["event"] == "REMOVE") for k, c in newest.items()}
    assert not applied_more_than_once()


def test_a_redelivered_record_with_a_changed_payload_is_stale(gadget_mapping):
    """Same event id and sequence number, another payload: the first applied wins, in a
    later batch and within one batch alike; the other is logged as stale, not failed."""
    first = gadget_change("a", "INSERT", 7, name="first")
    changed = {**first, "image": {**first["image"], "name": {"S": "changed"}}}
    assert changes_apply(changes=[first]).applied == 1
    assert (changes_apply(changes=[changed]).stale, rows()["a"][0]) == (1, "first")
    b1 = gadget_change("b", "INSERT", 9, name="one")
    b2 = {**b1, "image": {**b1["image"], "name": {"S": "two"}}}
    result = changes_apply(changes=[b2, b1])
    assert (result.applied, result.stale, result.failed) == (1, 1, 0)
    assert rows()["b"][0] == "two"
    assert not FailedChange.objects.exists()
    assert not applied_more_than_once()


# --- concurrency: the guard under real concurrent transactions ----------------------------


@pytest.mark.django_db(transaction=True)  # each thread commits on its own connection
def test_concurrent_batches_over_the_same_keys_converge(gadget_mapping):
    """Celery runs several messages of one FIFO group at once (DESIGN.md): batches that
    touch the same keys commit concurrently, in any order, with retries on deadlock. Every
    key must end at its highest sequence number, and every change be applied or stale."""
    import random
    import threading

    from django.db import connections

    from syncer.pipeline.apply import TransientApplyError

    rng = random.Random(4)
    keys = [f"k{i}" for i in range(40)]
    changes = []
    for seq in range(1, 1201):
        key = rng.choice(keys)
        event = "REMOVE" if rng.random() < 0.1 else "MODIFY"
        changes.append(gadget_change(key, event, seq, name=f"n{seq}"))
    rng.shuffle(changes)
    batches = [changes[i : i + 30] for i in range(0, len(changes), 30)]
    outcomes: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []

    def work(mine: list[list[dict]]) -> None:
        try:
            for batch in mine:
                for _attempt in range(20):
                    try:
                        result = changes_apply(changes=batch)
                        break
                    except TransientApplyError:  # deadlock: the task would retry
                        continue
                else:
                    raise AssertionError("batch never applied")
                outcomes.append((result.applied, result.stale, result.failed))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(batches[n::4],)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sum(a + s for a, s, _ in outcomes) == len(changes)
    assert sum(f for _, _, f in outcomes) == 0

    newest: dict[str, dict] = {}
    for c in changes:
        k = c["keys"]["Sku"]["S"]
        if k not in newest or int(c["seq"]) > int(newest[k]["seq"]):
            newest[k] = c
    expected = {
        k: (c["image"]["name"]["S"], 1, True) for k, c in newest.items() if c["event"] != "REMOVE"
    }
    assert rows() == expected
    states = {s.key: (int(s.sequence), s.deleted) for s in KeyState.objects.all()}
    assert states == {k: (int(c["seq"]), c["event"] == "REMOVE") for k, c in newest.items()}
