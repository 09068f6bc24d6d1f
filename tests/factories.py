import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from chefs.models import Chef
from chefs.roles import roles_ensure
from syncer.models import FailedChange, OutboxEntry


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


def user_with_roles(*roles: str, **kwargs):
    """A user in the given groups (chefs/roles.py). The groups are ensured first: a
    transactional test's flush removes what the data migration created."""
    roles_ensure()
    user = UserFactory(**kwargs)
    user.groups.add(*Group.objects.filter(name__in=roles))
    return user
