"""``nas dashboard``: optuna-dashboard on a study's database, with its trials' artifacts.

The dashboard is optuna-dashboard's own WSGI app, served by the standard library's
threaded WSGI server. The artifacts (each trial's ``model.onnx`` and ``arch.json``)
are read from the directory ``nas search`` recorded in the study user attr
``nas.artifacts``, or from one given explicitly. The dashboard is shown Optuna 5's
trial constraints in the form it reads, so its Pareto-front plot greys out the
infeasible trials and draws the front ``nas pareto`` gives.
"""

from __future__ import annotations

import errno
import socket
import sys
import warnings
from collections.abc import Container, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, BinaryIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from nas._errors import ConfigError
from nas.storage import Store
from nas.workers._artifacts import ARTIFACTS_ATTR

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore


class _Server(ThreadingMixIn, WSGIServer):
    # A browser keeps connections open: Ctrl-C must not wait for their threads.
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ArtifactDirs:
    """Optuna's ArtifactStore over several directories: an id is read from the one holding it.

    Studies in one database may keep their artifacts in different directories;
    uploads from the dashboard go to the first.
    """

    def __init__(self, dirs: Sequence[Path]) -> None:
        self._stores = [FileSystemArtifactStore(d) for d in dirs]

    def open_reader(self, artifact_id: str) -> BinaryIO:
        for store in self._stores:
            try:
                return store.open_reader(artifact_id)
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"no artifact {artifact_id!r} in any artifact directory")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._stores[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        for store in self._stores:
            try:
                store.remove(artifact_id)
                return
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"no artifact {artifact_id!r} in any artifact directory")


def dashboard_url(host: str, port: int, study_id: int | None = None) -> str:
    """The URL to open: the study's page with ``study_id``, else the list of studies.

    A server bound to every interface (``0.0.0.0``, ``::``) is named by this
    machine's host name.

    Example:
        >>> dashboard_url("127.0.0.1", 8080, 1)
        'http://127.0.0.1:8080/dashboard/studies/1'
        >>> dashboard_url("::1", 8080)
        'http://[::1]:8080/dashboard'
    """
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    page = "" if study_id is None else f"/studies/{study_id}"
    return f"http://{host}:{port}/dashboard{page}"


def artifact_dirs(studies: Sequence[optuna.Study]) -> list[Path]:
    """The artifact directories the studies recorded (``nas.artifacts``), each once, in order.

    Example:
        >>> import nas
        >>> result = nas.search({"trials": 2, "storage": "sqlite:///example.db"})
        >>> [d.is_absolute() for d in artifact_dirs([result.study])]
        [True]
    """
    dirs: list[Path] = []
    for study in studies:
        value = study.user_attrs.get(ARTIFACTS_ATTR)
        if value and Path(value) not in dirs:
            dirs.append(Path(value))
    return dirs


def serve(
    storage: str,
    study: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifact_dir: str | Path | None = None,
    quiet: bool = False,
) -> None:
    """Serve optuna-dashboard on ``storage`` until Ctrl-C; print the URL to open first.

    The URL (the study's page when ``study`` is given, port 0 taking a free
    port) goes to standard output, notes to standard error; ``quiet`` drops the
    log line of each request. Artifacts are read from ``artifact_dir``, else from
    the directories the studies recorded in ``nas.artifacts``; with none, the
    dashboard is served without them, and standard error says so.

    Example:
        >>> import nas
        >>> from nas._dashboard import serve
        >>> _ = nas.search({"trials": 3, "storage": "sqlite:///example.db"})
        >>> serve("sqlite:///example.db", "nas", port=8080)  # doctest: +SKIP
        http://127.0.0.1:8080/dashboard/studies/1

    Raises:
        ConfigError: no such study (field ``study``), a port in use or an address
            that cannot be listened on (``port``, ``host``), a missing ``artifacts``
            directory.
    """
    server = _listen(host, port, quiet)  # first: a port in use is the one line printed
    store: Store | None = None
    try:
        store, app, study_id = _app(storage, study, artifact_dir)
        server.set_app(app)
        print(dashboard_url(host, server.server_port, study_id), flush=True)
        print("Ctrl-C stops the dashboard", file=sys.stderr, flush=True)
        with warnings.catch_warnings():  # put back as they were when the server stops
            # The dashboard computes parameter importances on every refresh: with few
            # trials PED-ANOVA warns each time, and the warnings would bury the log.
            warnings.filterwarnings("ignore", "Some regimes for parameter", UserWarning)
            server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
        if store is not None:
            store.close()


