"""The ``rca-poller`` command: parse, call, print (DESIGN §5 fixes the commands and exit codes)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from poller.config import DEFAULT_CONFIG_PATH, Config, load_config
from poller.errors import ConfigError, ExtractError, PollerError, StoreError
from poller.extractors import extract
from poller.logs import setup_logging
from poller.models import Failure, iso
from poller.pipeline import TickResult, process, tick
from poller.render import clip, console, make_console, print_failures, print_tick_results, print_tickets, ticket_json
from poller.sources import build_sources
from poller.store import Store

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
err_console = make_console(stderr=True)

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="RCA_POLLER_CONFIG",
    default=DEFAULT_CONFIG_PATH, show_default=True, help="Config file (or RCA_POLLER_CONFIG).",
)
format_option = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def fail(message: str, code: int) -> NoReturn:
    err_console.print(Text("error: ", style="red") + Text(message), soft_wrap=True)
    sys.exit(code)


def open_config(path: str) -> Config:
    try:
        config = load_config(path)
    except ConfigError as exc:
        fail(f"config {path}: {exc}", EXIT_CONFIG)
    setup_logging(config.logging.level, config.logging.format)
    return config


def open_store(config: Config) -> Store:
    try:
        return Store(config.state.url)
    except StoreError as exc:
        fail(str(exc), EXIT_FAILED)


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
    from poller.daemon import Daemon

    config = open_config(config_path)
    with owned(config, wait):
        store = open_store(config)
        try:
            _credential(config)  # a bad credential setting is a config error before the daemon starts
            Daemon(config, store, _credential, shutdown_timeout=shutdown_timeout).run(
                lambda: load_config(config_path)
            )
        except ConfigError as exc:
            fail(f"config {config_path}: {exc}", EXIT_CONFIG)
        finally:
            store.close()


@main.command()
@config_option
@click.option("--since", required=True, help="Start: 2026-11-01, 2026-11-01T06:00Z, or 7d (ago).")
@click.option("--until", default=None, help="End (default: now), same forms.")
@click.option("--source", "only", help="Only this source.")
@click.option("--chunk", default="6h", show_default=True, help="Window per query.")
@click.option("--dry-run", is_flag=True, help="Extract and count; store nothing, no tickets.")
@wait_option
def backfill(config_path: str, since: str, until: str | None, only: str | None, chunk: str, dry_run: bool,
             wait: bool) -> None:
    """Re-read history in chunks with its own resumable cursor; the live cursor never moves."""
    from poller.backfill import Plan, parse_when, run_backfill
    from poller.config import parse_duration

    config = open_config(config_path)
    check_source_name(config, config_path, only)
    now = datetime.now(UTC)
    try:
        start, end = parse_when(since, now), parse_when(until, now) if until else now
        step = parse_duration(chunk)
    except ValueError as exc:
        fail(str(exc), EXIT_CONFIG)
    if start >= end:
        fail(f"--since ({iso(start)}) must be before --until ({iso(end)})", EXIT_CONFIG)
    with owned(config, wait):
        store = open_store(config)
        try:
            ok = True
            for source in build_sources(config, _credential(config), only):
                plan = Plan(source, start, end, step)
                with backfill_progress(source.name) as on_chunk:
                    results = run_backfill(plan, store, now, dry_run=dry_run, on_chunk=on_chunk)
                source.close()
                ok = ok and all(r.ok for r in results)
                print_backfill(source.name, results, dry_run)
            if not dry_run:
                process(store, datetime.now(UTC))
        except ConfigError as exc:
            fail(f"config {config_path}: {exc}", EXIT_CONFIG)
        finally:
            store.close()
    sys.exit(EXIT_OK if ok else EXIT_FAILED)


@contextmanager
def backfill_progress(name: str) -> Iterator[Callable[[TickResult, int, int], None]]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("rows {task.fields[rows]} · failures {task.fields[failures]}"), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(f"backfill {name}", total=None, rows=0, failures=0)
        totals = [0, 0]

        def on_chunk(result: TickResult, index: int, count: int) -> None:
            totals[0] += result.rows_read
            totals[1] += result.failures
            progress.update(task, completed=index, total=count, rows=totals[0], failures=totals[1])

        yield on_chunk


def print_backfill(name: str, results: Sequence[TickResult], dry_run: bool) -> None:
    rows = sum(r.rows_read for r in results)
    found = sum(r.failures for r in results)
    added = sum(r.added for r in results)
    errors = [r.error for r in results if r.error]
    verb = "would add (dry run)" if dry_run else "new"
    console.print(f"{name}: {len(results)} chunk(s), {rows} rows, {found} failures, {added if not dry_run else found} "
                  f"{verb}" + (f" — stopped: {errors[0]} (re-run the same command to resume)" if errors else ""))


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
    sources = build_sources(config, _credential(config), only)
    results = []
    try:
        for source in sources:
            results.append(tick(source, store, now))
    finally:
        for source in sources:
            source.close()
    process(store, now)
    return results


def _credential(config: Config) -> Any:
    from poller.azure_auth import build_credential

    return build_credential(config.azure) if config.sources else None


@main.command("extract")
@click.option("--service", type=click.Choice(["adf"]), help="Skip detection: read the files as this service.")
@click.option("--raw", is_flag=True, help="Include the raw record in each failure.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def extract_cmd(service: str | None, raw: bool, files: tuple[str, ...]) -> None:
    """Run saved payloads or rows through the extractor rules; print a JSON array of failures."""
    failures: list[Failure] = []
    bad = 0
    for name in files:
        try:
            payload = json.loads(Path(name).read_text(encoding="utf-8"))
            failures.extend(extract(payload, service))
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
    """List tickets (the local sink)."""
    store = open_store(open_config(config_path))
    rows = store.tickets()
    if fmt == "json":
        click.echo(json.dumps([ticket_json(t) for t in rows], indent=2))
        return
    print_tickets(rows)


@main.command()
@config_option
@format_option
def status(config_path: str, fmt: str) -> None:
    """Per source: cursor, lag, last tick, last error, backlog."""
    config = open_config(config_path)
    store = open_store(config)
    now = datetime.now(UTC)
    checkpoints = {c.name: c for c in store.checkpoints()}
    rows = [_status_row(name, checkpoints.get(name), store.backlog(name), now) for name in config.sources]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("source", "cursor", "lag", "last tick", "last success", "last error", "backlog", title="status")
    for r in rows:
        lag = f"{r['lag_seconds']:.0f}s" if r["lag_seconds"] is not None else "never ticked"
        table.add_row(r["source"], r["cursor"] or "-", lag, r["last_tick_at"] or "-", r["last_success_at"] or "-",
                      clip(r["last_error"] or "", 70), str(r["backlog"]))
    console.print(table)


def _status_row(name: str, c: Any, backlog: int, now: datetime) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return iso(value) if value else None

    return {
        "source": name,
        "cursor": when(c.cursor) if c else None,
        "lag_seconds": (now - c.cursor).total_seconds() if c and c.cursor else None,
        "last_tick_at": when(c.last_tick_at) if c else None,
        "last_success_at": when(c.last_success_at) if c else None,
        "last_error": c.last_error if c else None,
        "last_error_at": when(c.last_error_at) if c else None,
        "backlog": backlog,
    }


@main.command()
@click.option("--path", "target", type=click.Path(dir_okay=False), default=DEFAULT_CONFIG_PATH, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(target: str, force: bool) -> None:
    """Write an annotated config to start from."""
    from importlib import resources

    path = Path(target)
    if path.exists() and not force:
        fail(f"{path} exists; pass --force to overwrite it", EXIT_FAILED)
    path.write_text(resources.files("poller").joinpath("config.example.yaml").read_text(encoding="utf-8"))
    console.print(f"wrote {path} — edit sources, then run: rca-poller once --config {path}")


@main.command()
@click.option("--keep", type=click.Path(file_okay=False), help="Keep the demo's state and config in this folder.")
def demo(keep: str | None) -> None:
    """Run the whole flow offline against the built-in emulators."""
    from poller.demo import run_demo

    try:
        run_demo(console, Path(keep) if keep else None)
    except PollerError as exc:
        fail(str(exc), EXIT_FAILED)


if __name__ == "__main__":
    main()
