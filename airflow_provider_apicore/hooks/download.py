"""
Download a result image safely and store it atomically.

* Only ``http``/``https`` URLs, on every hop; redirects are followed by hand, at most ``max_redirects``.
* The API token goes **only** to the connection's own origin (scheme, host and port all equal). An image
  on any other host (a CDN, or a redirect to one) is fetched without it; the decision is made again on
  every hop, so a redirect from the API to a CDN drops the token.
* The body is streamed; the size limit is checked against ``Content-Length`` first and again while the
  bytes arrive, so an oversized or endless answer is cut off, never held whole. A whole-download time
  limit stops a server that trickles bytes.
* Connection failures, timeouts, a body cut short, 429 and 5xx are retried with backoff (a GET changes
  nothing); other 4xx fail at once.
* The ``Content-Type`` must be an image (or a generic binary type) and the bytes must decode as a
  PNG/JPEG/GIF/WEBP image (Pillow), so an HTML error page served with status 200 is never stored.
* The file is written next to its destination under a temporary name and renamed into place (local
  filesystems); on object stores a single PUT is already all-or-nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from airflow_provider_apicore import __version__
from airflow_provider_apicore.exceptions import (
    ImageDownloadError,
    InvalidImageError,
    redact_url_credentials,
    safe_excerpt,
)
from airflow_provider_apicore.hooks.transport import parse_retry_after, retry_delay
from airflow_provider_apicore.imaging import ImageInfo, inspect_image

#: Largest image downloaded by default (a 4x upscale PNG is well under this).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 5
#: (connect, read) timeouts of one request, seconds.
DEFAULT_TIMEOUT = (10.0, 60.0)
#: Longest one download attempt may take from the request to the last byte, seconds.
DEFAULT_MAX_SECONDS = 300.0
DEFAULT_RETRIES = 3
CHUNK_BYTES = 64 * 1024

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Content types accepted besides ``image/*``: servers that do not say what they send.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/binary"})
_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of a URL, lower-cased, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(url: str, base_url: str | None) -> bool:
    """Whether ``url`` is on exactly the connection's origin (where the token may be sent)."""
    if not base_url:
        return False
    mine = origin(base_url)
    return bool(mine[1]) and origin(url) == mine


def _check_url(url: str, shown: str) -> None:
    parts = urlsplit(url)
    if (parts.scheme or "").lower() not in ("http", "https"):
        raise ImageDownloadError(
            shown, f"only http and https URLs are fetched, not {parts.scheme or 'no scheme'!r}"
        )
    if not parts.hostname:
        raise ImageDownloadError(shown, "the URL has no host")


