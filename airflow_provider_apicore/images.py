"""
Load, validate and list the images sent to Midjourney's DESCRIBE.

Image types are always decided from the bytes (magic numbers), never from file names. Every rejection
raises :class:`~airflow_provider_apicore.exceptions.InvalidImageError` naming the file (or "data URL")
and the rule it broke. Paths may be local paths, ``file://`` URLs or any
:class:`~airflow.sdk.ObjectStoragePath` (``s3://``, ``gs://``, ``memory://``, ...).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote

from airflow.sdk import ObjectStoragePath

from airflow_provider_apicore.exceptions import ApicoreConfigError, InvalidImageError
from airflow_provider_apicore.schemas import first_non_base64

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

#: Largest image accepted by default (10 MiB); its data URL is about 14 MB.
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024

#: MIME types Midjourney's DESCRIBE accepts.
SUPPORTED_MIME_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "image/gif", "image/webp")

#: Bytes read from each file to recognise it; enough for every signature and header rule below.
HEADER_BYTES = 32

#: Name used in errors for images given as data URLs.
DATA_URL_SOURCE = "data URL"

ImageSource = str | os.PathLike[str] | ObjectStoragePath

_SUPPORTED_NAMES = "PNG, JPEG, GIF, WEBP"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IMAGE_SUFFIXES = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".gif": "GIF",
    ".webp": "WEBP",
}
_MIME_NAMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_DIRECTORY_RULE = "this is a directory, not an image file (use list_images for folders)"
# Local pipes, sockets and devices: fsspec reports type "other". Opening a pipe would wait for a writer.
_NOT_REGULAR_RULE = "not a regular file (a named pipe, socket or device); cannot be read as an image"


def detect_image_type(header: bytes) -> str | None:
    """
    Return the MIME type of a supported image from its first bytes, or None.

    Only the magic numbers are looked at; :func:`validate_image_header` also checks that the header is
    complete.

    :param header: the first bytes of the file (:data:`HEADER_BYTES` are enough)
    :return: ``image/png``, ``image/jpeg``, ``image/gif``, ``image/webp`` or None
    """
    if header.startswith(_PNG_SIGNATURE):
        return "image/png"
    if header.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if header.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return "image/webp"
    return None


def describe_unsupported(header: bytes) -> str | None:
    """
    Name a well-known format that DESCRIBE does not accept, so errors can say what a file is.

    :param header: the first bytes of the file
    :return: a format name such as ``"BMP"``, ``"PDF"`` or ``"HEIC/HEIF"``, or None if not recognised
    """
    if header[:2] == b"BM" and len(header) >= 14 and header[6:10] == b"\0\0\0\0":
        return "BMP"
    if header[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if header[4:8] == b"ftyp":
        brand = header[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIC/HEIF"
        return f"ISO media (MP4/MOV video, brand {brand.decode('latin-1')!r})"
    if header.startswith(b"%PDF-"):
        return "PDF"
    if header[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and header[4:6] not in (b"", b"\0\0"):
        return "ICO"
    text = header.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg"):
        return "SVG"
    if text.startswith(b"<?xml"):
        return "SVG/XML"
    return None


def _truncation_problem(header: bytes) -> str | None:
    """Say what is missing when a header starts like a supported image but is cut short or corrupt."""
    n = len(header)
    if header.startswith(_PNG_SIGNATURE) or (n < 8 and _PNG_SIGNATURE.startswith(header)):
        if n < 24:
            return (
                f"truncated PNG: the first 24 bytes must hold the PNG signature and the IHDR chunk, "
                f"but the file has only {n} bytes"
            )
        if header[12:16] != b"IHDR":
            return "corrupt PNG: the IHDR chunk must follow the signature"
        return None
    if header.startswith(b"\xff\xd8") or header == b"\xff":
        if n < 4:
            return f"truncated JPEG: a JPEG starts with at least 4 bytes (FF D8 FF ..), the file has {n}"
        if header[2] != 0xFF:
            return "corrupt JPEG: the start-of-image marker FF D8 is not followed by a segment marker FF"
        return None
    if header.startswith(b"GIF8") or (3 <= n < 4 and b"GIF8".startswith(header)):
        if n < 13:
            return f"truncated GIF: the GIF header and screen descriptor need 13 bytes, the file has {n}"
        return None
    if header.startswith(b"RIFF") and (n < 12 or header[8:12] == b"WEBP"):
        if n < 16:
            return f"truncated WEBP: a WEBP header needs 16 bytes, the file has {n}"
        if header[12:15] != b"VP8":
            return "corrupt WEBP: no VP8/VP8L/VP8X chunk after the RIFF header"
        return None
    return None


def validate_image_header(header: bytes, source: str, name: str | None = None) -> str:
    """
    Check the first bytes of an image and return its MIME type.

    :param header: the first bytes of the file (:data:`HEADER_BYTES`, or the whole file if shorter)
    :param source: the file or "data URL", named in the error
    :param name: the file name, used only to word the error when content and name disagree
    :raises InvalidImageError: empty, truncated, unsupported format, or not an image at all
    :return: one of :data:`SUPPORTED_MIME_TYPES`
    """
    problem, mime = _classify_header(header, name)
    if problem is not None:
        raise InvalidImageError(source, problem[1])
    assert mime is not None
    return mime


def _classify_header(header: bytes, name: str | None) -> tuple[tuple[str, str] | None, str | None]:
    """Return ((reason key, rule), None) for a bad header, or (None, mime) for a good one."""
    if not header:
        return ("empty", "the file is empty (0 bytes)"), None
    truncated = _truncation_problem(header)
    if truncated:
        return ("truncated", truncated), None
    mime = detect_image_type(header)
    if mime is not None:
        return None, mime
    suffix = os.path.splitext(name or "")[1].lower()
    claimed = _IMAGE_SUFFIXES.get(suffix)
    known = describe_unsupported(header)
    if known:
        rule = f"{known} files are not supported (detected from the content); supported: {_SUPPORTED_NAMES}"
        if claimed:
            rule += f" (the name ends in {suffix}, but the content decides)"
        return ("unsupported", rule), None
    start = f"starts with {header[:12]!r}" + ("..." if len(header) > 12 else "")
    if claimed:
        rule = f"content is not an image ({start}) even though the name ends in {suffix}"
    else:
        rule = f"content is not a supported image ({start}); supported: {_SUPPORTED_NAMES}"
    return ("not_image", rule), None


def format_size(num_bytes: int) -> str:
    """Render a byte count for people: ``512 B``, ``12.3 KiB``, ``10.0 MiB``."""
    if num_bytes < 1024:
        return f"{num_bytes} B"
    if num_bytes < 1024 * 1024:
        return f"{num_bytes / 1024:.1f} KiB"
    return f"{num_bytes / (1024 * 1024):.1f} MiB"


def _too_large_rule(size: int, max_bytes: int, about: bool = False) -> str:
    approx = "about " if about else ""
    return (
        f"the image is {approx}{format_size(size)} ({size:,} bytes), over the limit of "
        f"{format_size(max_bytes)} ({max_bytes:,} bytes)"
    )


@dataclass(frozen=True)
class ImageData:
    """
    An image read and validated, ready to be sent.

    :param name: display name (file name, or "data URL")
    :param path: where it came from (``str`` of the path, or "data URL")
    :param mime: MIME type detected from the bytes
    :param size: size in bytes
    :param sha256: hex SHA-256 of the bytes
    :param data: the bytes (left out of ``repr`` so they never reach a log)
    """

    name: str
    path: str
    mime: str
    size: int
    sha256: str
    data: bytes = field(repr=False)

    @classmethod
    def of(cls, name: str, path: str, mime: str, data: bytes) -> ImageData:
        """An image's bytes with its size and SHA-256 worked out."""
        return cls(
            name=name,
            path=path,
            mime=mime,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            data=data,
        )

    def to_data_url(self) -> str:
        """Return the image as ``data:<mime>;base64,<data>``, the form APICore's ``base64`` field takes."""
        return to_data_url(self.data, self.mime)

    def log_summary(self) -> str:
        """One short description for logs, e.g. ``"cat.png (image/png, 12.3 KiB)"``; never the data."""
        return f"{self.name} ({self.mime}, {format_size(self.size)})"


