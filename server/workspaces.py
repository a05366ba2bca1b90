"""Public mode: where data lives, one workspace per visitor, and the limits that keep strangers from harming each other.

- The data dir is ``$REVERSION_DATA_DIR``, else ``/data`` (Spaces persistent storage) when it exists and is
  writable, else none; with one, workspaces and the Hugging Face cache live there and survive a restart.
- Each visitor (a browser key or a signed-in user name) gets a folder of their own relations; the shipped relations
  are read-only and visible to all. A visitor sees only the shipped relations and their own, so nobody can
  overwrite or delete what they did not make.
- Quotas (``Limits``) are each refused with one sentence: relations per visitor, disk of all workspaces together,
  upload size, training steps per run, one training per visitor at a time.
- ``cleanup_idle`` removes workspaces nobody has used for a while (their marker file's mtime), from a periodic job.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from reversion_core.errors import ReVersionError
from reversion_core.relation_file import EMBEDS_FILE, RelationPrompt, check_name, list_relations, load_relation

DATA_DIR_VARIABLE = "REVERSION_DATA_DIR"
SPACES_DATA_DIR = Path("/data")  # where Hugging Face Spaces mounts persistent storage
WORKSPACES_FOLDER = "workspaces"
HF_CACHE_FOLDER = "huggingface"
VISITED_FILE = ".visited"  # its mtime is the workspace's last use
MB = 1024 * 1024


def data_dir(env: Mapping[str, str] | None = None, spaces_data: Path = SPACES_DATA_DIR) -> Path | None:
    """Where persistent data goes: ``$REVERSION_DATA_DIR`` (created), else ``/data`` when writable, else None."""
    env = os.environ if env is None else env
    if env.get(DATA_DIR_VARIABLE):
        path = Path(env[DATA_DIR_VARIABLE]).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            raise ReVersionError(f"The data folder {path} ({DATA_DIR_VARIABLE}) cannot be created.") from None
        if not os.access(path, os.W_OK):
            raise ReVersionError(f"The data folder {path} ({DATA_DIR_VARIABLE}) is not writable.")
        return path
    if spaces_data.is_dir() and os.access(spaces_data, os.W_OK):
        return spaces_data
    return None


def use_data_dir_for_hub_cache(data: Path | None, env: os._Environ | dict | None = None) -> Path | None:
    """Point ``HF_HOME`` into the data dir (unless the host set it) so downloaded weights survive a restart.

    Call it before anything imports huggingface_hub, which reads ``HF_HOME`` once at import. Returns the cache folder.
    """
    env = os.environ if env is None else env
    if data is None:
        return None
    if not env.get("HF_HOME"):
        env["HF_HOME"] = str(data / HF_CACHE_FOLDER)
    return Path(env["HF_HOME"])


@dataclass(frozen=True)
class Limits:
    """What one visitor may use; the defaults suit a free CPU Space (2 vCPU, 16 GB RAM, 50 GB disk) with strangers."""

    relations_per_visitor: int = 20
    total_disk_mb: float = 500.0  # all workspaces together (a relation folder is a few kB to a few hundred kB)
    upload_mb: float = 20.0  # one request's uploaded files together
    train_steps: int = 1000  # per training run
    idle_hours: float = 24.0  # a workspace unused this long is removed by cleanup_idle


def visitor_folder(key: str, secret: str = "") -> str:
    """The folder name of a visitor key: a keyed hash, so no key reaches outside the workspaces folder, and nobody can
    work out another visitor's folder from their user name."""
    if not key or not str(key).strip():
        raise ReVersionError("This visitor has no session key; reload the page.")
    return "v-" + hashlib.sha256(f"{secret}\0{key}".encode()).hexdigest()[:24]


def _secret(root: Path) -> str:
    """The workspaces' hashing secret: made once, kept beside them (so the same key finds its folder after a restart)."""
    path = root / ".secret"
    if not path.is_file():
        tmp = root / f".secret.{os.getpid()}"
        tmp.write_text(secrets.token_hex(32), encoding="utf-8")
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # never replaces a secret another process made first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip()


