"""Image detection, validation, loading (local, file://, memory://, data URLs) and listing."""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath
from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

from airflow_provider_apicore.exceptions import ApicoreConfigError, ApicoreInputError, InvalidImageError
from airflow_provider_apicore.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    HEADER_BYTES,
    ImageData,
    describe_unsupported,
    detect_image_type,
    format_size,
    list_images,
    load_image,
    parse_data_url,
    to_data_url,
    validate_image_header,
)
from tests.helpers.imagegen import PNG_SIGNATURE, gradient, make_bmp, make_gif, make_jpeg, make_png, make_webp

SAMPLES = Path(__file__).resolve().parents[1] / "dags" / "sample_images"
LOGGER = "airflow_provider_apicore.images"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def memory_dir() -> ObjectStoragePath:
    """A fresh memory:// directory; the in-memory store is process-wide, so each test gets its own."""
    return ObjectStoragePath(f"memory://bucket-{uuid.uuid4().hex[:10]}/images")


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (make_png(3, 2), "image/png"),
        (make_jpeg(), "image/jpeg"),
        (make_gif(3, 2), "image/gif"),
        (b"GIF87a" + b"\x00" * 10, "image/gif"),
        (make_webp(3, 2), "image/webp"),
    ],
)
def test_detect_image_type_recognises_supported_magic_bytes(data: bytes, mime: str) -> None:
    assert detect_image_type(data[:HEADER_BYTES]) == mime


@pytest.mark.parametrize(
    "data", [b"", b"hello world", make_bmp(), b"RIFF\x10\x00\x00\x00WAVEfmt ", b"\x89PNX\r\n\x1a\n"]
)
def test_detect_image_type_returns_none_for_other_content(data: bytes) -> None:
    assert detect_image_type(data) is None


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (make_bmp(), "BMP"),
        (b"II*\x00\x08\x00\x00\x00", "TIFF"),
        (b"MM\x00*\x00\x00\x00\x08", "TIFF"),
        (b'<svg xmlns="http://www.w3.org/2000/svg">', "SVG"),
        (b"\xef\xbb\xbf  <?xml version='1.0'?><svg", "SVG/XML"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC/HEIF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "AVIF"),
        (b"%PDF-1.7\n%\xe2\xe3", "PDF"),
        (b"\x00\x00\x01\x00\x01\x00\x10\x10", "ICO"),
    ],
)
def test_describe_unsupported_names_known_formats(header: bytes, name: str) -> None:
    assert describe_unsupported(header) == name


@pytest.mark.parametrize("header", [make_png(), make_jpeg(), b"hello", b"BMW is a car brand"])
def test_describe_unsupported_returns_none_for_supported_or_unknown(header: bytes) -> None:
    assert describe_unsupported(header[:HEADER_BYTES]) is None


def test_validate_image_header_returns_the_mime_type() -> None:
    assert validate_image_header(make_gif()[:HEADER_BYTES], "x.gif") == "image/gif"


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (512, "512 B"), (12595, "12.3 KiB"), (DEFAULT_MAX_IMAGE_BYTES, "10.0 MiB")]
)
def test_format_size_uses_binary_units(size: int, text: str) -> None:
    assert format_size(size) == text


# ---------------------------------------------------------------- loading local files


def test_load_image_reads_a_png_and_describes_it(tmp_path: Path) -> None:
    data = make_png(40, 30, gradient(40, 30))
    path = write(tmp_path / "cat.png", data)

    image = load_image(str(path))

    assert image.name == "cat.png"
    assert image.path == str(path)
    assert image.mime == "image/png"
    assert image.size == len(data)
    assert image.data == data
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.log_summary() == f"cat.png (image/png, {format_size(len(data))})"


def test_image_data_repr_and_summary_never_contain_the_bytes(tmp_path: Path) -> None:
    data = make_jpeg("x" * 500)
    image = load_image(write(tmp_path / "photo.jpg", data))
    encoded = base64.b64encode(data).decode()[:20]
    for text in (repr(image), str(image), image.log_summary()):
        assert "data=" not in text
        assert encoded not in text


def test_load_image_trusts_bytes_not_the_file_name(tmp_path: Path) -> None:
    image = load_image(write(tmp_path / "actually-a-png.jpg", make_png()))
    assert image.mime == "image/png"


@pytest.mark.parametrize(
    ("maker", "mime"),
    [(make_png, "image/png"), (make_jpeg, "image/jpeg"), (make_gif, "image/gif"), (make_webp, "image/webp")],
)
def test_load_image_accepts_every_supported_type(tmp_path: Path, maker, mime: str) -> None:
    assert load_image(write(tmp_path / "img", maker())).mime == mime


