"""
Read a task's ``buttons`` into readable actions, and find the ``customId`` of the action a user names.

A finished Midjourney task offers the next steps as Discord buttons, each with a ``customId`` the
client sends back to ``/mj/submit/action``. Users think in actions ("upscale 2", "zoom out 1.5x"),
so this module maps one to the other, accepting every customId form the known servers emit
(upsample/variation/reroll, the v5/v6/v6.1/v7 upscale-again buttons, low/high variation, Inpaint,
Outpaint, CustomZoom in both spellings, pans, animate, describe and shorten picks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_apicore.exceptions import ApicoreActionNotOfferedError, ApicoreInputError

#: Actions whose button carries a 1-based picture or prompt number (1-4).
INDEXED_ACTIONS = frozenset({"upscale", "variation", "describe_pick", "shorten_pick", "video_upscale"})

#: Every readable action name this module knows, in the order they are listed to users.
ACTIONS: tuple[str, ...] = (
    "upscale",
    "variation",
    "reroll",
    "upscale_subtle",
    "upscale_creative",
    "upscale_2x",
    "upscale_4x",
    "vary_subtle",
    "vary_strong",
    "vary_region",
    "zoom_out_2x",
    "zoom_out_1.5x",
    "custom_zoom",
    "pan_left",
    "pan_right",
    "pan_up",
    "pan_down",
    "animate_high",
    "animate_low",
    "animate_high_extend",
    "animate_low_extend",
    "video_upscale",
    "describe_pick",
    "describe_all",
    "describe_retry",
    "shorten_pick",
)

#: Other spellings users may write, mapped to the names above.
ALIASES: dict[str, str] = {
    "u": "upscale",
    "v": "variation",
    "r": "reroll",
    "upsample": "upscale",
    "vary": "variation",
    "low_variation": "vary_subtle",
    "high_variation": "vary_strong",
    "inpaint": "vary_region",
    "zoom": "zoom_out_2x",
    "zoom_out": "zoom_out_2x",
    "zoom_2x": "zoom_out_2x",
    "zoom_1.5x": "zoom_out_1.5x",
    "outpaint": "zoom_out_2x",
    "imagine_pick": "describe_pick",
    "picreader": "describe_pick",
}

#: Actions that always open a window (status MODAL) the client must confirm with ``/mj/submit/modal``.
MODAL_ACTIONS = frozenset({"vary_region", "custom_zoom", "describe_pick", "shorten_pick"})

_OUTPAINT = {"50": "zoom_out_2x", "75": "zoom_out_1.5x"}
_UPSAMPLE_AGAIN = re.compile(r"upsample_v[0-9a-z]+_(2x|4x)(?:_(subtle|creative))?", re.IGNORECASE)


@dataclass(frozen=True)
class ButtonAction:
    """What pressing a button does: the readable action and, for picture or prompt buttons, its number."""

    action: str
    index: int | None = None

    def __str__(self) -> str:
        return self.action if self.index is None else f"{self.action} {self.index}"


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def action_of(custom_id: str) -> ButtonAction | None:
    """
    The readable action of one ``customId``, or None for a button this module does not know.

    Examples: ``MJ::JOB::upsample::2::<hash>`` gives ``upscale 2``; ``MJ::Outpaint::75::1::<hash>::SOLO``
    gives ``zoom_out_1.5x``; ``MJ::Job::PicReader::3`` gives ``describe_pick 3``.

    :param custom_id: the ``customId`` of a button
    """
    if not isinstance(custom_id, str):
        return None
    parts = custom_id.split("::")
    if len(parts) < 2 or parts[0].upper() != "MJ":
        return None
    kind = parts[1].upper()
    if kind == "JOB" and len(parts) >= 3:
        name = parts[2].lower()
        number = _int(parts[3]) if len(parts) > 3 else None
        if name == "upsample":
            return ButtonAction("upscale", number)
        if name == "variation":
            return ButtonAction("variation", number)
        if name == "reroll":
            return ButtonAction("reroll")
        if name in ("low_variation", "high_variation"):
            return ButtonAction("vary_subtle" if name.startswith("low") else "vary_strong")
        if name in ("pan_left", "pan_right", "pan_up", "pan_down"):
            return ButtonAction(name)
        again = _UPSAMPLE_AGAIN.fullmatch(name)
        if again:
            return ButtonAction(f"upscale_{(again.group(2) or again.group(1)).lower()}")
        if name in ("animate_high", "animate_low"):
            return ButtonAction(name)
        if name in ("animate_high_extend", "animate_low_extend"):
            return ButtonAction(name)
        if name == "video_virtual_upscale":
            return ButtonAction("video_upscale", number)
        if name == "picreader":  # MJ::Job::PicReader::<n|all> (also written MJ::JOB::...)
            if len(parts) > 3 and parts[3].lower() == "all":
                return ButtonAction("describe_all")
            return ButtonAction("describe_pick", number)
        if name == "promptanalyzer":
            return ButtonAction("shorten_pick", number)
        return None
    if kind == "INPAINT":
        return ButtonAction("vary_region")
    if kind == "OUTPAINT" and len(parts) >= 3:
        action = _OUTPAINT.get(parts[2])
        return ButtonAction(action) if action else None
    if kind == "CUSTOMZOOM":
        return ButtonAction("custom_zoom")
    if kind == "PICREAD" and len(parts) >= 3 and parts[2].lower() == "retry":
        return ButtonAction("describe_retry")
    return None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):  # a Discord emoji object that a server did not flatten
        return str(value.get("name") or "")
    return "" if value is None else str(value)


def parse_buttons(raw: Any) -> list[dict[str, Any]]:
    """
    The buttons of a task as ``{"label", "custom_id", "emoji", "action", "index"}`` dicts.

    Accepts whatever servers send: ``null``, a list with odd items (kept out), ``customId`` or
    ``custom_id`` keys, emoji as a name or a Discord emoji object. ``action``/``index`` are the readable
    action (None for a button this module does not know).

    :param raw: the task's ``buttons`` field as received
    """
    if not isinstance(raw, list):
        return []
    buttons = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        custom_id = item.get("customId", item.get("custom_id"))
        if not isinstance(custom_id, str) or not custom_id:
            continue
        found = action_of(custom_id)
        buttons.append(
            {
                "label": _text(item.get("label")),
                "custom_id": custom_id,
                "emoji": _text(item.get("emoji")),
                "action": found.action if found else None,
                "index": found.index if found else None,
            }
        )
    return buttons


def _as_buttons(buttons: Iterable[Mapping[str, Any]] | Any) -> list[dict[str, Any]]:
    """Raw ``buttons`` or already parsed ones (both have a custom id) as parsed buttons."""
    items = list(buttons) if isinstance(buttons, (list, tuple)) else []
    if items and all(isinstance(b, Mapping) and "action" in b and "custom_id" in b for b in items):
        return [dict(b) for b in items]
    return parse_buttons(items)


def available_actions(buttons: Iterable[Mapping[str, Any]] | Any) -> list[str]:
    """
    The readable actions the buttons offer, indexed ones folded: ``["upscale 1-4", "reroll", ...]``.

    :param buttons: raw ``buttons`` of a task, or the output of :func:`parse_buttons`
    """
    indexes: dict[str, list[int]] = {}
    order: list[str] = []
    for b in _as_buttons(buttons):
        action = b.get("action")
        if not action:
            continue
        if action not in indexes:
            indexes[action] = []
            order.append(action)
        if b.get("index") is not None and action in INDEXED_ACTIONS:
            indexes[action].append(int(b["index"]))
    listed = []
    for action in order:
        numbers = sorted(set(indexes[action]))
        if not numbers:
            listed.append(action)
        elif numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 1:
            listed.append(f"{action} {numbers[0]}-{numbers[-1]}")
        else:
            listed.append(f"{action} {','.join(map(str, numbers))}")
    return listed


def normalize_action(action: Any) -> str:
    """
    The canonical name of an action a user wrote (``"Zoom Out 1.5x"`` -> ``zoom_out_1.5x``).

    :param action: the action name; case, spaces and hyphens do not matter
    :raises ApicoreInputError: not a string, or not an action this provider knows (the error lists them)
    """
    if not isinstance(action, str) or not action.strip():
        raise ApicoreInputError(f"action must be a non-empty action name like 'upscale'; got {action!r}")
    name = re.sub(r"[\s\-]+", "_", action.strip().lower())
    name = ALIASES.get(name, name)
    if name not in ACTIONS:
        raise ApicoreInputError(
            f"action {action!r} is not a Midjourney action this provider knows; use one of "
            f"{', '.join(ACTIONS)} (or pass custom_id=... with a raw button id)"
        )
    return name


def check_index(action: str, index: Any) -> int | None:
    """
    Check the picture/prompt number that goes with an action, before anything is sent.

    :param action: a canonical action name (see :func:`normalize_action`)
    :param index: 1-4 for indexed actions (upscale, variation, describe_pick, ...); None otherwise
    :raises ApicoreInputError: index missing for an indexed action, not a whole number, or outside 1-4
    """
    if index is None:
        if action in INDEXED_ACTIONS:
            raise ApicoreInputError(
                f"action {action!r} needs index=1..4 (which image of the grid, left to right, top to bottom)"
            )
        return None
    if isinstance(index, bool) or not isinstance(index, (int, str)) or not str(index).strip().isdigit():
        raise ApicoreInputError(f"index must be a whole number from 1 to 4; got {index!r}")
    number = int(str(index).strip())
    if not 1 <= number <= 4:
        raise ApicoreInputError(f"index must be from 1 to 4 (the four images of a grid); got {number}")
    if action not in INDEXED_ACTIONS:
        return None  # the button itself carries no choice: the number is not needed
    return number


def find_custom_id(buttons: Any, action: str, index: int | None = None, *, task_id: str | None = None) -> str:
    """
    The ``customId`` of the button that performs ``action`` (with ``index`` where it needs one).

    :param buttons: the parent task's raw ``buttons`` (or :func:`parse_buttons` output)
    :param action: readable action name (``upscale``, ``variation``, ``reroll``, ``vary_region``,
        ``zoom_out_2x``, ``custom_zoom``, ``pan_left`` ... or an alias such as ``zoom``)
    :param index: 1-4 for upscale/variation/describe_pick/shorten_pick
    :param task_id: the parent task, named in the error
    :raises ApicoreInputError: unknown action, or an index missing or outside 1-4
    :raises ApicoreActionNotOfferedError: the parent has no such button; the error lists what it offers
    """
    name = normalize_action(action)
    number = check_index(name, index)
    parsed = _as_buttons(buttons)
    for b in parsed:
        if b.get("action") == name and (number is None or b.get("index") == number):
            return str(b["custom_id"])
    wanted = name if number is None else f"{name} {number}"
    raise ApicoreActionNotOfferedError(task_id, wanted, available_actions(parsed))