@dataclass(frozen=True)
class DownloadedImage:
    """
    An image that was downloaded, checked and stored.

    :param path: where it was written (``str`` of the ObjectStoragePath)
    :param url: the URL it came from (credentials hidden)
    :param mime: its type, from the bytes
    :param size: bytes
    :param width: pixels
    :param height: pixels
    :param sha256: hex digest of the bytes
    """

    path: str
    url: str
    mime: str
    size: int
    width: int
    height: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageFetcher:
    """
    Fetches image bytes with the rules of this module; one per hook (it pools connections).

    :param base_url: the connection's base URL: the only origin the token is sent to
    :param token: the API token (never logged; sent as ``Authorization: Bearer``)
    :param timeout: (connect, read) seconds of one request
    :param max_bytes: largest body accepted
    :param max_redirects: redirects followed per attempt
    :param retries: retries of a transient failure
    :param max_seconds: time limit of one attempt, request to last byte
    :param backoff: first backoff step, seconds (doubles, with jitter)
    :param max_backoff: longest backoff, seconds
    :param session: a ``requests.Session`` to use; it must not carry an ``Authorization`` header
    :param sleep: replaceable for tests
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        retries: int = DEFAULT_RETRIES,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Any = None,
    ) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
        self.base_url = base_url
        self._token = token
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.retries = retries
        self.max_seconds = max_seconds
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._log = log
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"airflow-provider-apicore/{__version__}"
            session.headers["Accept"] = "image/png,image/webp,image/jpeg,image/gif,image/*;q=0.8"
        if "Authorization" in session.headers:
            raise ValueError("the download session must not carry an Authorization header")
        self.session = session

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ fetch
    def fetch(self, url: str) -> tuple[bytes, ImageInfo]:
        """
        Download ``url`` and check it is a whole image.

        :return: the bytes and what they are
        :raises ImageDownloadError: bad URL, too many redirects, HTTP error, over the size or time limit,
            not an image (content type or bytes), or retries ran out
        """
        shown = redact_url_credentials(url)
        _check_url(url, shown)
        attempt = 0
        while True:
            try:
                data, final_url = self._attempt(url, shown)
            except _Transient as err:
                if attempt >= self.retries:
                    raise ImageDownloadError(
                        shown, f"{err.why}; gave up after {attempt + 1} attempts", err.status
                    ) from None
                delay = (
                    err.delay
                    if err.delay is not None
                    else retry_delay(attempt, self.backoff, self.max_backoff)
                )
                if self._log:
                    self._log.warning(
                        "Image download %s: %s; retry %d/%d in %.1fs",
                        safe_excerpt(shown, 120),
                        err.why,
                        attempt + 1,
                        self.retries,
                        delay,
                    )
                self._sleep(delay)
                attempt += 1
                continue
            try:
                info = inspect_image(data, safe_excerpt(redact_url_credentials(final_url), 160))
            except InvalidImageError as err:
                raise ImageDownloadError(shown, f"the answer is not a usable image: {err.rule}") from None
            return data, info

    def _headers_for(self, url: str) -> dict[str, str]:
        if self._token and same_origin(url, self.base_url):
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    def _attempt(self, url: str, shown: str) -> tuple[bytes, str]:
        """One download, following redirects by hand. Raises _Transient for what is worth retrying."""
        started = time.monotonic()
        current = url
        for _hop in range(self.max_redirects + 1):
            try:
                response = self.session.get(
                    current,
                    headers=self._headers_for(current),
                    stream=True,
                    allow_redirects=False,
                    timeout=self.timeout,
                )
            except requests.RequestException as err:
                raise _Transient(f"{type(err).__name__}: {safe_excerpt(str(err), 120)}") from None
            with response:
                status = response.status_code
                if status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise ImageDownloadError(shown, f"HTTP {status} redirect without a Location", status)
                    current = urljoin(current, location)
                    _check_url(current, f"{shown} -> {redact_url_credentials(current)}")
                    continue
                if status in _RETRY_STATUSES:
                    raise _Transient(
                        f"HTTP {status}", status, parse_retry_after(response.headers.get("Retry-After"))
                    )
                if not 200 <= status < 300:
                    excerpt = safe_excerpt(response.raw.read(200, decode_content=True), 120)
                    raise ImageDownloadError(
                        shown, f"HTTP {status}" + (f": {excerpt}" if excerpt else ""), status
                    )
                return self._read_body(response, shown, started), current
        raise ImageDownloadError(shown, f"more than {self.max_redirects} redirects")

    def _read_body(self, response: requests.Response, shown: str, started: float) -> bytes:
        content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not content_type.startswith("image/") and content_type not in _GENERIC_TYPES:
            excerpt = safe_excerpt(response.raw.read(120, decode_content=True), 80)
            raise ImageDownloadError(
                shown,
                f"the server sent {content_type!r}, not an image"
                + (f" (began {excerpt!r})" if excerpt else ""),
                response.status_code,
            )
        declared = response.headers.get("Content-Length", "").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ImageDownloadError(
                shown, f"the image is {int(declared):,} bytes, over the limit of {self.max_bytes:,} bytes"
            )
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in response.iter_content(CHUNK_BYTES):
                total += len(chunk)
                if total > self.max_bytes:
                    raise ImageDownloadError(
                        shown,
                        f"the image is over the limit of {self.max_bytes:,} bytes (stopped after {total:,})",
                    )
                if time.monotonic() - started > self.max_seconds:
                    raise _Transient(f"the download took over {self.max_seconds:g}s ({total:,} bytes so far)")
                chunks.append(chunk)
        except requests.RequestException as err:
            raise _Transient(f"the body was cut short after {total:,} bytes ({type(err).__name__})") from None
        return b"".join(chunks)

    # ------------------------------------------------------------------ store
    def download(self, url: str, dest: Any) -> DownloadedImage:
        """
        Download ``url``, check it is an image, and write it to ``dest`` atomically.

        :param url: the image URL
        :param dest: file path (str, ``file://``, ``s3://`` ... or ObjectStoragePath); when it has no
            suffix, the image type's extension is added
        """
        data, info = self.fetch(url)
        path = _as_path(dest)
        if not path.suffix:
            path = path.with_name(f"{path.name}.{info.extension}")
        written = write_atomically(path, data)
        return DownloadedImage(
            path=str(written),
            url=safe_excerpt(redact_url_credentials(url), 500),
            mime=info.mime,
            size=info.size,
            width=info.width,
            height=info.height,
            sha256=hashlib.sha256(data).hexdigest(),
        )


class _Transient(Exception):
    def __init__(self, why: str, status: int | None = None, delay: float | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.status = status
        self.delay = delay


def _as_path(dest: Any) -> Any:
    from airflow_provider_apicore.images import _to_storage_path

    return _to_storage_path(dest)


def write_atomically(dest: Any, data: bytes) -> Any:
    """
    Write ``data`` to ``dest`` so that readers see either nothing or the whole file.

    Local paths: a temporary file in the same directory, renamed into place. Object stores: one PUT
    (already all-or-nothing). Parent directories are created.

    :param dest: str path, URL or ObjectStoragePath
    :return: the ObjectStoragePath written
    """
    from airflow_provider_apicore.images import _filesystem

    path = _as_path(dest)
    fs = _filesystem(path)
    parent = path.parent.path
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if (path.protocol or "") not in _LOCAL_PROTOCOLS:
        with fs.open(path.path, "wb") as fh:
            fh.write(data)
        return path
    tmp = f"{parent}/.{path.name}.{uuid.uuid4().hex}.part"
    try:
        with fs.open(tmp, "wb") as fh:
            fh.write(data)
        fs.mv(tmp, path.path)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.rm(tmp)
        raise
    return path
