"""
The ``buttons`` array of a finished task, per action, as midjourney-proxy servers report them, and
the reading of a button's ``customId`` back into the action it starts.

Every button is ``{"customId", "emoji", "label", "type": 2, "style": 2}``; ``<hash>`` in a customId
is the Midjourney job id (``properties.messageHash`` of the task that offers the button).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KEYCAP = "\ufe0f\u20e3"
REROLL_EMOJI = "\U0001f504"  # 🔄
VARY_EMOJI = "\U0001fa84"  # 🪄
REGION_EMOJI = "\U0001f58c\ufe0f"  # 🖌️
ZOOM_EMOJI = "\U0001f50d"  # 🔍
PAN_EMOJI = {
    "left": "\u2b05\ufe0f",  # ⬅️
    "right": "\u27a1\ufe0f",  # ➡️
    "up": "\u2b06\ufe0f",  # ⬆️
    "down": "\u2b07\ufe0f",  # ⬇️
}
ALL_EMOJI = "\U0001f389"  # 🎉
#: ``--v`` value -> the infix of the upscale-again buttons (v7 when the prompt names no version).
UPSCALE_VERSIONS = {"5": "v5", "6": "v6", "6.1": "v6r1", "7": "v7"}
VERSION = re.compile(r"(?:^|\s)--(?:v|version)\s+(\d+(?:\.\d+)?)")


def button(custom_id: str, label: str = "", emoji: str = "") -> dict[str, Any]:
    """
    One button as the proxies serialize it.

    :param custom_id: the ``customId`` a client sends back to ``/mj/submit/action``.
    :param label: the visible label (may be empty).
    :param emoji: the emoji name (may be empty).
    """
    return {"customId": custom_id, "emoji": emoji, "label": label, "type": 2, "style": 2}


def keycap(number: int) -> str:
    """``1`` -> ``1️⃣``."""
    return f"{number}{KEYCAP}"


def grid_buttons(job_hash: str) -> list[dict[str, Any]]:
    """
    After IMAGINE, VARIATION, REROLL, BLEND, ZOOM and PAN: ``U1``-``U4``, reroll, ``V1``-``V4``.

    :param job_hash: the job id of the grid.
    """
    upscales = [button(f"MJ::JOB::upsample::{i}::{job_hash}", f"U{i}") for i in range(1, 5)]
    reroll = button(f"MJ::JOB::reroll::0::{job_hash}::SOLO", "", REROLL_EMOJI)
    variations = [button(f"MJ::JOB::variation::{i}::{job_hash}", f"V{i}") for i in range(1, 5)]
    return [*upscales, reroll, *variations]


def prompt_version(prompt: str | None) -> str:
    """The Midjourney model version a prompt asks for with ``--v``; ``7`` when it names none."""
    match = VERSION.search(prompt or "")
    if match is None:
        return "7"
    value = match.group(1)
    return value[:-2] if value.endswith(".0") else value


def upscale_buttons(job_hash: str, prompt: str | None = None) -> list[dict[str, Any]]:
    """
    After an UPSCALE (one image): upscale again, Vary (Subtle/Strong/Region), Zoom Out 2x/1.5x,
    Custom Zoom, the four pan arrows and reroll.

    :param job_hash: the job id of the upscaled image.
    :param prompt: the job's prompt; its ``--v`` picks the upscale-again buttons (v5: 2x/4x).
    """
    version = UPSCALE_VERSIONS.get(prompt_version(prompt), "v7")
    if version == "v5":
        again = [
            button(f"MJ::JOB::upsample_v5_2x::1::{job_hash}::SOLO", "Upscale (2x)", "upscale_1"),
            button(f"MJ::JOB::upsample_v5_4x::1::{job_hash}::SOLO", "Upscale (4x)", "upscale_1"),
        ]
    else:
        again = [
            button(
                f"MJ::JOB::upsample_{version}_2x_subtle::1::{job_hash}::SOLO", "Upscale (Subtle)", "upscale_1"
            ),
            button(
                f"MJ::JOB::upsample_{version}_2x_creative::1::{job_hash}::SOLO",
                "Upscale (Creative)",
                "upscale_1",
            ),
        ]
    return [
        *again,
        button(f"MJ::JOB::low_variation::1::{job_hash}::SOLO", "Vary (Subtle)", VARY_EMOJI),
        button(f"MJ::JOB::high_variation::1::{job_hash}::SOLO", "Vary (Strong)", VARY_EMOJI),
        button(f"MJ::Inpaint::1::{job_hash}::SOLO", "Vary (Region)", REGION_EMOJI),
        button(f"MJ::Outpaint::50::1::{job_hash}::SOLO", "Zoom Out 2x", ZOOM_EMOJI),
        button(f"MJ::Outpaint::75::1::{job_hash}::SOLO", "Zoom Out 1.5x", ZOOM_EMOJI),
        button(f"MJ::CustomZoom::1::{job_hash}", "Custom Zoom", ZOOM_EMOJI),
        *(button(f"MJ::JOB::pan_{d}::1::{job_hash}::SOLO", "", PAN_EMOJI[d]) for d in PAN_EMOJI),
        button(f"MJ::JOB::reroll::0::{job_hash}::SOLO", "", REROLL_EMOJI),
    ]


def describe_buttons(count: int = 4) -> list[dict[str, Any]]:
    """
    After DESCRIBE: one PicReader button per prompt (keycap emoji), retry, and "Imagine all".

    :param count: number of described prompts.
    """
    picks = [button(f"MJ::Job::PicReader::{i}", "", keycap(i)) for i in range(1, count + 1)]
    return [
        *picks,
        button("MJ::Picread::Retry", "", REROLL_EMOJI),
        button("MJ::Job::PicReader::all", "Imagine all", ALL_EMOJI),
    ]


def shorten_buttons(count: int = 5) -> list[dict[str, Any]]:
    """
    After SHORTEN: one PromptAnalyzer button per shortened prompt (keycap emoji).

    :param count: number of shortened prompts.
    """
    return [button(f"MJ::Job::PromptAnalyzer::{i}", "", keycap(i)) for i in range(1, count + 1)]


@dataclass(frozen=True)
class ButtonAction:
    """
    What a ``customId`` asks for.

    :param kind: ``upscale``, ``upscale_hd``, ``variation``, ``reroll``, ``pan``, ``zoom``,
        ``custom_zoom``, ``inpaint``, ``pic_reader``, ``pic_reader_all``, ``describe_retry``,
        ``prompt_analyzer``.
    :param action: the task ``action`` the proxy reports for the new task.
    :param gateway_action: the ``action`` new-api stores for it.
    :param index: 1-based panel / prompt index (0 for reroll).
    :param detail: ``left``/``right``/``up``/``down`` for pan, the zoom factor for zoom,
        ``subtle``/``strong`` for vary, ``2x``/``4x``/``subtle``/``creative`` for upscale again.
    """

    kind: str
    action: str
    gateway_action: str
    index: int = 1
    detail: str = ""


def parse_custom_id(custom_id: str) -> ButtonAction | None:
    """
    Read a customId (one that a task offered) into the action it starts; None when unknown.

    :param custom_id: the ``customId`` of a button.
    """
    parts = custom_id.split("::")
    if len(parts) < 3 or parts[0] != "MJ":
        return None
    group, name = parts[1], parts[2]
    if group == "JOB":
        index = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 1
        if name == "upsample":
            return ButtonAction("upscale", "UPSCALE", "UPSCALE", index)
        if name.startswith("upsample_"):
            return ButtonAction("upscale_hd", "UPSCALE_HD", "UPSCALE", index, name.rpartition("_")[2])
        if name == "variation":
            return ButtonAction("variation", "VARIATION", "VARIATION", index, "strong")
        if name in ("low_variation", "high_variation"):
            detail = "subtle" if name == "low_variation" else "strong"
            return ButtonAction("variation", "VARIATION", name.upper(), 1, detail)
        if name == "reroll":
            return ButtonAction("reroll", "REROLL", "REROLL", 0)
        if name.startswith("pan_") and name[4:] in PAN_EMOJI:
            return ButtonAction("pan", "PAN", "PAN", index, name[4:])
        return None
    if group == "Outpaint" and len(parts) > 3:
        factor = {"50": "2", "75": "1.5"}.get(name)
        return ButtonAction("zoom", "ZOOM", "ZOOM", 1, factor) if factor else None
    if group == "CustomZoom":
        return ButtonAction("custom_zoom", "ZOOM", "CUSTOM_ZOOM", 1, "2")
    if group == "Inpaint":
        return ButtonAction("inpaint", "INPAINT", "INPAINT", 1)
    if group == "Picread" and name == "Retry":
        return ButtonAction("describe_retry", "DESCRIBE", "DESCRIBE", 0)
    if group == "Job" and name == "PicReader" and len(parts) == 4:
        if parts[3] == "all":
            return ButtonAction("pic_reader_all", "IMAGINE", "IMAGINE", 0)
        if parts[3].isdigit():
            return ButtonAction("pic_reader", "IMAGINE", "IMAGINE", int(parts[3]))
    if group == "Job" and name == "PromptAnalyzer" and len(parts) == 4 and parts[3].isdigit():
        return ButtonAction("prompt_analyzer", "IMAGINE", "IMAGINE", int(parts[3]))
    return None
