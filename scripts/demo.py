"""The walk-through from DESIGN.md against the running local stack (`make demo` runs it).

Legacy POST Alton Brown, new-API POST Bobby Flay, and both lists end with both chefs:
Bobby was written only to DynamoDB and reached MySQL through stream -> relay -> SQS ->
worker; Alton was written only to MySQL and reached DynamoDB through the outbox. Then a
legacy edit shows up in the new API. Every request and response is printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = os.environ.get("DEMO_BASE_URL", "http://127.0.0.1:8000")
PY = sys.executable


def manage(*args: str) -> str:
    result = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def token() -> str:
    env = {**os.environ, "DJANGO_SUPERUSER_PASSWORD": "demo-password-123"}
    subprocess.run(
        [
            PY,
            "manage.py",
            "createsuperuser",
            "--noinput",
            "--username",
            "demo",
            "--email",
            "demo@example.com",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=False,
    )  # fails harmlessly when the user exists
    out = manage("drf_create_token", "demo")
    return out.split()[2]  # "Generated token <key> for user demo"


class Client:
    def __init__(self, key: str) -> None:
        self.headers = {"Authorization": f"Token {key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict | None = None, *, quiet=False):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(BASE + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        payload = json.loads(text) if text else None
        if not quiet:
            print(f"\n$ {method} {path}" + (f"  {json.dumps(body)}" if body else ""))
            print(f"  -> {status}  {json.dumps(payload, ensure_ascii=False)}")
        return status, payload


def wait_for(what: str, check, timeout: float = 60.0):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        value = check()
        if value:
            print(f"  ({what}: after {time.monotonic() - start:.2f}s)")
            return value
        time.sleep(0.2)
    raise SystemExit(f"demo: gave up waiting for {what} after {timeout}s")


def names(rows) -> set[tuple[str, str]]:
    return {(r["firstName"], r["lastName"]) for r in rows}


def main() -> None:
    api = Client(token())
    step = iter(range(1, 100))

    def title(text: str) -> None:
        print(f"\n=== {next(step)}. {text}")

    title("Database status (the legacy 'initialise' endpoint; migrations made the schema)")
    api.call("GET", "/aurora/")
    title("List legacy chefs (empty)")
    _, rows = api.call("GET", "/aurora/chefs")
    assert rows == [], rows
    title("POST Alton Brown to the legacy API (MySQL)")
    status, alton = api.call("POST", "/aurora/chefs", {"firstName": "Alton", "lastName": "Brown"})
    assert status == 201
    title("List legacy chefs (Alton)")
    api.call("GET", "/aurora/chefs")
    title("List dynamo chefs: Alton arrives through the outbox")
    wait_for(
        "Alton published to DynamoDB",
        lambda: ("Alton", "Brown") in names(api.call("GET", "/dynamo/chefs", quiet=True)[1]),
    )
    api.call("GET", "/dynamo/chefs")
    title("POST Bobby Flay to the new API (DynamoDB only)")
    status, _ = api.call("POST", "/dynamo/chefs", {"firstName": "Bobby", "lastName": "Flay"})
    assert status == 201
    title("List dynamo chefs (Alton and Bobby)")
    api.call("GET", "/dynamo/chefs")
    title("List legacy chefs: Bobby arrives through stream -> relay -> SQS -> worker")
    wait_for(
        "Bobby applied to MySQL",
        lambda: ("Bobby", "Flay") in names(api.call("GET", "/aurora/chefs", quiet=True)[1]),
    )
    _, rows = api.call("GET", "/aurora/chefs")
    assert names(rows) == {("Alton", "Brown"), ("Bobby", "Flay")}, rows
    title("Edit Alton in the legacy API; the edit shows up in the new API")
    api.call("PATCH", f"/aurora/chefs/{alton['id']}", {"lastName": "Brown Jr"})
    wait_for(
        "the edit published to DynamoDB",
        lambda: ("Alton", "Brown Jr") in names(api.call("GET", "/dynamo/chefs", quiet=True)[1]),
    )
    api.call("GET", "/dynamo/chefs")
    sql = "SELECT id, cheffirst, cheflast, chef_id FROM cheftable ORDER BY id"
    title(f"What a legacy reader sees: {sql}")
    print(
        manage(
            "shell",
            "--no-imports",
            "-c",
            (
                "from django.db import connection\n"
                "cur = connection.cursor()\n"
                f"cur.execute({sql!r})\n"
                "[print('  ', row) for row in cur.fetchall()]"
            ),
        ).rstrip()
    )
    print(
        "\ndemo: OK — both directions synced. Admin: " + BASE + "/admin/ (demo / demo-password-123)"
    )


if __name__ == "__main__":
    main()