def _app(
    storage: str, study: str | None, artifact_dir: str | Path | None
) -> tuple[Store, Any, int | None]:
    """optuna-dashboard's WSGI app on the storage, the store it reads and the study's id."""
    import optuna_dashboard

    from nas._api import load_study

    store = Store(storage, create=False)
    try:
        optuna_storage = store.optuna_storage()
        if study is not None:
            studies = [load_study(study, storage)]
            study_id: int | None = optuna_storage.get_study_id_from_name(study)
        else:
            names = optuna.get_all_study_names(optuna_storage)
            studies = [optuna.load_study(study_name=n, storage=optuna_storage) for n in names]
            if not studies:
                raise ConfigError("storage", f"no studies in {store.masked_url}; run nas search")
            study_id = None
        artifacts = _artifact_store(studies, artifact_dir)
        _list_constraints(optuna_storage)
        return store, optuna_dashboard.wsgi(optuna_storage, artifact_store=artifacts), study_id
    except BaseException:
        store.close()
        raise


def _list_constraints(storage: optuna.storages.BaseStorage) -> None:
    """Make the dashboard see each trial's constraints (this storage object only).

    optuna-dashboard 0.21 reads them from the trial system attr ``constraints``, a
    list, where Optuna 4 kept them; Optuna 5 keeps one ``constraints:NAME`` each.
    Without the list the dashboard takes every trial for feasible and puts
    infeasible ones on its Pareto front; with it, it greys them out as nas does.
    Nothing is written to the database.
    """
    get_all_trials = storage.get_all_trials

    def with_list(
        study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = get_all_trials(study_id, deepcopy=deepcopy, states=states)
        for t in trials:
            if t.constraints and "constraints" not in t._system_attrs:
                t._system_attrs["constraints"] = list(t.constraints.values())
        return trials

    setattr(storage, "get_all_trials", with_list)  # noqa: B010 (mypy: assigning to a method)


def _artifact_store(
    studies: Sequence[optuna.Study], artifact_dir: str | Path | None
) -> ArtifactStore | None:
    if artifact_dir is not None:
        path = Path(artifact_dir).resolve()
        if not path.is_dir():
            raise ConfigError("artifacts", f"{str(artifact_dir)!r} is not a directory")
        _note(f"artifacts: {path}")
        return _ArtifactDirs([path])
    dirs = artifact_dirs(studies)
    for d in [d for d in dirs if not d.is_dir()]:
        _note(f"artifact directory {str(d)!r} (study user attr {ARTIFACTS_ATTR}) is missing")
        dirs.remove(d)
    if not dirs:
        _note(
            f"no artifact directory (no study user attr {ARTIFACTS_ATTR}, no --artifacts DIR): "
            "serving without artifacts"
        )
        return None
    _note(f"artifacts: {', '.join(map(str, dirs))}")
    return _ArtifactDirs(dirs)


def _listen(host: str, port: int, quiet: bool) -> WSGIServer:
    """A server bound to ``host:port`` (its app set later); a port in use is one line."""
    if not 0 <= port <= 65535:
        raise ConfigError("port", f"must be in 0..65535 (0: any free port), got {port}")
    server = _Server6 if ":" in host else _Server
    try:
        return server((host, port), _QuietHandler if quiet else WSGIRequestHandler)
    except socket.gaierror as exc:
        raise ConfigError("host", f"cannot listen on {host!r}: {exc.strerror}") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                "port", f"{host}:{port} is in use; give another --port (0: any free port)"
            ) from None
        raise ConfigError("port", f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


__all__ = ["ARTIFACTS_ATTR", "artifact_dirs", "dashboard_url", "serve"]
