"""Apache Airflow provider for APICore's Midjourney API."""

from __future__ import annotations

__version__ = "0.1.0"
