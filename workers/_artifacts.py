"""Each trial's files, uploaded as Optuna artifacts before the trial is told.

Optuna refuses an upload to a finished trial, so the driver uploads while the
trial runs: ``arch.json`` (the architecture, :func:`~nas.search_space.architecture_from_json`
reads it back), ``model.onnx`` (QDQ, with the trained weights when the candidate
was trained, else the seeded initial ones) and ``weights.safetensors`` (when
trained). The optuna-dashboard shows and serves them (``nas dashboard``).

The directory is a study user attr (:data:`ARTIFACTS_ATTR`), so every driver of
the study, the dashboard and ``nas export`` find the same files.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from sqlalchemy.engine import make_url

from nas.evaluators import WEIGHTS_FILE, onnx_bytes
from nas.workers._local import failure_reason

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture

#: The study user attr that holds the artifact directory (an absolute path).
ARTIFACTS_ATTR = "nas.artifacts"
#: The trial user attr that says which evaluation's files hold its weights: "evaluator/fingerprint".
WEIGHTS_ATTR = "weights"
_MIMETYPES = {
    "arch.json": "application/json",
    "model.onnx": "application/octet-stream",
    WEIGHTS_FILE: "application/octet-stream",
}


def default_artifact_dir(storage: str) -> Path | None:
    """Beside a SQLite file (``nas.db`` -> ``nas-artifacts/``); ``./nas-artifacts`` for a
    server database; None for an in-memory database (nothing would outlive it).

    Example:
        >>> default_artifact_dir("sqlite:////tmp/runs/nas.db")
        PosixPath('/tmp/runs/nas-artifacts')
    """
    url = make_url(storage)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or url.query.get("uri"):
            return None
        path = Path(database).expanduser().absolute()
        return path.with_name(f"{path.stem}-artifacts")
    return Path("nas-artifacts").absolute()


def artifact_dir(study: optuna.Study) -> Path | None:
    """The study's artifact directory, if its trials upload any."""
    value = study.user_attrs.get(ARTIFACTS_ATTR)
    return Path(value) if value else None


class TrialArtifacts:
    """Uploads one trial's files into a :class:`FileSystemArtifactStore` at ``directory``."""

    def __init__(self, directory: Path, seed: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.store = FileSystemArtifactStore(str(directory))
        self.seed = seed

    def upload(
        self, trial: optuna.Trial, arch: AnyArchitecture, files: Mapping[str, bytes]
    ) -> list[str]:
        """Upload ``arch.json``, ``model.onnx`` and ``files`` (the weights); their names.

        An architecture the exporter cannot write (a NAS-Bench-201 cell) has no
        ``model.onnx``; the reason is the trial's user attr ``onnx_error``.
        """
        out = {"arch.json": arch.to_json().encode()}
        try:
            out["model.onnx"] = onnx_bytes(arch, files.get(WEIGHTS_FILE), seed=self.seed)
        except Exception as exc:  # the files are a convenience: the trial goes on
            trial.set_user_attr("onnx_error", failure_reason(exc))
        out.update(files)
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in out.items():
                path = Path(tmp, name)
                path.write_bytes(data)
                upload_artifact(
                    artifact_store=self.store,
                    file_path=str(path),
                    study_or_trial=trial,
                    mimetype=_MIMETYPES.get(name, "application/octet-stream"),
                )
        return list(out)
