"""Developer machine: debug on by default and a throwaway secret key.

After `make up`, the stack's environment (its moto endpoint, credentials, database) is in
`.run/env`; it is read here, before the base settings, so that `manage.py` in any shell
reaches that stack instead of real AWS. Variables already set in the environment win.
"""

from pathlib import Path

import environ

_STACK_ENV = Path(__file__).resolve().parents[2] / ".run" / "env"
if _STACK_ENV.is_file():
    environ.Env.read_env(str(_STACK_ENV))

from .base import *  # noqa: E402, F403
from .base import env  # noqa: E402

# Where `make up` writes its environment; also tells syncer's system check (syncer.W001)
# that these are local settings, where no AWS_ENDPOINT_URL means a stack not found.
LOCAL_STACK_ENV_FILE = str(_STACK_ENV)

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="local-insecure-secret-key-change-me")
