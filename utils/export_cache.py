"""The warm start: exported ONNX models kept in the torch hub cache, one entry per checkpoint.

``inference.py --backend onnx`` (the CPU default) and ``python -m utils.export`` export a
checkpoint once; later runs with the same checkpoint, input size and library versions load the
export from ``torch.hub.get_dir()/fsnet/onnx/<key>/`` instead of reading the checkpoint and
exporting again. ``--no_cache`` turns the cache off (the export then goes to a temporary folder).

* **Entry**: the portable export (``fsnet.onnx`` + ``fsnet.weights``, what
  ``python -m utils.export`` writes out) and ONNX Runtime's optimized graph of it for this
  machine (``optimized.onnx`` + ``optimized.weights``, what inference loads: no optimisation at
  session start), with ``meta.json``.
* **Key**: SHA-256 of the checkpoint's content, the input size, static or dynamic height and
  width, the architecture (backbone, width and a digest of the state_dict's key/shape list, read
  from the file's metadata), the torch / onnx / onnxruntime versions, the CPU kind (architecture,
  vector extensions, native bf16) and :data:`FORMAT` (raised when the export itself changes). A checkpoint is hashed once: ``hashes.json`` remembers the
  digest per (real path, size, mtime, inode), so an unchanged file is not read again.
* **Writes** are atomic and locked: an entry is built in a temporary folder next to it and renamed
  into place; a lock per key (``fcntl.flock``, released by the kernel when a process dies) makes a
  second run wait for the first one's export and then use it, instead of refusing like an output
  folder's lock. Temporary folders of that key left by a killed run are removed under the lock.
* **A damaged entry** (unreadable ``meta.json``, a file missing or of another size or mtime than
  recorded, or a model ONNX Runtime cannot load) is rebuilt with a warning.
* **Bounded**: after a write, the least recently used entries are removed until the cache holds
  at most ``FSNET_CACHE_MB`` MiB (default :data:`DEFAULT_MAX_MB`); a hit marks its entry used.

``FSNET_CACHE_DIR`` moves the cache elsewhere (the test suite uses a temporary folder).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from lib.export import MODEL_FILE, OPSET, WEIGHTS_FILE, OnnxPredictor, save_external
from lib.fsnet import FSNet
from lib.hub import WeightsError, sha256_of
from lib.state_dict import CHANNEL_KEY, backbone_of, read_weights_file, strip_prefixes
from utils.io import PathLike, read_json_object, save_json
from utils.safety import real_path

#: Version of the cached export: raise it when lib.export's graph changes.
FORMAT = 2
MAX_MB_ENV, DIR_ENV = "FSNET_CACHE_MB", "FSNET_CACHE_DIR"
DEFAULT_MAX_MB = 3072  # about nine ResNet-50 / Res2Net-50 exports (~330 MB each)
META_FILE, HASHES_FILE = "meta.json", "hashes.json"
OPTIMIZED_FILE = "optimized.onnx"  # ONNX Runtime's optimized graph, weights in optimized.weights
FILES = (MODEL_FILE, WEIGHTS_FILE, OPTIMIZED_FILE, "optimized.weights")


def cache_root() -> Path:
    """``FSNET_CACHE_DIR`` if set, else ``torch.hub.get_dir()/fsnet/onnx`` (follows ``TORCH_HOME``)."""
    return Path(os.environ.get(DIR_ENV) or Path(torch.hub.get_dir()) / "fsnet" / "onnx")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (waiting for another holder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _architecture(path: Path) -> dict[str, Any]:
    """Backbone, width and a digest of the key/shape list, from the file's metadata (mmap); empty
    when the file cannot be mapped (an old serialization, or not a checkpoint: then the export's
    own load reports it)."""
    try:
        state = read_weights_file(path, mmap=True)
    except WeightsError:
        return {}
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        return {}
    state = strip_prefixes(state)
    shapes = sorted((key, list(getattr(value, "shape", ()))) for key, value in state.items())
    channel = state.get(CHANNEL_KEY)
    return {"backbone": backbone_of(state), "channel": None if channel is None else channel.shape[0],
            "keys_sha256": hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:16]}


def _identity(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def checkpoint_fingerprint(path: PathLike) -> dict[str, Any]:
    """The checkpoint's content SHA-256 and architecture, remembered per (real path, size, mtime,
    inode) in ``hashes.json`` so that an unchanged file is read once."""
    path = real_path(path)
    memo_path = cache_root() / HASHES_FILE
    identity = _identity(path)
    with _locked(cache_root() / ".hashes.lock"):
        memo = read_json_object(memo_path) or {}
        known = memo.get(str(path))
        if isinstance(known, dict) and known.get("identity") == identity:
            return known["fingerprint"]
    fingerprint = {"sha256": sha256_of(path), "architecture": _architecture(path)}
    with _locked(cache_root() / ".hashes.lock"):
        memo = {key: value for key, value in (read_json_object(memo_path) or {}).items()
                if Path(key).exists()}  # forget deleted checkpoints
        memo[str(path)] = {"identity": identity, "fingerprint": fingerprint}
        save_json(memo, memo_path)
    return fingerprint


def versions() -> dict[str, str]:
    """The library versions an export depends on (onnx's from its package metadata: importing
    onnx takes about half a second, and a cache hit needs no onnx)."""
    import onnxruntime
    return {"torch": torch.__version__, "onnx": importlib.metadata.version("onnx"),
            "onnxruntime": onnxruntime.__version__}


def cpu_kind() -> str:
    """What ONNX Runtime's optimized graph depends on: the architecture and vector extensions."""
    from lib.fast import cpu_has_native_bf16
    return (f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
            f"{' bf16' if cpu_has_native_bf16() else ''}")


