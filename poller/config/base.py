"""What every config section shares: a strict frozen model, and the checks for URLs and env-variable names."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOPBACK = re.compile(r"^http://(?:localhost|127\.\d+\.\d+\.\d+|\[::1\])(?::\d+)?(?:/|$)")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _tls_url(url: str | None) -> str | None:
    """https:// only; plain http:// is allowed for a server on this machine (a local model server, an emulator)."""
    if url is None:
        return None
    if not (url.startswith("https://") or _LOOPBACK.match(url)):
        raise ValueError("must be an https:// URL (TLS is always verified; http:// only for localhost)")
    return url.rstrip("/")
