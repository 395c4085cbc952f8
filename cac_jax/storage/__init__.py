"""Files that a user or a later command reads: written whole or not at all, read back with a message that
names a damaged file, and one writer per work directory.

* :mod:`.files`: atomic writes (a temporary file in the same directory, flushed, then renamed over the target:
  a reader sees the old file or the new one, never half of one), JSON and JSON-lines readers that name the
  file they cannot read (a torn last line of an append-only log is dropped with a warning), and
  :class:`StorageError` for a write that fails (a full disk, a read-only place), naming the path.
* :mod:`.locks`: an exclusive lock per work directory (``train``, ``eval`` and ``sweep`` take it; a second
  command is refused at once, naming the holder) and a waiting lock for preparing a dataset.

Imports nothing of cac-jax but itself.
"""

from cac_jax.storage.files import (CacJaxWarning, DamagedFile, StorageError, atomic_open, describe_os_error,
                                   keep_previous, make_dirs, read_json, read_jsonl, remove_if_exists, repair_jsonl_tail, set_aside,
                                   warn, write_json, write_text)
from cac_jax.storage.locks import WorkdirBusy, command_line, file_lock, workdir_lock

__all__ = ["CacJaxWarning", "DamagedFile", "StorageError", "WorkdirBusy", "atomic_open", "command_line", "describe_os_error",
           "file_lock", "keep_previous", "make_dirs", "read_json", "read_jsonl", "remove_if_exists", "repair_jsonl_tail", "set_aside",
           "warn", "workdir_lock", "write_json", "write_text"]