def test_load_image_accepts_pathlib_relative_and_home_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "pics" / "a b.png", make_png())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))

    assert load_image(path).path == str(path)
    assert load_image("pics/a b.png").path == str(path)
    assert load_image("~/pics/a b.png").path == str(path)


def test_load_image_accepts_file_urls_plain_and_percent_encoded(tmp_path: Path) -> None:
    path = write(tmp_path / "sub dir" / "été.png", make_png())

    assert load_image(f"file://{path}").data == path.read_bytes()
    assert load_image(path.as_uri()).data == path.read_bytes()  # file:///...sub%20dir/%C3%A9t%C3%A9.png


def test_load_image_accepts_local_object_storage_paths(tmp_path: Path) -> None:
    path = write(tmp_path / "x.gif", make_gif())
    image = load_image(ObjectStoragePath(str(path)))
    assert (image.mime, image.name) == ("image/gif", "x.gif")


def test_load_image_reads_memory_object_storage(tmp_path: Path) -> None:
    root = memory_dir()
    root.mkdir(parents=True, exist_ok=True)
    data = make_jpeg("memory")
    (root / "in memory.jpg").write_bytes(data)

    image = load_image(root / "in memory.jpg")
    same = load_image(str(root / "in memory.jpg"))

    assert (image.mime, image.size, image.data) == ("image/jpeg", len(data), data)
    assert image.path == str(root / "in memory.jpg")
    assert same.sha256 == image.sha256


def test_load_image_names_a_missing_memory_file() -> None:
    missing = memory_dir() / "nope.png"
    with pytest.raises(InvalidImageError, match="file does not exist") as info:
        load_image(missing)
    assert info.value.source == str(missing)


# ---------------------------------------------------------------- rejection rules


@pytest.mark.parametrize(
    ("name", "data", "rule"),
    [
        ("empty.png", b"", "the file is empty (0 bytes)"),
        ("notes.png", b"hello world, not an image", "content is not an image (starts with b'hello world,'"),
        ("notes.png", b"hello world, not an image", "even though the name ends in .png"),
        ("notes.txt", b"hello", "content is not a supported image (starts with b'hello'); supported: PNG"),
        (
            "scan.bmp",
            make_bmp(),
            "BMP files are not supported (detected from the content); supported: PNG, JPEG",
        ),
        ("scan.png", make_bmp(), "the name ends in .png, but the content decides"),
        ("doc.pdf", b"%PDF-1.4\n1 0 obj", "PDF files are not supported"),
        ("icon.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG files are not supported"),
        ("phone.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1", "HEIC/HEIF files are not supported"),
        ("cut.png", PNG_SIGNATURE + b"\x00\x00\x00\x0dIH", "truncated PNG: the first 24 bytes"),
        ("cut.png", PNG_SIGNATURE[:5], "truncated PNG"),
        ("bad.png", PNG_SIGNATURE + b"\x00\x00\x00\x0dXXXX" + b"\x00" * 16, "corrupt PNG: the IHDR chunk"),
        ("cut.jpg", b"\xff\xd8\xff", "truncated JPEG"),
        ("cut.jpg", b"\xff\xd8", "truncated JPEG"),
        ("bad.jpg", b"\xff\xd8\x00\x10JFIF", "corrupt JPEG"),
        ("cut.gif", b"GIF89a\x04\x00", "truncated GIF: the GIF header and screen descriptor need 13 bytes"),
        ("cut.webp", b"RIFF\x20\x00\x00\x00WEBPVP", "truncated WEBP: a WEBP header needs 16 bytes"),
        ("bad.webp", b"RIFF\x20\x00\x00\x00WEBPABCD" + b"\x00" * 8, "corrupt WEBP: no VP8"),
    ],
)
def test_load_image_rejects_with_the_file_and_rule_named(
    tmp_path: Path, name: str, data: bytes, rule: str
) -> None:
    path = write(tmp_path / name, data)
    with pytest.raises(InvalidImageError) as info:
        load_image(path)
    assert info.value.source == str(path)
    assert rule in info.value.rule
    assert str(path) in str(info.value)


def test_invalid_image_error_is_an_input_error() -> None:
    assert issubclass(InvalidImageError, ApicoreInputError)
    assert issubclass(InvalidImageError, ValueError)


def test_load_image_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="file does not exist") as info:
        load_image(tmp_path / "missing.png")
    assert info.value.source == str(tmp_path / "missing.png")


def test_load_image_rejects_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="this is a directory, not an image file"):
        load_image(tmp_path)