def folder_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links are not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                pass  # removed while we walked
    return total


class Workspaces:
    """Every visitor's workspace under one root (in the data dir, else a private temp folder), the shipped
    relations, the limits, and who is training now."""

    def __init__(self, shipped_dir: str | os.PathLike, data: Path | None = None, limits: Limits = Limits()) -> None:
        self.shipped_dir = Path(shipped_dir)
        if data is not None:
            self.root = Path(data) / WORKSPACES_FOLDER
            self.root.mkdir(parents=True, exist_ok=True)
            self.persistent = True
        else:  # no persistent storage: a folder only this process's user can read, gone with the machine
            self.root = Path(tempfile.mkdtemp(prefix="reversion-workspaces-"))
            self.persistent = False
        self.limits = limits
        self._secret = _secret(self.root)
        self._training: set[str] = set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # guards _training and the check-then-write of quotas

    @property
    def secret(self) -> str:
        """The workspaces' secret, kept beside them: it also signs the pages' keys (``server.page_keys``)."""
        return self._secret

    def for_visitor(self, key: str) -> "Workspace":
        """The workspace of ``key`` (a browser key or a user name); the same key finds the same folder after a restart."""
        workspace = Workspace(self, key, self.root / visitor_folder(key, self._secret))
        workspace.touch()
        return workspace

    def shipped_names(self) -> set[str]:
        return {p.name for p in self.shipped_dir.iterdir() if (p / EMBEDS_FILE).is_file()} if self.shipped_dir.is_dir() else set()

    def disk_used(self) -> int:
        """Bytes used by all workspaces together."""
        return folder_size(self.root)

    def check_disk(self, incoming: int = 0) -> None:
        """Refuse new data when all workspaces together would pass the disk quota."""
        limit = int(self.limits.total_disk_mb * MB)
        if self.disk_used() + incoming > limit:
            raise ReVersionError(
                f"This app's storage for visitors' relations is full ({self.limits.total_disk_mb:g} MB); "
                "try again later, when idle workspaces have been cleaned."
            )

    def check_upload(self, files: Sequence[str | os.PathLike] | None) -> int:
        """Refuse uploads larger together than the upload limit; returns their size in bytes."""
        size = sum(Path(f).stat().st_size for f in files or [] if Path(f).is_file())
        if size > self.limits.upload_mb * MB:
            raise ReVersionError(
                f"The upload is {size / MB:.1f} MB; this app accepts at most {self.limits.upload_mb:g} MB at a time."
            )
        return size

    def check_train_steps(self, steps: int) -> None:
        """Refuse a training run longer than the per-run step limit."""
        if int(steps) > self.limits.train_steps:
            raise ReVersionError(
                f"A training run here may take at most {self.limits.train_steps} steps, not {int(steps)}; lower the steps."
            )

    @contextmanager
    def training(self, key: str) -> Iterator[None]:
        """Hold the visitor's one training place while the block runs; a second one (running or queued) is refused."""
        folder = visitor_folder(key, self._secret)
        with self._lock:
            if folder in self._training:
                raise ReVersionError("You already have a training running or waiting; stop it or let it finish before starting another.")
            self._training.add(folder)
        try:
            yield
        finally:
            with self._lock:
                self._training.discard(folder)

    def cleanup_idle(self, now: float | None = None) -> list[str]:
        """Remove workspaces unused for ``limits.idle_hours`` (not while they train); returns the removed folder names."""
        now = time.time() if now is None else now
        cutoff = now - self.limits.idle_hours * 3600
        removed = []
        for folder in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if not folder.is_dir() or not folder.name.startswith("v-"):
                continue
            marker = folder / VISITED_FILE
            try:
                last = marker.stat().st_mtime if marker.exists() else folder.stat().st_mtime
            except OSError:
                continue
            with self._lock:
                if last >= cutoff or folder.name in self._training:
                    continue
                shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
        return removed

    def start_cleanup(self, every_s: float = 3600.0) -> threading.Thread:
        """Run ``cleanup_idle`` every ``every_s`` seconds in a daemon thread (ends with the process)."""
        def loop() -> None:
            while not self._stopped.wait(every_s):
                self.cleanup_idle()

        thread = threading.Thread(target=loop, daemon=True, name="reversion-workspace-cleanup")
        thread.start()
        return thread

    def stop_cleanup(self) -> None:
        self._stopped.set()