def to_data_url(data: bytes, mime: str | None = None) -> str:
    """
    Encode image bytes as a data URL.

    :param data: the image bytes
    :param mime: the MIME type; detected from the bytes when omitted
    :raises InvalidImageError: if ``mime`` is omitted and the bytes are not a supported image
    """
    if mime is None:
        mime = validate_image_header(data[:HEADER_BYTES], DATA_URL_SOURCE)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _excerpt(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_data_url(s: str, max_bytes: int | None = None) -> tuple[str, bytes]:
    """
    Split a ``data:<mime>;base64,<data>`` URL into its MIME type and decoded bytes.

    :param s: the data URL
    :param max_bytes: if given, reject data that decodes to more bytes, before decoding it
    :raises InvalidImageError: naming "data URL" and what is wrong (prefix, header, encoding, size)
    :return: (MIME type as declared, lower-cased; decoded bytes)
    """
    src = DATA_URL_SOURCE
    if not isinstance(s, str):
        raise InvalidImageError(src, f"a data URL must be a string, got {type(s).__name__}")
    if s[:5].lower() != "data:":
        raise InvalidImageError(
            src, f"must start with 'data:', like data:image/png;base64,...; got {_excerpt(s)}"
        )
    header, comma, payload = s.partition(",")
    if not comma:
        raise InvalidImageError(src, f"has no ',' between the header and the data; got {_excerpt(s)}")
    params = [p.strip() for p in header[5:].split(";")]
    mime = params[0].lower()
    if not mime:
        raise InvalidImageError(
            src, f"names no media type, expected e.g. data:image/png;base64,...; got {header!r}"
        )
    if "base64" not in (p.lower() for p in params[1:]):
        raise InvalidImageError(
            src, f"must be base64-encoded (header ending in ';base64'); got {_excerpt(header)}"
        )
    if not payload:
        raise InvalidImageError(src, "holds no data after the comma")
    if max_bytes is not None:
        estimate = len(payload) // 4 * 3
        if estimate > max_bytes:
            raise InvalidImageError(src, _too_large_rule(estimate, max_bytes, about=True))
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError as err:
        bad = first_non_base64(payload)
        if bad:
            ch, offset, hint = bad
            rule = f"data is not valid base64: {ch!r} at offset {offset}{hint}"
        else:
            rule = f"data is not valid base64 ({err}); check the padding"
        raise InvalidImageError(src, rule) from None
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidImageError(src, _too_large_rule(len(data), max_bytes))
    return mime, data


def _check_max_bytes(max_bytes: int | None) -> None:
    if max_bytes is not None and (
        not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0
    ):
        raise ApicoreConfigError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")


def _is_data_url(source: object) -> bool:
    return isinstance(source, str) and source[:5].lower() == "data:"


def _to_storage_path(source: ImageSource) -> ObjectStoragePath:
    """Turn a path string, ``file://`` URL, os.PathLike or ObjectStoragePath into an ObjectStoragePath."""
    if isinstance(source, ObjectStoragePath):
        return source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise InvalidImageError(
            repr(source), f"expected a path, URL or ObjectStoragePath, got {type(source).__name__}"
        )
    if not source.strip():
        raise InvalidImageError(repr(source), "the path is empty")
    # Plain strings without "://" are local paths, even with a colon in the name.
    if "://" not in source:
        return ObjectStoragePath(os.path.abspath(os.path.expanduser(source)))
    path = ObjectStoragePath(source)
    # file:// URLs are often written percent-encoded (sub%20dir); accept both spellings.
    if path.protocol in ("file", "local") and "%" in source and not path.exists():
        decoded = ObjectStoragePath(unquote(source))
        if decoded.exists():
            return decoded
    return path


def _filesystem(path: ObjectStoragePath) -> AbstractFileSystem:
    """
    The fsspec filesystem for a path.

    Airflow's own (which honours the path's connection) when Airflow knows the scheme; Airflow only
    registers ``file`` and the schemes of installed providers, so for others such as ``memory://`` use
    the filesystem the path object itself resolved through fsspec.
    """
    try:
        return path.fs
    except ValueError:
        return path.__wrapped__.fs


#: errno values of read failures that may pass on their own (storage or network hiccups).
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EIO",
        "EAGAIN",
        "EBUSY",
        "EINTR",
        "ETIMEDOUT",
        "ECONNRESET",
        "ECONNABORTED",
        "ECONNREFUSED",
        "ENETDOWN",
        "ENETUNREACH",
        "EHOSTUNREACH",
        "ESTALE",
        "ENOLCK",
    )
    if hasattr(errno, name)
)


