"""
Assets and OpenLineage for the operators that write a manifest and training-set files.

Assets
------
:func:`manifest_asset` turns a manifest path into the :class:`~airflow.sdk.Asset` of its real URI
(``file:///...``, ``s3://bucket/key``); :func:`manifest_outlet` returns that asset, or an
:class:`~airflow.sdk.AssetAlias` when the path is only known after templating. :func:`asset_event_extra`
builds the event's ``extra`` (``schema_version``, the counts ``succeeded``, ``failed``, ``unknown_fate``,
``pending``, ``total``, the manifest path, the spend where known) and :func:`emit_manifest_event` attaches
it to the task's outlet event, so a DAG scheduled on the manifest asset
(``dags/apicore_training_data_ready.py``) starts with those numbers in ``triggering_asset_events``.

OpenLineage
-----------
:class:`ApicoreLineageMixin` gives an operator ``get_openlineage_facets_on_complete``: the image
directory as **one** input dataset (Airflow's automatic file lineage stops at 100 assets per task, and a
directory of 10,000 images is one dataset to a data catalogue anyway), the manifest, the captions and the
stored images as output datasets, and a run facet ``apicore`` with the counts and, when there are few,
the APICore task ids. The OpenLineage provider is imported only when a listener asks for the facets, so it
stays an optional extra (``pip install 'airflow-provider-apicore[openlineage]'``).

An operator using the mixin sets, by the end of ``execute``:

* ``self._lineage_inputs``: the image directory (or single image) as a path or URL;
* ``self._lineage_outputs``: ``{"manifest": ..., "captions": ..., "images": ...}`` (any may be missing);
* ``self._lineage_records``: the manifest records, or ``self._lineage_counts`` (a dict like
  :func:`~airflow_provider_apicore.outputs.outcome_counts`) and ``self._lineage_task_ids``.
"""

from __future__ import annotations

import functools
import logging
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, ObjectStoragePath

from airflow_provider_apicore.manifest import to_storage_path
from airflow_provider_apicore.outputs import OUTPUTS_SCHEMA_VERSION, outcome_counts

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

log = logging.getLogger(__name__)

#: Version of the asset event ``extra`` layout (bumped when a key changes meaning).
ASSET_EXTRA_SCHEMA_VERSION = 1
#: At most this many APICore task ids go into the OpenLineage run facet.
MAX_LINEAGE_TASK_IDS = 50
#: Name of the run facet with the counts.
RUN_FACET_NAME = "apicore"
RUN_FACET_SCHEMA_URL = (
    "https://github.com/apicore-ai/airflow-provider-apicore/blob/main/docs/lineage.md#apicore-run-facet"
)


# ------------------------------------------------------------------------------------ assets
def storage_uri(path: str | os.PathLike | ObjectStoragePath) -> str:
    """
    The URI of a path as an asset names it: ``file:///abs/path`` for local paths, the URL otherwise.

    :param path: a local path, ``file://`` URL, ``s3://``/``gs://`` URL or ObjectStoragePath
    """
    storage = to_storage_path(path)
    if storage.protocol in ("", "file", "local"):
        return "file://" + urllib.parse.quote(os.path.abspath(storage.path))
    return f"{storage.protocol}://{storage.path.lstrip('/')}"


def manifest_asset(manifest_path: str | os.PathLike | ObjectStoragePath, name: str | None = None) -> Asset:
    """
    The asset of a manifest: its real URI, so a downstream DAG can be scheduled on it.

    :param manifest_path: the manifest's path or URL (already rendered)
    :param name: the asset's name (default: the URI)
    """
    uri = storage_uri(manifest_path)
    return Asset(uri=uri, name=name or uri, group="apicore-manifest")


def is_templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def manifest_outlet(manifest_path: Any, alias_name: str) -> Asset | AssetAlias:
    """
    What an operator declares in ``outlets`` for its manifest.

    :param manifest_path: the ``manifest_path`` argument as given to the operator (maybe templated)
    :param alias_name: the alias used when the path is known only after templating
    :return: the manifest's :class:`Asset`, or an :class:`AssetAlias` that the task resolves at run time
        (:func:`emit_manifest_event` adds the concrete asset to it)
    """
    if is_templated(manifest_path) or not isinstance(manifest_path, (str, os.PathLike, ObjectStoragePath)):
        return AssetAlias(name=alias_name, group="apicore-manifest")
    return manifest_asset(manifest_path)


