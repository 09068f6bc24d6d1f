"""The one module Celery's autodiscovery imports (`syncer.tasks`): it loads the task modules
of each package, which define the tasks.

- syncer/pipeline/tasks.py: apply_changes (FifoGroupTask), changelog_prune
- syncer/outbox/tasks.py: outbox_publish, outbox_sweep
- syncer/reconcile/tasks.py: reconcile_scan, reconcile_compare, reconcile_repair
- syncer/ops/tasks.py: cloudwatch_publish
"""

from syncer.ops import tasks as ops_tasks
from syncer.outbox import tasks as outbox_tasks
from syncer.pipeline import tasks as pipeline_tasks
from syncer.reconcile import tasks as reconcile_tasks

__all__ = ["ops_tasks", "outbox_tasks", "pipeline_tasks", "reconcile_tasks"]
