"""What every rca-poller command shares: the --config and --format options, exit codes, one-line errors."""

from __future__ import annotations

import sys
from typing import NoReturn

import click
from rich.text import Text

from poller.config import DEFAULT_CONFIG_PATH, Config, load_config
from poller.errors import ConfigError, StoreError
from poller.logs import setup_logging
from poller.render import make_console
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
    setup_logging(config.logging.level, config.logging.format, config.logging.levels)
    return config


def open_store(config: Config) -> Store:
    try:
        return Store(config.state.url)
    except StoreError as exc:
        fail(str(exc), EXIT_FAILED)
