"""kgfact.locks: exclusive between processes, re-entrant within one, and naming its holder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from kgfact.errors import KgfactError
from kgfact.locks import FileLock


def _other(path, body: str, **kw) -> subprocess.Popen:
    """A second Python process running ``body`` with ``lock`` = a FileLock on ``path``."""
    code = textwrap.dedent(f"""
        import sys, time
        from kgfact.locks import FileLock
        lock = FileLock({str(path)!r}, "the thing")
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    lock = FileLock(tmp_path / "x.lock", "the thing")
    with lock.hold():
        with lock.hold():  # re-entrant
            assert lock.held_here()
        assert lock.held_here()
        other = _other(lock.path, """
            try:
                lock.acquire(0)
            except Exception as exc:
                print(exc)
        """)
        out, _ = other.communicate(timeout=60)
        assert out.startswith(f"the thing is in use by process {os.getpid()} (")
        assert out.rstrip().endswith("; wait for it to finish, or pass --wait SECONDS")
    assert not lock.held_here() and lock.holder() is None


def test_a_waiting_process_gets_the_lock_when_it_is_freed(tmp_path):
    lock = FileLock(tmp_path / "x.lock", "the thing")
    lock.acquire()
    other = _other(lock.path, """
        lock.acquire(60)
        print("got it")
    """)
    # the waiter says once whom it waits for, on stderr
    assert "kgfact: waiting for the thing, in use by process" in other.stderr.readline()
    lock.release()
    out, _ = other.communicate(timeout=60)
    assert out == "got it\n"


def test_a_killed_holder_leaves_no_lock_and_its_name_blocks_nobody(tmp_path):
    path = tmp_path / "x.lock"
    other = _other(path, """
        lock.acquire()
        print("held", flush=True)
        time.sleep(600)
    """)
    assert other.stdout.readline() == "held\n"
    lock = FileLock(path, "the thing")
    assert lock.holder().pid == other.pid
    with pytest.raises(KgfactError, match=f"in use by process {other.pid} "):
        lock.acquire(0)
    other.kill()
    other.wait()
    assert lock.holder() is None  # the file still names the dead process; the kernel freed it
    lock.acquire(0)
    assert lock.holder().pid == os.getpid()
    lock.release()


def test_asking_for_the_holder_creates_no_file(tmp_path):
    assert FileLock(tmp_path / "absent.lock", "the thing").holder() is None
    assert not (tmp_path / "absent.lock").exists()