def asset_event_extra(
    records: Iterable[Any] | None = None,
    *,
    counts: Mapping[str, int] | None = None,
    manifest_path: str | os.PathLike | ObjectStoragePath | None = None,
    spend: Any = None,
    **more: Any,
) -> dict[str, Any]:
    """
    The ``extra`` of the manifest's asset event: small, JSON-safe, enough for the next DAG to decide.

    :param records: manifest records to count (or give ``counts``)
    :param counts: counts as :func:`~airflow_provider_apicore.outputs.outcome_counts` returns them
    :param manifest_path: the manifest, as a URI
    :param spend: the run's spend where known (a number, or a dict such as ``{"quota": 12}``)
    :param more: other small JSON values to add (``bot_type``, ``stats`` path ...)
    :return: ``schema_version``, ``succeeded``, ``failed``, ``unknown_fate``, ``pending``, ``total``,
        ``manifest``, ``spend`` and ``more``
    """
    if counts is None:
        counts = outcome_counts(records or [])
    extra: dict[str, Any] = {"schema_version": ASSET_EXTRA_SCHEMA_VERSION}
    for key in ("succeeded", "failed", "unknown_fate", "pending", "total"):
        extra[key] = int(counts.get(key, 0))
    extra["manifest"] = storage_uri(manifest_path) if manifest_path is not None else None
    extra["spend"] = spend
    extra.update(more)
    return extra


def emit_manifest_event(
    context: Mapping[str, Any],
    outlet: Asset | AssetAlias,
    manifest_path: str | os.PathLike | ObjectStoragePath,
    extra: dict[str, Any],
) -> Asset:
    """
    Attach ``extra`` to the task's event for the manifest asset (call at the end of ``execute``).

    With an :class:`Asset` outlet its event gets ``extra``; with an :class:`AssetAlias` the concrete asset
    of the rendered ``manifest_path`` is added to the alias with ``extra`` (Airflow then emits the event
    for that asset, and DAGs scheduled on it run).

    :param context: the task's context
    :param outlet: what :func:`manifest_outlet` returned (and the operator declared in ``outlets``)
    :param manifest_path: the rendered manifest path
    :param extra: from :func:`asset_event_extra`
    :return: the concrete manifest asset
    """
    asset = manifest_asset(manifest_path)
    events = context["outlet_events"]
    if isinstance(outlet, AssetAlias):
        events[outlet].add(asset, extra=extra)
    else:
        events[outlet].extra = extra
    return asset


# ------------------------------------------------------------------------------------ openlineage
def openlineage_dataset_name(path: str | os.PathLike | ObjectStoragePath) -> tuple[str, str]:
    """
    OpenLineage's (namespace, name) of a file or directory, as the Airflow providers name them:
    local ``("file", "/abs/path")``; ``s3://bucket/key`` -> ``("s3://bucket", "key")``.
    """
    storage = to_storage_path(path)
    if storage.protocol in ("", "file", "local"):
        return "file", os.path.abspath(storage.path)
    bucket, _, key = storage.path.lstrip("/").partition("/")
    return f"{storage.protocol}://{bucket}", key.rstrip("/") or "/"


@functools.cache
def _run_facet_class() -> type:
    """The ``apicore`` run facet class, defined on first use (openlineage-python is optional)."""
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class ApicoreRunFacet(RunFacet):
        """Counts of one APICore run: what a lineage consumer needs to judge the output."""

        schemaVersion: int
        total: int
        succeeded: int
        failed: int
        unknownFate: int
        pending: int
        taskIds: list[str] | None = None
        spend: Any = None

        @staticmethod
        def _get_schema() -> str:
            return RUN_FACET_SCHEMA_URL

    return ApicoreRunFacet


def openlineage_available() -> bool:
    """Whether the OpenLineage provider (the ``openlineage`` extra) can be imported."""
    try:
        import airflow.providers.openlineage.extractors  # noqa: F401
        import openlineage.client.event_v2  # noqa: F401
    except ImportError:
        return False
    return True


