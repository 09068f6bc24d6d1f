"""The synthesised template keeps the logical IDs and properties of the deployed stack.

CloudFormation identifies a resource by its logical ID, and CDK derives that ID from the
construct's path: moving the table, the Aurora cluster, a queue or the bucket under another
construct gives it a new ID, and the next deploy creates a new one and deletes the old
(data lost). A changed property may replace a resource too. So the template is compared
with `fixtures/template_before_constructs.json`, synthesised before `stack.py` was split
into parts (issue 18), for both syntheses of `test_cdk_stack.py` (asset image, CI images).

Asset hashes (Lambda code, Docker image) are replaced by a placeholder: they change with
any file of the project, not with the stack.

A change to the template that is meant (a new resource, a new property, a CDK upgrade that
adds a default) rewrites the fixture, and the diff of the fixture is then reviewed:

    .venv/bin/python -m tests.deploy.test_stack_constructs --write
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("aws_cdk", reason="needs the deploy extra (aws-cdk-lib)")

from aws_cdk.assertions import Template  # noqa: E402

from tests.deploy.test_cdk_stack import CI_CONTEXT, _deploy_module  # noqa: E402

pytestmark = pytest.mark.deploy

FIXTURE = Path(__file__).parent / "fixtures" / "template_before_constructs.json"
CONTEXTS = {"asset": {"lambdaDeps": "none"}, "ci": CI_CONTEXT}
ASSET_HASH = re.compile(r"\b[0-9a-f]{64}\b")
# Resources whose replacement loses data or breaks what points at them (named in failures).
STATEFUL = {
    "AWS::DynamoDB::Table",
    "AWS::RDS::DBCluster",
    "AWS::RDS::DBInstance",
    "AWS::SQS::Queue",
    "AWS::S3::Bucket",
    "AWS::SecretsManager::Secret",
}


def _normalise(value):
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, str):
        return ASSET_HASH.sub("<asset-hash>", value)
    return value


def synthesised(context: dict, outdir: str) -> dict:
    """The stack's template as CloudFormation sees it, asset hashes normalised."""
    backsync_stack, _ = _deploy_module()
    _, stack = backsync_stack.make_app(context, outdir=outdir)
    template = Template.from_stack(stack).to_json()
    for resource in template["Resources"].values():
        # Construct paths (aws:cdk:path) name the code, not the resource; CloudFormation
        # ignores them. Not emitted in-process today; dropped should that change.
        resource.pop("Metadata", None)
    return _normalise(template)


def write_fixture() -> None:
    with tempfile.TemporaryDirectory() as outdir:
        templates = {name: synthesised(ctx, outdir) for name, ctx in CONTEXTS.items()}
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(templates, indent=1, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def before() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module", params=sorted(CONTEXTS))
def now_and_before(request, before, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("cdk.out")
    return synthesised(CONTEXTS[request.param], str(outdir)), before[request.param]


def _ids(template: dict) -> dict[str, str]:
    return {lid: res["Type"] for lid, res in template["Resources"].items()}


def test_every_resource_keeps_its_logical_id_and_type(now_and_before):
    now, before = (_ids(t) for t in now_and_before)
    gone = {lid: t for lid, t in before.items() if now.get(lid) != t}
    new = {lid: t for lid, t in now.items() if before.get(lid) != t}
    stateful_gone = {lid: t for lid, t in gone.items() if t in STATEFUL}
    assert not stateful_gone, (
        f"a deploy would REPLACE these (new logical id or type: data loss): {stateful_gone}; "
        f"new ids: {new}"
    )
    assert (gone, new) == ({}, {}), "logical ids changed: a deploy replaces these resources"


def test_every_resource_keeps_its_properties_and_policies(now_and_before):
    now, before = now_and_before
    changed = sorted(
        lid
        for lid, res in before["Resources"].items()
        if lid in now["Resources"] and now["Resources"][lid] != res
    )
    if changed:
        first_now, first_before = now["Resources"][changed[0]], before["Resources"][changed[0]]
        keys = sorted(
            k
            for k in first_now.keys() | first_before.keys()
            if first_now.get(k) != first_before.get(k)
        )
        pytest.fail(f"changed: {changed}; {changed[0]} differs in {keys}")
    # Same ids (test above) and same resources: the rest of the template too.
    assert {k: v for k, v in now.items() if k != "Resources"} == {
        k: v for k, v in before.items() if k != "Resources"
    }


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python -m tests.deploy.test_stack_constructs --write\n\n{__doc__}")
    write_fixture()
    print(f"wrote {FIXTURE}")
