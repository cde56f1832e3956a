"""Reading a task's buttons into actions, and finding the customId of the action a user names."""

from __future__ import annotations

import pytest

from airflow_provider_apicore.buttons import (
    ACTIONS,
    action_of,
    available_actions,
    check_index,
    find_custom_id,
    normalize_action,
    parse_buttons,
)
from airflow_provider_apicore.exceptions import ApicoreActionNotOfferedError, ApicoreInputError

H = "0ddb91a0-af46-4ae9-8e8e-c271074eb6e6"


def b(custom_id: str, label: str = "", emoji: str = "") -> dict:
    return {"customId": custom_id, "emoji": emoji, "label": label, "type": 2, "style": 2}


# The grid buttons as observed on a plus server (protocol §3.3), in order.
GRID = [
    *[b(f"MJ::JOB::upsample::{i}::{H}", f"U{i}") for i in range(1, 5)],
    b(f"MJ::JOB::reroll::0::{H}::SOLO", "", "🔄"),
    *[b(f"MJ::JOB::variation::{i}::{H}", f"V{i}") for i in range(1, 5)],
]
# After an upscale (C's synthesized set for v6.1).
UPSCALED = [
    b(f"MJ::JOB::upsample_v6r1_2x_subtle::1::{H}::SOLO", "Upscale (Subtle)", "upscale_1"),
    b(f"MJ::JOB::upsample_v6r1_2x_creative::1::{H}::SOLO", "Upscale (Creative)", "upscale_1"),
    b(f"MJ::JOB::low_variation::1::{H}::SOLO", "Vary (Subtle)", "🪄"),
    b(f"MJ::JOB::high_variation::1::{H}::SOLO", "Vary (Strong)", "🪄"),
    b(f"MJ::Inpaint::1::{H}::SOLO", "Vary (Region)", "🖌️"),
    b(f"MJ::Outpaint::50::1::{H}::SOLO", "Zoom Out 2x", "🔍"),
    b(f"MJ::Outpaint::75::1::{H}::SOLO", "Zoom Out 1.5x", "🔍"),
    b(f"MJ::CustomZoom::1::{H}", "Custom Zoom", "🔍"),
    b(f"MJ::JOB::pan_left::1::{H}::SOLO", "", "⬅️"),
    b(f"MJ::JOB::pan_right::1::{H}::SOLO", "", "➡️"),
    b(f"MJ::JOB::pan_up::1::{H}::SOLO", "", "⬆️"),
    b(f"MJ::JOB::pan_down::1::{H}::SOLO", "", "⬇️"),
    b(f"MJ::JOB::reroll::0::{H}::SOLO", "", "🔄"),
]
DESCRIBED = [
    *[b(f"MJ::Job::PicReader::{i}", "", f"{i}\ufe0f\u20e3") for i in range(1, 5)],
    b("MJ::Picread::Retry", "", "🔄"),
    b("MJ::Job::PicReader::all", "Imagine all", "🎉"),
]


@pytest.mark.parametrize(
    ("custom_id", "expected"),
    [
        (f"MJ::JOB::upsample::3::{H}", "upscale 3"),
        (f"MJ::JOB::variation::4::{H}", "variation 4"),
        (f"MJ::JOB::reroll::0::{H}::SOLO", "reroll"),
        (f"MJ::JOB::upsample_v6_2x_subtle::1::{H}::SOLO", "upscale_subtle"),
        (f"MJ::JOB::upsample_v7_2x_creative::1::{H}::SOLO", "upscale_creative"),
        (f"MJ::JOB::upsample_v5_2x::1::{H}::SOLO", "upscale_2x"),
        (f"MJ::JOB::upsample_v5_4x::1::{H}::SOLO", "upscale_4x"),
        (f"MJ::JOB::low_variation::1::{H}::SOLO", "vary_subtle"),
        (f"MJ::JOB::high_variation::1::{H}::SOLO", "vary_strong"),
        (f"MJ::Inpaint::1::{H}::SOLO", "vary_region"),
        (f"MJ::Outpaint::50::1::{H}::SOLO", "zoom_out_2x"),
        (f"MJ::Outpaint::75::1::{H}::SOLO", "zoom_out_1.5x"),
        (f"MJ::CustomZoom::1::{H}", "custom_zoom"),
        (f"MJ::CustomZoom::{H}", "custom_zoom"),  # Discord's own form
        (f"MJ::JOB::pan_down::1::{H}::SOLO", "pan_down"),
        (f"MJ::JOB::animate_high::1::{H}::SOLO", "animate_high"),
        (f"MJ::JOB::video_virtual_upscale::2::{H}", "video_upscale 2"),
        ("MJ::Job::PicReader::2", "describe_pick 2"),
        ("MJ::JOB::PicReader::1", "describe_pick 1"),  # one document's spelling
        ("MJ::Job::PicReader::all", "describe_all"),
        ("MJ::Picread::Retry", "describe_retry"),
        ("MJ::Job::PromptAnalyzer::3", "shorten_pick 3"),
    ],
)
def test_every_known_custom_id_form_reads_as_its_action(custom_id: str, expected: str) -> None:
    assert str(action_of(custom_id)) == expected