def build_operator_lineage(
    inputs: Iterable[str | os.PathLike | ObjectStoragePath],
    outputs: Mapping[str, str | os.PathLike | ObjectStoragePath | None],
    counts: Mapping[str, int],
    task_ids: Iterable[str] | None = None,
    spend: Any = None,
    output_file_counts: Mapping[str, int] | None = None,
) -> OperatorLineage | None:
    """
    The OpenLineage facets of a run; None when the OpenLineage provider is not installed.

    :param inputs: the image directory (one dataset for the whole directory) or single images
    :param outputs: ``{"manifest": ..., "captions": ..., "images": ...}``; None values are left out
    :param counts: as :func:`~airflow_provider_apicore.outputs.outcome_counts`
    :param task_ids: the APICore task ids; included when there are at most :data:`MAX_LINEAGE_TASK_IDS`
    :param spend: the run's spend where known
    :param output_file_counts: files per output (``{"captions": 120}``), as an output statistics facet
    """
    if not openlineage_available():
        return None
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset, OutputDataset
    from openlineage.client.facet_v2 import output_statistics_output_dataset

    input_datasets = []
    for item in inputs:
        namespace, name = openlineage_dataset_name(item)
        input_datasets.append(Dataset(namespace=namespace, name=name))
    output_datasets = []
    for kind, path in outputs.items():
        if path is None:
            continue
        namespace, name = openlineage_dataset_name(path)
        output_facets: dict[str, Any] = {}
        files = (output_file_counts or {}).get(kind)
        if files is not None:
            output_facets["outputStatistics"] = (
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(fileCount=int(files))
            )
        output_datasets.append(OutputDataset(namespace=namespace, name=name, outputFacets=output_facets))
    ids = sorted({str(t) for t in task_ids or [] if t})
    facet = _run_facet_class()(
        schemaVersion=ASSET_EXTRA_SCHEMA_VERSION,
        total=int(counts.get("total", 0)),
        succeeded=int(counts.get("succeeded", 0)),
        failed=int(counts.get("failed", 0)),
        unknownFate=int(counts.get("unknown_fate", 0)),
        pending=int(counts.get("pending", 0)),
        taskIds=ids if 0 < len(ids) <= MAX_LINEAGE_TASK_IDS else None,
        spend=spend,
    )
    return OperatorLineage(inputs=input_datasets, outputs=output_datasets, run_facets={RUN_FACET_NAME: facet})


class ApicoreLineageMixin:
    """
    ``get_openlineage_facets_on_complete`` for operators that describe images into a manifest.

    The operator fills ``_lineage_inputs``, ``_lineage_outputs`` and ``_lineage_records`` (or
    ``_lineage_counts`` / ``_lineage_task_ids``) during ``execute``; see the module docstring.
    """

    _lineage_inputs: list[Any] | None = None
    _lineage_outputs: dict[str, Any] | None = None
    _lineage_records: list[Any] | None = None
    _lineage_counts: dict[str, int] | None = None
    _lineage_task_ids: list[str] | None = None
    _lineage_spend: Any = None
    _lineage_file_counts: dict[str, int] | None = None

    def set_lineage(
        self,
        inputs: Iterable[Any],
        outputs: Mapping[str, Any],
        records: Iterable[Any] | None = None,
        *,
        counts: Mapping[str, int] | None = None,
        task_ids: Iterable[str] | None = None,
        spend: Any = None,
        file_counts: Mapping[str, int] | None = None,
    ) -> None:
        """
        Record what the run read and wrote, for :meth:`get_openlineage_facets_on_complete`.

        :param inputs: the image directory (preferred: one dataset) or the images
        :param outputs: ``{"manifest": ..., "captions": ..., "images": ...}``
        :param records: the manifest records (counts and task ids are taken from them)
        :param counts: counts, when no records are given
        :param task_ids: APICore task ids, when no records are given
        :param spend: the run's spend where known
        :param file_counts: files written per output
        """
        self._lineage_inputs = [str(i) for i in inputs]
        self._lineage_outputs = {k: (None if v is None else str(v)) for k, v in outputs.items()}
        if records is not None:
            records = list(records)
            self._lineage_counts = outcome_counts(records)
            self._lineage_task_ids = [
                str(getattr(r, "task_id", None) or (r.get("task_id") if isinstance(r, dict) else None))
                for r in records
                if (getattr(r, "task_id", None) or (isinstance(r, dict) and r.get("task_id")))
            ]
        else:
            self._lineage_counts = dict(counts or {})
            self._lineage_task_ids = [str(t) for t in task_ids or []]
        self._lineage_spend = spend
        self._lineage_file_counts = dict(file_counts or {})

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """OpenLineage facets of the finished run (called by the OpenLineage listener)."""
        if self._lineage_inputs is None:
            return None
        return build_operator_lineage(
            self._lineage_inputs,
            self._lineage_outputs or {},
            self._lineage_counts or {},
            self._lineage_task_ids,
            self._lineage_spend,
            self._lineage_file_counts,
        )

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage | None:
        """On failure the same facets: what was written so far (the manifest is kept for the retry)."""
        return self.get_openlineage_facets_on_complete(task_instance)


__all__ = [
    "ASSET_EXTRA_SCHEMA_VERSION",
    "OUTPUTS_SCHEMA_VERSION",
    "ApicoreLineageMixin",
    "asset_event_extra",
    "build_operator_lineage",
    "emit_manifest_event",
    "manifest_asset",
    "manifest_outlet",
    "openlineage_dataset_name",
    "storage_uri",
]
