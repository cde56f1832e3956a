"""Downloading result images over real loopback HTTP: token only to the API's own origin, limits, checks."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore.exceptions import ImageDownloadError
from airflow_provider_apicore.hooks.download import ImageFetcher, same_origin, write_atomically
from tests.helpers.imagegen import make_png
from tests.helpers.scripted_server import LoopbackServer, Reply, ScriptedServer, Seen

TOKEN = "download-test-token-" + "7f3a9c"
PNG = make_png(40, 30, lambda x, y: (x * 6, y * 8, 90))


def png_reply(**headers: str) -> Reply:
    return Reply(200, PNG, {"Content-Type": "image/png", **headers})


def fetcher(base_url: str | None, **kwargs: Any) -> ImageFetcher:
    kwargs.setdefault("retries", 2)
    return ImageFetcher(base_url, TOKEN, sleep=lambda s: None, **kwargs)


def localhost(url: str) -> str:
    return url.replace("127.0.0.1", "localhost")


def auth_of(seen: Seen) -> str | None:
    return {k.lower(): v for k, v in seen.headers.items()}.get("authorization")


def token_anywhere(server: LoopbackServer) -> bool:
    return any(TOKEN in str(s.headers) or TOKEN.encode() in s.body or TOKEN in s.path for s in server.seen)


@pytest.fixture
def api() -> Iterator[ScriptedServer]:
    with ScriptedServer([png_reply()]) as server:
        yield server


@pytest.fixture
def cdn() -> Iterator[ScriptedServer]:
    with ScriptedServer([png_reply()]) as server:
        yield server


# ---------------------------------------------------------------- where the token goes


def test_the_token_is_sent_to_the_connections_own_host(api: ScriptedServer, tmp_path: Path) -> None:
    image = fetcher(api.url).download(f"{api.url}/mj/image/1730621826053455", tmp_path / "grid")
    assert auth_of(api.seen[0]) == f"Bearer {TOKEN}"
    assert image.path.endswith("grid.png") and Path(tmp_path / "grid.png").read_bytes() == PNG
    assert (image.mime, image.width, image.height, image.size) == ("image/png", 40, 30, len(PNG))


def test_a_cdn_on_another_host_and_port_never_sees_the_token(
    api: ScriptedServer, cdn: ScriptedServer, tmp_path: Path
) -> None:
    cdn_url = localhost(cdn.url)  # "localhost:<other port>" vs the API's "127.0.0.1:<port>"
    fetcher(api.url).download(f"{cdn_url}/0ddb91a0/0_0.png", tmp_path / "a.png")
    assert len(cdn.seen) == 1
    assert auth_of(cdn.seen[0]) is None
    assert not token_anywhere(cdn)
    assert api.seen == []


def test_the_same_server_under_another_host_name_is_another_origin(
    api: ScriptedServer, tmp_path: Path
) -> None:
    fetcher(api.url).download(f"{localhost(api.url)}/mj/image/1", tmp_path / "a.png")
    assert auth_of(api.seen[0]) is None and not token_anywhere(api)


def test_a_redirect_from_the_api_to_a_cdn_drops_the_token(
    api: ScriptedServer, cdn: ScriptedServer, tmp_path: Path
) -> None:
    api.replies = [Reply(302, b"", {"Location": f"{localhost(cdn.url)}/img/1.png"})]
    fetcher(api.url).download(f"{api.url}/mj/image/1", tmp_path / "a.png")
    assert auth_of(api.seen[0]) == f"Bearer {TOKEN}"
    assert len(cdn.seen) == 1 and not token_anywhere(cdn)


def test_a_cdn_redirecting_back_to_the_api_gets_the_token_only_there(
    api: ScriptedServer, cdn: ScriptedServer, tmp_path: Path
) -> None:
    cdn.replies = [Reply(307, b"", {"Location": f"{api.url}/mj/image/9"})]
    fetcher(api.url).download(f"{localhost(cdn.url)}/x.png", tmp_path / "a.png")
    assert not token_anywhere(cdn)
    assert auth_of(api.seen[0]) == f"Bearer {TOKEN}"


def test_without_a_base_url_no_token_is_sent_anywhere(api: ScriptedServer, tmp_path: Path) -> None:
    fetcher(None).download(f"{api.url}/mj/image/1", tmp_path / "a.png")
    assert not token_anywhere(api)


def test_same_origin_compares_scheme_host_and_port() -> None:
    assert same_origin("https://api.apicore.ai/mj/image/1", "https://api.apicore.ai")
    assert same_origin("https://API.apicore.ai:443/x", "https://api.apicore.ai")
    assert not same_origin("http://api.apicore.ai/x", "https://api.apicore.ai")  # no downgrade
    assert not same_origin("https://api.apicore.ai:8443/x", "https://api.apicore.ai")
    assert not same_origin("https://cdn.apicore.ai/x", "https://api.apicore.ai")
    assert not same_origin("https://api.apicore.ai.evil.example/x", "https://api.apicore.ai")
    assert not same_origin("https://x@evil.example/x", "https://api.apicore.ai")


def test_a_session_carrying_authorization_is_refused() -> None:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = "Bearer x"
    with pytest.raises(ValueError, match="must not carry an Authorization header"):
        ImageFetcher("http://h", TOKEN, session=session)


# ---------------------------------------------------------------- URLs and redirects


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/a.png", "data:image/png;base64,AAAA", "//x/a"]
)
def test_only_http_and_https_urls_are_fetched(url: str) -> None:
    with pytest.raises(ImageDownloadError, match=r"only http and https|no host"):
        fetcher(None).fetch(url)


def test_a_redirect_to_another_scheme_is_refused(api: ScriptedServer) -> None:
    api.replies = [Reply(302, b"", {"Location": "file:///etc/passwd"})]
    with pytest.raises(ImageDownloadError, match="only http and https"):
        fetcher(api.url).fetch(f"{api.url}/mj/image/1")


def test_redirects_are_bounded(api: ScriptedServer) -> None:
    api.replies = [Reply(302, b"", {"Location": "/again"})]
    with pytest.raises(ImageDownloadError, match="more than 3 redirects"):
        fetcher(api.url, max_redirects=3, retries=0).fetch(f"{api.url}/start")
    assert len(api.seen) == 4


# ---------------------------------------------------------------- statuses and retries


def test_transient_answers_are_retried(api: ScriptedServer, tmp_path: Path) -> None:
    api.replies = [Reply(503, b"busy"), Reply(500, b"oops"), png_reply()]
    image = fetcher(api.url, retries=2).download(f"{api.url}/mj/image/1", tmp_path / "a")
    assert len(api.seen) == 3 and image.size == len(PNG)


def test_retries_run_out_with_the_last_reason(api: ScriptedServer) -> None:
    api.replies = [Reply(502, b"bad gateway")]
    with pytest.raises(ImageDownloadError, match=r"HTTP 502; gave up after 3 attempts") as info:
        fetcher(api.url, retries=2).fetch(f"{api.url}/mj/image/1")
    assert info.value.status == 502 and len(api.seen) == 3


def test_a_client_error_fails_at_once_quoting_the_answer(api: ScriptedServer) -> None:
    api.replies = [Reply(400, {"error": "midjourney_task_not_found"})]
    with pytest.raises(ImageDownloadError, match=r"HTTP 400.*midjourney_task_not_found"):
        fetcher(api.url).fetch(f"{api.url}/mj/image/404")
    assert len(api.seen) == 1


def test_a_connection_refused_is_retried_then_reported() -> None:
    with ScriptedServer() as gone:
        url = gone.url
    with pytest.raises(ImageDownloadError, match=r"ConnectionError: .*; gave up after 2 attempts"):
        fetcher(None, retries=1).fetch(f"{url}/a.png")


# ---------------------------------------------------------------- content checks


def test_an_html_page_is_refused_by_its_content_type(api: ScriptedServer) -> None:
    api.replies = [Reply(200, b"<html>login</html>", {"Content-Type": "text/html; charset=utf-8"})]
    with pytest.raises(ImageDownloadError, match="sent 'text/html', not an image"):
        fetcher(api.url).fetch(f"{api.url}/a.png")


def test_bytes_that_are_not_an_image_are_refused_even_as_image_png(
    api: ScriptedServer, tmp_path: Path
) -> None:
    api.replies = [Reply(200, b"<html>oops</html>", {"Content-Type": "image/png"})]
    with pytest.raises(ImageDownloadError, match="not a usable image"):
        fetcher(api.url).download(f"{api.url}/a.png", tmp_path / "a.png")
    assert os.listdir(tmp_path) == []


def test_a_truncated_image_is_refused(api: ScriptedServer) -> None:
    big = make_png(200, 200, lambda x, y: (x, y, (x * y) % 256))
    api.replies = [Reply(200, big[: len(big) - 200], {"Content-Type": "image/png"})]
    with pytest.raises(ImageDownloadError, match="cannot be decoded"):
        fetcher(api.url).fetch(f"{api.url}/a.png")


def test_octet_stream_holding_a_png_is_accepted(api: ScriptedServer) -> None:
    api.replies = [Reply(200, PNG, {"Content-Type": "application/octet-stream"})]
    data, info = fetcher(api.url).fetch(f"{api.url}/a")
    assert data == PNG and info.mime == "image/png"


# ---------------------------------------------------------------- size limit while streaming


def test_a_declared_length_over_the_limit_is_refused_before_reading(api: ScriptedServer) -> None:
    with pytest.raises(ImageDownloadError, match=f"{len(PNG):,} bytes, over the limit of 100 bytes"):
        fetcher(api.url, max_bytes=100).fetch(f"{api.url}/a.png")


class EndlessImage:
    """A server that sends a PNG signature and then bytes forever, with no Content-Length."""

    def __init__(self) -> None:
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                try:
                    self.wfile.write(PNG[:16])
                    while outer.sent < 50 * 1024 * 1024:
                        self.wfile.write(b"\0" * 65536)
                        outer.sent += 65536
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_endless_body_is_cut_off_at_the_limit_while_streaming() -> None:
    server = EndlessImage()
    try:
        with pytest.raises(ImageDownloadError, match=r"over the limit of 1,048,576 bytes \(stopped after"):
            fetcher(None, max_bytes=1024 * 1024).fetch(f"{server.url}/endless.png")
    finally:
        server.close()
    assert server.sent < 50 * 1024 * 1024  # the client stopped reading long before the server gave up


# ---------------------------------------------------------------- atomic writes


def test_the_file_appears_whole_with_no_temporary_left(api: ScriptedServer, tmp_path: Path) -> None:
    fetcher(api.url).download(f"{api.url}/a", tmp_path / "deep" / "dir" / "a.png")
    assert os.listdir(tmp_path / "deep" / "dir") == ["a.png"]


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsspec.implementations.local import LocalFileSystem

    def broken_mv(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(LocalFileSystem, "mv", broken_mv)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "a.png", PNG)
    assert os.listdir(tmp_path) == []


def test_object_storage_destinations_work(api: ScriptedServer) -> None:
    image = fetcher(api.url).download(f"{api.url}/a", ObjectStoragePath("memory://results/run1/a.png"))
    assert image.path == "memory://results/run1/a.png"
    stored = ObjectStoragePath("memory://results/run1/a.png")
    assert stored.__wrapped__.read_bytes() == PNG
