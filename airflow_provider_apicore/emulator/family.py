"""
The Midjourney endpoints beyond describe: imagine, action (upscale, variation, reroll, zoom, pan,
vary region, the describe/shorten pick buttons), modal, blend, shorten, face swap, image-seed and
the legacy change.

Every job goes through :meth:`EmulatorState.submit_task`, so queueing, the concurrency limit, the
task lifecycle, fetch / list-by-condition, notifyHook callbacks, fault injection and the gateway
mode treat them like DESCRIBE jobs. Each job's picture is rendered when it is submitted (in a
worker thread) and served, like a describe upload, at ``/_emulator/images/<id>.png``; the gateway
mode serves it at ``/mj/image/<id>`` through :meth:`FamilyTask.result_image`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from airflow_provider_apicore.emulator import render
from airflow_provider_apicore.emulator.buttons import (
    ButtonAction,
    grid_buttons,
    keycap,
    parse_custom_id,
    shorten_buttons,
    upscale_buttons,
)
from airflow_provider_apicore.emulator.faults import TaskFate
from airflow_provider_apicore.emulator.render import Panel, derive
from airflow_provider_apicore.emulator.state import (
    DISCORD_CHANNEL_ID,
    DISCORD_INSTANCE_ID,
    MODAL,
    SUCCESS,
    TASK_EXISTS,
    Task,
)

if TYPE_CHECKING:
    from airflow_provider_apicore.emulator.state import EmulatorState

# Messages, exactly as the servers write them (protocol file, first variant listed).
PROMPT_EMPTY = "prompt不能为空"
BASE64_INVALID = "base64格式错误"
BANNED = "可能包含敏感词"
PARAMS_INVALID = "参数错误"
PARENT_MISSING = "关联任务不存在或已失效"
PARENT_STATUS = "关联任务状态错误"
UNKNOWN_ACTION = "未知的 Action 类型"
PICREADER_INDEX = "无效的 PicReader 索引"
BLEND_LIST = "base64List参数错误"
BLEND_DIMENSIONS = "dimensions参数错误"
FACE_EMPTY = "人脸图片不能为空"
TARGET_EMPTY = "目标图片不能为空"
FACE_INVALID = "人脸图片格式错误"
TARGET_INVALID = "目标图片格式错误"
FACE_SAME = "人脸图片和目标图片不能相同"
WAITING_MODAL = "Waiting for window confirm"
TASK_ID_EMPTY = "taskId不能为空"
CHANGE_ACTION = "action参数错误"
CHANGE_PARENT = "关联任务不允许执行变化"
SUCCESS_TEXT = "成功"
SHORTEN_FOOTER = "Click on a button to imagine one of the shortened prompts"

#: A small part of the original server's banned-word list, matched as ``\bword\b`` ignoring case.
BANNED_WORDS = (
    "blood",
    "bloody",
    "gore",
    "twerk",
    "making love",
    "voluptuous",
    "naughty",
    "nude",
    "naked",
    "sexy",
    "torture",
    "behead",
)
BANNED_PATTERNS = tuple(
    (word, re.compile(r"\b" + re.escape(word) + r"\b", re.IGNORECASE)) for word in BANNED_WORDS
)
ZOOM_VALUE = re.compile(r"(?:^|\s)--zoom\s+(\d+(?:\.\d+)?)")
STOP_WORDS = frozenset(
    {"a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "with", "and", "or", "is", "are", "be"}
    | {"as", "from", "into", "over", "under", "very", "this", "that"}
)
#: /mj/submit/change accepts parents of these actions only (the original server).
CHANGE_PARENTS = ("IMAGINE", "VARIATION", "REROLL", "BLEND")
#: Uploaded reference images kept for ``/_emulator/uploads/<name>`` (oldest dropped beyond this).
MAX_UPLOADS = 512


def banned_word(prompt: str) -> str | None:
    """The first banned word in ``prompt``, as written there, or None."""
    for _word, pattern in BANNED_PATTERNS:
        match = pattern.search(prompt)
        if match is not None:
            return match.group(0)
    return None


def zoom_factor(prompt: str | None, default: float = 2.0) -> float:
    """The ``--zoom`` value of a Custom Zoom prompt, kept within 1-2 (the default when absent)."""
    match = ZOOM_VALUE.search(prompt or "")
    if match is None:
        return default
    return min(2.0, max(1.0, float(match.group(1)))) or default


def shortened_prompts(prompt: str) -> tuple[list[str], list[tuple[str, float]]]:
    """
    Five ever shorter versions of a prompt (its most important words kept in their order, its
    ``--`` parameters kept whole), and the words with their importance.

    :param prompt: the prompt to shorten.
    """
    core, sep, params = prompt.partition(" --")
    suffix = f" --{params}" if sep else ""
    tokens = re.findall(r"[\w'-]+", core)
    words = [t for t in tokens if t.lower() not in STOP_WORDS] or tokens
    unique = list(dict.fromkeys(words))

    def weight(position: int, word: str) -> float:
        noise = hashlib.sha256(word.lower().encode("utf-8")).digest()[0] / 255
        return round(max(0.05, 1.0 - position / max(1, len(unique)) * 0.6 - noise * 0.35), 2)

    weights = [(word, weight(i, word)) for i, word in enumerate(unique)]
    ranked = [word for word, _ in sorted(weights, key=lambda item: -item[1])]
    phrases = [re.findall(r"[\w'-]+", phrase) for phrase in core.split(",")]
    prompts = []
    for k in range(5):
        keep = set(ranked[: max(1, round(len(ranked) * (1 - 0.17 * k)))])
        kept = (" ".join(word for word in phrase if word in keep) for phrase in phrases)
        prompts.append(", ".join(part for part in kept if part) + suffix)
    return prompts, weights


def shorten_text(prompt: str) -> str:
    """The SHORTEN result text: important tokens, the numbered shortened prompts, the footer."""
    prompts, weights = shortened_prompts(prompt)
    tokens = ", ".join(f"{word} ({value:.2f})" for word, value in weights)
    numbered = "\n\n".join(f"{keycap(i)} {text}" for i, text in enumerate(prompts, 1))
    return f"**Important tokens**\n{tokens}\n\n**Shortened prompts**\n\n{numbered}\n\n{SHORTEN_FOOTER}"


def numbered_prompts(text: str | None) -> list[str]:
    """The keycap-numbered prompts of a DESCRIBE or SHORTEN result, in order."""
    found = re.findall(r"^\s*\d\ufe0f?\u20e3\s*(.+?)\s*$", text or "", re.MULTILINE)
    return [item for item in found if item]


@dataclass
class Picture:
    """
    What a job draws.

    :param panels: four panels (grid) or one (single image).
    :param size: one panel's (width, height).
    :param scale: drawing scale of a single image (2 for the upscale-again buttons).
    :param png: bytes already drawn (face swap), used as they are.
    :param keep: Vary (Region): the parent panel kept where ``mask`` is black.
    :param mask: Vary (Region): the mask image bytes (white = redraw).
    """

    panels: list[Panel]
    size: tuple[int, int]
    scale: int = 1
    png: bytes | None = None
    keep: Panel | None = None
    mask: bytes | None = None

    @property
    def grid(self) -> bool:
        return len(self.panels) == 4

    def draw(self) -> bytes:
        """The PNG bytes (CPU-bound: call it in a worker thread)."""
        if self.png is not None:
            return self.png
        if self.grid:
            return render.grid_png(self.panels, self.size, self.keep, self.mask)
        return render.panel_png(self.panels[0], self.size, self.scale)

    def dimensions(self) -> tuple[int, int]:
        """(width, height) of the drawn image."""
        width, height = self.size
        factor = 2 if self.grid else self.scale
        return width * factor, height * factor


class FamilyTask(Task):
    """
    A job of any endpoint but describe: its picture, buttons, prompt and parent.

    The base class's ``image``/``mime`` hold the rendered PNG (so ``/_emulator/images/<id>.png``
    serves it); ``imageUrl`` appears only once the job has a picture.
    """

    __slots__ = (
        "_url",
        "action",
        "bot_type",
        "button_set",
        "custom_id",
        "digest",
        "final_prompt",
        "job_hash",
        "list_urls",
        "mask",
        "modal_kind",
        "parent_id",
        "picture",
        "seed",
    )

    def __init__(
        self,
        task_id: str,
        *,
        action: str,
        prompt: str,
        digest: bytes,
        picture: Picture | None,
        button_set: str,
        state: str | None,
        notify_hook: str | None,
        fate: TaskFate,
        public_base: str,
        parent_id: str | None = None,
        custom_id: str = "",
        bot_type: str = "MID_JOURNEY",
        description: str = "Submit success",
    ) -> None:
        self._url: str | None = None
        super().__init__(
            task_id,
            image=b"",
            mime="image/png",
            suffix="png",
            info=None,  # type: ignore[arg-type]  # nothing was uploaded to describe
            state=state,
            notify_hook=notify_hook,
            fate=fate,
            public_base=public_base,
        )
        self.action = action
        self.prompt = prompt
        self.final_prompt = prompt
        self.description = description
        self.digest = digest
        self.button_set = button_set
        self.parent_id = parent_id
        self.custom_id = custom_id
        self.bot_type = bot_type
        self.mask: str | None = None
        self.list_urls = False  # imageUrls for a grid (the ``image_urls`` option when created)
        self.modal_kind: ButtonAction | None = None
        self.job_hash = str(uuid.UUID(bytes=derive(digest, task_id)[:16], version=4))
        self.seed = int.from_bytes(derive(digest, "seed")[:4], "big") % 4_294_967_295
        self.picture = picture
        if picture is not None and picture.png is not None:
            self.image = picture.png

    # The picture's URL is known once the job has a picture; SHORTEN never has one.
    @property  # type: ignore[override]
    def image_url(self) -> str | None:
        return self._url

    @image_url.setter
    def image_url(self, value: str | None) -> None:
        self._url = value if self.image else None

    def set_picture(self, picture: Picture, png: bytes) -> None:
        """Attach the rendered picture."""
        self.picture = picture
        self.image = png

    def result_image(self) -> tuple[bytes, str] | None:
        """The PNG for the gateway's ``/mj/image/<id>``, or None before it exists."""
        return (self.image, "image/png") if self.image else None

    def complete(self) -> str | None:
        """A SHORTEN job's answer is its analysis text; every other job's is its picture."""
        if self.action == "SHORTEN":
            text = shorten_text(self.prompt or "")
            self.description = text
            self.final_prompt = text
        return None

    def buttons(self) -> list[dict[str, Any]]:
        """The buttons of the finished job."""
        if self.status != SUCCESS:
            return []
        if self.button_set == "grid":
            return grid_buttons(self.job_hash)
        if self.button_set == "upscale":
            return upscale_buttons(self.job_hash, self.prompt)
        if self.button_set == "shorten":
            return shorten_buttons(len(numbered_prompts(self.final_prompt)))
        return []

    def to_json(self) -> dict[str, Any]:
        """The task object, with the fields the plus servers add (buttons, sizes, parent)."""
        width, height = self.picture.dimensions() if self.picture is not None and self.image else (None, None)
        properties: dict[str, Any] = {
            "finalPrompt": self.final_prompt,
            "notifyHook": self.notify_hook,
            "discordInstanceId": DISCORD_INSTANCE_ID,
            "discordChannelId": DISCORD_CHANNEL_ID,
            "botType": self.bot_type,
        }
        if self.status == SUCCESS:
            properties["messageHash"] = self.job_hash
        if self.status == MODAL or self.modal_kind is not None:
            properties["remix"] = True
        return {
            "id": self.id,
            "action": self.action,
            "customId": self.custom_id,
            "botType": self.bot_type,
            "parentId": self.parent_id,
            "status": self.status,
            "progress": self.progress,
            "prompt": self.prompt,
            "promptEn": self.prompt,
            "description": self.description,
            "state": self.state,
            "submitTime": self.submit_time,
            "startTime": self.start_time,
            "finishTime": self.finish_time,
            "imageUrl": self.image_url,
            "imageWidth": width if self.status == SUCCESS else None,
            "imageHeight": height if self.status == SUCCESS else None,
            "failReason": self.fail_reason,
            "properties": properties,
            "buttons": self.buttons(),
            **({"imageUrls": self.panel_urls()} if self.list_urls else {}),
        }

    def panel_urls(self) -> list[dict[str, str]] | None:
        """``imageUrls`` of a finished grid: each picture alone (``/_emulator/images/<id>/<i>.png``)."""
        if self.status != SUCCESS or self.picture is None or not self.picture.grid:
            return None
        urls = (f"{self.public_base}/_emulator/images/{self.id}/{i}.png" for i in range(4))
        return [{"url": url, "thumbnail": url} for url in urls]


