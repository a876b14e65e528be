"""What operators deploy, checked as far as this machine can: the systemd units (deploy/systemd)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
UNITS = ("keyhouse.service", "keyhouse-upgrade.service")
INSTALLED = "/opt/keyhouse/bin/keyhouse"
# What a security reviewer expects of a network service that writes one directory.
SANDBOX = {"DynamicUser": "yes", "StateDirectory": "keyhouse", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
           "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
           "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "SystemCallFilter": "@system-service"}


def _directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (SYSTEMD / unit).read_text().splitlines():
        if match := re.fullmatch(r"(\w+)=(.*)", line.strip()):
            found.setdefault(match[1], []).append(match[2])
    return found


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` on both units, their keyhouse command pointed at this checkout's (verify
    wants the executable to exist)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and systemd-analyze is missing: .ci/run installs systemd")
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    keyhouse = Path(sys.executable).with_name("keyhouse")
    assert keyhouse.exists(), keyhouse
    for unit in UNITS:
        (tmp_path / unit).write_text((SYSTEMD / unit).read_text().replace(INSTALLED, str(keyhouse)))
    checked = subprocess.run([analyze, "verify", *(str(tmp_path / unit) for unit in UNITS)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), \
        checked.stdout + checked.stderr


def test_the_service_is_sandboxed_and_the_upgrade_runs_in_the_same_sandbox():
    """keyhouse.service writes only its state directory, as a user of its own, with no privilege to gain;
    keyhouse-upgrade.service (the schema, once per release) runs as the same user, with the same settings
    and sandbox: every directive but what each runs and when is the same in both files."""
    service, upgrade = (_directives(unit) for unit in UNITS)
    for name, value in SANDBOX.items():
        assert value in service.get(name, []), (name, service.get(name))
    assert service["ExecStart"] == [f"{INSTALLED} serve --host 127.0.0.1 --port 8080 --workers 2"]
    assert upgrade["ExecStart"] == [f"{INSTALLED} db upgrade"] and upgrade["Type"] == ["oneshot"]
    own = {"ExecStart", "Type", "Description", "After", "Wants", "Restart", "RestartSec",
           "KillSignal", "TimeoutStopSec", "WantedBy"}
    assert {k: v for k, v in service.items() if k not in own} == {k: v for k, v in upgrade.items() if k not in own}


@pytest.mark.slow
def test_both_packages_build_and_pass_twine_check(tmp_path):
    """keyhouse and keyhouse-client, sdist and wheel, built as a release would build them and checked as
    PyPI would check them; keyhouse's wheel carries the contract and its version is the contract's."""
    import yaml

    root = SYSTEMD.parent.parent
    for project in (root, root / "clients" / "python"):
        built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
                                "--outdir", str(tmp_path), str(project)], capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    made = sorted(path.name for path in tmp_path.iterdir())
    version = yaml.safe_load((root / "openapi" / "keyhouse.yaml").read_text())["info"]["version"]
    assert f"keyhouse-{version}-py3-none-any.whl" in made and f"keyhouse-{version}.tar.gz" in made, made
    assert any(name.startswith("keyhouse_client-") and name.endswith(".whl") for name in made), made
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, tmp_path.iterdir())],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    import zipfile

    with zipfile.ZipFile(tmp_path / f"keyhouse-{version}-py3-none-any.whl") as wheel:
        assert "keyhouse/openapi/keyhouse.yaml" in wheel.namelist()
