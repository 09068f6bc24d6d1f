"""reconcile --distributed: segments and buckets as Celery tasks on a real worker."""

import io
import json

import pytest
from django.core.management import call_command

from syncer.models import ReconcileTask
from tests.syncer.reconcile.test_run import seed_drift

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _no_settle(settings):
    # No traffic here: what differs is looked at again at once (see test_reconcile_traffic).
    settings.RECONCILE_SETTLE_SECONDS = 0.0


def reconcile_json(*argv) -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command("reconcile", "--format", "json", "--buckets", "3", *argv, stdout=out)
        code = 0
    except SystemExit as exc:
        code = exc.code
    report = json.loads(out.getvalue())
    report.pop("run")
    report["options"].pop("distributed", None)
    return code, report


def test_distributed_report_equals_local(worker):
    seed_drift()
    local_code, local = reconcile_json("--segments", "3")
    dist_code, dist = reconcile_json("--segments", "3", "--distributed", "--timeout", "90")
    assert (local_code, dist_code) == (1, 1)
    assert dist == local
    assert local["drift"] == 5
    # The work really ran as tasks: 3 scan segments and 3 compare buckets, all done.
    run_tasks = ReconcileTask.objects.filter(run__options__distributed=True)
    assert sorted(run_tasks.values_list("phase", "number", "status")) == sorted(
        [(p, n, "done") for p in ("compare", "scan") for n in range(3)]
    )

    # Repairs run in the worker too; afterwards both modes agree the stores are in sync.
    code, repaired = reconcile_json("--distributed", "--repair", "to-mysql", "--timeout", "90")
    assert code == 0 and repaired["mappings"][0]["repairs"]["repaired"] == 5
    assert reconcile_json("--distributed")[0] == 0 and reconcile_json()[0] == 0
