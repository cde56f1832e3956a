"""MJShortenOperator: analyse a prompt and get shorter versions of it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_apicore.family_results import shorten_result
from airflow_provider_apicore.hooks.apicore import SUBMIT_SHORTEN
from airflow_provider_apicore.operators.base import MJSubmitOperator
from airflow_provider_apicore.operators.family_common import full_task
from airflow_provider_apicore.operators.imagine import clean_prompt

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_apicore.hooks.apicore import ApicoreHook
    from airflow_provider_apicore.models import MJTask


class MJShortenOperator(MJSubmitOperator):
    """
    Shorten a prompt with Midjourney (``/mj/submit/shorten``): a long prompt in, shorter prompts out.

    The result is the typed task result plus ``prompts`` (the shortened prompts, parsed like describe's,
    read from ``properties.finalPrompt`` first since the new-api gateway keeps only that field) and
    ``analysis`` (the text they were read from).

    :param prompt: the prompt to shorten (templated; not blank, at most 6000 characters)
    """

    endpoint = SUBMIT_SHORTEN
    schema_name = "shorten_payload"
    action_name = "shorten"
    supports_bot_type = True
    template_fields: Sequence[str] = (*MJSubmitOperator.template_fields, "prompt")

    def __init__(self, *, prompt: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt

    def build_payload(self, context: Context) -> dict[str, Any]:
        return {"prompt": clean_prompt(self.prompt)}

    def describe_input(self, payload: dict[str, Any]) -> str:
        return f"prompt of {len(payload['prompt'])} characters"

    def map_result(self, task: MJTask, hook: ApicoreHook, context: Context) -> dict[str, Any]:
        result = shorten_result(full_task(hook, task))
        self.log.info("Task %s: %d shortened prompts", task.id, len(result["prompts"]))
        return result
