"""Django's admin autodiscovery imports `<app>.admin`; the registrations live with the other
operator surfaces in `syncer.ops.admin`."""

from syncer.ops import admin  # noqa: F401
