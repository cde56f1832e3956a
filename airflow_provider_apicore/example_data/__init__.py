"""
Data shipped with the provider for demos and examples: a few small sample images.

The images live in the installed package (``example_data/sample_images``), so the demo DAG can run
from a built wheel as well as from a checkout (where ``dags/sample_images`` links here).
"""

from __future__ import annotations

from pathlib import Path


def sample_images_dir() -> Path:
    """The directory of the bundled sample images (PNG, JPEG, WEBP; plus a README that is not an image)."""
    return Path(__file__).resolve().parent / "sample_images"
