"""
The images a batch still has to submit.

In one process the queue is a deque of keys. When a batch defers, what is left goes to a plan file
(:meth:`Manifest.write_plan`) once, and the checkpoint keeps only a cursor into it: a resume reads the
next few lines as it submits (:meth:`Manifest.read_plan`), so a deferral round costs what it submits,
not a pass over every image still queued.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_apicore.manifest import Manifest


class WorkQueue:
    """
    Keys of images to submit, first in first out: a deque in memory, then the rest of a plan file.

    :param manifest: the manifest the plan belongs to (needed only with ``plan``)
    :param plan: the plan file's name, or None
    :param offset: byte offset of the plan's first line not taken yet
    :param remaining: plan lines not taken yet
    """

    def __init__(
        self, manifest: Manifest | None = None, plan: str | None = None, offset: int = 0, remaining: int = 0
    ) -> None:
        #: keys in memory, taken before the plan's (put back after a pause, or every key in a fresh run)
        self.front: deque[str] = deque()
        self.manifest = manifest
        self.plan = plan
        self.offset = offset
        self.remaining = remaining if plan else 0
        #: plan lines read but not taken yet: (image, offset after its line)
        self._read: deque[tuple[str, int]] = deque()
        self._block = 0

    def __len__(self) -> int:
        return len(self.front) + self.remaining

    def __bool__(self) -> bool:
        return bool(self.front) or self.remaining > 0

    def __iter__(self) -> Iterator[str]:
        """The keys in memory only (a plan's rest is not read for this)."""
        return iter(self.front)

    def append(self, image: str) -> None:
        self.front.append(image)

    def appendleft(self, image: str) -> None:
        self.front.appendleft(image)

    def extendleft(self, images: Iterable[str]) -> None:
        self.front.extendleft(images)

    def popleft(self) -> str:
        if self.front:
            return self.front.popleft()
        if not self.remaining:
            raise IndexError("pop from an empty queue")
        if not self._read:
            assert self.manifest is not None and self.plan is not None
            # Small reads first (a round takes a few lines), larger as this process takes more.
            self._block = min(self._block * 2, PLAN_BLOCK_MAX) if self._block else PLAN_BLOCK_MIN
            self._read.extend(self.manifest.read_plan(self.plan, self.offset, self._block))
            if not self._read:
                # The plan ended early: nothing more to take (its count was wrong, or it was cut).
                self.remaining = 0
                raise IndexError("the plan has no more lines")
        image, self.offset = self._read.popleft()
        self.remaining -= 1
        return image

    def checkpoint_state(self, manifest: Manifest) -> dict[str, Any]:
        """
        What a resume needs: the keys in memory, and the plan cursor. In a process without a plan yet,
        the keys in memory are written to a new plan first (once per try that defers).
        """
        if self.plan is None and len(self.front) > PLAN_FROM:
            self.plan, written = manifest.write_plan(self.front)
            self.manifest = manifest
            self.offset, self.remaining = 0, written
            self.front.clear()
            self._read.clear()
        return {
            "front": list(self.front),
            "plan": self.plan,
            "offset": self.offset,
            "remaining": self.remaining,
        }

    @classmethod
    def from_checkpoint(cls, manifest: Manifest, state: dict[str, Any]) -> WorkQueue:
        queue = cls(
            manifest, state.get("plan"), int(state.get("offset") or 0), int(state.get("remaining") or 0)
        )
        queue.front.extend(state.get("front") or [])
        return queue


#: Bytes of the first plan read of a process, and the most read at once (doubling in between).
PLAN_BLOCK_MIN = 4 * 1024
PLAN_BLOCK_MAX = 64 * 1024
#: Up to this many keys, a checkpoint carries the queue itself rather than a plan file.
PLAN_FROM = 64
