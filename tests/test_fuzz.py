"""Schemathesis drives the service from the same spec it serves: every operation, every check,
positive and negative inputs, and a stateful run that follows the spec's links."""

import os
import tempfile
from pathlib import Path

import schemathesis
from sqlalchemy import delete, select, update
from hypothesis import HealthCheck, settings

from keyhouse.store.models import ApiKey, Association, AuditEvent, Organization, Ruleset
from tests.conftest import add_actor, add_organization, make_app

_DIR = Path(tempfile.mkdtemp(prefix="keyhouse-fuzz-"))
# Limits it never reaches: whether a long run meets a 429 would depend on timing, and Hypothesis needs
# every example to be generated the same way given the same choices (rate limits have their own tests).
APP = make_app(_DIR, rate_limit="1000000/second", organization_rate_limit="1000000/second",
               refused_credential_limit="1000000/second")
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


def _admin_key_row() -> dict:
    with APP.runtime.store.session() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.id == ADMIN.key_id)).one()
        return {column: getattr(row, column) for column in _RESTORED}


# What a run may change of the admin's own key (revoke it, reroll it, edit it), put back after each example.
_RESTORED = ("key_hash", "key_hint", "previous_key_hash", "previous_valid_until", "revoked_at", "expires_at",
             "description", "permissions", "acl", "allowed_ips", "type", "api_user")
_ADMIN_ROW = _admin_key_row()


class Workflow(schema.as_state_machine()):
    def teardown(self):
        """Every example starts from the same database (the admin's key as it was, too), so that which
        links can be followed never depends on what earlier examples left behind."""
        with APP.runtime.store.session() as s:
            s.execute(delete(Association))
            s.execute(delete(Ruleset))
            s.execute(delete(AuditEvent))
            s.execute(delete(ApiKey).where(ApiKey.id != ADMIN.key_id))
            s.execute(update(ApiKey).where(ApiKey.id == ADMIN.key_id).values(**_ADMIN_ROW))
            s.execute(update(Organization).values(live_keys=1))


TestStatefulWorkflow = Workflow.TestCase
TestStatefulWorkflow.settings = settings(max_examples=max(EXAMPLES // 2, 10), stateful_step_count=6, deadline=None,
                                         suppress_health_check=list(HealthCheck))
