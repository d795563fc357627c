"""The scenarios of bindings/SCENARIOS.md (ids in the test names), with real VMs."""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import boxlite
from boxlite import _ffi

from conftest import ENGINE, open_fds, our_shims, settle

PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


# S1 -------------------------------------------------------------------------------------
def test_s1_open_close_runtime(home: str) -> None:
    runtime = boxlite.Runtime(home=home, engine=ENGINE)
    assert os.path.realpath(runtime.home) == os.path.realpath(home)
    assert boxlite.version() == f"{_ffi.BOXLITE_VERSION_MAJOR}.{_ffi.BOXLITE_VERSION_MINOR}.{_ffi.BOXLITE_VERSION_PATCH}"
    # The home is locked while open: a second runtime on it is refused with its own error.
    with pytest.raises(boxlite.HomeLocked) as info:
        boxlite.Runtime(home=home, engine=ENGINE)
    assert info.value.code == _ffi.BOXLITE_ERROR_HOME_LOCKED and str(os.getpid()) in info.value.message
    runtime.close()
    runtime.close()  # twice: nothing
    with pytest.raises(boxlite.InvalidState):
        runtime.get_box("x")
    with boxlite.Runtime(home=home, engine=ENGINE):  # the lock went with the close
        pass


# S2 -------------------------------------------------------------------------------------
def test_s2_exec_output_and_exit_code(box: boxlite.Box) -> None:
    result = box.exec("sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.stdout, result.stderr, result.exit_code, result.timed_out) == (b"out\n", b"err\n", 3, False)
    assert not result.ok
    with pytest.raises(boxlite.ProcessExitError) as info:
        box.exec(["sh", "-c", "exit 4"], check=True)
    assert info.value.result.exit_code == 4
    # env, working directory, user
    result = box.exec("sh", "-c", 'echo "$GREETING $(pwd) $(id -u)"', env={"GREETING": "hi"}, cwd="/tmp", user="tester")
    assert result.stdout == b"hi /tmp 1000\n", result
    with pytest.raises(boxlite.ProgramNotFound) as info:
        box.exec("no-such-program")
    assert "no-such-program" in info.value.message


# S3 -------------------------------------------------------------------------------------
def test_s3_stream_64_mib_with_hash(box: boxlite.Box) -> None:
    size = 64 * 1024 * 1024
    line = b"boxlite stream test line\n"
    expected = hashlib.sha256((line * (size // len(line) + 1))[:size]).hexdigest()
    digest = hashlib.sha256()
    total = 0
    stderr = b""
    execution = box.stream("sh", "-c", f"yes 'boxlite stream test line' | head -c {size}; echo done >&2")
    for chunk in execution:
        assert chunk.stream in ("stdout", "stderr")
        if chunk.stream == "stdout":
            digest.update(chunk.data)
            total += len(chunk.data)
        else:
            stderr += chunk.data
    assert total == size and digest.hexdigest() == expected
    assert stderr == b"done\n"
    assert execution.wait().exit_code == 0


# S4 -------------------------------------------------------------------------------------
def test_s4_stdin(box: boxlite.Box) -> None:
    assert box.exec("cat", input=b"hello\x00world").stdout == b"hello\x00world"
    data = os.urandom(1024 * 1024)
    with box.start_exec("sha256sum") as execution:
        for i in range(0, len(data), 64 * 1024):
            execution.stdin.write(data[i : i + 64 * 1024])
        execution.stdin.close()
        result = execution.wait(timeout=60)
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    # a stream fed from stdin
    chunks = list(box.stream("tr", "a-z", "A-Z", input="shout"))
    assert b"".join(c.data for c in chunks if c.stream == "stdout") == b"SHOUT"
    # no stdin (what exec without input does): cat reads end of file, there is none to write
    assert box.exec("cat").stdout == b""
    with box.start_exec("sh", "-c", "cat; echo done", stdin=False) as execution:
        with pytest.raises(boxlite.InvalidState):
            execution.stdin.write(b"late")
        assert execution.wait(timeout=60).stdout == b"done\n"


# S5 -------------------------------------------------------------------------------------
def test_s5_timeout_kills_the_group_and_keeps_partial_output(box: boxlite.Box) -> None:
    script = "echo started; sleep 1000 & echo child >&2; sleep 1000"
    t0 = time.monotonic()
    result = box.exec("sh", "-c", script, timeout=1)
    assert time.monotonic() - t0 < 10
    assert result.timed_out and result.signal == 9 and result.exit_code == -1
    assert result.stdout == b"started\n" and result.stderr == b"child\n"
    # the background child went with its group
    assert b"sleep 1000" not in box.exec("ps").stdout
    with pytest.raises(boxlite.ExecTimeout) as info:
        box.exec("sh", "-c", script, timeout=0.5, check=True)
    assert info.value.stdout == b"started\n" and info.value.result is not None and info.value.result.timed_out
    # a bounded wait on a background execution: ExecTimeout with the output so far, still running
    execution = box.start_exec("sh", "-c", "echo partial; sleep 1000")
    with pytest.raises(boxlite.ExecTimeout) as info:
        execution.wait(timeout=1)
    assert info.value.stdout == b"partial\n" and info.value.result is None and execution.running
    execution.kill()
    assert execution.wait(timeout=10).signal == 9
    execution.close()
    # signal(n) reaches the process
    execution = box.start_exec("sleep", "1000")
    execution.signal(signal.SIGTERM)
    assert execution.wait(timeout=10).signal == signal.SIGTERM
    execution.close()


# S6 -------------------------------------------------------------------------------------
def test_s6_bad_option_error_type_and_message(runtime: boxlite.Runtime, rootfs: str) -> None:
    with pytest.raises(boxlite.InvalidArgument) as info:
        runtime.create_box(root_disk=rootfs, root_disk_read_only=True, cpus=0)
    assert info.value.code == _ffi.BOXLITE_ERROR_INVALID_ARGUMENT
    assert "cpu" in info.value.message.lower(), info.value.message
    assert isinstance(info.value, ValueError) and isinstance(info.value, boxlite.BoxliteError)
    with pytest.raises(boxlite.InvalidArgument) as info:
        runtime.create_box(root_disk=rootfs, network="allow_list", allow=["10.0.0.1/8"])
    assert "10.0.0.1/8" in info.value.message
    with pytest.raises(boxlite.InvalidArgument) as info:
        runtime.create_box(root_disk="/nonexistent/disk.ext4")
    assert "/nonexistent/disk.ext4" in info.value.message
    with pytest.raises(boxlite.InvalidArgument):
        runtime.create_box(root_disk=rootfs, network="sideways")
    with pytest.raises(boxlite.NotFound) as info:
        runtime.get_box("no-such-box")
    assert "no-such-box" in info.value.message


# S7 -------------------------------------------------------------------------------------
def _everything(home: str, rootfs: str):
    runtime = boxlite.Runtime(home=home, engine=ENGINE)
    box = runtime.create_box(root_disk=rootfs, root_disk_read_only=True)
    execution = box.start_exec("cat")
    return runtime, box, execution


@pytest.mark.parametrize("order", ["runtime-box-execution", "execution-box-runtime", "box-runtime-execution", "gc"])
def test_s7_dropped_in_any_order_no_leaks(home: str, rootfs: str, order: str) -> None:
    # Warm up what the library keeps for the whole process (its threads and their fds).
    with boxlite.Runtime(home=home, engine=ENGINE) as rt, rt.create_box(root_disk=rootfs, root_disk_read_only=True) as b:
        b.exec("true")
    assert settle(lambda: not our_shims())
    fds = open_fds()

    runtime, box, execution = _everything(home, rootfs)
    execution.stdin.write(b"x")
    assert len(our_shims()) == 1
    if order == "gc":
        del runtime, box, execution
        gc.collect()
    else:
        objects = {"runtime": runtime, "box": box, "execution": execution}
        for name in order.split("-"):
            objects.pop(name).close()
        del runtime, box, execution
    assert settle(lambda: not our_shims()), f"helper processes left: {our_shims()}"
    assert settle(lambda: open_fds() <= fds), f"{open_fds()} fds open, {fds} before"
    # The home is free again (every handle really went).
    boxlite.Runtime(home=home, engine=ENGINE).close()


# S8 -------------------------------------------------------------------------------------
def test_s8_two_boxes_at_once(runtime: boxlite.Runtime, rootfs: str) -> None:
    with runtime.create_box(root_disk=rootfs, root_disk_read_only=True, name="one") as one, runtime.create_box(
        root_disk=rootfs, root_disk_read_only=True, name="two"
    ) as two:
        one.start()
        two.start()
        assert len(our_shims()) == 2
        # Both boxes hold a running process at the same moment: each waits on its stdin, and
        # a bounded wait finds both still running before either is let go.
        waiting = [b.start_exec("sh", "-c", f"read word; echo {b.name} $word") for b in (one, two)]
        assert all(execution.poll(200) is None for execution in waiting), "a box's process did not wait"
        for execution in waiting:
            execution.stdin.write(b"go\n")
            execution.stdin.close()
        results = [execution.wait(timeout=60) for execution in waiting]
        assert [r.stdout for r in results] == [b"one go\n", b"two go\n"], results
        assert [b.name for b in runtime.list_boxes()] == ["one", "two"]


# S9 -------------------------------------------------------------------------------------
def test_s9_found_again_by_name_from_another_process(home: str, rootfs: str) -> None:
    script = textwrap.dedent(
        f"""
        import boxlite
        with boxlite.Runtime(home={home!r}, engine={ENGINE!r}) as rt:
            with rt.create_box(root_disk={rootfs!r}, root_disk_read_only=True, name="keeper") as box:
                print(box.id, box.exec("echo", "first").stdout.decode().strip())
        """
    )
    env = dict(os.environ, PYTHONPATH=PACKAGE_DIR)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    box_id, word = out.stdout.split()
    assert word == "first"
    with boxlite.Runtime(home=home, engine=ENGINE) as rt, rt.get_box("keeper") as box:
        assert (box.id, box.name) == (box_id, "keeper")
        assert box.status == "stopped"
        assert box.exec("echo", "again").stdout == b"again\n"
        with rt.get_box(box_id) as by_id:
            assert by_id.name == "keeper"


# S10 ------------------------------------------------------------------------------------
def test_s10_vm_killed_mid_exec_fails_fast(runtime: boxlite.Runtime, box: boxlite.Box) -> None:
    execution = box.start_exec("sh", "-c", "echo before; sleep 1000")
    shim_pid = int(Path(runtime.home, "boxes", box.id, "shim.pid").read_text().strip())
    time.sleep(0.3)
    t0 = time.monotonic()
    os.kill(shim_pid, signal.SIGKILL)
    with pytest.raises(boxlite.VmExited) as info:
        execution.wait(timeout=30)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"the error took {elapsed:.1f} s"
    assert "signal 9" in info.value.message, info.value.message
    assert info.value.stdout == b"before\n"  # type: ignore[attr-defined]
    execution.close()
    assert settle(lambda: box.status == "stopped", 5)
    assert "signal 9" in (box.stop_reason or "")


# Beyond the table: files, ports, optional entry points ----------------------------------
def test_copy_in_and_out(tmp_path: Path, runtime: boxlite.Runtime, rootfs: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("alpha")
    with runtime.create_box(root_disk=rootfs, root_disk_read_only=True) as box:
        box.copy_in(tmp_path / "src", "/tmp")
        assert box.exec("cat", "/tmp/src/a.txt").stdout == b"alpha"
        box.exec("sh", "-c", "echo beta > /tmp/src/b.txt")
        box.copy_out("/tmp/src", tmp_path / "back")
    assert (tmp_path / "back" / "b.txt").read_text() == "beta\n"
    with runtime.create_box(root_disk=rootfs, root_disk_read_only=True) as box:
        with pytest.raises(boxlite.NotFound):
            box.copy_in(tmp_path / "missing", "/tmp")


def test_missing_entry_point_is_named(monkeypatch: pytest.MonkeyPatch, box: boxlite.Box) -> None:
    real = _ffi.lib()

    class Older:
        def __getattr__(self, name: str):
            if name == "boxlite_box_copy_in":
                raise AttributeError(name)
            return getattr(real, name)

    monkeypatch.setattr(boxlite._core, "_lib", lambda: Older())
    with pytest.raises(NotImplementedError, match="boxlite_box_copy_in"):
        box.copy_in("/etc/hostname", "/tmp")


def test_port_forward(runtime: boxlite.Runtime, rootfs: str) -> None:
    import urllib.request

    with runtime.create_box(root_disk=rootfs, root_disk_read_only=True, network="none", ports=[boxlite.Port(guest=8080)]) as box:
        box.exec("sh", "-c", "mkdir -p /tmp/www && echo served > /tmp/www/index.html")
        httpd = box.start_exec("httpd", "-f", "-p", "8080", "-h", "/tmp/www")
        port = box.forwarded_port(8080)
        assert port > 0
        assert [(f.guest_port, f.host_port, f.protocol) for f in box.port_forwards()] == [(8080, port, "tcp")]
        body = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        assert body == b"served\n"
        httpd.close()
        with pytest.raises(boxlite.NotFound):
            box.forwarded_port(9999)


def test_volume(tmp_path: Path, runtime: boxlite.Runtime, rootfs: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    # (the guest paths lie where the read-only test root has or can make a mount point)
    (shared / "in.txt").write_text("from host")
    with runtime.create_box(
        root_disk=rootfs, root_disk_read_only=True, volumes=[(shared, "/tmp/rw"), boxlite.Volume(str(shared), "/home/tester", read_only=True)]
    ) as box:
        assert box.exec("cat", "/tmp/rw/in.txt").stdout == b"from host"
        assert box.exec("sh", "-c", "echo from box > /tmp/rw/out.txt").exit_code == 0
        assert box.exec("sh", "-c", "echo no > /home/tester/denied.txt").exit_code != 0
    assert (shared / "out.txt").read_text() == "from box\n"
    assert not (shared / "denied.txt").exists()
    with pytest.raises(boxlite.InvalidArgument):
        runtime.create_box(root_disk=rootfs, volumes=[("relative/dir", "/mnt/x")])


def test_option_forms_and_their_errors(runtime: boxlite.Runtime, rootfs: str) -> None:
    from boxlite._core import _port

    assert _port("8080:80") == boxlite.Port(guest=80, host=8080)
    assert _port("127.0.0.1:0:53/udp") == boxlite.Port(guest=53, host=0, protocol="udp", host_addr="127.0.0.1")
    assert _port((1, 2, "udp")) == boxlite.Port(guest=2, host=1, protocol="udp")
    assert _port(80) == boxlite.Port(guest=80)
    with pytest.raises(boxlite.InvalidArgument):
        _port("eighty")
    with pytest.raises(boxlite.InvalidArgument) as info:
        runtime.create_box(root_disk=rootfs, dns=["not-an-address"])
    assert "not-an-address" in info.value.message
    with pytest.raises(boxlite.InvalidArgument):
        runtime.create_box(root_disk=rootfs, ports=[boxlite.Port(guest=0)])
    with pytest.raises(boxlite.InvalidArgument):
        runtime.create_box(root_disk=rootfs, ports=[boxlite.Port(guest=80, protocol="sctp")])
    with pytest.raises(boxlite.InvalidArgument):
        boxlite.Runtime(engine="warp")


def test_a_stream_left_early_is_killed_and_released(box: boxlite.Box) -> None:
    from boxlite import _core

    execution = box.stream("yes")  # writes forever; the bounded queue fills and holds it back
    taken = 0
    for chunk in execution:
        taken += 1
        if taken == 3:
            break
    key = execution._key
    assert settle(lambda: execution._state.chunks.full(), 10)  # the library's thread now waits on us
    execution.close()  # kills it; the callback blocked on the full queue gives up
    assert settle(lambda: key not in _core._states, 10), "the library never released the execution's callbacks"
    assert b"yes" not in box.exec("ps").stdout
