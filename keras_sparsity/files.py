"""Writing a file so that a failure never leaves it half written."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def replacing(path, suffix=".tmp"):
    """Yields a temporary path beside `path` that replaces `path` on success.

    Whatever the body writes to the temporary file is flushed to disk and
    renamed over `path` (an atomic replace on POSIX), with the permissions
    a new file would get. If the body raises, the temporary file is removed
    and `path` is left as it was.

    Example:

    ```python
    with replacing("model.sparse") as temporary:
        with open(temporary, "wb") as f:
            f.write(data)
    ```
    """
    descriptor, temporary = tempfile.mkstemp(
        dir=os.path.dirname(os.path.abspath(path)),
        prefix=f".{os.path.basename(path)}.",
        suffix=suffix,
    )
    os.close(descriptor)
    try:
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
