import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from chefs.models import Chef
from chefs.roles import roles_ensure
from syncer.models import AppliedBatch, FailedChange, OutboxEntry
from syncer.pipeline.changelog import changelog_fields


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests-1")


class ChefFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Chef

    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    chef_id = None


class FailedChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FailedChange

    source = "apply"
    event_id = factory.Sequence(lambda n: f"f{n}")
    payload = factory.LazyFunction(dict)
    error = "x"
    first_failed_at = factory.LazyFunction(timezone.now)
    last_failed_at = factory.SelfAttribute("first_failed_at")


class OutboxEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OutboxEntry

    mapping = "chef"
    object_pk = "1"
    op = "upsert"
    values = factory.LazyFunction(dict)


class AppliedBatchFactory(factory.django.DjangoModelFactory):
    """A batch of the applied-change log; `lags` (seconds, one applied MODIFY each) builds
    its entries, and its summary columns follow from them as the apply computes them:
    AppliedBatchFactory(lags=[0.1, 0.2], applied_at=...)."""

    class Meta:
        model = AppliedBatch
        exclude = ("seconds",)

    class Params:
        seconds = [0.1]

    mapping = "chef"
    applied_at = factory.LazyFunction(timezone.now)
    entries = factory.LazyAttributeSequence(
        lambda o, n: [
            [f"ev-{n}-{i}", f"k{i}", str(i + 1), "MODIFY", "applied", lag]
            for i, lag in enumerate(o.seconds)
        ]
    )
    applied = factory.LazyAttribute(lambda o: changelog_fields(o.entries)["applied"])
    stale = factory.LazyAttribute(lambda o: changelog_fields(o.entries)["stale"])
    lag_max = factory.LazyAttribute(lambda o: changelog_fields(o.entries)["lag_max"])
    lags = factory.LazyAttribute(lambda o: changelog_fields(o.entries)["lags"])


def user_with_roles(*roles: str, **kwargs):
    """A user in the given groups (chefs/roles.py). The groups are ensured first: a
    transactional test's flush removes what the data migration created."""
    roles_ensure()
    user = UserFactory(**kwargs)
    user.groups.add(*Group.objects.filter(name__in=roles))
    return user