def test_load_image_rejects_an_empty_path() -> None:
    with pytest.raises(InvalidImageError, match="the path is empty"):
        load_image("  ")


def test_load_image_rejects_an_oversized_file_without_opening_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "big.png", make_png(16, 16) + b"\x00" * 1000)

    def must_not_open(*args, **kwargs):
        raise AssertionError("an oversized file was opened")

    monkeypatch.setattr(LocalFileSystem, "_open", must_not_open)
    with pytest.raises(InvalidImageError) as info:
        load_image(path, max_bytes=500)
    size = path.stat().st_size
    assert f"({size:,} bytes), over the limit of 500 B (500 bytes)" in info.value.rule
    assert info.value.source == str(path)


def test_load_image_default_limit_is_ten_mebibytes(tmp_path: Path) -> None:
    path = write(tmp_path / "huge.png", make_png() + b"\x00" * DEFAULT_MAX_IMAGE_BYTES)
    with pytest.raises(InvalidImageError, match=r"over the limit of 10\.0 MiB \(10,485,760 bytes\)"):
        load_image(path)


def test_load_image_accepts_an_image_exactly_at_the_limit(tmp_path: Path) -> None:
    data = make_png(8, 8)
    assert load_image(write(tmp_path / "a.png", data), max_bytes=len(data)).size == len(data)


def test_load_image_reports_unreadable_files_with_the_os_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "locked.png", make_png())

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Tests may run as root, for whom chmod does not block reads; fail the filesystem's open instead.
    monkeypatch.setattr(LocalFileSystem, "_open", denied)
    with pytest.raises(InvalidImageError, match="cannot read the file: Permission denied") as info:
        load_image(path)
    assert info.value.source == str(path)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_load_image_rejects_a_nonsense_size_limit(tmp_path: Path, bad) -> None:
    with pytest.raises(ApicoreConfigError, match="max_bytes must be a positive number"):
        load_image(write(tmp_path / "a.png", make_png()), max_bytes=bad)


# ---------------------------------------------------------------- data URLs


def test_data_url_round_trip_keeps_bytes_type_and_hash(tmp_path: Path) -> None:
    original = load_image(write(tmp_path / "a.gif", make_gif(5, 4)))
    url = original.to_data_url()

    assert url.startswith("data:image/gif;base64,")
    again = load_image(url)
    assert (again.mime, again.data, again.sha256, again.size) == (
        original.mime,
        original.data,
        original.sha256,
        original.size,
    )
    assert (again.name, again.path) == ("data URL", "data URL")


def test_to_data_url_detects_the_type_when_not_given() -> None:
    assert to_data_url(make_jpeg()).startswith("data:image/jpeg;base64,/9j/")
    with pytest.raises(InvalidImageError, match="not a supported image"):
        to_data_url(b"plain text")


def test_parse_data_url_accepts_upper_case_and_extra_parameters() -> None:
    data = make_png()
    encoded = base64.b64encode(data).decode()
    assert parse_data_url(f"DATA:IMAGE/PNG;BASE64,{encoded}") == ("image/png", data)
    assert parse_data_url(f"data:image/png;name=a.png;base64,{encoded}") == ("image/png", data)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("image/png;base64,AAAA", "must start with 'data:'"),
        ("data:image/png;base64", "has no ',' between the header and the data"),
        ("data:;base64,AAAA", "names no media type"),
        ("data:image/png,AAAA", "must be base64-encoded (header ending in ';base64')"),
        ("data:image/png;base64,", "holds no data after the comma"),
        ("data:image/png;base64,iVBO-w0K", "'-' at offset 4 (URL-safe base64 is not accepted"),
        ("data:image/png;base64,iVBO\nw0K", "(line breaks and spaces are not allowed)"),
        ("data:image/png;base64,iVBORw0", "data is not valid base64"),
    ],
)
def test_parse_data_url_rejects_malformed_urls(url: str, rule: str) -> None:
    with pytest.raises(InvalidImageError) as info:
        parse_data_url(url)
    assert info.value.source == "data URL"
    assert rule in info.value.rule


def test_parse_data_url_rejects_oversized_data_before_decoding() -> None:
    url = "data:image/png;base64," + "A" * 4000
    with pytest.raises(InvalidImageError, match=r"about 2\.9 KiB \(3,000 bytes\), over the limit of 1000 B"):
        parse_data_url(url, max_bytes=1000)