class Refusal(Exception):
    """A submit refused with a protocol answer (raised inside the handlers, answered by them)."""

    def __init__(
        self, code: int, description: str, status: int = 200, properties: dict | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.status = status
        self.properties = properties or {}


def _decode_image(value: Any) -> bytes | None:
    """Bytes of a data URL or of bare base64 (as newer servers accept); None when neither."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.startswith("data:"):
        head, sep, data = text.partition(",")
        if not sep or ";base64" not in head:
            return None
        text = data
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw or None


def _suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:3] == b"GIF":
        return "gif"
    return "png"


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    return value.strip() if isinstance(value, str) else ""


def _bot_type(value: Any) -> str:
    if isinstance(value, str) and value.upper() in ("NIJI_JOURNEY", "NIJI"):
        return "NIJI_JOURNEY"
    return "MID_JOURNEY"


def _check_prompt(prompt: str) -> None:
    if not prompt:
        raise Refusal(4, PROMPT_EMPTY)
    word = banned_word(prompt)
    if word is not None:
        raise Refusal(24, BANNED, properties={"promptEn": prompt, "bannedWord": word})


def add_family_routes(app: FastAPI, state: EmulatorState) -> None:
    """
    Register the family's routes on the emulator application.

    :param app: the emulator's FastAPI application.
    :param state: its state (the one lifecycle every job shares).
    """
    uploads: OrderedDict[str, tuple[bytes, str]] = OrderedDict()

    async def read_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        if not isinstance(body, dict):
            raise Refusal(-1, "request body must be a JSON object", status=400)
        return body

    def refuse(refusal: Refusal) -> Response:
        if refusal.code == -1:
            error = {"message": refusal.description, "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=refusal.status)
        state.reject(refusal.code)
        body = {
            "code": refusal.code,
            "description": refusal.description,
            "result": None,
            "properties": refusal.properties,
        }
        return JSONResponse(body, status_code=refusal.status)

    def common(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        tag = body.get("state")
        hook = body.get("notifyHook")
        return {
            "state": tag if tag is None or isinstance(tag, str) else json.dumps(tag),
            "notify_hook": hook if isinstance(hook, str) and hook else None,
            "public_base": str(request.base_url).rstrip("/"),
        }

    def upload(request: Request, data: bytes) -> str:
        suffix = _suffix(data)
        name = f"{hashlib.sha256(data).hexdigest()[:24]}.{suffix}"
        uploads[name] = (data, f"image/{'jpeg' if suffix == 'jpg' else suffix}")
        uploads.move_to_end(name)
        while len(uploads) > MAX_UPLOADS:
            uploads.popitem(last=False)
        return f"{str(request.base_url).rstrip('/')}/_emulator/uploads/{name}"

    async def submit(
        picture: Picture | None,
        *,
        hold: bool = False,
        describe: Callable[[str], str] | None = None,
        same_as: tuple[Any, ...] | None = None,
        **fields: Any,
    ) -> tuple[dict[str, Any], FamilyTask | None]:
        """
        Draw the picture (in a worker thread) and submit the job through the shared lifecycle.

        :param picture: what the job draws, or None (SHORTEN, or a job held in MODAL).
        :param hold: keep the job in MODAL until ``/mj/submit/modal``.
        :param describe: makes the ``description`` from the new task id.
        :param same_as: what makes two submissions the same job when ``dedupe`` is on.
        :param fields: :class:`FamilyTask` arguments.
        :return: the submit answer and the task created (None when refused or deduplicated).
        """
        key = None
        if same_as is not None and not hold:
            key = "family:" + hashlib.sha256(json.dumps(same_as, sort_keys=True).encode("utf-8")).hexdigest()
        png = await asyncio.to_thread(picture.draw) if picture is not None and not hold else None
        created: list[FamilyTask] = []

        def build(task_id: str, fate: TaskFate) -> Task:
            task = FamilyTask(task_id, picture=picture, fate=fate, **fields)
            task.list_urls = bool(getattr(state.config, "image_urls", False))
            if png is not None and picture is not None:
                task.set_picture(picture, png)
            if describe is not None:
                task.description = describe(task_id)
            created.append(task)
            return task

        answer = state.submit_task(build, dedupe_key=key, hold=hold)
        return answer, (created[0] if created else None)

    def parent_of(task_id: str) -> Task:
        parent = state.get(task_id)
        if parent is None:
            raise Refusal(3, PARENT_MISSING, status=404)
        if parent.status != SUCCESS:
            raise Refusal(4, PARENT_STATUS)
        return parent

    # ----------------------------------------------------------------------------------- imagine
    @app.post("/mj/submit/imagine")
    async def submit_imagine(request: Request) -> Response:
        try:
            body = await read_body(request)
            prompt = _text(body, "prompt")
            if not prompt:
                raise Refusal(4, PROMPT_EMPTY)
            items = body.get("base64Array")
            if items is None:
                items = []
            if not isinstance(items, list):
                raise Refusal(4, BASE64_INVALID)
            if isinstance(body.get("base64"), str) and body["base64"].strip():
                items = [*items, body["base64"]]
            images = []
            for item in items:
                if isinstance(item, str) and not item.strip():
                    continue  # blank entries are skipped
                data = _decode_image(item)
                if data is None:
                    raise Refusal(4, BASE64_INVALID)
                images.append(data)
            _check_prompt(prompt)
        except Refusal as refusal:
            return refuse(refusal)
        urls = [upload(request, data) for data in images]
        full_prompt = " ".join([*urls, prompt])
        digest = derive(b"imagine", prompt, *(hashlib.sha256(d).hexdigest() for d in images))
        hue = await asyncio.to_thread(render.image_hue, images[0]) if images else None
        picture = Picture(render.grid_panels(digest, hue), render.panel_size(prompt))
        answer, _ = await submit(
            picture,
            action="IMAGINE",
            prompt=full_prompt,
            description=f"/imagine {full_prompt}",
            digest=digest,
            button_set="grid",
            bot_type=_bot_type(body.get("botType")),
            same_as=("imagine", prompt, [hashlib.sha256(d).hexdigest() for d in images], body.get("botType")),
            **common(request, body),
        )
        return JSONResponse(answer)

    # ------------------------------------------------------------------------------------ action
    def plan(parent: FamilyTask, button: ButtonAction, prompt: str | None) -> tuple[Picture, str]:
        """The picture and button set of a job started from ``parent`` by ``button``."""
        source = parent.picture
        if source is None:
            raise Refusal(4, UNKNOWN_ACTION)
        digest = derive(parent.digest, button.kind, button.index, button.detail, prompt or "")
        if button.kind == "reroll":
            return Picture(render.grid_panels(derive(parent.digest, "reroll")), source.size), "grid"
        index = button.index if source.grid and button.kind in ("upscale", "variation") else 1
        panel = source.panels[min(index, len(source.panels)) - 1]
        if button.kind == "upscale":
            return Picture([panel], source.size), "upscale"
        if button.kind == "upscale_hd":
            return Picture([panel], source.size, scale=2), "upscale"
        if button.kind == "variation":
            return Picture(
                render.variation_panels(panel, digest, button.detail != "subtle"), source.size
            ), "grid"
        if button.kind == "inpaint":
            return Picture(render.variation_panels(panel, digest, strong=False), source.size), "grid"
        if button.kind == "pan":
            return Picture(render.pan_panels(panel, digest, button.detail), source.size), "grid"
        # zoom (the button's factor) or custom_zoom (the factor typed into the dialog's prompt)
        factor = float(button.detail) if button.kind == "zoom" else zoom_factor(prompt)
        return Picture(render.zoom_panels(panel, digest, factor), source.size), "grid"

    def description_for(parent: Task, button: ButtonAction) -> str:
        """``/up <parent> U1|V1|R`` as the original server writes them, else ``Submit success``."""
        if button.kind == "upscale":
            return f"/up {parent.id} U{button.index}"
        if button.kind == "variation" and button.gateway_action == "VARIATION":
            return f"/up {parent.id} V{button.index}"
        if button.kind == "reroll":
            return f"/up {parent.id} R"
        return "Submit success"

    async def start_action(
        request: Request, body: dict[str, Any], parent: Task, custom_id: str, remix_requested: bool
    ) -> Response:
        offered = [b.get("customId") for b in parent.to_json().get("buttons") or []]
        button = parse_custom_id(custom_id) if custom_id in offered else None
        if button is None:
            raise Refusal(4, UNKNOWN_ACTION)
        fields = common(request, body)
        if button.kind == "describe_retry":
            info = parent.info
            answer = state.submit(
                image=parent.image,
                mime=parent.mime,
                suffix=parent.image_path.rpartition(".")[2] or "png",
                info=info,
                **fields,
            )
            return JSONResponse(answer)
        if button.kind in ("pic_reader", "pic_reader_all", "prompt_analyzer"):
            return await pick_prompt(request, body, parent, button, custom_id, fields)
        if not isinstance(parent, FamilyTask):
            raise Refusal(4, UNKNOWN_ACTION)
        remix = remix_requested or bool(getattr(state.config, "remix", False))
        modal = button.kind in ("custom_zoom", "inpaint") or (
            remix and button.kind in ("variation", "pan", "reroll")
        )
        pre_filled = parent.final_prompt or parent.prompt or ""
        picture, button_set = (None, "grid") if modal else plan(parent, button, None)
        answer, task = await submit(
            picture,
            hold=modal,
            action=button.action,
            prompt="" if button.kind == "inpaint" else (parent.prompt or ""),
            description=description_for(parent, button),
            same_as=("action", parent.id, custom_id),
            digest=derive(parent.digest, custom_id),
            button_set=button_set,
            parent_id=parent.id,
            custom_id=custom_id,
            bot_type=parent.bot_type,
            **fields,
        )
        if modal and task is not None:
            task.modal_kind = button
            task.final_prompt = pre_filled
            task.description = WAITING_MODAL
            return JSONResponse(
                {
                    "code": 21,
                    "description": WAITING_MODAL,
                    "result": task.id,
                    "properties": {"finalPrompt": pre_filled, "remix": True},
                }
            )
        return JSONResponse(answer)

    async def pick_prompt(
        request: Request,
        body: dict[str, Any],
        parent: Task,
        button: ButtonAction,
        custom_id: str,
        fields: dict[str, Any],
    ) -> Response:
        """PicReader (describe) and PromptAnalyzer (shorten) buttons: imagine a listed prompt."""
        source = parent.final_prompt if isinstance(parent, FamilyTask) else parent.prompt
        prompts = numbered_prompts(source)
        if button.kind == "pic_reader_all":
            ids = []
            tag = fields.pop("state")
            for i, prompt in enumerate(prompts[:4], 1):
                digest = derive(b"imagine", prompt)
                picture = Picture(render.grid_panels(digest), render.panel_size(prompt))
                answer, _ = await submit(
                    picture,
                    action="IMAGINE",
                    prompt=prompt,
                    description=f"/imagine {prompt}",
                    digest=digest,
                    button_set="grid",
                    parent_id=parent.id,
                    custom_id=custom_id,
                    state=f"{tag}::{i}" if tag is not None else None,
                    **fields,
                )
                if answer.get("code") not in (1, 22):
                    return JSONResponse(answer)
                ids.append(answer["result"])
            return JSONResponse(
                {"code": 1, "description": SUCCESS_TEXT, "result": ",".join(ids), "properties": {}}
            )
        if not 1 <= button.index <= len(prompts):
            raise Refusal(4, PICREADER_INDEX)
        chosen = prompts[button.index - 1]
        answer, task = await submit(
            None,
            hold=True,
            action="IMAGINE",
            prompt=chosen,
            description=WAITING_MODAL,
            digest=derive(b"imagine", chosen),
            button_set="grid",
            parent_id=parent.id,
            custom_id=custom_id,
            **fields,
        )
        if task is None:
            return JSONResponse(answer)
        task.modal_kind = button
        return JSONResponse(
            {
                "code": 21,
                "description": WAITING_MODAL,
                "result": task.id,
                "properties": {"finalPrompt": chosen, "remix": True},
            }
        )

    @app.post("/mj/submit/action")
    async def submit_action(request: Request) -> Response:
        try:
            body = await read_body(request)
            task_id, custom_id = _text(body, "taskId"), _text(body, "customId")
            if not task_id or not custom_id:
                raise Refusal(4, PARAMS_INVALID)
            parent = parent_of(task_id)
            return await start_action(request, body, parent, custom_id, body.get("enableRemix") is True)
        except Refusal as refusal:
            return refuse(refusal)

    @app.post("/mj/submit/change")
    async def submit_change(request: Request) -> Response:
        try:
            body = await read_body(request)
            task_id = _text(body, "taskId")
            if not task_id:
                raise Refusal(4, TASK_ID_EMPTY)
            action = _text(body, "action").upper()
            if action not in ("UPSCALE", "VARIATION", "REROLL"):
                raise Refusal(4, CHANGE_ACTION)
            parent = state.get(task_id)
            if parent is None:
                raise Refusal(3, PARENT_MISSING, status=404)
            if parent.status != SUCCESS:
                raise Refusal(4, PARENT_STATUS)
            if not isinstance(parent, FamilyTask) or parent.action not in CHANGE_PARENTS:
                raise Refusal(4, CHANGE_PARENT)
            index = body.get("index")
            index = index if isinstance(index, int) and not isinstance(index, bool) and 1 <= index <= 4 else 1
            name = {
                "UPSCALE": f"upsample::{index}",
                "VARIATION": f"variation::{index}",
                "REROLL": "reroll::0",
            }[action]
            suffix = "::SOLO" if action == "REROLL" else ""
            custom_id = f"MJ::JOB::{name}::{parent.job_hash}{suffix}"
            return await start_action(request, body, parent, custom_id, False)
        except Refusal as refusal:
            return refuse(refusal)

    # ------------------------------------------------------------------------------------- modal
    @app.post("/mj/submit/modal")
    async def submit_modal(request: Request) -> Response:
        try:
            body = await read_body(request)
            task_id = _text(body, "taskId")
            if not task_id:
                raise Refusal(4, PARAMS_INVALID)
            task = state.get(task_id)
            if task is None:
                raise Refusal(3, PARENT_MISSING, status=404)
            if not isinstance(task, FamilyTask) or task.status != MODAL:
                # Already confirmed (a repeated modal): the job exists, nothing new is started.
                properties = {
                    "discordChannelId": DISCORD_CHANNEL_ID,
                    "discordInstanceId": DISCORD_INSTANCE_ID,
                }
                return JSONResponse(
                    {"code": 21, "description": TASK_EXISTS, "result": task_id, "properties": properties}
                )
            parent = state.get(task.parent_id or "")
            prompt = _text(body, "prompt") or task.final_prompt or ""
            if not prompt and isinstance(parent, FamilyTask):
                prompt = parent.prompt or parent.final_prompt or ""
            _check_prompt(prompt)
        except Refusal as refusal:
            return refuse(refusal)
        mask = body.get("maskBase64")
        task.mask = mask if isinstance(mask, str) and mask else None
        button = task.modal_kind
        if button is not None and button.kind in ("pic_reader", "prompt_analyzer"):
            digest = derive(b"imagine", prompt)
            picture, button_set = Picture(render.grid_panels(digest), render.panel_size(prompt)), "grid"
        elif isinstance(parent, FamilyTask) and parent.picture is not None and button is not None:
            picture, button_set = plan(parent, button, prompt)
            if button.kind == "inpaint" and task.mask is not None:
                # The mask is not validated: one Pillow cannot read varies the whole picture.
                picture.keep, picture.mask = parent.picture.panels[0], _decode_image(task.mask)
        else:
            return refuse(Refusal(3, PARENT_MISSING, status=404))
        png = await asyncio.to_thread(picture.draw)
        if task.status != MODAL:  # confirmed by a concurrent request meanwhile
            return JSONResponse({"code": 21, "description": TASK_EXISTS, "result": task.id, "properties": {}})
        answer = state.release_modal(task)
        if answer.get("code") in (1, 22):
            task.prompt = prompt
            task.final_prompt = prompt
            task.button_set = button_set
            task.description = (
                f"/imagine {prompt}"
                if button is not None and button.kind in ("pic_reader", "prompt_analyzer")
                else "Submit success"
            )
            task.set_picture(picture, png)
        return JSONResponse(answer)

    # ------------------------------------------------------------------------------------- blend
    @app.post("/mj/submit/blend")
    async def submit_blend(request: Request) -> Response:
        try:
            body = await read_body(request)
            items = body.get("base64Array")
            if not isinstance(items, list) or not 2 <= len(items) <= 5:
                raise Refusal(4, BLEND_LIST)
            if "dimensions" in body and body["dimensions"] is None:
                raise Refusal(4, BLEND_DIMENSIONS)
            dimensions = body.get("dimensions", "SQUARE")
            if isinstance(dimensions, int) and not isinstance(dimensions, bool) and 0 <= dimensions <= 2:
                dimensions = ("PORTRAIT", "SQUARE", "LANDSCAPE")[dimensions]
            if dimensions not in render.BLEND_RATIOS:
                # The C server's model-binding answer (HTTP 200, not the submit shape).
                message = f"dimensions must be one of PORTRAIT, SQUARE, LANDSCAPE, got {dimensions!r}"
                timestamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                return JSONResponse(
                    {"success": False, "code": -1, "message": message, "timestamp": timestamp}
                )
            images = [_decode_image(item) for item in items]
            if any(data is None for data in images):
                raise Refusal(4, BASE64_INVALID)
        except Refusal as refusal:
            return refuse(refusal)
        blobs = [data for data in images if data is not None]
        digest = derive(b"blend", dimensions, *(hashlib.sha256(d).hexdigest() for d in blobs))
        panels = await asyncio.to_thread(render.blend_panels, blobs, digest)
        picture = Picture(panels, render.panel_size(ratio=render.BLEND_RATIOS[dimensions]))
        urls = " ".join(upload(request, data) for data in blobs)
        answer, _ = await submit(
            picture,
            action="BLEND",
            prompt=urls,
            describe=lambda task_id: f"/blend {task_id} {len(blobs)}",
            same_as=(
                "blend",
                dimensions,
                [hashlib.sha256(d).hexdigest() for d in blobs],
                body.get("botType"),
            ),
            digest=digest,
            button_set="grid",
            bot_type=_bot_type(body.get("botType")),
            **common(request, body),
        )
        return JSONResponse(answer)

    # ----------------------------------------------------------------------------------- shorten
    @app.post("/mj/submit/shorten")
    async def submit_shorten(request: Request) -> Response:
        try:
            body = await read_body(request)
            prompt = _text(body, "prompt")
            _check_prompt(prompt)
        except Refusal as refusal:
            return refuse(refusal)
        answer, _ = await submit(
            None,
            action="SHORTEN",
            prompt=prompt,
            description=f"/shorten {prompt}",
            same_as=("shorten", prompt, body.get("botType")),
            digest=derive(b"shorten", prompt),
            button_set="shorten",
            bot_type=_bot_type(body.get("botType")),
            **common(request, body),
        )
        return JSONResponse(answer)

    # --------------------------------------------------------------------------------- face swap
    @app.post("/mj/insight-face/swap")
    async def swap_face(request: Request) -> Response:
        try:
            body = await read_body(request)
            if not _text(body, "sourceBase64"):
                raise Refusal(4, FACE_EMPTY)
            if not _text(body, "targetBase64"):
                raise Refusal(4, TARGET_EMPTY)
            source = _decode_image(body["sourceBase64"])
            if source is None:
                raise Refusal(4, FACE_INVALID)
            target = _decode_image(body["targetBase64"])
            if target is None:
                raise Refusal(4, TARGET_INVALID)
            if source == target:
                raise Refusal(4, FACE_SAME)
        except Refusal as refusal:
            return refuse(refusal)
        digest = derive(b"swap", hashlib.sha256(source).hexdigest(), hashlib.sha256(target).hexdigest())
        png, (width, height) = await asyncio.to_thread(render.swap_face_png, source, target, digest)
        panel = Panel(digest, 0.0)
        answer, _ = await submit(
            Picture([panel], (width, height), png=png),
            action="SWAP_FACE",
            prompt="InsightFace",
            description="Submit success",
            digest=digest,
            button_set="none",
            bot_type="INSIGHT_FACE",
            same_as=("swap", digest.hex()),
            **common(request, body),
        )
        return JSONResponse(answer)

    # -------------------------------------------------------------------------------- image-seed
    @app.get("/mj/task/{task_id}/image-seed")
    async def image_seed(task_id: str) -> Response:
        task = state.get(task_id)
        if task is None:
            return refuse(Refusal(3, PARENT_MISSING, status=404))
        if task.status != SUCCESS:
            return refuse(Refusal(4, PARENT_STATUS, status=400))
        # A describe job's seed follows from its image, any other job's from its digest.
        seed = task.seed if isinstance(task, FamilyTask) else int(task.info.sha256[:8], 16) % 4_294_967_295
        return JSONResponse({"code": 1, "description": SUCCESS_TEXT, "result": str(seed), "properties": {}})

    # ------------------------------------------------------------------------- uploads and images
    @app.get("/_emulator/uploads/{name}")
    async def uploaded(name: str) -> Response:
        found = uploads.get(name)
        if found is None:
            return JSONResponse({"error": {"message": f"no upload {name}", "type": "not_found"}}, 404)
        return Response(found[0], media_type=found[1])

    @app.get("/_emulator/images/{task_id}/{name}")
    async def grid_picture(task_id: str, name: str) -> Response:
        task = state.get(task_id)
        index = name.removesuffix(".png")
        picture = task.picture if isinstance(task, FamilyTask) and task.image else None
        if (
            picture is None
            or not picture.grid
            or index not in ("0", "1", "2", "3")
            or not name.endswith(".png")
        ):
            return JSONResponse(
                {"error": {"message": f"no image {task_id}/{name}", "type": "not_found"}}, 404
            )
        png = await asyncio.to_thread(render.panel_png, picture.panels[int(index)], picture.size)
        return Response(png, media_type="image/png")

    if not any(getattr(route, "path", None) == "/mj/image/{task_id}" for route in app.routes):

        @app.get("/mj/image/{task_id}")
        async def task_image(task_id: str) -> Response:
            task = state.get(task_id)
            found = task.result_image() if isinstance(task, FamilyTask) else None
            if found is None and task is not None and task.image:
                found = (task.image, task.mime)
            if found is None:
                return JSONResponse({"error": "midjourney_task_not_found"}, status_code=400)
            return Response(found[0], media_type=found[1])