class ImageReadError(InvalidImageError):
    """
    Reading the file failed in a way that may pass (an I/O error, a storage timeout or dropped
    connection): the file is not known to be unusable, so a batch records it as retryable.
    """


def is_transient_read_error(err: BaseException) -> bool:
    """Whether a storage error may pass on its own (EIO, timeouts, dropped connections; no errno at all)."""
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return False
    if isinstance(err, (TimeoutError, ConnectionError)):
        return True
    if isinstance(err, OSError):
        # Object stores raise OSError without an errno for failed requests.
        return err.errno is None or err.errno in _TRANSIENT_ERRNOS
    return False


@contextmanager
def _io_errors(source: str) -> Iterator[None]:
    """Turn storage errors into InvalidImageError naming the file and the OS error."""
    try:
        yield
    except InvalidImageError:
        raise
    except FileNotFoundError:
        raise InvalidImageError(source, "file does not exist") from None
    except IsADirectoryError:
        raise InvalidImageError(source, _DIRECTORY_RULE) from None
    except OSError as err:  # PermissionError and other I/O errors
        kind = ImageReadError if is_transient_read_error(err) else InvalidImageError
        raise kind(source, f"cannot read the file: {err.strerror or err}") from None
    except (ImportError, ValueError) as err:
        raise InvalidImageError(source, f"cannot open this kind of path: {err}") from None


