"""Run a conversion in a forked child under an address-space limit, as the sandbox does."""

from __future__ import annotations

import os
import resource

from app.engine.convert import convert_to_pdf
from app.engine.facts import ImageInfo


def convert_under_address_limit(data: bytes, info: ImageInfo, limit: int) -> bytes:
    """b"ok <PDF size>", b"MemoryError" or the repr of what the child raised, after
    converting `data` with RLIMIT_AS at what the child had mapped plus `limit`."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its address space capped above what it has mapped
        try:
            os.close(read)
            with open("/proc/self/statm") as statm:
                mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (mapped + limit, mapped + limit))
            status = b"ok %d" % len(convert_to_pdf(data, info))
        except MemoryError:
            status = b"MemoryError"
        except BaseException as exc:  # reported to the parent
            status = repr(exc).encode()
        os.write(write, status)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        status = pipe.read()
    os.waitpid(pid, 0)
    return status
