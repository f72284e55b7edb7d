"""Version folders of TF Serving's layout ``saved_models/<name>/<version>/``: the next free
version, a finished export renamed onto its version atomically (:func:`claim`), and the
temporary folders of killed exports reaped (:func:`remove_stale_tmp`)."""
import errno
import os
import shutil
import socket
import time

TMP_PREFIX = ".tmp-"
OWNER_FILE = ".owner"  # "<host> <pid>" of the export writing a temporary folder


def next_version(base_dir):
    """The next free integer version under ``base_dir`` (1 when there is none)."""
    if not os.path.isdir(base_dir):
        return 1
    versions = [int(d) for d in os.listdir(base_dir)
                if d.isdigit() and os.path.isdir(os.path.join(base_dir, d))]
    return max(versions, default=0) + 1


def _alive(owner):
    """Whether the export named by an owner file's text ``"<host> <pid>"`` still runs (an
    export on another host counts as alive for a day)."""
    try:
        host, pid = owner.split()
        pid = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale_tmp(parent, min_age_s=60.0):
    """Remove the temporary folders (``.tmp-*``) of killed exports from ``parent``: those whose
    owner process is gone, those of another host older than a day, those without an owner file
    older than ``min_age_s``. Returns the removed paths."""
    removed = []
    if not os.path.isdir(parent):
        return removed
    for entry in os.listdir(parent):
        path = os.path.join(parent, entry)
        if not entry.startswith(TMP_PREFIX) or not os.path.isdir(path):
            continue
        age = time.time() - os.path.getmtime(path)
        try:
            with open(os.path.join(path, OWNER_FILE)) as f:
                alive = _alive(f.read())
        except OSError:
            alive = age < min_age_s
        if alive is None:
            alive = age < 86400
        if not alive:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def refuse_existing(export_dir):
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        raise FileExistsError(f"export: {export_dir!r} already exists; choose another --version "
                              "(default: the next free one) or remove it")


def claim(out, base, version=None):
    """Rename the finished export ``out`` to ``base/<version>`` (None: the next free version)
    and return that folder. ``rename`` fails when the target holds files, so two exports never
    take one version: without ``version`` the later one takes the next number, with it a
    FileExistsError is raised."""
    while True:
        target = os.path.join(base, str(next_version(base) if version is None else version))
        try:
            os.rename(out, target)
            return target
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if version is not None:
                raise FileExistsError(f"export: {target!r} was written by another export "
                                      "meanwhile; choose another --version") from None
