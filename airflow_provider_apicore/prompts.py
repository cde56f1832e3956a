"""
Parse the prompts Midjourney's DESCRIBE returns.

A DESCRIBE result holds (usually four) prompts, each introduced by a keycap digit (``1️⃣`` = digit +
U+FE0F + U+20E3) and separated by blank lines. Servers and relays mangle this in small ways, so the
parser also accepts keycaps without U+FE0F, plain ``1.`` / ``1)`` numbering, ``\\r\\n`` line ends, odd
spacing, fewer prompts, and text without any numbering (one prompt per paragraph).
"""

from __future__ import annotations

import re

# Keycap digit (U+FE0F optional, some relays drop it) or the single keycap ten, anywhere in the text:
# they never occur inside a prompt, so one-line results split correctly too.
_KEYCAP = re.compile("[0-9]\ufe0f?\u20e3\ufe0f?|\U0001f51f")
# Plain "1." or "1)" numbering counts only at the start of a line and before whitespace, so "3.5 inch"
# or "(1)" inside a prompt is left alone.
_PLAIN_NUMBER = re.compile(r"^[ \t]*\d{1,2}[.)](?=\s|$)", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\u00a0]*\n")
# Characters to trim from the ends of a prompt beyond whitespace: stray keycap parts, zero-width marks.
_EDGE_JUNK = "\ufe0f\u20e3\u200b\u200c\u200d\u2060\ufeff"
# A Midjourney parameter starts with "--" (or the em/en dash a phone keyboard makes of it) and a letter.
_PARAMETER = re.compile(r"(?:^|(?<=\s))(?:--|\u2014|\u2013)(?=[A-Za-z])")


def _clean(piece: str) -> str:
    """Collapse runs of whitespace (line breaks, tabs, no-break spaces) and trim stray marks."""
    return " ".join(piece.split()).strip(_EDGE_JUNK + " ")


def _split_at(marker: re.Pattern[str], text: str) -> list[str]:
    """Split ``text`` at each marker match; text before the first marker is a preamble and is dropped."""
    matches = list(marker.finditer(text))
    ends = [m.start() for m in matches[1:]] + [len(text)]
    pieces = (_clean(text[m.end() : end]) for m, end in zip(matches, ends, strict=True))
    return [p for p in pieces if p]


def parse_describe_prompts(text: str | None) -> list[str]:
    """
    Split a DESCRIBE result into its prompts, numbering removed, Midjourney parameters kept.

    Example: ``"1️⃣ a red fox --ar 4:3\\n\\n2️⃣ a fox in snow --ar 4:3"`` gives
    ``["a red fox --ar 4:3", "a fox in snow --ar 4:3"]``.

    :param text: the task's ``prompt`` / ``promptEn`` / ``properties.finalPrompt``
    :return: the prompts in order; ``[]`` for None or blank text
    """
    if not text or not text.strip():
        return []
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Keycaps are unambiguous, so when present they alone decide; a line inside a prompt that happens to
    # start with "2." must not split it.
    if _KEYCAP.search(text):
        return _split_at(_KEYCAP, text)
    if _PLAIN_NUMBER.search(text):
        return _split_at(_PLAIN_NUMBER, text)
    return [p for p in (_clean(part) for part in _PARAGRAPH_BREAK.split(text)) if p]


def split_prompt_parameters(prompt: str) -> tuple[str, dict[str, str]]:
    """
    Separate a prompt's text from its trailing Midjourney parameters.

    ``"a red fox, watercolor --ar 4:3 --v 6 --tile"`` gives
    ``("a red fox, watercolor", {"ar": "4:3", "v": "6", "tile": ""})``. Names are lower-cased, a flag
    without a value maps to ``""``, a repeated parameter keeps its last value, and an em dash typed
    instead of ``--`` is accepted.

    :param prompt: one prompt, as returned by :func:`parse_describe_prompts`
    :return: (text before the first parameter, {name: value})
    """
    match = _PARAMETER.search(prompt)
    if match is None:
        return prompt.strip(), {}
    text = prompt[: match.start()].strip()
    params: dict[str, str] = {}
    name: str | None = None
    values: list[str] = []
    for token in prompt[match.start() :].split():
        marker = _PARAMETER.match(token)
        if marker:
            if name is not None:
                params[name] = " ".join(values)
            name, values = token[marker.end() :].lower(), []
        else:
            values.append(token)
    if name is not None:
        params[name] = " ".join(values)
    return text, params
