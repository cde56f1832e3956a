"""Parsing the prompts out of a DESCRIBE result."""

from __future__ import annotations

import pytest

from airflow_provider_apicore.prompts import parse_describe_prompts, split_prompt_parameters

KEYCAP = "\ufe0f\u20e3"  # digit + VARIATION SELECTOR-16 + COMBINING ENCLOSING KEYCAP: "1️⃣"

FOUR = [
    "a watercolor painting of a red fox in a snowy birch forest, soft morning light --ar 4:3",
    "red fox curled up asleep on fresh snow, minimalist japanese ink style --ar 4:3",
    "a fox standing among white birch trees, children's book illustration, muted palette --ar 4:3",
    "winter woodland scene with a curious fox, digital art, pastel colors --ar 4:3",
]


def numbered(marker, prompts: list[str], sep: str = "\n\n") -> str:
    return sep.join(f"{marker(i)} {p}" for i, p in enumerate(prompts, start=1))


def test_real_describe_output_with_keycaps() -> None:
    text = numbered(lambda i: f"{i}{KEYCAP}", FOUR)
    assert text.startswith("1\ufe0f\u20e3 a watercolor")
    assert parse_describe_prompts(text) == FOUR


def test_keycaps_without_the_variation_selector() -> None:
    assert parse_describe_prompts(numbered(lambda i: f"{i}\u20e3", FOUR)) == FOUR


@pytest.mark.parametrize("style", ["{}.", "{})"])
def test_plain_numbering(style: str) -> None:
    assert parse_describe_prompts(numbered(lambda i: style.format(i), FOUR)) == FOUR


def test_plain_numbering_on_consecutive_lines_without_blank_lines() -> None:
    assert parse_describe_prompts(numbered(lambda i: f"{i}.", FOUR, sep="\n")) == FOUR


def test_windows_line_endings() -> None:
    assert parse_describe_prompts(numbered(lambda i: f"{i}{KEYCAP}", FOUR, sep="\r\n\r\n") + "\r\n") == FOUR


def test_odd_spacing_and_trailing_whitespace() -> None:
    text = (
        f"  1{KEYCAP}a watercolor   painting\tof a fox --ar 4:3   \n"
        f"\n \t \n"
        f"2{KEYCAP}    fox in snow\n  --ar 4:3\u00a0\n\n\n\n"
        f"3{KEYCAP} \u200bthird one --ar 4:3 \n"
    )
    assert parse_describe_prompts(text) == [
        "a watercolor painting of a fox --ar 4:3",
        "fox in snow --ar 4:3",
        "third one --ar 4:3",
    ]


def test_fewer_than_four_prompts() -> None:
    assert parse_describe_prompts(numbered(lambda i: f"{i}{KEYCAP}", FOUR[:2])) == FOUR[:2]


def test_all_keycap_prompts_on_one_line() -> None:
    assert parse_describe_prompts(f"1{KEYCAP} first --ar 1:1 2{KEYCAP} second --ar 1:1") == [
        "first --ar 1:1",
        "second --ar 1:1",
    ]


def test_keycaps_take_precedence_over_a_line_starting_with_a_number() -> None:
    text = f"1{KEYCAP} a poster that reads\n2. place winner --ar 2:3\n\n2{KEYCAP} trophy --ar 2:3"
    assert parse_describe_prompts(text) == ["a poster that reads 2. place winner --ar 2:3", "trophy --ar 2:3"]


def test_numbers_inside_a_prompt_are_not_numbering() -> None:
    text = "1. a 3.5 inch floppy disk, 1980s ad (1) --ar 3:2\n\n2. retro computer --v 6.1"
    assert parse_describe_prompts(text) == [
        "a 3.5 inch floppy disk, 1980s ad (1) --ar 3:2",
        "retro computer --v 6.1",
    ]


def test_text_before_the_first_number_is_not_a_prompt() -> None:
    assert parse_describe_prompts(f"Prompts:\n1{KEYCAP} only one --ar 1:1") == ["only one --ar 1:1"]


def test_unnumbered_text_gives_one_prompt_per_paragraph() -> None:
    text = "a fox in snow --ar 4:3\n\n\na fox\nin a forest --ar 4:3\r\n\r\na fox\r\nat night\r\n   \n"
    assert parse_describe_prompts(text) == [
        "a fox in snow --ar 4:3",
        "a fox in a forest --ar 4:3",
        "a fox at night",
    ]


def test_empty_markers_are_dropped() -> None:
    assert parse_describe_prompts(f"1{KEYCAP}\n\n2{KEYCAP} real one") == ["real one"]


@pytest.mark.parametrize("text", [None, "", "   ", "\r\n\r\n", "\t"])
def test_nothing_to_parse_gives_an_empty_list(text: str | None) -> None:
    assert parse_describe_prompts(text) == []


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("prompt", "text", "params"),
    [
        ("a red fox --ar 4:3", "a red fox", {"ar": "4:3"}),
        ("a red fox", "a red fox", {}),
        (
            "a red fox, watercolor --ar 4:3 --v 6.1 --tile --no text, watermark",
            "a red fox, watercolor",
            {"ar": "4:3", "v": "6.1", "tile": "", "no": "text, watermark"},
        ),
        ("fox \u2014ar 16:9 \u2014Stylize 250", "fox", {"ar": "16:9", "stylize": "250"}),
        ("a well--known fox -- and more --ar 1:1 --ar 2:3", "a well--known fox -- and more", {"ar": "2:3"}),
        ("--ar 1:1", "", {"ar": "1:1"}),
    ],
)
def test_split_prompt_parameters(prompt: str, text: str, params: dict[str, str]) -> None:
    assert split_prompt_parameters(prompt) == (text, params)


def test_every_parsed_prompt_keeps_its_parameters() -> None:
    prompts = parse_describe_prompts(numbered(lambda i: f"{i}{KEYCAP}", FOUR))
    assert [split_prompt_parameters(p)[1] for p in prompts] == [{"ar": "4:3"}] * 4
