"""Shared fixtures: an app on an empty database, and a small world of two organizations.

The suite runs on SQLite by default. With KEYHOUSE_TEST_POSTGRES_URL set (scripts/test sets it when a
server answers, and CI requires one), every app gets a fresh PostgreSQL schema of its own instead.

Building an app costs far more than a test body, so the tests share one per process (`app`), emptied
before each test: no test sees another's data, counts or pending writes. A test that needs other
settings makes its own with `make_app`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import create_engine, text

from keyhouse import keys
from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.store import api_keys, organizations
from keyhouse.store.models import Base
from keyhouse.store.session import Store
from tests.helpers import github_keys_file

POSTGRES_URL = os.environ.get("KEYHOUSE_TEST_POSTGRES_URL")
_schemas: list[str] = []

SECRET = b"test-secret-not-for-production"


@dataclass(frozen=True)
class Actor:
    organization_id: str
    user_id: str
    role: str
    key: str
    key_id: str

    @property
    def cloud(self) -> dict:
        return {"Authorization": f"ApiKey {self.key}"}

    @property
    def billing(self) -> dict:
        return {"REB-APIKEY": self.key}

    @property
    def bearer(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True)
class World:
    acme_admin: Actor
    acme_member: Actor
    globex_admin: Actor


def database_url(tmp_path) -> str:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if not POSTGRES_URL:
        return f"sqlite:///{tmp_path}/keyhouse.db"
    schema = f"test_{uuid.uuid4().hex[:16]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    _schemas.append(schema)
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def migrated(url: str) -> str:
    store = Store(url)
    store.upgrade()
    store.dispose()
    return url


def make_app(tmp_path, **overrides):
    """An app on a fresh database. It sends no webhook unless asked (`webhook_sending=True`): the endpoints
    the fuzzer and the OWASP tests register are nobody's; tests/test_webhooks.py sends to a receiver of its own."""
    settings = Settings(database_url=migrated(database_url(tmp_path)), secret=SECRET,
                        **{"webhook_sending": False, **overrides})
    return create_app(settings)


# Modules whose tests drive real servers, generators or browsers: `pytest -m "not slow"` leaves them out
# for a quick inner loop; the README's test command runs everything.
SLOW_MODULES = {"test_fuzz", "test_clients", "test_swagger_ui", "test_faults", "test_concurrency", "test_outage",
                "test_reference_deployment", "test_image", "test_compose"}


def pytest_ignore_collect(collection_path, config):
    """The fuzz builds its app and reads the schema when collected (seconds): not collected at all when the
    run leaves the slow tests out."""
    if collection_path.name == "test_fuzz.py" and "not slow" in (config.getoption("markexpr") or ""):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if {"served", "served_once"} & set(item.fixturenames) or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session, exitstatus):
    """Drop the test schemas, each in a transaction of its own (one transaction for hundreds of schemas
    runs out of PostgreSQL's lock table). Cleaning up never fails the run; a leftover schema is harmless."""
    if not _schemas:
        return
    engine = create_engine(POSTGRES_URL)
    for schema in _schemas:
        try:
            with engine.begin() as connection:
                connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        except Exception as e:  # noqa: BLE001
            print(f"could not drop test schema {schema}: {e}")
    engine.dispose()


def issue_key(session, secret: bytes = SECRET, **fields):
    """(row, plaintext) of a key issued straight into the store, as a test's setup does (no actor)."""
    new = keys.new(secret)
    return api_keys.issue_key(session, api_keys.Hashed(new.hash, new.hint), actor=None, **fields), new.plaintext


def add_actor(app, organization_id: str, email: str, role: str) -> Actor:
    with app.runtime.store.session() as s:
        user = organizations.create_user(s, organization_id, email, role)
        row, plaintext = issue_key(s, organization_id=organization_id, user_id=user.id,
                                   description=f"first key of {email}")
        return Actor(organization_id, user.id, role, plaintext, row.id)


def add_organization(app, name: str) -> str:
    with app.runtime.store.session() as s:
        return organizations.create_organization(s, name).id


