"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_provider_apicore import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-apicore",
        "name": "APICore",
        "description": "APICore's Midjourney jobs (Describe: image in, four prompts out) as Airflow tasks.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "APICore Midjourney",
                "external-doc-url": "https://api.apicore.ai",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "APICore Midjourney",
                "python-modules": ["airflow_provider_apicore.hooks.apicore"],
            }
        ],
        "operators": [
            {
                "integration-name": "APICore Midjourney",
                "python-modules": [
                    "airflow_provider_apicore.operators.describe",
                    "airflow_provider_apicore.operators.batch_describe",
                    "airflow_provider_apicore.operators.batch_imagine",
                    "airflow_provider_apicore.operators.imagine",
                    "airflow_provider_apicore.operators.action",
                    "airflow_provider_apicore.operators.blend",
                    "airflow_provider_apicore.operators.shorten",
                    "airflow_provider_apicore.operators.swap_face",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "APICore Midjourney",
                "python-modules": ["airflow_provider_apicore.sensors.task"],
            }
        ],
        "triggers": [
            {
                "integration-name": "APICore Midjourney",
                "python-modules": ["airflow_provider_apicore.triggers.task"],
            }
        ],
        "extra-links": [
            "airflow_provider_apicore.links.ApicoreResultImageLink",
            "airflow_provider_apicore.links.ApicoreManifestLink",
        ],
        "connection-types": [
            {
                "connection-type": "apicore",
                "hook-class-name": "airflow_provider_apicore.hooks.apicore.ApicoreHook",
                "hook-name": "APICore",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "schema", "port"],
                    "relabeling": {"host": "Base URL", "password": "API token"},
                    "placeholders": {
                        "host": "https://api.apicore.ai",
                        "password": "sk-... (sent as 'Authorization: Bearer <token>')",
                        "timeout": "30",
                        "max_retries": "5",
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (seconds)",
                        "description": "Per-request timeout for calls to APICore.",
                        "schema": {"type": ["number", "null"], "minimum": 1, "maximum": 3600},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "Retries of a transient failure (429, 5xx, connection refused).",
                        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
                    },
                    "mode": {
                        "label": "Speed mode",
                        "description": "fast, relax or turbo: submissions go to /mj-<mode>/mj/... "
                        "(the gateway's speed prefixes). Empty: the token's default speed.",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": [None, "fast", "relax", "turbo"],
                            "values_display": {
                                "null": "token's default",
                                "fast": "fast (/mj-fast)",
                                "relax": "relax (/mj-relax)",
                                "turbo": "turbo (/mj-turbo)",
                            },
                        },
                    },
                },
            }
        ],
    }
