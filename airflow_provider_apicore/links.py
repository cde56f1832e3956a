"""
Extra links in the task view: the result image and the manifest.

Airflow 3 shows an operator's extra link from the XCom its link stores under ``xcom_key``
(``_link_<class name>``); the task runner also recomputes it when the task ends. So a link appears as
soon as :meth:`ApicoreLink.persist` pushes it, which the operators do **before deferring** when the
value is known (the manifest path always; the image URL once the task has one), and again at the end.

Operators get both links with :class:`ApicoreLinksMixin`::

    class MJBatchDescribeOperator(ApicoreLinksMixin, BaseOperator):
        ...
        def execute(self, context):
            self.persist_manifest_link(context, manifest_path)

For the links to be listed by the provider they are also named in ``get_provider_info()["extra-links"]``.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink, ObjectStoragePath

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)


def browsable_url(path: str | os.PathLike | ObjectStoragePath | None) -> str | None:
    """
    A URL a browser can open for a stored file: the S3 / GCS console for ``s3://`` and ``gs://``,
    http(s) URLs as they are, ``file://`` for local paths (useful where the UI runs on the same host).

    :param path: a path or URL; None gives None
    """
    if path is None:
        return None
    text = str(path)
    if not text:
        return None
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme in ("http", "https"):
        return text
    if parsed.scheme in ("s3", "s3a"):
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        query = urllib.parse.urlencode({"prefix": key})
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?{query}"
    if parsed.scheme in ("gs", "gcs"):
        return f"https://console.cloud.google.com/storage/browser/_details/{parsed.netloc}/{parsed.path.lstrip('/')}"
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme == "file" else text
        return "file://" + urllib.parse.quote(os.path.abspath(local))
    return text


class ApicoreLink(BaseOperatorLink):
    """An extra link whose whole URL is stored in XCom (under ``xcom_key``) by :meth:`persist`."""

    name: ClassVar[str] = "APICore"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The stored URL, or "" (the UI greys the button out) when none was stored."""
        from airflow.sdk.execution_time.xcom import XCom

        try:
            value = XCom.get_value(key=self.xcom_key, ti_key=ti_key)
        except Exception:  # the link must never fail the task's finalisation
            log.debug("No %s link stored for %s", self.name, ti_key, exc_info=True)
            return ""
        return value if isinstance(value, str) else ""

    @classmethod
    def persist(cls, context: Mapping[str, Any], url: str | None) -> str | None:
        """
        Store the link now, so the task view shows it even while the task is deferred.

        :param context: the task's context
        :param url: the link; None stores nothing
        :return: the stored URL
        """
        if not url:
            return None
        context["ti"].xcom_push(key=cls().xcom_key, value=url)
        return url


class ApicoreResultImageLink(ApicoreLink):
    """The Midjourney result image (the describe job's uploaded image, an imagine grid ...)."""

    name: ClassVar[str] = "Midjourney image"


class ApicoreManifestLink(ApicoreLink):
    """The results manifest (S3/GCS console, or a ``file://`` URL for local manifests)."""

    name: ClassVar[str] = "Results manifest"


class ApicoreLinksMixin:
    """``operator_extra_links`` for the result image and the manifest, and helpers to set them."""

    operator_extra_links = (ApicoreResultImageLink(), ApicoreManifestLink())

    def persist_result_image_link(self, context: Mapping[str, Any], image_url: str | None) -> str | None:
        """Show the result image's URL as the "Midjourney image" link (http(s) only)."""
        if not image_url or urllib.parse.urlsplit(str(image_url)).scheme not in ("http", "https"):
            return None
        return ApicoreResultImageLink.persist(context, str(image_url))

    def persist_manifest_link(
        self, context: Mapping[str, Any], manifest_path: str | os.PathLike | ObjectStoragePath
    ) -> str | None:
        """Show the manifest as the "Results manifest" link."""
        return ApicoreManifestLink.persist(context, browsable_url(manifest_path))


EXTRA_LINKS = [
    "airflow_provider_apicore.links.ApicoreResultImageLink",
    "airflow_provider_apicore.links.ApicoreManifestLink",
]
