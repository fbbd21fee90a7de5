"""`rca-poller init`: the annotated example with the first source filled in, from flags or prompts."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from click.testing import CliRunner

from poller.cli import main
from poller.config import load_config
from poller.onboarding import Answers, example_config, render_config

GUID = "8d4e2f6a-1b3c-4d5e-9f70-112233445566"


def changed_lines(text: str) -> list[str]:
    diff = difflib.unified_diff(example_config().splitlines(), text.splitlines(), lineterm="", n=0)
    # The value changes; a comment after it on the line stays.
    return [line.split(" #")[0].rstrip() for line in diff if line.startswith("+") and not line.startswith("+++")]


def test_flags_fill_in_the_example_and_keep_its_comments(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    result = CliRunner().invoke(main, [
        "init", "--path", str(target), "--source", "adf-sales", "--workspace-id", GUID, "--credential",
        "managed_identity", "--interval", "2m", "--state", "/var/lib/rca-poller/sales.db", "--metrics-port", "9464",
        "--endpoint", "https://api.loganalytics.us",
    ])
    assert result.exit_code == 0, result.output
    assert "next: rca-poller check" in result.output
    text = target.read_text()
    assert changed_lines(text) == [
        '+  url: "sqlite:///${RCA_POLLER_STATE:-/var/lib/rca-poller/sales.db}"',
        "+  credential: managed_identity",
        "+  adf-sales:",
        f'+    workspace_id: "{GUID}"',
        "+    endpoint: https://api.loganalytics.us",
        "+    interval: 2m",
        "+  port: 9464",
    ]
    config = load_config(target, {})
    source = config.sources["adf-sales"]
    assert (source.workspace_id, source.interval.total_seconds()) == (GUID, 120)
    assert config.state.url == "sqlite:////var/lib/rca-poller/sales.db" and config.metrics.port == 9464
    assert "# how often the daemon ticks this source" in text


def test_prompts_on_a_terminal(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    answers = "\n".join([
        "",  # source name: the default
        "my-workspace", "n", GUID,  # not a GUID: asked again
        "",  # endpoint
        "kerberos", "access_token_env",  # not a credential kind: asked again
        "5m", "", "0",
    ]) + "\n"
    result = CliRunner().invoke(main, ["init", "--path", str(target), "--interactive"], input=answers)
    assert result.exit_code == 0, result.output
    assert "is not a GUID" in result.output
    config = load_config(target, {})
    source = config.sources["adf-prod"]
    assert source.workspace_id == GUID and source.interval.total_seconds() == 300
    assert config.azure.credential == "access_token_env" and config.metrics.port is None


def test_an_answer_that_makes_a_bad_config_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["init", "--path", str(tmp_path / "c.yaml"), "--interval", "soon"])
    assert result.exit_code == 2
    assert "sources.adf-prod.interval: expected a duration such as 60s" in result.output
    assert not (tmp_path / "c.yaml").exists()


def test_a_changed_example_is_caught_not_silently_ignored() -> None:
    with pytest.raises(ValueError, match="no line matching"):
        render_config(Answers(metrics_port=9464), example_config().replace("metrics:", "monitoring:"))
