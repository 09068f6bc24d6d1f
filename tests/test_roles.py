"""Least privilege: every role against every API operation and every operator action.

Roles are the groups of chefs/roles.py (created by the data migration chefs/0004).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.views import APIView

from chefs import dynamo_services
from chefs.api.permissions import ChefPermissions
from chefs.mapping import CHEF_MAPPING
from chefs.models import Chef
from chefs.roles import READERS, ROLES, SYNC_OPERATORS, WRITERS
from syncer.models import AuditEntry, Conflict, FailedChange, OutboxEntry
from syncer.pipeline.apply import changes_apply
from tests.factories import ChefFactory, user_with_roles
from tests.syncer import conftest as syncer_conftest
from tests.syncer.conftest import gadget_change
from tests.testapp.models import Gadget

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("aws")]
gadget_mapping = syncer_conftest.gadget_mapping  # the fixture, shared

NO_ROLE = "no role"
ROLE_NAMES = [NO_ROLE, READERS, WRITERS, SYNC_OPERATORS]


def make_user(role: str, **kwargs):
    return user_with_roles(*([] if role == NO_ROLE else [role]), **kwargs)


# --- the groups the migration made ----------------------------------------------------------


def test_migration_created_the_groups_with_their_permissions():
    # Read as the migration left them (roles_ensure is not called here).
    for name, perms in ROLES.items():
        group = Group.objects.get(name=name)
        have = {
            f"{app}.{code}"
            for app, code in group.permissions.values_list("content_type__app_label", "codename")
        }
        assert have == set(perms), name


def test_roles_ensure_restores_a_changed_group():
    from chefs.roles import roles_ensure

    readers = Group.objects.get(name=READERS)
    readers.permissions.add(Permission.objects.get(codename="delete_chef"))
    roles_ensure()
    assert list(readers.permissions.values_list("codename", flat=True)) == ["view_chef"]


# --- API: role x operation ------------------------------------------------------------------

LEGACY, DYNAMO = "/aurora/chefs", "/dynamo/chefs"
KEY = "Brown#Alton"

# (name, method, path ({pk} / {key} filled in), body, status when allowed, needs write)
API_OPERATIONS = [
    ("legacy status", "get", "/aurora/", None, 200, False),
    ("legacy list", "get", LEGACY, None, 200, False),
    ("legacy retrieve", "get", LEGACY + "/{pk}", None, 200, False),
    ("legacy create", "post", LEGACY, {"firstName": "Bobby", "lastName": "Flay"}, 201, True),
    ("legacy update", "put", LEGACY + "/{pk}", {"firstName": "A", "lastName": "B"}, 200, True),
    ("legacy patch", "patch", LEGACY + "/{pk}", {"lastName": "B"}, 200, True),
    ("legacy delete", "delete", LEGACY + "/{pk}", None, 204, True),
    ("dynamo list", "get", DYNAMO, None, 200, False),
    ("dynamo retrieve", "get", DYNAMO + "/{key}", None, 200, False),
    ("dynamo create", "post", DYNAMO, {"firstName": "Bobby", "lastName": "Flay"}, 201, True),
    ("dynamo update", "put", DYNAMO + "/{key}", {"firstName": "A", "lastName": "B"}, 200, True),
    ("dynamo patch", "patch", DYNAMO + "/{key}", {"lastName": "B"}, 200, True),
    ("dynamo delete", "delete", DYNAMO + "/{key}", None, 204, True),
]


def _allowed(role: str, write: bool) -> bool:
    return role == WRITERS or (role in (READERS, SYNC_OPERATORS) and not write)


def _call(client: APIClient, op) -> int:
    name, method, path, body, _ok, _write = op
    pk = ChefFactory(first_name="Alton", last_name="Brown").pk
    dynamo_services.dynamo_chef_create_or_update(chef_id=KEY, first_name="Alton", last_name="Brown")
    url = path.format(pk=pk, key=quote(KEY, safe=""))
    return getattr(client, method)(url, body, format="json").status_code


@pytest.mark.parametrize("op", API_OPERATIONS, ids=[o[0] for o in API_OPERATIONS])
@pytest.mark.parametrize("role", ROLE_NAMES)
def test_api_role_matrix(role, op):
    client = APIClient()
    token = Token.objects.create(user=make_user(role))
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    expected = op[4] if _allowed(role, op[5]) else 403
    assert _call(client, op) == expected


@pytest.mark.parametrize("op", API_OPERATIONS, ids=[o[0] for o in API_OPERATIONS])
def test_api_anonymous_gets_401(op):
    assert _call(APIClient(), op) == 401


def test_dynamo_post_over_an_existing_key_needs_change_too():
    # add_chef alone must not update an existing item through the upsert.
    user = make_user(NO_ROLE)
    user.user_permissions.add(Permission.objects.get(codename="add_chef"))
    client = APIClient()
    client.force_authenticate(user)
    dynamo_services.dynamo_chef_create_or_update(chef_id=KEY, first_name="Alton", last_name="Brown")
    response = client.post(DYNAMO, {"firstName": "Alton", "lastName": "Brown"}, format="json")
    assert response.status_code == 403
    assert (
        client.post(LEGACY, {"firstName": "A", "lastName": "B"}, format="json").status_code == 201
    )


def _api_views():
    def walk(patterns):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns)
            elif isinstance(p, URLPattern):
                cls = getattr(p.callback, "cls", None)
                if cls is not None and issubclass(cls, APIView):
                    yield str(p.pattern), cls

    return list(walk(get_resolver().url_patterns))


def test_every_api_view_checks_chef_permissions():
    # A new view left on the default (any authenticated user) would escape the roles.
    views = [(route, cls) for route, cls in _api_views() if not route.startswith("api/")]
    assert len(views) == 5
    for route, cls in views:
        assert any(issubclass(p, ChefPermissions) for p in cls.permission_classes), route


# --- admin: role x operator action ----------------------------------------------------------


@pytest.fixture
def failed_change(gadget_mapping):
    change = gadget_change("p", "INSERT", 5, name="x" * 30)
    changes_apply(changes=[change])
    failed = FailedChange.objects.get(event_id=change["id"])
    failed.payload = {**failed.payload, "image": {**failed.payload["image"], "name": {"S": "ok"}}}
    failed.save()
    return failed


def _keyed_chef() -> Chef:
    dynamo_services.dynamo_chef_create_or_update(chef_id=KEY, first_name="Alton", last_name="Brown")
    return ChefFactory(first_name="Stale", last_name="Name", chef_id=KEY)


def _setup_replay(request):
    failed = request.getfixturevalue("failed_change")
    return "/admin/syncer/failedchange/", failed.pk, lambda: Gadget.objects.filter(sku="p").exists()


def _setup_discard(request):
    failed = request.getfixturevalue("failed_change")
    return (
        "/admin/syncer/failedchange/",
        failed.pk,
        lambda: FailedChange.objects.get(pk=failed.pk).status == FailedChange.Status.DISCARDED,
    )


def _setup_publish(request):
    chef = ChefFactory(first_name="Alton", last_name="Brown")
    return (
        "/admin/chefs/chef/",
        chef.pk,
        lambda: OutboxEntry.objects.filter(object_pk=str(chef.pk)).exists(),
    )


def _setup_resync(request):
    chef = _keyed_chef()
    return "/admin/chefs/chef/", chef.pk, lambda: Chef.objects.get(pk=chef.pk).last_name == "Brown"


def _setup_review(request):
    conflict = Conflict.objects.create(
        mapping=CHEF_MAPPING.name,
        key=KEY,
        object_pk="1",
        kind=Conflict.Kind.STALE_VERSION,
        legacy_op="upsert",
        legacy_values={},
        legacy_time=timezone.now(),
    )
    return "/admin/syncer/conflict/", conflict.pk, lambda: Conflict.objects.get().resolved


def _setup_retry(request):
    entry = OutboxEntry.objects.create(
        mapping=CHEF_MAPPING.name,
        object_pk="1",
        key=KEY,
        op=OutboxEntry.Op.UPSERT,
        values={},
        status=OutboxEntry.Status.FAILED,
    )
    return (
        "/admin/syncer/outboxentry/",
        entry.pk,
        lambda: OutboxEntry.objects.get(pk=entry.pk).status != OutboxEntry.Status.FAILED,
    )


ADMIN_ACTIONS = {
    "replay": ("replay", _setup_replay),
    "discard": ("discard", _setup_discard),
    "publish": ("publish_to_dynamo", _setup_publish),
    "resync": ("resync_from_dynamo", _setup_resync),
    "review": ("mark_resolved", _setup_review),
    "retry": ("retry", _setup_retry),
}


@pytest.mark.parametrize("audit_action", list(ADMIN_ACTIONS))
@pytest.mark.parametrize("role", ROLE_NAMES)
def test_admin_action_role_matrix(client, request, role, audit_action):
    form_action, setup = ADMIN_ACTIONS[audit_action]
    url, pk, done = setup(request)
    user = make_user(role, username=f"staff-{role}", is_staff=True)
    client.force_login(user)
    response = client.post(url, {"action": form_action, "_selected_action": [pk]})
    if role == SYNC_OPERATORS:
        assert response.status_code == 302
        assert done()
        entry = AuditEntry.objects.get()
        assert (entry.user, entry.actor, entry.via) == (user, user.username, "admin")
        assert (entry.action, entry.object_ids, entry.outcome) == (audit_action, str(pk), "ok")
    else:
        # No view permission: 403; otherwise the action is not offered, and the admin
        # answers "No action selected" (the changelist, or a redirect back to it).
        assert response.status_code in (200, 302, 403)
        assert not done()
        assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_admin_chef_edits_follow_the_model_permissions(client, role):
    chef = ChefFactory(first_name="Alton", last_name="Brown")
    client.force_login(make_user(role, username=f"staff-{role}", is_staff=True))
    add = client.post("/admin/chefs/chef/add/", {"first_name": "B", "last_name": "F"})
    delete = client.post(f"/admin/chefs/chef/{chef.pk}/delete/", {"post": "yes"})
    if role == WRITERS:
        assert (add.status_code, delete.status_code) == (302, 302)
        assert list(Chef.objects.values_list("first_name", flat=True)) == ["B"]
    else:
        assert (add.status_code, delete.status_code) == (403, 403)
        assert list(Chef.objects.values_list("first_name", flat=True)) == ["Alton"]


def test_audit_entries_are_read_only_in_the_admin(client):
    operator = make_user(SYNC_OPERATORS, username="op", is_staff=True)
    client.force_login(operator)
    chef = ChefFactory()
    client.post(
        "/admin/chefs/chef/", {"action": "publish_to_dynamo", "_selected_action": [chef.pk]}
    )
    entry = AuditEntry.objects.get()
    page = client.get("/admin/syncer/auditentry/").content.decode()
    assert "publish" in page and "op" in page
    assert (
        client.post(f"/admin/syncer/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


@pytest.mark.parametrize("audit_action", list(ADMIN_ACTIONS))
def test_admin_actions_need_their_own_permission(client, request, audit_action):
    # Seeing (and editing) the objects is not enough to run the repair on them.
    form_action, setup = ADMIN_ACTIONS[audit_action]
    url, pk, done = setup(request)
    user = make_user(NO_ROLE, username="viewer", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__startswith="view_"),
        *Permission.objects.filter(codename__in=["change_failedchange", "change_chef"]),
    )
    client.force_login(user)
    client.post(url, {"action": form_action, "_selected_action": [pk]})
    assert not done()
    assert not AuditEntry.objects.exists()


# --- the admin's reconcile repair ----------------------------------------------------------


def _queued_task_names() -> list[str]:
    """Task names of the messages on the reconcile queue (its tasks' own), read with boto3."""
    import base64
    import json

    from django.conf import settings

    from syncer.aws import sqs_client

    names = []
    got = sqs_client().receive_message(
        QueueUrl=settings.RECONCILE_QUEUE_URL, MaxNumberOfMessages=10, WaitTimeSeconds=0
    )
    for message in got.get("Messages", []):
        envelope = json.loads(base64.b64decode(message["Body"]))
        names.append(envelope["headers"]["task"])
        names.append(json.loads(base64.b64decode(envelope["body"]))[1])
    return names


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_admin_reconcile_repair_page_role_matrix(client, role):
    user = make_user(role, username=f"staff-{role}", is_staff=True)
    client.force_login(user)
    page = client.get("/admin/sync/reconcile/")
    post = client.post("/admin/sync/reconcile/", {"mappings": ["chef"], "direction": "to-mysql"})
    dashboard = client.get("/admin/sync/").content.decode()
    if role == SYNC_OPERATORS:
        assert (page.status_code, post.status_code) == (200, 302)
        assert "reconcile-repair-link" in dashboard
        assert _queued_task_names() == [
            "syncer.reconcile_repair",
            {"mapping_names": ["chef"], "direction": "to-mysql", "user_id": user.pk},
        ]
    else:
        assert (page.status_code, post.status_code) == (403, 403)
        assert "reconcile-repair-link" not in dashboard
        assert _queued_task_names() == []


def test_admin_reconcile_repair_refuses_bad_input(client):
    client.force_login(make_user(SYNC_OPERATORS, username="op", is_staff=True))
    r = client.post("/admin/sync/reconcile/", {"mappings": ["nosuch"], "direction": "sideways"})
    assert r.status_code == 200
    assert set(r.context["form"].errors) == {"mappings", "direction"}
    assert _queued_task_names() == []