def entry_key(fingerprint: dict[str, Any], testsize: int, dynamic: bool) -> str:
    """The entry's folder name: a digest of everything the export depends on."""
    fields = {"checkpoint": fingerprint, "testsize": testsize, "dynamic": dynamic,
              "versions": versions(), "cpu": cpu_kind(), "opset": OPSET, "format": FORMAT}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class CachedExport:
    """An exported model on disk: ``path`` (the portable export; weights beside it), what it
    holds, and whether it came from the cache (``state``: ``hit`` or ``miss``)."""

    path: Path
    backbone: str
    state: str

    @property
    def optimized_path(self) -> Path:
        """ONNX Runtime's optimized graph of the export, for this machine
        (``OnnxPredictor(..., optimized=True)``)."""
        return self.path.parent / OPTIMIZED_FILE


def _damage(folder: Path, key: str) -> Optional[str]:
    """Why the entry in ``folder`` cannot be used (``None``: it can)."""
    meta = read_json_object(folder / META_FILE)
    if meta is None or meta.get("key") != key:
        return f"{META_FILE} is missing or unreadable"
    for name, recorded in meta.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        stat = file.stat()
        if [stat.st_size, stat.st_mtime_ns] != recorded:
            return f"{name} changed since it was written"
    return None if meta.get("files") else f"{META_FILE} lists no files"


def _write_entry(root: Path, key: str, model: FSNet, testsize: int, dynamic: bool,
                 record: dict[str, Any]) -> None:
    """Export ``model`` (consumed) into a temporary folder and rename it to ``root/key``."""
    from lib.export import export_model
    temporary = root / f".tmp-{key}-{os.getpid()}"
    try:
        temporary.mkdir(parents=True)
        save_external(export_model(model, testsize, dynamic, inplace=True), temporary)
        # ONNX Runtime's optimized graph (fused, blocked layouts for this CPU): loading it skips
        # the optimisation every session otherwise repeats (about 1.5 s for ResNet-50).
        OnnxPredictor(temporary / MODEL_FILE, save_optimized=temporary / OPTIMIZED_FILE)
        files = {name: [(temporary / name).stat().st_size, (temporary / name).stat().st_mtime_ns]
                 for name in FILES}
        save_json({**record, "key": key, "files": files}, temporary / META_FILE)
        _remove(root / key)
        os.rename(temporary, root / key)
    finally:
        _remove(temporary)


