"""Webhooks: telling an organization's endpoints of its keys' lives, as Standard Webhooks specifies.

Every worker runs a sender (`Webhooks.run`): every POLL_SECONDS it turns the outbox's pending events into
deliveries and claims those that are due (keyhouse.store.webhooks), then posts each, signed: headers
`webhook-id` (the delivery's, the same on every try), `webhook-timestamp` and `webhook-signature` (HMAC-SHA256
of `id.timestamp.body` under each of the endpoint's secrets: the current one, and for a day after a
rotation the previous one too), made by the `standardwebhooks` library. A 2xx delivers it; anything else
(or no answer in TIMEOUT_SECONDS) is tried again after RETRY_DELAYS, for a day, then it has failed. Kept in
the database from the change's own transaction to its 2xx: a sender killed mid-send loses nothing (its claim
lapses and the delivery is sent again: at least once, so endpoints deduplicate by `webhook-id`).

Endpoints are the platform's own servers on the internet: an address that is loopback, private, link-local
or otherwise not global is refused, when the endpoint is registered and again on every send (a name that
resolves to one), unless KEYHOUSE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES says this deployment's endpoints are inside.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from anyio import to_thread
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from standardwebhooks.webhooks import Webhook

from . import credits
from .store import webhooks as store
from .store.models import ApiKey, utcnow
from .store.session import Store, retrying

log = logging.getLogger("keyhouse.webhooks")

POLL_SECONDS = 0.5
# How often the keys about to expire, or low on credits, are looked for (key.expiring, key.credits_low).
SCHEDULED_EVERY = timedelta(minutes=1)
SENDS_AT_ONCE = 20
TIMEOUT_SECONDS = 10.0
TRIES_FOR = timedelta(days=1)
# After the 1st failed try, the 2nd, ...: then every 8 hours until the day is over.
RETRY_DELAYS = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)
SECRET_OVERLAP = timedelta(days=1)  # how long a rotated-away secret keeps signing

Resolve = Callable[[str], Awaitable[list[str]]]  # a host name -> the addresses it resolves to


def new_secret() -> str:
    """A signing secret in Standard Webhooks' form: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Sealer:
    """Seals signing secrets for the database under keys derived from the server's secrets (the current
    one seals; any opens, so a rotation of the server secret keeps every endpoint's secret readable)."""

    def __init__(self, server_secrets: tuple[bytes, ...]):
        self._fernet = MultiFernet([Fernet(base64.urlsafe_b64encode(HKDF(
            hashes.SHA256(), 32, salt=None, info=b"keyhouse webhook signing secrets").derive(secret)))
            for secret in server_secrets])

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        return self._fernet.decrypt(sealed.encode()).decode()


def refused_address(url: str, allow_private: bool) -> str | None:
    """Why an endpoint's URL may not be registered (its host a literal address that is not global, or a
    name of this machine), or None."""
    try:
        parts = urlsplit(url)
        host, _ = (parts.hostname or "").rstrip(".").lower(), parts.port
    except ValueError as e:  # a bracketed host that is no IPv6 address, a port that is no number
        return f"not a URL ({e})"
    if not host:
        return "no host"
    if allow_private:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: checked on every send, against what it resolves to then
    return None if address.is_global else f"{address} is not a public address"


def retry_at(attempts: int, created_at: datetime) -> datetime | None:
    """When to try a delivery again after its `attempts`-th failed try; None once its day is over."""
    again = utcnow() + timedelta(seconds=RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1])
    return again if again < created_at + TRIES_FOR else None


class Webhooks:
    """The sender of one worker (several workers and hosts share the work through the database)."""

    def __init__(self, store_: Store, sealer: Sealer, allow_private: bool,
                 transport: httpx.AsyncBaseTransport | None = None, resolve: Resolve | None = None):
        self.store, self.sealer, self.allow_private, self.transport = store_, sealer, allow_private, transport
        self.resolve = resolve or _addresses
        self._scheduled_at: datetime | None = None

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False,
                                     transport=self.transport) as client:
            while True:
                sent = 0
                try:
                    sent = await self.once(client)
                except Exception as e:  # noqa: BLE001 - the next round tries again, whatever went wrong
                    log.warning("webhook round failed (%s); trying again", type(e).__name__)
                if sent < SENDS_AT_ONCE:  # a full round: more may be due at once
                    await asyncio.sleep(POLL_SECONDS)

    async def once(self, client: httpx.AsyncClient, now: datetime | None = None) -> int:
        """One round: the outbox dispatched and the due deliveries claimed (one transaction), sent at once,
        and what each endpoint answered recorded (one transaction): a round's writes are two, however many
        it sends, since on SQLite every write waits for the one before."""
        now = now or utcnow()
        due = await to_thread.run_sync(lambda: retrying(lambda: self._dispatch_and_claim(now)))
        answers = await asyncio.gather(*(self._send(client, delivery) for delivery in due))
        if answers:
            await to_thread.run_sync(lambda: retrying(lambda: self._settle(answers)))
        return len(due)

    def _dispatch_and_claim(self, now: datetime) -> list[store.Due]:
        with self.store.session() as s:
            while store.dispatch(s, now) == store.DISPATCH_BATCH:
                pass
            if self._scheduled_at is None or now - self._scheduled_at >= SCHEDULED_EVERY:
                store.scheduled(s, now, _credits_left)
                self._scheduled_at = now
            return store.claim(s, now, SENDS_AT_ONCE)

    async def _send(self, client: httpx.AsyncClient, due: store.Due) -> tuple[int, int | None, str | None]:
        """(delivery, the endpoint's status or None, why it failed or None)."""
        status, error = None, None
        try:
            if (why := await self._unreachable(due.url)) is not None:
                raise ValueError(why)
            headers = self._signed(due)
            answer = await client.post(due.url, content=due.payload.encode(), headers=headers)
            status = answer.status_code
            error = None if 200 <= status < 300 else f"answered {status}"
        except (httpx.HTTPError, OSError, ValueError, InvalidToken) as e:
            error = f"{type(e).__name__}: {e}"[:255]
        return due.id, status, error

    def _settle(self, answers: list[tuple[int, int | None, str | None]]) -> None:
        with self.store.session() as s:
            for delivery_id, status, error in sorted(answers):
                store.settle(s, delivery_id, utcnow(), status, error, retry_at)

    def _signed(self, due: store.Due) -> dict[str, str]:
        message_id, at = f"msg_{due.id}", utcnow()
        body = due.payload.encode()
        signatures = [Webhook(self.sealer.open(sealed)).sign(message_id, at, body) for sealed in due.secrets_sealed]
        return {"webhook-id": message_id, "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": " ".join(signatures), "content-type": "application/json",
                "user-agent": "keyhouse-webhooks"}

    async def _unreachable(self, url: str) -> str | None:
        """Why the URL's host may not be sent to now (what its name resolves to), or None."""
        if (why := refused_address(url, self.allow_private)) is not None or self.allow_private:
            return why
        host = urlsplit(url).hostname or ""
        for address in await self.resolve(host):
            if not ipaddress.ip_address(address.split("%")[0]).is_global:
                return f"{host} resolves to {address}, not a public address"
        return None


def _credits_left(key: ApiKey, now: datetime) -> int | None:
    return credits.left(key.credits_remaining, key.credits_refill_amount, key.credits_refill_seconds,
                        key.credits_refilled_at, now)


async def _addresses(host: str) -> list[str]:
    """The addresses a name resolves to now."""
    found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(address[0]) for *_, address in found]
