"""Per-payload, per-image and per-prompt counts of submissions and jobs, so duplicates can be counted."""

from __future__ import annotations

import base64
import hashlib

from airflow_provider_apicore.emulator import EmulatorConfig
from airflow_provider_apicore.emulator.state import EmulatorState, submission_keys


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _submissions(api, **query) -> dict:
    return api.session.get(f"{api.url}/_emulator/submissions", params=query, timeout=10).json()


def test_identical_images_make_duplicate_jobs_whatever_their_state_or_hook(start_emulator, client_for, png):
    api = client_for(start_emulator(job_seconds=5, queue_size=20))
    image, other = png(10, 10, (5, 6, 7)), png(10, 10, (7, 6, 5))
    api.submit_ok(image, state="a/1")
    api.submit_ok(image, state="a/2", notifyHook="http://127.0.0.1:9/hook")
    api.submit_ok(image)
    api.submit_ok(other, state="b/1")
    stats = api.server.stats()
    assert stats["jobs_created"] == 4
    assert stats["duplicate_jobs"] == stats["duplicate_image_jobs"] == 2
    assert stats["images_with_duplicate_jobs"] == 1 and stats["duplicate_prompt_jobs"] == 0
    by_image = _submissions(api)["by_image"]
    assert by_image[hashlib.sha256(image).hexdigest()] == {"submits": 3, "jobs": 3}
    assert by_image[hashlib.sha256(other).hexdigest()] == {"submits": 1, "jobs": 1}
    only_duplicated = _submissions(api, min_jobs=2)
    assert list(only_duplicated["by_image"]) == [hashlib.sha256(image).hexdigest()]
    assert len(only_duplicated["by_payload"]) == 1


def test_a_deduplicated_resubmission_is_a_submit_but_not_a_job(start_emulator, client_for, png):
    api = client_for(start_emulator(job_seconds=5, dedupe=True))
    image = png(10, 10, (1, 1, 1))
    first = api.submit_ok(image)
    again = api.submit(image).json()
    assert again["code"] == 21 and again["result"] == first
    stats = api.server.stats()
    assert stats["jobs_created"] == 1 and stats["duplicate_jobs"] == 0
    assert stats["submit_answers_delivered"] == 1
    assert _submissions(api)["by_image"][hashlib.sha256(image).hexdigest()] == {"submits": 2, "jobs": 1}


def test_refused_submits_count_as_submits_only(start_emulator, client_for):
    api = client_for(start_emulator())
    bad = "data:image/png;base64," + base64.b64encode(b"not an image").decode()
    api.session.post(f"{api.url}/mj/submit/describe", json={"base64": "nonsense"}, timeout=10)
    stats = api.server.stats()
    assert stats["jobs_created"] == 0 and stats["submissions_rejected"] == {"4": 1}
    assert _submissions(api)["by_image"] == {}
    assert (
        api.session.post(f"{api.url}/mj/submit/describe", json={"base64": bad}, timeout=10).json()["code"]
        == 1
    )
    assert api.server.stats()["jobs_created"] == 1


def test_bad_min_jobs_is_refused_naming_the_parameter(api):
    response = api.session.get(f"{api.url}/_emulator/submissions", params={"min_jobs": "x"}, timeout=10)
    assert response.status_code == 400 and "min_jobs" in response.json()["error"]["message"]


def test_reset_forgets_the_counts(start_emulator, client_for, png):
    api = client_for(start_emulator())
    api.submit_ok(png(3, 3))
    api.submit_ok(png(3, 3))
    assert api.server.stats()["duplicate_jobs"] == 1
    api.server.reset()
    stats = api.server.stats()
    assert stats["duplicate_jobs"] == stats["jobs_created"] == 0
    assert _submissions(api) == {"by_payload": {}, "by_image": {}, "by_prompt": {}}


# ------------------------------------------------------- the keys, for payloads of the other endpoints
def test_prompts_and_image_lists_are_keyed_by_content():
    state = EmulatorState(EmulatorConfig())
    one, two = b"\x89PNG one", b"\x89PNG two"
    blend = {"base64Array": [_data_url(one), _data_url(two)], "dimensions": "SQUARE"}
    imagine = {"prompt": "a red fox --ar 3:2", "state": "x"}
    answers = iter(str(1000 + i) for i in range(10))

    def submit(path: str, payload: dict) -> None:
        state.record_submission(path, payload, {"code": 1, "result": next(answers)})

    submit("/mj/submit/blend", blend)
    submit("/mj/submit/blend", {**blend, "state": "retry", "notifyHook": "http://x/"})
    submit("/mj/submit/imagine", imagine)
    submit("/mj/submit/imagine", {**imagine, "state": "y"})
    submit("/mj/submit/imagine", {"prompt": "a blue fox --ar 3:2"})
    state.record_submission("/mj/submit/imagine", imagine, {"code": 23, "result": None})
    stats = state.stats()
    assert stats["jobs_created"] == 5
    assert stats["duplicate_jobs"] == 2  # one blend, one imagine
    assert stats["duplicate_prompt_jobs"] == 1
    assert state.submissions()["by_prompt"]["a red fox --ar 3:2"] == {"submits": 3, "jobs": 2}
    assert state.submissions()["by_image"][hashlib.sha256(one).hexdigest()] == {"submits": 2, "jobs": 2}


def test_the_same_request_on_another_endpoint_or_with_another_mask_is_another_payload():
    image = _data_url(b"img")
    key, images, prompt = submission_keys("/mj/submit/describe", {"base64": image})
    assert images == [hashlib.sha256(b"img").hexdigest()] and prompt is None
    assert key != submission_keys("/mj/submit/imagine", {"base64": image})[0]
    modal = {"taskId": "1", "maskBase64": _data_url(b"mask")}
    assert submission_keys("/mj/submit/modal", modal)[1] == []  # a mask is not an image
    assert (
        submission_keys("/mj/submit/modal", modal)[0]
        != submission_keys("/mj/submit/modal", {**modal, "maskBase64": _data_url(b"other")})[0]
    )