def _remove(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


def entries(root: Optional[Path] = None) -> list[Path]:
    """The complete entries of the cache (folders holding a ``meta.json``)."""
    root = cache_root() if root is None else root
    if not root.is_dir():
        return []
    return [folder for folder in root.iterdir()
            if not folder.name.startswith(".") and (folder / META_FILE).is_file()]


def _size(folder: Path) -> int:
    return sum(file.stat().st_size for file in folder.iterdir() if file.is_file())


def evict(max_bytes: int, keep: str = "") -> list[str]:
    """Remove least recently used entries (never ``keep``) until the cache holds at most
    ``max_bytes``; return the removed keys."""
    ordered = sorted(entries(), key=lambda folder: (folder / META_FILE).stat().st_mtime)
    total = sum(_size(folder) for folder in ordered)
    removed = []
    for folder in ordered:
        if total <= max_bytes:
            break
        if folder.name == keep:
            continue
        total -= _size(folder)
        with _locked(folder.parent / f".{folder.name}.lock"):  # kept: a waiter may hold it open
            _remove(folder)
        removed.append(folder.name)
    return removed


def forget(model_path: Path) -> None:
    """Remove the entry holding ``model_path`` (an export that failed its check)."""
    folder = Path(model_path).parent
    if folder.parent == cache_root():
        with _locked(folder.parent / f".{folder.name}.lock"):
            _remove(folder)


def max_cache_bytes() -> int:
    """The size bound: ``FSNET_CACHE_MB`` MiB, else :data:`DEFAULT_MAX_MB`."""
    try:
        return int(float(os.environ.get(MAX_MB_ENV, DEFAULT_MAX_MB)) * 2**20)
    except ValueError:
        return DEFAULT_MAX_MB * 2**20


def cached_export(checkpoint: PathLike, testsize: int, load_model: Callable[[], FSNet],
                  dynamic: bool = False, rebuild: str = "") -> CachedExport:
    """The cached export of ``checkpoint`` at ``testsize``, exported now if absent or damaged.

    ``load_model()`` builds the network from the checkpoint (called on a miss only; the network
    is consumed by the export). ``rebuild`` names a problem found with the entry after this
    call returned it (e.g. ONNX Runtime could not load it): the entry is then rebuilt with a
    warning saying so.
    """
    root = cache_root()
    fingerprint = checkpoint_fingerprint(checkpoint)
    key = entry_key(fingerprint, testsize, dynamic)
    folder = root / key
    with _locked(root / f".{key}.lock"):
        for stale in root.glob(f".tmp-{key}-*"):  # only this key's writer makes these: a dead one
            _remove(stale)
        damage = rebuild or (_damage(folder, key) if folder.exists() else None)
        if folder.exists() and damage is None:
            os.utime(folder / META_FILE)  # marks the entry as recently used
            meta = read_json_object(folder / META_FILE) or {}
            return CachedExport(folder / MODEL_FILE, meta.get("backbone", "?"), "hit")
        if damage is not None:
            print(f"warning: the cached export {folder} is damaged ({damage}); exporting again",
                  file=sys.stderr)
        model = load_model()
        record = {"checkpoint": str(real_path(checkpoint)), "fingerprint": fingerprint,
                  "backbone": model.backbone_name, "testsize": testsize, "dynamic": dynamic,
                  "versions": versions(), "opset": OPSET, "format": FORMAT,
                  "written": time.strftime("%Y-%m-%d %H:%M:%S")}
        _write_entry(root, key, model, testsize, dynamic, record)
    evict(max_cache_bytes(), keep=key)
    return CachedExport(folder / MODEL_FILE, record["backbone"], "miss")
