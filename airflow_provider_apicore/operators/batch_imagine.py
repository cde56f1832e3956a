"""MJBatchImagineOperator: imagine a whole list of prompts in one task, resumably."""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from typing import Any

from airflow_provider_apicore.batch.actions import BatchAction, ImagineAction, prompt_key
from airflow_provider_apicore.exceptions import ApicoreConfigError, ApicoreInputError
from airflow_provider_apicore.manifest import REJECTED, Manifest
from airflow_provider_apicore.operators.batch_describe import MJBatchDescribeOperator
from airflow_provider_apicore.operators.family_common import storage_dir
from airflow_provider_apicore.schemas import validate_payload


def prompt_list(value: Any) -> list[Any]:
    """
    The prompts a DAG passed: a list/tuple, one prompt, or a rendered template that printed a list
    (``"['a fox', 'a cat']"``, as an XCom pull renders without native rendering).

    :param value: the ``prompts`` argument as given or rendered
    :raises ApicoreConfigError: nothing usable (``None``, an empty list, another type)
    """
    if isinstance(value, str) and value.strip().startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, list):
                value = parsed
                break
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ApicoreConfigError(
            f"prompts must be a non-empty list of prompts (or an XCom template rendering one), got {value!r}"
        )
    return list(value)


class MJBatchImagineOperator(MJBatchDescribeOperator):
    """
    Imagine every prompt of a list with Midjourney, in one task, with the batch engine of
    :class:`~airflow_provider_apicore.operators.batch_describe.MJBatchDescribeOperator`.

    The same guarantees apply (see that class): at most ``max_in_flight`` jobs upstream, **one**
    ``list-by-condition`` request per ``poll_interval`` for all of them, a durable manifest record per
    prompt written before the request leaves and when the task id comes back, a lost answer recorded
    ``unknown_fate`` and never sent again by default (``on_unknown_fate``), resume from the manifest
    (a retry sends nothing twice), one writer per manifest, ``deferrable=True`` waiting in the
    triggerer, the balance guard (``min_quota_usd``, ``estimated_cost_per_image_usd``).

    Each prompt is one record keyed ``#<index>:<sha256(prompt)[:12]>`` (the same prompt twice is two
    grids; a rerun over the same list finds its records). A finished record has ``task_id``,
    ``image_url`` and, with ``output_path``, ``files``: the grid downloaded through the hook and stored
    as ``<task id>.png`` (or its four pictures ``<task id>_1.png`` … ``_4.png`` with ``split_grid``).
    A prompt the server refuses (banned word, code 24) is ``rejected`` with the word in ``error``; a
    blank or over-long prompt is ``rejected`` before anything is sent. A grid whose download failed
    stays ``SUCCESS`` with the download error in ``error`` and no ``files``.

    :param prompts: the prompts, Midjourney parameters included (templated: a list, or an XCom pull)
    :param manifest_path: where the JSONL manifest is written and resumed from (templated)
    :param max_in_flight: most jobs upstream at once
    :param output_path: directory (local, ``s3://`` … or ObjectStoragePath) the grids are stored in
        (templated); ``None``: not downloaded
    :param split_grid: store each grid's four pictures instead of the grid
    :param kwargs: the other arguments of ``MJBatchDescribeOperator`` except ``source``, ``pattern``,
        ``recursive`` and ``max_image_bytes`` (``poll_interval``, ``timeout``, ``deferrable``,
        ``notify_hook``, ``bot_type``, ``on_unknown_fate``, ``max_submit_attempts``,
        ``resubmit_failed``, ``max_failures``, ``min_quota_usd`` …)
    """

    template_fields: Sequence[str] = (
        "prompts",
        "manifest_path",
        "output_path",
        "notify_hook",
        "max_in_flight",
        "poll_interval",
        "timeout",
    )
    ui_color = "#c9e3f0"

    def __init__(
        self,
        *,
        prompts: Sequence[str] | str,
        manifest_path: Any,
        max_in_flight: int = 10,
        output_path: Any = None,
        split_grid: bool = False,
        **kwargs: Any,
    ) -> None:
        self.output_path = output_path
        self.split_grid = split_grid
        super().__init__(source=prompts, manifest_path=manifest_path, max_in_flight=max_in_flight, **kwargs)

    @property
    def prompts(self) -> Any:
        """The prompts (stored as the engine's ``source``)."""
        return self.source

    @prompts.setter
    def prompts(self, value: Any) -> None:
        self.source = value

    def _check_inputs(self) -> None:
        if isinstance(self.source, str) and "{{" in self.source:
            return  # checked once rendered
        prompt_list(self.source)
        if self.output_path is not None and not (
            isinstance(self.output_path, str) and "{{" in self.output_path
        ):
            storage_dir(self.output_path)

    def _make_action(self) -> BatchAction:
        return ImagineAction(self.notify_hook, self.bot_type, self.output_path, bool(self.split_grid))

    def _check_settings(self, tag: str) -> None:
        """Fail on a bad imagine setting before any prompt is recorded or sent."""
        probe: dict[str, Any] = {
            "prompt": "settings probe",
            "state": f"{tag}/{'0' * 16}/{int(self.max_submit_attempts)}",
        }
        if self.notify_hook:
            probe["notifyHook"] = self.notify_hook
        if self.bot_type:
            probe["botType"] = self.bot_type
        try:
            validate_payload("imagine_payload", probe)
        except ApicoreInputError as err:
            raise ApicoreConfigError(
                f"The imagine settings are not valid, so no prompt was sent or recorded: {err}"
            ) from None

    def _plan(self, manifest: Manifest) -> None:
        """A fresh try: one ``pending`` record per prompt not in the manifest yet."""
        added = 0
        for index, prompt in enumerate(prompt_list(self.source)):
            if not isinstance(prompt, str):
                key = f"#{index}:not-text"
                if manifest.get(key) is None:
                    record = manifest.add(key)
                    manifest.touch(
                        record,
                        status=REJECTED,
                        error=f"prompts[{index}] must be text, got {type(prompt).__name__}",
                    )
                continue
            text = prompt.strip()
            key, digest = prompt_key(index, text)
            if manifest.get(key) is None:
                manifest.touch(manifest.add(key), prompt=text, sha256=digest)
                added += 1
        self.log.info("%d prompts listed, %d new to the manifest", len(prompt_list(self.source)), added)
