"""Schemathesis drives the service from the same spec it serves: every operation, every check,
positive and negative inputs, and a stateful run that follows the spec's links."""

import os
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import add_actor, add_organization, make_app

_DIR = Path(tempfile.mkdtemp(prefix="keyhouse-fuzz-"))
APP = make_app(_DIR)
ADMIN = add_actor(APP, add_organization(APP, "fuzz"), "fuzz@example.test", "admin")
# CI runs a quick pass; KEYHOUSE_FUZZ_EXAMPLES=500 digs deeper on a workstation.
EXAMPLES = int(os.environ.get("KEYHOUSE_FUZZ_EXAMPLES", "40"))

schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)
# A negative example can be too big as well as wrong: refusing it with the documented 413 is a
# rejection too, which the check's default list of statuses does not include.
schema.config.checks.negative_data_rejection.expected_statuses.append("413")


@schema.auth()
class BearerKey:
    """The fuzzing admin's key, every operation's common scheme. Given to Schemathesis as auth (not as
    extra headers) so that its own missing- and bad-credential cases stay what they mean to be."""

    def get(self, case, context):
        return ADMIN.key

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case):
    case.call_and_validate()


class Workflow(schema.as_state_machine()):
    pass


TestStatefulWorkflow = Workflow.TestCase
TestStatefulWorkflow.settings = settings(max_examples=max(EXAMPLES // 2, 10), stateful_step_count=6, deadline=None,
                                         suppress_health_check=list(HealthCheck))