@pytest.fixture(scope="session")
def shared_app(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shared")
    application = make_app(directory, github_secret_scanning_keys=github_keys_file(directory))
    yield application
    application.runtime.store.dispose()


def empty(app) -> None:
    """The app as if new: what the recorder holds is written (then deleted with the rest), every row of
    every table deleted (the schema's version kept), and every rate-limit count forgotten."""
    app.runtime.store.require_current()  # a test that moved the schema's version must use an app of its own
    app.runtime.recorder.flush()
    with app.runtime.store.session() as s:
        for table in reversed(Base.metadata.sorted_tables):
            s.execute(table.delete())
    app.runtime.limiter.forget()


@pytest.fixture
def app(shared_app):
    empty(shared_app)
    return shared_app


@pytest.fixture
def client(app):
    with app.test_client() as test_client:
        yield test_client


@pytest.fixture
def world(app) -> World:
    return populated(app)


def populated(app) -> World:
    """Two organizations: acme (an admin and a member) and globex (an admin)."""
    acme = add_organization(app, "acme")
    globex = add_organization(app, "globex")
    return World(
        acme_admin=add_actor(app, acme, "admin@acme.test", "admin"),
        acme_member=add_actor(app, acme, "member@acme.test", "member"),
        globex_admin=add_actor(app, globex, "admin@globex.test", "admin"),
    )


def count_keys(app) -> int:
    from sqlalchemy import func, select

    from keyhouse.store.models import ApiKey

    with app.runtime.store.session() as s:
        return s.scalar(select(func.count()).select_from(ApiKey))


# ------------------------------------------------------------------ a real server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(directory):
    """A bootstrapped database in `directory`, its admin key, and `start`, which serves it (as many servers
    as a test starts, all stopped at the end)."""
    env = {**os.environ, "KEYHOUSE_DATABASE_URL": database_url(directory),
           "KEYHOUSE_SECRET_FILE": str(directory / "secret")}
    env.pop("KEYHOUSE_FORWARDED_ALLOW_IPS", None)
    boot = subprocess.run([sys.executable, "-m", "keyhouse.cli", "bootstrap", "--organization", "o",
                           "--email", "a@o.test"], env=env, capture_output=True, text=True, check=True)
    key = json.loads(boot.stdout.strip().splitlines()[-1])["key"]
    servers = []

    def start(*flags, **environment):
        """A server (flags and environment variables of its own on top); its output (JSON log lines) goes
        to directory / f"server-{port}.log"."""
        port = _free_port()
        log = directory / f"server-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "keyhouse.cli", "serve", "--port", str(port), *flags],
                                    env={**env, **environment}, stdout=out, stderr=subprocess.STDOUT)
        servers.append(proc)
        base = f"http://127.0.0.1:{port}/api/v1"
        for _ in range(100):
            try:
                httpx.get(f"{base}/openapi.json", timeout=1)
                return base
            except httpx.TransportError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(log.read_text())

    start.processes = servers  # for tests that signal a server or its workers
    start.log_of = lambda base: directory / f"server-{base.split(':')[2].split('/')[0]}.log"  # a server's output
    try:
        yield key, start
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def served(tmp_path):
    """A server of the test's own (for tests that change how it runs, or read its whole log)."""
    with serving(tmp_path) as served:
        yield served


@pytest.fixture(scope="module")
def served_once(tmp_path_factory):
    """One server for a module whose tests each make what they need on it (their own keys), and read
    nothing of its log: starting a server is most of such a test's time."""
    with serving(tmp_path_factory.mktemp("served")) as served:
        yield served


# ------------------------------------------------------------------ a real browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and Debian's chromium and chromium-driver are not installed")
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


# ------------------------------------------------------------------ the image (scripts/image)

IMAGE_TOOLS = ("mmdebstrap", "buildah", "podman")


def machine_containers_conf(directory) -> dict[str, str]:
    """The environment every podman call of the tests runs with: a containers.conf for this kind of machine,
    where crun refuses the cgroups (so runc) and the default limits are above what a container may have
    here. Operators' machines need none of it; the README's commands are run with it, unchanged."""
    conf = directory / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
                    '[engine]\nruntime = "runc"\n')
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def needs_image_tools() -> None:
    """The image is built and run in the PostgreSQL leg (it takes a minute, and runs against PostgreSQL and
    Redis); under CI=true, missing tools fail it (.ci/run installs them)."""
    if not POSTGRES_URL:
        pytest.skip("the PostgreSQL leg builds and runs the image")
    missing = [tool for tool in IMAGE_TOOLS if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {missing} are missing: .ci/run installs them")
        pytest.skip(f"building the image needs {missing} (Debian's packages)")


@pytest.fixture(scope="session")
def keyhouse_image(tmp_path_factory):
    """keyhouse's image, built once by scripts/image, and the environment to run podman in."""
    needs_image_tools()
    env = machine_containers_conf(tmp_path_factory.mktemp("podman"))
    tag = f"localhost/keyhouse-test:{uuid.uuid4().hex[:8]}"
    built = subprocess.run(["bash", "scripts/image", tag], cwd=os.path.dirname(os.path.dirname(__file__)),
                           capture_output=True, text=True, env=env, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    yield tag, env
    subprocess.run(["podman", "rmi", "-f", tag], env=env, capture_output=True, timeout=120)
