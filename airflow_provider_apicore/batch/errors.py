"""Errors of the batch engine (manifest unavailable on resume, lease held elsewhere, unknown fates)."""

from __future__ import annotations

from airflow_provider_apicore.exceptions import ApicoreError


class ManifestUnavailableError(ApicoreError):
    """
    A resume found no manifest, or could not read it: continuing would report an empty batch.

    :param path: the manifest's location
    :param cause: what went wrong reading it
    """

    def __init__(self, path: str, cause: str) -> None:
        self.path = path
        self.cause = cause
        super().__init__(
            f"Cannot resume the batch: the manifest {path} {cause}. The jobs of this batch may still be "
            "running upstream; their task ids are recorded only there. The likely cause is a local "
            "manifest_path on a deployment with several workers or hosts (the try that deferred wrote it "
            "on another machine, or in a temporary directory that is gone): put the manifest on storage "
            "every worker sees (s3://, gs://, a shared volume) and clear this task to start again."
        )


class ManifestLeaseError(ApicoreError):
    """
    Another writer holds the manifest's lease (a second run on the same manifest, or a zombie try).

    :param path: the lease object's location
    :param holder: who holds it (fencing token of the holder)
    :param detail: what was found
    """

    def __init__(self, path: str, holder: str, detail: str = "") -> None:
        self.path = path
        self.holder = holder
        super().__init__(
            f"The manifest is being written by another task: lease {path} is held by {holder}"
            f"{'; ' + detail if detail else ''}. One manifest has one writer: give concurrent runs "
            "different manifest paths (or set max_active_runs=1); if that task is really dead, delete the "
            "lease file and retry."
        )


class LeaseLostError(ApicoreError):
    """This writer's lease was taken over (by a later try): it must stop before writing again."""

    def __init__(self, path: str, mine: str, holder: str) -> None:
        self.path = path
        self.mine = mine
        self.holder = holder
        super().__init__(
            f"Lost the manifest lease {path}: it is now held by {holder}, not by this try ({mine}). "
            "Stopping before writing anything more; the holder continues the batch."
        )


class UnknownFateError(ApicoreError):
    """``on_unknown_fate="fail"``: some submissions' fate is unknown and a person must decide."""

    def __init__(self, count: int, manifest: str, examples: list[str]) -> None:
        self.count = count
        self.manifest = manifest
        super().__init__(
            f"{count} image(s) were sent but the answer was lost, so whether APICore started a (paid) job "
            f"for them is unknown (on_unknown_fate='fail'): {', '.join(examples)}"
            f"{' ...' if count > len(examples) else ''}. Each is recorded 'unknown_fate' with its state tag "
            f"in {manifest}; look the tags up in APICore's task list, then set on_unknown_fate='resubmit' "
            "(may pay twice) or leave them."
        )
