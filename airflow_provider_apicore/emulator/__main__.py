"""``python -m airflow_provider_apicore.emulator``."""

from __future__ import annotations

import sys

from airflow_provider_apicore.emulator.cli import main

sys.exit(main())
