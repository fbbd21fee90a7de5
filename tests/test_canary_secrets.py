"""Canary secrets in error text, parameters and URLs of a real-shaped row never leave the process or the store:
not to the LLM, not into a ticket, a list/show output, a log line, or the state file itself."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from poller.azure_auth import build_credential
from poller.cli import main
from poller.config import RcaConfig
from poller.emulators.log_analytics import LogAnalyticsEmulator
from poller.emulators.openai_api import OpenAIEmulator
from poller.incidents import Processor
from poller.pipeline import tick
from poller.rca import RcaEngine
from poller.sources import build_sources
from tests.conftest import Clock, activity_row, la_config

CANARY = "CANARYx7Q2"
DAPI = "dapica9a7e5123456789abcdef0123456789"  # a PAT is dapi + 32 hex digits: the canary here is its hex body
SECRETS = [
    f"https://stsales.blob.core.windows.net/landing/orders.csv?sv=2022-11-02&se=2026-12-01&sp=r&sig={CANARY}sig%3D",
    f"Server=tcp:sql-sales.database.windows.net;Database=sales;User ID=etl;Password={CANARY}pw;",
    f"DefaultEndpointsProtocol=https;AccountName=stsales;AccountKey={CANARY}key==;EndpointSuffix=core.windows.net",
    f"Authorization: Bearer {CANARY}eyJhbGciOiJSUzI1NiJ9tokentokentoken",
    f"https://etl:{CANARY}url@repo.contoso.com/simple",
    f"databricks token {DAPI}",
]


def test_canaries_never_leave(tmp_path: Path, la: LogAnalyticsEmulator, clock: Clock,
                              monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    at = clock.now - timedelta(minutes=30)
    message = ("Failure happened on 'Source' side. ErrorCode=UserErrorFailedFileOperation,'Message=Upload failed: "
               + " | ".join(SECRETS) + "'")
    row = activity_row("Copy_SalesOrders", run_id="5d7f9a1c-3e5b-4a9c-8e1b-7a9c1e3b5d7f", at=at, ingested=at,
                       ErrorMessage=message, Error=json.dumps({"errorCode": "2200", "message": message}),
                       Input=json.dumps({"source": {"sasUri": SECRETS[0]}, "connection": SECRETS[1]}))
    row["PipelineParameters"] = json.dumps({"storageKey": SECRETS[2], "token": f"{CANARY}param"})
    la.add_rows("ADFActivityRun", [row])
    config = la_config(tmp_path, la)
    store_url = config.state.url
    (source,) = build_sources(config, build_credential(config.azure))
    from poller.store import Store

    store = Store(store_url)
    assert tick(source, store, clock.now).added == 1
    with OpenAIEmulator() as llm:
        monkeypatch.setenv("OPENAI_API_KEY", llm.api_key)
        rca = RcaConfig(provider="openai", base_url=llm.url + "/v1", max_retries=0)
        Processor(engine=RcaEngine(rca)).run(store, clock.now)
        assert llm.count() == 1
        assert CANARY not in json.dumps([r.body_text for r in llm.requests])
        assert DAPI not in json.dumps([r.body_text for r in llm.requests])
    store.close()

    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(json.loads(config.model_dump_json())))  # YAML is a superset of JSON
    runner = CliRunner()
    outputs = [
        runner.invoke(main, ["failures", "list", "--config", str(config_path), "--format", "json", "--raw"]).output,
        runner.invoke(main, ["failures", "list", "--config", str(config_path)]).output,
        runner.invoke(main, ["incidents", "list", "--config", str(config_path), "--format", "json"]).output,
        runner.invoke(main, ["incidents", "show", "1", "--config", str(config_path), "--format", "json"]).output,
        runner.invoke(main, ["incidents", "show", "1", "--config", str(config_path)]).output,
        runner.invoke(main, ["tickets", "list", "--config", str(config_path), "--format", "json"]).output,
    ]
    assert "REDACTED" in outputs[0]
    for output in outputs:
        assert CANARY not in output and DAPI not in output
    assert CANARY not in caplog.text and DAPI not in caplog.text
    state = Path(store_url.removeprefix("sqlite:///")).read_bytes()
    assert CANARY.encode() not in state and DAPI.encode() not in state