def test_error_quotes_only_the_start_of_a_long_bad_data_url() -> None:
    url = "image/png;base64," + "A" * 100_000
    with pytest.raises(InvalidImageError) as info:
        load_image("data:" + url[:-1] + "!")
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("data:image/jpg;base64," + base64.b64encode(make_jpeg()).decode(), "write image/jpeg"),
        (
            "data:image/bmp;base64," + base64.b64encode(make_bmp()).decode(),
            "declared type 'image/bmp' is not",
        ),
        (
            "data:image/png;base64," + base64.b64encode(make_jpeg()).decode(),
            "declares image/png but the data is a JPEG",
        ),
        (
            "data:image/png;base64," + base64.b64encode(b"hello there").decode(),
            "content is not a supported image",
        ),
        ("data:image/png;base64," + base64.b64encode(PNG_SIGNATURE).decode(), "truncated PNG"),
    ],
)
def test_load_image_validates_data_url_content(url: str, rule: str) -> None:
    with pytest.raises(InvalidImageError) as info:
        load_image(url)
    assert info.value.source == "data URL"
    assert rule in info.value.rule


def test_load_image_applies_the_size_limit_to_data_urls() -> None:
    url = to_data_url(make_png(32, 32, gradient(32, 32)))
    with pytest.raises(InvalidImageError, match="over the limit of 100 B"):
        load_image(url, max_bytes=100)


def test_image_data_to_data_url_decodes_back_to_the_bytes() -> None:
    data = make_webp(4, 4, extra=b"abc")
    image = ImageData("x", "x", "image/webp", len(data), hashlib.sha256(data).hexdigest(), data)
    assert parse_data_url(image.to_data_url()) == ("image/webp", data)


# ---------------------------------------------------------------- listing


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write(root / "a.jpg", make_jpeg("a"))
    write(root / "b photo.PNG", make_png(4, 4, (1, 2, 3)))
    write(root / "ünïcode café.gif", make_gif())
    write(root / "sub" / "c.webp", make_webp())
    write(root / "sub" / "deeper" / "d.JPEG", make_jpeg("d"))
    write(root / ".hidden.png", make_png())
    write(root / ".git" / "e.png", make_png())
    write(root / "notes.txt", b"just some notes\n")
    write(root / "fake.png", b"not really a png")
    write(root / "empty.png", b"")
    write(root / "scan.bmp", make_bmp())
    return root


def test_list_images_finds_images_recursively_sorted_and_skips_the_rest(image_tree: Path) -> None:
    found = list_images(str(image_tree))

    expected = sorted(
        str(image_tree / rel)
        for rel in ("a.jpg", "b photo.PNG", "ünïcode café.gif", "sub/c.webp", "sub/deeper/d.JPEG")
    )
    assert [str(p) for p in found] == expected
    assert all(isinstance(p, ObjectStoragePath) for p in found)


def test_list_images_logs_one_line_saying_what_was_skipped_and_why(
    image_tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        list_images(image_tree)

    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1
    assert lines[0].startswith(f"Found 5 images in {image_tree}")
    assert lines[0].endswith(
        "skipped 6 files: 2 not images (fake.png, notes.txt), 1 unsupported format (scan.bmp), "
        "1 empty (empty.png), 2 hidden"
    )


def test_list_images_top_level_only_when_not_recursive(image_tree: Path) -> None:
    found = list_images(image_tree, recursive=False)
    assert sorted(p.name for p in found) == ["a.jpg", "b photo.PNG", "ünïcode café.gif"]


def test_list_images_pattern_is_case_insensitive_on_names(image_tree: Path) -> None:
    assert [p.name for p in list_images(image_tree, pattern="*.png")] == ["b photo.PNG"]
    assert sorted(p.name for p in list_images(image_tree, pattern="*.jp*g")) == ["a.jpg", "d.JPEG"]


def test_list_images_pattern_with_a_slash_matches_relative_paths(image_tree: Path) -> None:
    assert [p.name for p in list_images(image_tree, pattern="sub/*")] == ["c.webp", "d.JPEG"]
    assert [p.name for p in list_images(image_tree, pattern="sub/deeper/*")] == ["d.JPEG"]


def test_list_images_reads_only_the_header_of_each_file(
    image_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow_provider_apicore.images as images_module

    write(image_tree / "large.txt", b"x" * 200_000)
    sizes: list[int] = []

    class Spy:
        def __init__(self, fh) -> None:
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

        def read(self, size: int = -1) -> bytes:
            sizes.append(size)
            return self.fh.read(size)

    def spy_open(path, mode="r"):
        return Spy(open(path, mode))  # Spy closes it

    monkeypatch.setattr(images_module, "open", spy_open, raising=False)
    monkeypatch.setattr(LocalFileOpener, "read", lambda self, size=-1: sizes.append(size) or b"")
    list_images(image_tree)
    assert len(sizes) >= 8  # every candidate file's header was read (one read each)
    assert all(0 <= size <= HEADER_BYTES for size in sizes)


def test_list_images_skips_files_over_the_size_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "small.png", make_png(2, 2))
    write(tmp_path / "large.png", make_png(2, 2) + b"\x00" * 500)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        found = list_images(tmp_path, max_bytes=200)
    assert [p.name for p in found] == ["small.png"]
    assert "1 over the size limit (large.png)" in caplog.text
    assert [p.name for p in list_images(tmp_path, max_bytes=None)] == ["large.png", "small.png"]


def test_list_images_names_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="directory does not exist") as info:
        list_images(tmp_path / "nowhere")
    assert info.value.source == str(tmp_path / "nowhere")


