"""The handlers: one module per resource, one function per operationId, named for it in snake case.

HANDLERS is the whole map from the spec's operationIds to the functions that serve them. keyhouse.app
routes by it, and refuses to start when an operation of the spec has no handler here or a handler here
has no operation. A handler that needs the process (the store, the settings, the policy) takes it as
`rt`, handed to it when the app is made (`handed`): no handler reaches for it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from ..runtime import Runtime
from ..store.session import retrying
from . import (
    audit,
    billing,
    cloud_keys,
    key_changes,
    keys,
    leaks,
    operations,
    platform_apis,
    rotation,
    tokens,
    traffic_filters,
    usage,
    verification,
    webhooks,
    workspace,
)

HANDLERS: dict[str, Callable] = {
    # cloud family: API keys
    "getApiKeys": cloud_keys.get_api_keys,
    "createApiKey": cloud_keys.create_api_key,
    "deleteApiKeys": cloud_keys.delete_api_keys,
    "getApiKey": cloud_keys.get_api_key,
    "deleteApiKey": cloud_keys.delete_api_key,
    "getUsersApiKeys": cloud_keys.get_users_api_keys,
    "deleteUsersApiKeys": cloud_keys.delete_users_api_keys,
    "getUserApiKeys": cloud_keys.get_user_api_keys,
    "deleteUserApiKeys": cloud_keys.delete_user_api_keys,
    "getUserApiKey": cloud_keys.get_user_api_key,
    "deleteUserApiKey": cloud_keys.delete_user_api_key,
    # cloud family: traffic-filter rulesets
    "getTrafficFilterRulesets": traffic_filters.get_traffic_filter_rulesets,
    "createTrafficFilterRuleset": traffic_filters.create_traffic_filter_ruleset,
    "getTrafficFilterRuleset": traffic_filters.get_traffic_filter_ruleset,
    "updateTrafficFilterRuleset": traffic_filters.update_traffic_filter_ruleset,
    "deleteTrafficFilterRuleset": traffic_filters.delete_traffic_filter_ruleset,
    "getTrafficFilterRulesetDeploymentAssociations": traffic_filters.get_traffic_filter_ruleset_deployment_associations,
    "createTrafficFilterRulesetAssociation": traffic_filters.create_traffic_filter_ruleset_association,
    "deleteTrafficFilterRulesetAssociation": traffic_filters.delete_traffic_filter_ruleset_association,
    "getTrafficFilterDeploymentRulesetAssociations": traffic_filters.get_traffic_filter_deployment_ruleset_associations,
    # billing family
    "getApiKeyCollection": billing.get_api_key_collection,
    "postApiKey": billing.post_api_key,
    "getApiKeyResource": billing.get_api_key_resource,
    "putApiKeyResource": billing.put_api_key_resource,
    "deleteApiKeyResource": billing.delete_api_key_resource,
    # workspace family
    "listMyApiKeys": workspace.list_my_api_keys,
    "createMyApiKey": workspace.create_my_api_key,
    "getMyApiKey": workspace.get_my_api_key,
    "revokeMyApiKey": workspace.revoke_my_api_key,
    "revokeCurrentApiKey": workspace.revoke_current_api_key,
    # keyhouse's own
    "listKeys": keys.list_keys,
    "createKey": keys.create_key,
    "getKey": keys.get_key,
    "updateKey": keys.update_key,
    "revokeKey": keys.revoke_key,
    "lookupKey": keys.lookup_key,
    "verifyKey": verification.verify_key,
    "listKeyChanges": key_changes.list_key_changes,
    "rerollKey": rotation.reroll_key,
    "createAuthToken": tokens.create_auth_token,
    "listAuditEvents": audit.list_audit_events,
    "reportGithubLeaks": leaks.report_github_leaks,
    "getLeakPolicy": leaks.get_leak_policy,
    "setLeakPolicy": leaks.set_leak_policy,
    "listWebhooks": webhooks.list_webhooks,
    "createWebhook": webhooks.create_webhook,
    "deleteWebhook": webhooks.delete_webhook,
    "rotateWebhookSecret": webhooks.rotate_webhook_secret,
    "listWebhookDeliveries": webhooks.list_webhook_deliveries,
    "replayWebhookDelivery": webhooks.replay_webhook_delivery,
    "getKeyUsage": usage.get_key_usage,
    "listUsage": usage.list_usage,
    # the organizations' own APIs
    "listPlatformApis": platform_apis.list_platform_apis,
    "createPlatformApi": platform_apis.create_platform_api,
    "getPlatformApi": platform_apis.get_platform_api,
    "replacePlatformApi": platform_apis.replace_platform_api,
    "deletePlatformApi": platform_apis.delete_platform_api,
    # operators
    "getHealth": operations.get_health,
    "getReadiness": operations.get_readiness,
    "getMetrics": operations.get_metrics,
}


def handed(rt: Runtime, handler: Callable) -> Callable:
    """The handler with the app's runtime handed to it (a handler that needs the process takes `rt`):
    what Connexion calls for its operation, and what the console calls.

    A plain (sync) handler's work is its unit of work: when it loses a deadlock or a serialization conflict
    nothing of it committed, and it is run again (`store.session.retrying`); an async handler's writes go
    through `Store.write`, which retries them itself."""
    if "rt" not in inspect.signature(handler).parameters:
        return handler
    if not inspect.iscoroutinefunction(handler):
        handler = _retried(handler)
    bound = functools.partial(handler, rt=rt)
    bound.__name__ = handler.__name__  # type: ignore[attr-defined]
    bound.__doc__ = handler.__doc__
    return bound


def _retried(handler: Callable) -> Callable:
    @functools.wraps(handler)
    def retried(*args, **kwargs):  # type: ignore[no-untyped-def]
        return retrying(lambda: handler(*args, **kwargs))

    return retried
