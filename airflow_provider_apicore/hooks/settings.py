"""What the hook reads from an ``apicore`` Airflow connection, checked once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_apicore.exceptions import ApicoreConfigError, safe_excerpt

DEFAULT_HOST = "https://api.apicore.ai"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 5
#: Speed modes the gateway routes by path prefix (``/mj-fast/mj/...``); ``None`` uses the token's default.
MODES = ("fast", "relax", "turbo")


@dataclass(frozen=True)
class ConnectionSettings:
    """
    What the hook needs from an ``apicore`` connection.

    :param conn_id: the Airflow connection id
    :param base_url: the API's base URL, without a trailing slash
    :param token: the API token (never printed: excluded from ``repr``)
    :param timeout: read timeout of one request, in seconds
    :param max_retries: retries of a transient failure
    :param mode: ``fast``, ``relax`` or ``turbo``: submissions go to ``/mj-<mode>/mj/...``;
        ``None``: ``/mj/...``
    """

    conn_id: str
    base_url: str
    token: str = field(repr=False)
    timeout: float
    max_retries: int
    mode: str | None = None

    @classmethod
    def from_connection(
        cls,
        conn: Any,
        timeout: float | None = None,
        max_retries: int | None = None,
        extra: dict | None = None,
    ) -> ConnectionSettings:
        """
        Check a connection's fields.

        :param extra: the connection's extras, already decoded (async callers read them with
            ``aextra_dejson`` so that no blocking masking call runs in the event loop)
        """
        conn_id = conn.conn_id
        token = (conn.password or "").strip()
        if not token:
            raise ApicoreConfigError(
                f"Connection {conn_id!r} has no API token: put the APICore token in the connection's "
                "password field."
            )
        base_url = _base_url(conn)
        extra = (conn.extra_dejson if extra is None else extra) or {}
        timeout = _positive(
            timeout if timeout is not None else _extra(extra, "timeout", DEFAULT_TIMEOUT), "timeout", conn_id
        )
        retries = (
            max_retries if max_retries is not None else _extra(extra, "max_retries", DEFAULT_MAX_RETRIES)
        )
        try:
            retries = int(retries)
        except (TypeError, ValueError):
            retries = -1
        if not 0 <= retries <= 20:
            raise ApicoreConfigError(
                f"Connection {conn_id!r}: max_retries must be a whole number from 0 to 20, got {retries!r}"
            )
        mode = _extra(extra, "mode", None)
        if mode is not None:
            mode = str(mode).strip().lower() or None
        if mode is not None and mode not in MODES:
            raise ApicoreConfigError(
                f"Connection {conn_id!r}: mode must be one of {', '.join(MODES)} (or empty for the "
                f"token's default), got {safe_excerpt(str(mode), 40)!r}"
            )
        return cls(
            conn_id=conn_id, base_url=base_url, token=token, timeout=timeout, max_retries=retries, mode=mode
        )

    def submit_path(self, endpoint: str) -> str:
        """The path of a submit endpoint under the connection's speed mode (``/mj-fast/mj/...``)."""
        return f"/mj-{self.mode}{endpoint}" if self.mode and endpoint.startswith("/mj/") else endpoint


def _extra(extra: dict, name: str, default: Any) -> Any:
    """An extra field, stored plain or with the UI's ``extra__apicore__`` prefix; blank means default."""
    for key in (name, f"extra__apicore__{name}"):
        value = extra.get(key)
        if value not in (None, ""):
            return value
    return default


def _positive(value: Any, name: str, conn_id: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0 < number <= 3600:
        raise ApicoreConfigError(
            f"Connection {conn_id!r}: {name} must be a number of seconds above 0 and at most 3600, "
            f"got {value!r}"
        )
    return number


def _base_url(conn: Any) -> str:
    host = (conn.host or "").strip()
    if not host:
        return DEFAULT_HOST
    if "://" not in host:
        scheme = (conn.schema or "").strip().lower()
        if scheme not in ("http", "https"):
            raise ApicoreConfigError(
                f"Connection {conn.conn_id!r}: host {host!r} has no scheme; write it as a full URL, "
                f"e.g. 'https://{host}'."
            )
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApicoreConfigError(
            f"Connection {conn.conn_id!r}: host must be an http(s) URL with a host name, e.g. "
            f"{DEFAULT_HOST!r}; got {safe_excerpt(host, 80)!r}"
        )
    base = f"{parts.scheme}://{parts.netloc}"
    if conn.port and not parts.port:
        base = f"{base}:{conn.port}"
    return base + parts.path.rstrip("/")
