"""
Local emulator of APICore's Midjourney API (the midjourney-proxy protocol), for tests and demos.

Self-contained: it imports nothing else from this provider and never imports Airflow.
"""

from __future__ import annotations

from airflow_provider_apicore.emulator.app import create_app
from airflow_provider_apicore.emulator.config import EmulatorConfig
from airflow_provider_apicore.emulator.errors import EmulatorConfigError
from airflow_provider_apicore.emulator.faults import FaultConfig
from airflow_provider_apicore.emulator.server import EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorConfigError", "EmulatorServer", "FaultConfig", "create_app"]
