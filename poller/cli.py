"""The ``rca-poller`` command: parse, call, print (DESIGN §5 fixes the commands and exit codes)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from poller.cli_common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    err_console,
    fail,
    format_option,
    open_config,
    open_store,
)
from poller.cli_incidents import incidents
from poller.config import DEFAULT_CONFIG_PATH, Config, load_config
from poller.errors import ConfigError, ExtractError, PollerError
from poller.extractors import extract
from poller.incidents import build_processor
from poller.logs import setup_logging
from poller.models import Failure
from poller.onboarding import CREDENTIALS
from poller.pipeline import TickResult, process, resume_pending, tick
from poller.rca.redact import redacted
from poller.remediation.cli import remediations
from poller.render import (
    console,
    print_failures,
    print_remote_tickets,
    print_sink_status,
    print_status,
    print_tick_results,
    print_tickets,
    ticket_json,
)
from poller.sources import build_sources
from poller.store import Store


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rca-poller")
def main() -> None:
    """Pull data-platform failures, pin down the exact error, and track them."""


wait_option = click.option("--wait", is_flag=True, help="Wait for another process to release the state store.")


@main.command()
@config_option
@click.option("--source", "only", help="Tick only this source.")
@wait_option
def once(config_path: str, only: str | None, wait: bool) -> None:
    """One tick of every source, then process, then exit (for cron and timers)."""
    config = open_config(config_path)
    check_source_name(config, config_path, only)
    with owned(config, wait):
        store = open_store(config)
        try:
            results = run_once(config, store, datetime.now(UTC), only)
        except ConfigError as exc:
            fail(f"config {config_path}: {exc}", EXIT_CONFIG)
        finally:
            store.close()
    print_tick_results(results)
    sys.exit(EXIT_OK if all(r.ok for r in results) else EXIT_FAILED)


@main.command()
@config_option
@wait_option
@click.option("--shutdown-timeout", type=float, default=30.0, show_default=True,
              help="Seconds a stop waits for a running tick before leaving it uncommitted.")
def run(config_path: str, wait: bool, shutdown_timeout: float) -> None:
    """The daemon: each source ticks at its interval; SIGTERM/SIGINT stop cleanly, SIGHUP reloads."""
    from poller.daemon import Daemon, exit_now

    config = open_config(config_path)
    with owned(config, wait):
        store = open_store(config)
        daemon = Daemon(config, store, _credential, shutdown_timeout=shutdown_timeout)
        try:
            _credential(config)  # a bad credential setting is a config error before the daemon starts
            daemon.run(lambda: load_config(config_path))
        except ConfigError as exc:
            fail(f"config {config_path}: {exc}", EXIT_CONFIG)
        except PollerError as exc:
            fail(str(exc), EXIT_FAILED)
        finally:
            store.close()
        if daemon.abandoned:  # a tick stuck past --shutdown-timeout: its thread would hold up a normal exit
            exit_now(EXIT_OK)


@main.command()
@config_option
@click.option("--since", required=True, help="Start: 2026-11-01, 2026-11-01T06:00Z, or 7d (ago).")
@click.option("--until", default=None, help="End (default: now), same forms; durations count from this hour.")
@click.option("--source", "only", help="Only this source.")
@click.option("--chunk", default="6h", show_default=True, help="Window per query.")
@click.option("--dry-run", is_flag=True, help="Extract and count; store nothing, no tickets.")
@wait_option
def backfill(config_path: str, since: str, until: str | None, only: str | None, chunk: str, dry_run: bool,
             wait: bool) -> None:
    """Re-read history in chunks with its own resumable cursor; the live cursor never moves."""
    from poller.backfill import Plan, backfill_all, parse_range

    config = open_config(config_path)
    check_source_name(config, config_path, only)
    now = datetime.now(UTC)
    try:
        start, end, step = parse_range(since, until, chunk, now)
    except ValueError as exc:
        fail(str(exc), EXIT_CONFIG)
    with nullcontext() if dry_run else owned(config, wait):  # a dry run writes nothing: it may run beside `run`
        store = open_store(config)
        try:
            plans = [Plan(s, start, end, step, open_ended=until is None)
                     for s in build_sources(config, _credential(config), only)]
            ok = backfill_all(plans, store, now, console, err_console, dry_run=dry_run)
            if not dry_run:
                process(store, datetime.now(UTC), build_processor(config, _credential(config)))
        except ConfigError as exc:
            fail(f"config {config_path}: {exc}", EXIT_CONFIG)
        finally:
            store.close()
    sys.exit(EXIT_OK if ok else EXIT_FAILED)


def check_source_name(config: Config, config_path: str, only: str | None) -> None:
    if only and only not in config.sources:
        fail(f"config {config_path}: sources.{only}: no such source", EXIT_CONFIG)


@contextmanager
def owned(config: Config, wait: bool) -> Iterator[None]:
    from poller.lock import LockedError, StateLock

    try:
        with StateLock(config.state.url, wait=wait):
            yield
    except LockedError as exc:
        fail(str(exc), EXIT_FAILED)


def run_once(config: Config, store: Store, now: datetime, only: str | None = None) -> list[TickResult]:
    """Tick each source once (a broken one does not stop the others), then process what landed."""
    credential = _credential(config)
    sources = build_sources(config, credential, only)
    resume_pending(sources, store, now)
    results = []
    try:
        for source in sources:
            results.append(tick(source, store, now))
    finally:
        for source in sources:
            source.close()
    process(store, now, build_processor(config, credential))
    return results


def _credential(config: Config) -> Any:
    from poller.azure_auth import credential_for

    return credential_for(config)


@main.command("extract")
@click.option("--service", type=click.Choice(["adf", "synapse", "functions", "databricks"]),
              help="Skip detection: read the files as this service.")
@click.option("--raw", is_flag=True, help="Include the raw record in each failure.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def extract_cmd(service: str | None, raw: bool, files: tuple[str, ...]) -> None:
    """Run saved payloads or rows through the extractor rules; print a JSON array of failures."""
    failures: list[Failure] = []
    bad = 0
    for name in files:
        try:
            payload = json.loads(Path(name).read_text(encoding="utf-8"))
            failures.extend(redacted(f) for f in extract(payload, service))
        except (OSError, UnicodeDecodeError) as exc:
            bad += 1
            err_console.print(f"error: {name}: cannot read: {getattr(exc, 'strerror', None) or exc}", soft_wrap=True)
        except json.JSONDecodeError as exc:
            bad += 1
            err_console.print(f"error: {name}: not JSON (line {exc.lineno}, column {exc.colno})", soft_wrap=True)
        except ExtractError as exc:
            bad += 1
            err_console.print(f"error: {name}: {exc}", soft_wrap=True)
    click.echo(json.dumps([f.to_json(include_raw=raw) for f in failures], indent=2, default=str))
    sys.exit(EXIT_FAILED if bad else EXIT_OK)


@main.group()
def failures() -> None:
    """Failures in the state store."""


@failures.command("list")
@config_option
@format_option
@click.option("--source", help="Only failures of this source.")
@click.option("--limit", type=int, default=100, show_default=True, help="Most recent N (0 = all).")
@click.option("--raw", is_flag=True, help="Include the raw record (JSON output).")
def failures_list(config_path: str, fmt: str, source: str | None, limit: int, raw: bool) -> None:
    """List extracted failures, newest first."""
    store = open_store(open_config(config_path))
    rows = store.failures(limit=limit or None, source=source)
    if fmt == "json":
        click.echo(json.dumps([f.to_json(include_raw=raw) for f in rows], indent=2, default=str))
        return
    print_failures(rows)


@main.group()
def tickets() -> None:
    """Tickets in the state store."""


@tickets.command("list")
@config_option
@format_option
def tickets_list(config_path: str, fmt: str) -> None:
    """List tickets: the local sink's, then each external sink's ticket with its delivery state."""
    from poller.sinks.report import remote_tickets

    store = open_store(open_config(config_path))
    rows, remote = store.tickets(), remote_tickets(store)
    if fmt == "json":
        click.echo(json.dumps([ticket_json(t) for t in rows] + remote, indent=2))
        return
    print_tickets(rows)
    if remote:
        print_remote_tickets(remote)


@main.command()
@config_option
@format_option
@click.option("--check", "check_health", is_flag=True,
              help="Exit 1 when an enabled source has no successful tick within metrics.stale_after.")
def status(config_path: str, fmt: str, check_health: bool) -> None:
    """Per source: cursor, lag, last tick, health, last error, backlog; per sink: outbox backlog and errors."""
    from poller.metrics import source_statuses
    from poller.sinks.report import sink_summaries

    config = open_config(config_path)
    store = open_store(config)
    statuses = source_statuses(config, store, datetime.now(UTC))
    sinks = sink_summaries(store, list(config.sinks))
    if fmt == "json":
        click.echo(json.dumps([s.to_json() for s in statuses] + sinks, indent=2))
    else:
        print_status(statuses)
        if sinks:
            print_sink_status(sinks)
    stale = [s.source for s in statuses if s.stale]
    if check_health and stale:
        fail(f"stale: {', '.join(stale)} (no successful tick within stale_after)", EXIT_FAILED)


@main.command()
@config_option
@format_option
def check(config_path: str, fmt: str) -> None:
    """Validate the config, then test the state store and each source's and sink's access."""
    from poller.checks import config_error, run_checks
    from poller.render import print_checks

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        results = [config_error(config_path, exc)]
    else:
        setup_logging(config.logging.level, config.logging.format, config.logging.levels)
        results = run_checks(config, config_path)
    if fmt == "json":
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print_checks(results)
    sys.exit(EXIT_OK if all(r.ok for r in results) else EXIT_FAILED)


@main.command()
@click.option("--path", "target", type=click.Path(dir_okay=False), default=DEFAULT_CONFIG_PATH, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--source", "source_name", help="Name of the first source  [default: adf-prod]")
@click.option("--workspace-id", help="Its Log Analytics Workspace ID  [default: ${LA_WORKSPACE_ID}]")
@click.option("--endpoint", help="Log Analytics endpoint (sovereign clouds, proxies).")
@click.option("--credential", type=click.Choice(CREDENTIALS), help="How to authenticate to Azure.")
@click.option("--interval", help="How often to poll it  [default: 60s]")
@click.option("--state", help="SQLite state file  [default: ./rca-poller.db]")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve /metrics and /healthz on localhost.")
@click.option("--interactive/--no-interactive", default=None, help="Ask for each setting [default: on a terminal].")
def init(target: str, force: bool, source_name: str | None, workspace_id: str | None, endpoint: str | None,
         credential: str | None, interval: str | None, state: str | None, metrics_port: int | None,
         interactive: bool | None) -> None:
    """Write an annotated config to start from: prompts on a terminal, or flags for scripts."""
    from poller.onboarding import Answers, ask, render_config

    path = Path(target)
    if path.exists() and not force:
        fail(f"{path} exists; pass --force to overwrite it", EXIT_FAILED)
    answers = Answers(source_name, workspace_id, endpoint, credential, interval, state, metrics_port)
    if interactive or (interactive is None and not answers.given() and sys.stdin.isatty()):
        answers = ask(click.prompt, click.confirm, answers)
    try:
        text = render_config(answers)
    except ValueError as exc:
        fail(str(exc), EXIT_CONFIG)
    path.write_text(text, encoding="utf-8")
    console.print(f"wrote {path} — next: rca-poller check --config {path}, then rca-poller once --config {path}")


@main.command()
@click.option("--keep", type=click.Path(file_okay=False), help="Keep the demo's state and config in this folder.")
def demo(keep: str | None) -> None:
    """Run the whole flow offline against the built-in emulators."""
    from poller.demo import run_demo

    try:
        run_demo(console, Path(keep) if keep else None)
    except PollerError as exc:
        fail(str(exc), EXIT_FAILED)


main.add_command(incidents)
main.add_command(remediations)


if __name__ == "__main__":
    main()