def load_image(source: ImageSource, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> ImageData:
    """
    Read one image and check it can be described.

    The size is checked before reading (an oversized file is never read whole) and the type is taken
    from the first bytes, never from the name.

    :param source: local path, ``file://`` URL, :class:`~airflow.sdk.ObjectStoragePath` (``s3://``,
        ``memory://``, ...), or a data URL ``data:image/...;base64,...`` (which is validated too)
    :param max_bytes: largest accepted image in bytes
    :raises InvalidImageError: missing, unreadable, empty, too large, truncated or not a supported image
    """
    _check_max_bytes(max_bytes)
    if _is_data_url(source):
        return _load_data_url(source, max_bytes)  # type: ignore[arg-type]
    if isinstance(source, str) and not source.strip():
        raise InvalidImageError(repr(source), "the path is empty")
    if isinstance(source, str) and "://" not in source and os.path.isabs(source):
        return _load_local(source, max_bytes)
    path = _to_storage_path(source)
    where = str(path)
    name = path.name or where
    with _io_errors(where):
        fs = _filesystem(path)
        info = fs.info(path.path)
        if info.get("type") == "directory":
            raise InvalidImageError(where, _DIRECTORY_RULE)
        if info.get("type") == "other":
            raise InvalidImageError(where, _NOT_REGULAR_RULE)
        size = info.get("size")
        if size == 0:
            raise InvalidImageError(where, "the file is empty (0 bytes)")
        if size is not None and size > max_bytes:
            raise InvalidImageError(where, _too_large_rule(size, max_bytes))
        with fs.open(path.path, "rb") as fh:
            return _read_image(fh, where, name, max_bytes)


def _read_image(fh: Any, where: str, name: str, max_bytes: int) -> ImageData:
    """Read an open image file whose size was checked: the header first, then the rest."""
    header = fh.read(HEADER_BYTES)
    mime = validate_image_header(header, where, name)
    # One byte past the limit tells a file that grew since the size check.
    data = header + fh.read(max_bytes + 1 - len(header))
    if len(data) > max_bytes:
        raise InvalidImageError(where, _too_large_rule(len(data), max_bytes))
    return ImageData.of(name, where, mime, data)


def _load_local(where: str, max_bytes: int) -> ImageData:
    """:func:`load_image` of an absolute local path, without a path object (a batch reads 100,000)."""
    name = os.path.basename(where) or where
    with _io_errors(where):
        st = os.stat(where)
        if stat.S_ISDIR(st.st_mode):
            raise InvalidImageError(where, _DIRECTORY_RULE)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidImageError(where, _NOT_REGULAR_RULE)
        if st.st_size == 0:
            raise InvalidImageError(where, "the file is empty (0 bytes)")
        if st.st_size > max_bytes:
            raise InvalidImageError(where, _too_large_rule(st.st_size, max_bytes))
        with open(where, "rb") as fh:
            return _read_image(fh, where, name, max_bytes)


def _load_data_url(s: str, max_bytes: int) -> ImageData:
    mime, data = parse_data_url(s, max_bytes=max_bytes)
    if mime not in SUPPORTED_MIME_TYPES:
        hint = "; write image/jpeg" if mime in ("image/jpg", "image/pjpeg") else ""
        raise InvalidImageError(
            DATA_URL_SOURCE,
            f"declared type {mime!r} is not supported; supported: {', '.join(SUPPORTED_MIME_TYPES)}{hint}",
        )
    real = validate_image_header(data[:HEADER_BYTES], DATA_URL_SOURCE)
    if real != mime:
        raise InvalidImageError(
            DATA_URL_SOURCE, f"declares {mime} but the data is a {_MIME_NAMES[real]} image ({real})"
        )
    return ImageData.of(DATA_URL_SOURCE, DATA_URL_SOURCE, mime, data)


# Reasons a file is skipped by list_images, in log order: key -> (singular, plural).
_SKIP_REASONS = {
    "not_image": ("not an image", "not images"),
    "unsupported": ("unsupported format", "unsupported formats"),
    "truncated": ("truncated or corrupt", "truncated or corrupt"),
    "empty": ("empty", "empty"),
    "too_large": ("over the size limit", "over the size limit"),
    "not_regular": ("not a regular file", "not regular files"),
    "unreadable": ("unreadable", "unreadable"),
    "hidden": ("hidden", "hidden"),
}
_NAMES_SHOWN = 5


def _skip_summary(skipped: dict[str, list[str]]) -> str:
    parts = []
    for key, (one, many) in _SKIP_REASONS.items():
        names = skipped.get(key)
        if not names:
            continue
        part = f"{len(names)} {one if len(names) == 1 else many}"
        if key != "hidden":
            shown = ", ".join(names[:_NAMES_SHOWN]) + (", …" if len(names) > _NAMES_SHOWN else "")
            part += f" ({shown})"
        parts.append(part)
    return ", ".join(parts)


def _matches(pattern: str, rel: str, name: str) -> bool:
    """Case-insensitive fnmatch on the name, or on the relative path when the pattern has a '/'."""
    pat = pattern.lower()
    if pat.startswith("**/"):
        pat = pat[3:]
    target = rel if "/" in pat else name
    return fnmatchcase(target.lower(), pat)


@dataclass(frozen=True)
class ListedImage:
    """
    One file :func:`scan_images` found: its path and what storage says about it.

    :param path: the file
    :param size: size in bytes, if the store tells
    :param mtime: modification time (epoch seconds), if the store tells
    """

    path: ObjectStoragePath
    size: int | None = None
    mtime: float | None = None


#: ``unchanged(path, size, mtime)``: True when the caller already finished this file as it is now.
UnchangedCheck = Callable[[str, "int | None", "float | None"], bool]


def file_mtime(info: dict) -> float | None:
    """Modification time (epoch seconds) from fsspec ``info``: local ``mtime``, S3 ``LastModified``."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    timestamp = getattr(value, "timestamp", None)
    if callable(timestamp):
        try:
            return float(timestamp())
        except (TypeError, ValueError, OverflowError, OSError):
            return None
    return None


def _skip_reason(
    fs: AbstractFileSystem,
    path: str,
    fs_path: str,
    name: str,
    info: dict | None,
    max_bytes: int | None,
    unchanged: UnchangedCheck | None = None,
    local: bool = False,
) -> tuple[str | None, int | None, float | None]:
    """
    Why a listed file cannot be described (a key of _SKIP_REASONS) or None, with its size and mtime.

    A file ``unchanged`` says was already finished as it is is not opened.

    :param path: the file's full path as the caller names it (what ``unchanged`` is asked about)
    :param fs_path: the same file as ``fs`` names it
    :param info: what the listing already said about the file (type, size, mtime), or None to ask
    """
    try:
        if info is None:
            info = fs.info(fs_path)
        if info.get("type") == "other":
            return "not_regular", None, None
        size = info.get("size")
        mtime = file_mtime(info)
        if size == 0:
            return "empty", size, mtime
        if max_bytes is not None and size is not None and size > max_bytes:
            return "too_large", size, mtime
        if unchanged is not None and size is not None and mtime is not None and unchanged(path, size, mtime):
            return None, size, mtime
        if local:
            with open(fs_path, "rb") as fh:
                header = fh.read(HEADER_BYTES)
        else:
            with fs.open(fs_path, "rb") as fh:
                header = fh.read(HEADER_BYTES)
    except OSError:
        return "unreadable", None, None
    problem, _ = _classify_header(header, name)
    return (problem[0] if problem else None), size, mtime


def _local_entries(directory: str) -> Iterator[tuple[str, bool, dict | None]]:
    """(name, is_dir, info) of a local directory's entries: one ``scandir`` and a stat per entry."""
    with os.scandir(directory) as it:
        for entry in it:
            try:
                st = entry.stat()  # follows symlinks, as fs.info does for a link's target
            except OSError:
                yield entry.name, False, None  # a broken link or a loop: unreadable
                continue
            if stat.S_ISDIR(st.st_mode):
                yield entry.name, True, None
            else:
                kind = "file" if stat.S_ISREG(st.st_mode) else "other"
                yield entry.name, False, {"type": kind, "size": st.st_size, "mtime": st.st_mtime}


def _remote_entries(fs: AbstractFileSystem, directory: str) -> Iterator[tuple[str, bool, dict | None]]:
    """(name, is_dir, info) of an object store prefix: one listing request, no request per object."""
    for info in fs.ls(directory, detail=True):
        name = str(info.get("name", "")).rstrip("/").rsplit("/", 1)[-1]
        if name:
            yield name, info.get("type") == "directory", info


def _local_directory_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _directory_key(path: ObjectStoragePath) -> tuple[int, int] | None:
    """(device, inode) of a local directory, to notice one reached twice through symlinks."""
    if path.protocol not in ("", "file", "local"):
        return None
    try:
        st = os.stat(path.path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _existing_file(source: ImageSource) -> ObjectStoragePath:
    if _is_data_url(source):
        raise InvalidImageError(DATA_URL_SOURCE, "list_images takes paths; pass data URLs to load_image")
    path = _to_storage_path(source)
    where = str(path)
    with _io_errors(where):
        # info(), not exists(): exists() is False for a symlink loop, which is unreadable, not absent.
        info = _filesystem(path).info(path.path)
        if info.get("type") == "directory":
            raise InvalidImageError(
                where, "this is a directory; pass it alone as the source to list its images"
            )
    return path


def list_images(
    source: ImageSource | Sequence[ImageSource],
    pattern: str = "*",
    recursive: bool = True,
    max_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
) -> list[ObjectStoragePath]:
    """
    List the images to describe under a directory, or check a list of files.

    Works the same for local directories, ``file://``, ``memory://``, ``s3://``, ``gs://`` (any
    :class:`~airflow.sdk.ObjectStoragePath`). Hidden files and directories (name starting with ``.``) are
    skipped, and so are files whose first bytes are not a supported image (only :data:`HEADER_BYTES` are
    read from each), empty files and files over ``max_bytes``. One INFO line says how many were skipped
    and why.

    :param source: a directory; a single file (returned as is); or a list of files, which are checked to
        exist and returned in the given order without filtering
    :param pattern: fnmatch pattern matched case-insensitively against file names (``*.jpg`` also
        matches ``X.JPG``), or against the path relative to ``source`` when it contains ``/``
    :param recursive: descend into subdirectories
    :param max_bytes: skip files larger than this; None to keep them all
    :raises InvalidImageError: the directory does not exist or holds no image; a listed file is missing
    :return: paths sorted by their string form
    """
    return [item.path for item in scan_images(source, pattern, recursive, max_bytes)]


def scan_images(
    source: ImageSource | Sequence[ImageSource],
    pattern: str = "*",
    recursive: bool = True,
    max_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    unchanged: UnchangedCheck | None = None,
) -> list[ListedImage]:
    """
    :func:`list_images` with each file's size and modification time.

    Each directory is entered once, even when symlinks lead to it again (a link to a parent directory
    would otherwise list the same images until the path grows too long).

    :param unchanged: ``unchanged(path, size, mtime)`` returns True for files the caller already
        finished with exactly this size and mtime: those are listed without being opened again
    """
    _check_max_bytes(max_bytes)
    if isinstance(source, (list, tuple)):
        return [ListedImage(_existing_file(item)) for item in source]
    found = scan_image_files(source, pattern, recursive, max_bytes, unchanged)
    root = _to_storage_path(source)
    prefix = str(root).rstrip("/") + "/"
    return [
        ListedImage(root / path[len(prefix) :] if path.startswith(prefix) else root, size, mtime)
        for path, size, mtime in found
    ]


class ListedFile(NamedTuple):
    """One image :func:`scan_image_files` found: its path as a string, size and modification time."""

    path: str
    size: int | None
    mtime: float | None


def scan_image_files(
    source: ImageSource,
    pattern: str = "*",
    recursive: bool = True,
    max_bytes: int | None = DEFAULT_MAX_IMAGE_BYTES,
    unchanged: UnchangedCheck | None = None,
) -> list[ListedFile]:
    """
    :func:`scan_images` of one directory as plain tuples, sorted by path.

    Each path is a string equal to ``str()`` of the file's :class:`~airflow.sdk.ObjectStoragePath`, so
    listing 100,000 files creates no path object per file. A directory is read with one listing (one
    ``scandir`` locally; one list request on object stores): no request per file beyond the header
    read of files that ``unchanged`` does not vouch for.
    """
    _check_max_bytes(max_bytes)
    if _is_data_url(source):
        raise InvalidImageError(DATA_URL_SOURCE, "list_images takes paths; pass data URLs to load_image")
    root = _to_storage_path(source)
    where = str(root)
    with _io_errors(where):
        if not root.exists():
            raise InvalidImageError(where, "directory does not exist")
        if not root.is_dir():
            return [ListedFile(where, None, None)]
        fs = _filesystem(root)
        local = root.protocol in ("", "file", "local")
        found: list[ListedFile] = []
        skipped: dict[str, list[str]] = {}
        looked_at = 0
        seen_dirs: set[tuple[int, int]] = set()
        root_key = _directory_key(root)
        if root_key is not None:
            seen_dirs.add(root_key)
        # (the directory as the filesystem names it, as the caller names it, its relative prefix)
        pending: list[tuple[str, str, str]] = [(root.path.rstrip("/"), where.rstrip("/"), "")]
        while pending:
            fs_dir, named_dir, prefix = pending.pop()
            entries = _local_entries(fs_dir) if local else _remote_entries(fs, fs_dir)
            for name, is_dir, info in entries:
                rel = prefix + name
                fs_path = f"{fs_dir}/{name}"
                if is_dir:
                    if name.startswith("."):
                        if recursive:
                            looked_at += 1
                            skipped.setdefault("hidden", []).append(rel + "/")
                    elif recursive:
                        key = _local_directory_key(fs_path) if local else None
                        if key is not None and key in seen_dirs:
                            log.info(
                                "Not entering %s again: a symlink leads back to a directory already listed",
                                rel,
                            )
                            continue
                        if key is not None:
                            seen_dirs.add(key)
                        pending.append((fs_path, f"{named_dir}/{name}", rel + "/"))
                    continue
                if not _matches(pattern, rel, name):
                    continue
                looked_at += 1
                path = f"{named_dir}/{name}"
                if name.startswith("."):
                    reason, size, mtime = "hidden", None, None
                elif local and info is None:
                    reason, size, mtime = "unreadable", None, None
                else:
                    reason, size, mtime = _skip_reason(
                        fs, path, fs_path, name, info, max_bytes, unchanged, local
                    )
                if reason:
                    skipped.setdefault(reason, []).append(rel)
                else:
                    found.append(ListedFile(path, size, mtime))
    for names in skipped.values():
        names.sort()
    n_skipped = sum(len(v) for v in skipped.values())
    scope = f"pattern {pattern!r}, {'recursive' if recursive else 'top level only'}"
    if not found:
        detail = f" ({_skip_summary(skipped)})" if skipped else ""
        raise InvalidImageError(
            where, f"no images found: {looked_at} files looked at, {n_skipped} skipped{detail}; {scope}"
        )
    message = f"Found {len(found)} images in {where} ({scope})"
    if skipped:
        message += f"; skipped {n_skipped} {'file' if n_skipped == 1 else 'files'}: {_skip_summary(skipped)}"
    log.info(message)
    found.sort()
    return found