class Workspace:
    """One visitor's relations (their own folder) next to the shipped ones (read-only)."""

    def __init__(self, owner: Workspaces, key: str, path: Path) -> None:
        self.owner, self.key, self.path = owner, key, path
        self.relations_dir = path / "relations"
        self.stop_file = path / ".stop-training"  # gpu_runner.request_stop() on it stops this visitor's run

    def touch(self) -> None:
        """Mark the workspace as used now (cleanup_idle measures idleness from this)."""
        self.relations_dir.mkdir(parents=True, exist_ok=True)
        (self.path / VISITED_FILE).touch()

    def own_names(self) -> list[str]:
        if not self.relations_dir.is_dir():
            return []
        return sorted(p.name for p in self.relations_dir.iterdir() if not p.name.startswith(".") and (p / EMBEDS_FILE).is_file())

    def relations(self) -> list[RelationPrompt]:
        """The shipped relations and this visitor's own, sorted by name (no other visitor's)."""
        found = list_relations(self.owner.shipped_dir) + list_relations(self.relations_dir)
        return sorted(found, key=lambda r: r.path.name if r.path else r.name)

    def is_own(self, name: str) -> bool:
        return check_name(name) in self.own_names()

    def relation_path(self, name: str) -> Path:
        """The folder of a relation this visitor can see: their own, else a shipped one."""
        check_name(name)
        for folder in (self.relations_dir, self.owner.shipped_dir):
            if (folder / name / EMBEDS_FILE).is_file():
                return folder / name
        raise ReVersionError(f"There is no relation named {name!r} among the shipped relations and yours.")

    def load(self, name: str) -> RelationPrompt:
        return load_relation(self.relation_path(name), None)

    def check_new_relation(self, name: str, overwrite: bool = False, incoming: int = 0) -> None:
        """Refuse a name this visitor may not write (a shipped relation, or an existing one without 'Overwrite'), a
        relation past the per-visitor count, and data past the disk quota. Call it before training or importing."""
        check_name(name)
        if name in self.owner.shipped_names():
            raise ReVersionError(f"{name!r} is one of the shipped relations, which nobody can overwrite; choose another name.")
        exists = (self.relations_dir / name).exists()
        if exists and not overwrite:
            raise ReVersionError(f"You already have a relation named {name!r}; tick 'Overwrite' or choose another name.")
        limit = self.owner.limits.relations_per_visitor
        if not exists and len(self.own_names()) >= limit:
            raise ReVersionError(f"You have {limit} relations, the most one visitor may keep here; delete one to make room.")
        self.owner.check_disk(incoming)

    def delete(self, name: str) -> None:
        """Delete one of this visitor's relations; shipped relations cannot be deleted."""
        check_name(name)
        if name in self.owner.shipped_names() and not (self.relations_dir / name).exists():
            raise ReVersionError(f"{name!r} is one of the shipped relations, which nobody can delete.")
        target = self.relations_dir / name
        if not (target / EMBEDS_FILE).is_file():
            raise ReVersionError(f"You have no relation named {name!r}.")
        trash = self.relations_dir / f".{name}.deleted-{os.getpid()}"
        os.replace(target, trash)  # one rename: a reader sees the relation whole or not at all
        shutil.rmtree(trash, ignore_errors=True)

    def training(self) -> AbstractContextManager[None]:
        """This visitor's one training place (see ``Workspaces.training``)."""
        return self.owner.training(self.key)