@pytest.mark.parametrize(
    "custom_id", ["", "upsample::1", "MJ::BOOKMARK::x", "MJ::Outpaint::60::1::h", "X::JOB::a"]
)
def test_unknown_custom_ids_have_no_action(custom_id: str) -> None:
    assert action_of(custom_id) is None


def test_parse_buttons_gives_label_custom_id_emoji_and_the_readable_action() -> None:
    parsed = parse_buttons(GRID)
    assert parsed[0] == {
        "label": "U1",
        "custom_id": f"MJ::JOB::upsample::1::{H}",
        "emoji": "",
        "action": "upscale",
        "index": 1,
    }
    assert parsed[4]["action"] == "reroll" and parsed[4]["emoji"] == "🔄"
    assert [p["index"] for p in parsed[5:]] == [1, 2, 3, 4]


def test_parse_buttons_is_lenient_with_what_servers_send() -> None:
    assert parse_buttons(None) == []
    assert parse_buttons("nope") == []
    odd = [None, 3, {"label": "no id"}, {"custom_id": "MJ::JOB::reroll::0::h", "emoji": {"name": "🔄"}}]
    parsed = parse_buttons(odd)
    assert len(parsed) == 1
    assert parsed[0]["emoji"] == "🔄" and parsed[0]["action"] == "reroll" and parsed[0]["label"] == ""


def test_available_actions_fold_the_numbered_buttons() -> None:
    assert available_actions(GRID) == ["upscale 1-4", "reroll", "variation 1-4"]
    assert available_actions(UPSCALED) == [
        "upscale_subtle",
        "upscale_creative",
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
        "reroll",
    ]
    assert available_actions(DESCRIBED) == ["describe_pick 1-4", "describe_retry", "describe_all"]
    assert available_actions(parse_buttons(GRID)) == available_actions(GRID)  # parsed input works too


@pytest.mark.parametrize(("index", "expected"), [(1, 1), (2, 2), (3, 3), (4, 4), ("4", 4)])
def test_find_custom_id_picks_the_numbered_button(index, expected: int) -> None:
    assert find_custom_id(GRID, "upscale", index) == f"MJ::JOB::upsample::{expected}::{H}"
    assert find_custom_id(GRID, "V", index) == f"MJ::JOB::variation::{expected}::{H}"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("reroll", f"MJ::JOB::reroll::0::{H}::SOLO"),
        ("vary_region", f"MJ::Inpaint::1::{H}::SOLO"),
        ("Zoom Out 1.5x", f"MJ::Outpaint::75::1::{H}::SOLO"),
        ("zoom", f"MJ::Outpaint::50::1::{H}::SOLO"),
        ("custom-zoom", f"MJ::CustomZoom::1::{H}"),
        ("pan_up", f"MJ::JOB::pan_up::1::{H}::SOLO"),
        ("vary_strong", f"MJ::JOB::high_variation::1::{H}::SOLO"),
        ("upscale_creative", f"MJ::JOB::upsample_v6r1_2x_creative::1::{H}::SOLO"),
    ],
)
def test_find_custom_id_by_readable_name_or_alias(action: str, expected: str) -> None:
    assert find_custom_id(UPSCALED, action) == expected


def test_an_action_the_parent_does_not_offer_lists_what_it_does() -> None:
    with pytest.raises(ApicoreActionNotOfferedError) as info:
        find_custom_id(GRID, "zoom_out_2x", task_id="1748339029401828")
    err = info.value
    assert err.offered == ["upscale 1-4", "reroll", "variation 1-4"]
    assert str(err) == (
        "Task 1748339029401828 does not offer 'zoom_out_2x'; it offers: upscale 1-4, reroll, variation 1-4"
    )
    with pytest.raises(
        ApicoreActionNotOfferedError, match="does not offer 'upscale 1'; it offers: vary_subtle"
    ):
        find_custom_id(UPSCALED[2:], "upscale", 1)
    with pytest.raises(ApicoreActionNotOfferedError, match="no actions at all"):
        find_custom_id([], "reroll")


@pytest.mark.parametrize("index", [0, 5, -1, "x", 2.5, True])
def test_an_index_outside_1_to_4_is_refused(index) -> None:
    with pytest.raises(ApicoreInputError, match="index must be"):
        find_custom_id(GRID, "upscale", index)


def test_an_indexed_action_without_index_is_refused() -> None:
    with pytest.raises(ApicoreInputError, match=r"'upscale' needs index=1..4"):
        check_index("upscale", None)


def test_an_index_on_a_button_without_choice_is_ignored_but_still_range_checked() -> None:
    assert check_index("reroll", 2) is None
    with pytest.raises(ApicoreInputError):
        check_index("reroll", 7)


@pytest.mark.parametrize("action", ["", "  ", None, "enhance", "upscale_8x"])
def test_unknown_action_names_are_refused_with_the_known_ones(action) -> None:
    with pytest.raises(ApicoreInputError) as info:
        normalize_action(action)
    assert not isinstance(info.value, ApicoreActionNotOfferedError)
    if action and action.strip():
        assert "vary_region" in str(info.value)


def test_every_listed_action_normalizes_to_itself() -> None:
    assert [normalize_action(a) for a in ACTIONS] == list(ACTIONS)
