"""Keeping a ``notifyHook`` URL's password out of rendered fields, for every operator that takes one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_provider_apicore.hooks.apicore import mask_url_credentials

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context


class NotifyHookMaskingMixin:
    """
    Register the password of a rendered ``notify_hook`` URL with Airflow's secret masker.

    Airflow stores the rendered template fields right after rendering, redacted by the masker, so the
    password must be registered in between. ``_do_render_template_fields`` is the one rendering step
    mapped and unmapped tasks share (the Task SDK invites overriding it).
    """

    def _do_render_template_fields(
        self,
        parent: Any,
        template_fields: Iterable[str],
        context: Context,
        jinja_env: jinja2.Environment,
        seen_oids: set[int],
    ) -> None:
        super()._do_render_template_fields(  # type: ignore[misc]
            parent, template_fields, context, jinja_env, seen_oids
        )
        mask_url_credentials(getattr(parent, "notify_hook", None))
