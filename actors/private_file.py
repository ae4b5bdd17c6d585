"""Files that only this user may write: the chaos actor's fault plan.

The plan holds the operator's own attacks as cloudpickled callables, and the chaos actor runs
them after a restart: whoever can write the file runs code in the chaos actor. So, like the key
file (``data_dir/cluster-keys.msgpack``), it is created with mode 0600, and a file that is group-
or world-writable, or not owned by this user, is refused with :class:`UnsafeFileError` before a
byte of it is read (checked on the open file, so a swap between the check and the read does not
get through).
"""

from __future__ import annotations

import json
import os
import stat

from dtm_ray.errors import ConfigError

MODE = 0o600


class UnsafeFileError(ConfigError):
    """A file that others could have written: its content is not trusted, nothing is loaded."""


def write_json(path: str, value: object) -> None:
    """Write ``value`` atomically (a crash leaves the old file or the new one), mode 0600."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, MODE)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), MODE)  # a leftover .tmp may have been created with other bits
        json.dump(value, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> object:
    """The JSON in ``path``; :class:`UnsafeFileError` if others could have written it."""
    with open(path, "rb") as src:
        check_private(path, os.fstat(src.fileno()))
        return json.loads(src.read())


def check_private(path: str, st: os.stat_result) -> None:
    if st.st_uid != os.getuid():
        raise UnsafeFileError(f"{path} is owned by uid {st.st_uid}, not by this user ({os.getuid()}): "
                              "refusing to load it (it may run code); remove it or chown it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeFileError(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}): "
                              f"refusing to load it (it may run code); chmod {MODE:o} it")
