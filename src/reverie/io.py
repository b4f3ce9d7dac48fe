"""Atomic file writes: write to a temporary file in the same directory, then ``os.replace``.

A reader never sees a half-written file: it sees the old content or the new one. Files and
directories get the usual permissions of the user's umask (``tempfile`` would leave 0600/0700).

    with atomic_outputs() as outs:           # several files: all of them or none
        write_mp4(outs.path("out.mp4"), ...)
        atomic_write_json(outs.path("out.json"), metrics)

Also here: :func:`check_writable` (refuse an unwritable output before any work),
:func:`check_safetensors` (name a truncated weights file before loading it) and
:class:`CheckpointFiles` (a directory of safetensors weights + JSON config, the format of the
DiT and tokenizer checkpoints).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_umask: int | None = None


def umask() -> int:
    """The process umask (read once; from /proc on Linux, so no thread ever sees it changed)."""
    global _umask
    if _umask is None:
        try:
            lines = Path("/proc/self/status").read_text().splitlines()
            _umask = next(int(s.split()[1], 8) for s in lines if s.startswith("Umask:"))
        except (OSError, StopIteration, ValueError, IndexError):
            _umask = os.umask(0o022)
            os.umask(_umask)
    return _umask


def default_mode(directory: bool = False) -> int:
    """Permissions `open()` / `mkdir()` would give: 0666 / 0777 less the umask."""
    return (0o777 if directory else 0o666) & ~umask()


def make_temp_dir(prefix: str, dir: str | os.PathLike) -> Path:
    """`tempfile.mkdtemp` with the umask's directory permissions (not 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    os.chmod(path, default_mode(directory=True))
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    ``suffix`` keeps the extension for writers that infer the format from it (``.mp4``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, default_mode())
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


class AtomicOutputs:
    """Temporary paths for several outputs, renamed onto their targets together (see
    :func:`atomic_outputs`)."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temporary, final)

    def path(self, final: str | os.PathLike) -> Path:
        """A temporary path next to ``final`` (same extension) to write it to."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{final.stem}.", suffix=".tmp" + final.suffix, dir=final.parent
        )
        os.close(fd)
        self._pending.append((Path(tmp), final))
        return Path(tmp)

    def _commit(self) -> None:
        done: list[Path] = []
        try:
            for tmp, final in self._pending:
                os.chmod(tmp, default_mode())
                os.replace(tmp, final)
                done.append(final)
        except BaseException:
            for final in done:  # all or nothing: take back the ones already renamed
                final.unlink(missing_ok=True)
            raise

    def _discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_outputs() -> Iterator[AtomicOutputs]:
    """Write several files so that they appear together or not at all.

    Every ``outs.path(final)`` is a temporary file next to ``final``; when the block ends
    without an exception they are all renamed onto their targets. On any exception
    (``KeyboardInterrupt`` and ``SystemExit`` from SIGTERM included) every temporary file is
    removed and no target is touched.
    """
    outs = AtomicOutputs()
    try:
        yield outs
        outs._commit()
    finally:
        outs._discard()


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Refuse an output file path that cannot be written, before any work is done.

    ``path`` must not be a directory, and its nearest existing ancestor must be a writable
    directory (missing parent directories are created later by the writer).

    Raises:
        ValueError: naming ``what`` (e.g. ``--out``) and the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {path} is not writable")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: no permission to write in {parent}")
    return path


def check_safetensors(path: str | os.PathLike) -> None:
    """Check that a safetensors file is complete (header and every tensor's bytes present).

    Reads only the header: a truncated or corrupt file is reported by name instead of as a
    bare ``SafetensorError`` from deep inside a load.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: truncated, a corrupt header, or data past its end.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if 8 + n > size:
                raise ValueError(f"header of {n} bytes declared, file has {size}")
            header = json.loads(f.read(n))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(
            f"{path} is not a complete safetensors file ({e}); it is damaged or was cut off "
            "while being written"
        ) from None
    if 8 + n + end > size:
        raise ValueError(
            f"{path} is truncated ({size} of {8 + n + end} bytes); it is damaged or was cut "
            "off while being written"
        )


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def save_safetensors(path: str | os.PathLike, tensors: dict[str, Any]) -> None:
    """Write a ``{name: torch.Tensor}`` dict as safetensors atomically (tensors moved to CPU)."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp))


@dataclass(frozen=True)
class CheckpointFiles:
    """A checkpoint directory of two files: safetensors weights and a JSON config.

    The config is written indented with sorted keys; both files are written atomically
    (weights first), so a crash never leaves a half-written file under its final name.

    Attributes:
        weights: file name of the state dict, e.g. ``model.safetensors``.
        config: file name of the config JSON, e.g. ``config.json``.
    """

    weights: str
    config: str

    def save(self, directory: str | os.PathLike, state_dict: dict[str, Any], config: Any) -> Path:
        """Write ``state_dict`` (``{name: torch.Tensor}``) and ``config`` (JSON-serialisable)
        into ``directory`` (created if missing); returns it as a ``Path``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_safetensors(directory / self.weights, state_dict)
        atomic_write_text(
            directory / self.config, json.dumps(config, indent=2, sort_keys=True) + "\n"
        )
        return directory

    def read_config(self, directory: str | os.PathLike) -> Any:
        """The parsed config JSON.

        Raises:
            FileNotFoundError: no config file; json.JSONDecodeError: it is not JSON.
        """
        return json.loads((Path(directory) / self.config).read_text())

    def load_weights(self, directory: str | os.PathLike, device: Any = "cpu") -> dict[str, Any]:
        """The state dict ``{name: torch.Tensor}``, loaded onto ``device`` (str or
        ``torch.device``)."""
        from safetensors.torch import load_file

        return load_file(str(Path(directory) / self.weights), device=str(device))