def test_list_images_without_images_says_what_it_looked_at(tmp_path: Path) -> None:
    write(tmp_path / "notes.txt", b"hello")
    write(tmp_path / "data.csv", b"a,b\n1,2\n")
    write(tmp_path / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    with pytest.raises(InvalidImageError) as info:
        list_images(tmp_path)
    assert info.value.source == str(tmp_path)
    assert info.value.rule.startswith(
        "no images found: 3 files looked at, 3 skipped (2 not images (data.csv, notes.txt), 1 hidden)"
    )


def test_list_images_in_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="no images found: 0 files looked at, 0 skipped"):
        list_images(tmp_path)


def test_list_images_returns_a_single_file_source_as_is(tmp_path: Path) -> None:
    path = write(tmp_path / "one.png", make_png())
    assert list_images(str(path)) == [ObjectStoragePath(str(path))]


def test_list_images_accepts_a_list_of_paths_in_the_given_order(tmp_path: Path) -> None:
    b = write(tmp_path / "b.png", make_png())
    a = write(tmp_path / "a b.jpg", make_jpeg())
    mem = memory_dir()
    mem.mkdir(parents=True, exist_ok=True)
    (mem / "m.gif").write_bytes(make_gif())

    found = list_images([str(b), a, mem / "m.gif", a.as_uri()])

    # A file:// URL keeps its scheme, decoded: "a%20b.jpg" names the file "a b.jpg".
    assert [str(p) for p in found] == [str(b), str(a), str(mem / "m.gif"), f"file://{a}"]
    assert all(isinstance(p, ObjectStoragePath) for p in found)


def test_list_images_names_the_missing_entry_of_a_list(tmp_path: Path) -> None:
    ok = write(tmp_path / "ok.png", make_png())
    with pytest.raises(InvalidImageError, match="file does not exist") as info:
        list_images([ok, tmp_path / "gone.png"])
    assert info.value.source == str(tmp_path / "gone.png")


def test_list_images_rejects_a_directory_inside_a_list(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="this is a directory"):
        list_images([tmp_path])


def test_list_images_walks_memory_object_storage(caplog: pytest.LogCaptureFixture) -> None:
    root = memory_dir()
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / ".cache").mkdir(parents=True, exist_ok=True)
    (root / "z last.PNG").write_bytes(make_png())
    (root / "a.jpg").write_bytes(make_jpeg())
    (root / "sub" / "b.webp").write_bytes(make_webp())
    (root / ".cache" / "c.png").write_bytes(make_png())
    (root / "readme.md").write_bytes(b"# images")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        found = list_images(root)

    assert [str(p) for p in found] == [
        str(root / "a.jpg"),
        str(root / "sub" / "b.webp"),
        str(root / "z last.PNG"),
    ]
    assert "skipped 2 files: 1 not an image (readme.md), 1 hidden" in caplog.text
    assert load_image(found[1]).mime == "image/webp"


def test_list_images_missing_memory_directory() -> None:
    with pytest.raises(InvalidImageError, match="directory does not exist"):
        list_images(memory_dir())


def test_list_images_accepts_file_urls(image_tree: Path) -> None:
    assert len(list_images(image_tree.as_uri(), recursive=False)) == 3


def test_list_images_rejects_data_urls() -> None:
    with pytest.raises(InvalidImageError, match="pass data URLs to load_image"):
        list_images(to_data_url(make_png()))


# ---------------------------------------------------------------- bundled samples


def test_sample_images_are_small_real_images_and_the_readme_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        found = list_images(SAMPLES)

    names = [p.name for p in found]
    assert len(names) == 5
    assert "sunset beach.JPG" in names
    assert "1 not an image (README.txt)" in caplog.text
    mimes = [load_image(p).mime for p in found]
    assert mimes.count("image/png") >= 2
    assert mimes.count("image/jpeg") >= 2
    assert all(load_image(p).size < 50 * 1024 for p in found)
