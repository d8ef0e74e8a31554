"""The pool of warm sandboxes: every limit of a check holds in a warm child as in a cold one;
one job per child, never seen by the next; used children replaced; a pool never crosses a fork;
and children end with the process that made them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workflow import sandbox

MEMORY = 512 * 1024 * 1024
PRELOAD = ("json",)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_pools():
    sandbox.close_pools()
    sandbox.configure(2)
    yield
    sandbox.close_pools()
    sandbox.configure(None)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(0.02)


def warm_pool(memory_limit: int = MEMORY, preload: tuple[str, ...] = PRELOAD):
    """The pool for these settings, with its spare children ready."""
    pool = sandbox.pool_for(memory_limit, None, preload)
    pool.start()
    wait_for(lambda: pool.ready_count() == pool.spare)
    return pool


def run(code: str, data: bytes = b"", *, time_limit: float = 10, args: list[str] | None = None,
        memory_limit: int = MEMORY) -> sandbox.SandboxResult:
    return sandbox.run(textwrap.dedent(code), args or [], data, time_limit=time_limit,
                       memory_limit=memory_limit, preload=PRELOAD)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


PARENT = "import json, os\nsys.stdout.write(json.dumps({'parent': os.getppid()}))\n"

REPORT = """\
import json, os
data = sys.stdin.buffer.read()
fds = []
for name in os.listdir("/proc/self/fd"):
    try:
        os.fstat(int(name))
    except OSError:
        continue  # the listing's own descriptor, closed again
    fds.append(int(name))
sys.stdout.write(json.dumps({
    "pid": os.getpid(), "parent": os.getppid(), "data": data.decode(), "args": sys.argv[3:],
    "isolated": sys.flags.isolated, "memory": resource.getrlimit(resource.RLIMIT_AS)[0],
    "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0], "fds": sorted(fds),
    "cwd_on_path": "" in sys.path or os.getcwd() in sys.path}))
"""


def test_a_warm_child_runs_the_job_with_the_limits_and_nothing_else(tmp_path):
    pool = warm_pool()
    result = run(REPORT, b"the file", args=["one", "two"], time_limit=3)
    assert result.failure is None, result
    answer = result.answer
    assert answer["parent"] == pool.template_pid()  # warm: forked by the template
    assert answer["data"] == "the file" and answer["args"] == ["one", "two"]
    assert answer["isolated"] == 1 and not answer["cwd_on_path"]
    assert answer["memory"] == MEMORY
    # CPU: what the child had used (well under a second) plus the job's 3 seconds.
    assert 3 <= answer["cpu"] <= 5
    assert answer["fds"] == [0, 1, 2]


def test_the_memory_limit_holds_in_a_warm_child():
    pool = warm_pool()
    hog = run("""\
        block = bytearray(700 * 1024 * 1024)
        sys.stdout.write('{"held": true}')
        """)
    assert hog == sandbox.SandboxResult(None, "crash")
    assert pool.started_templates == 1


def test_the_imports_count_against_the_memory_limit():
    # pyHanko and Counterpart's seal module do not fit in 40 MB: the template never gets ready
    # (it imports under the limit), and the check falls back to a cold child, which fails too.
    pool = sandbox.pool_for(40 * 1024 * 1024, ROOT, ("workflow.seal",))
    pool.start()
    wait_for(lambda: pool.failed_starts >= 1)
    assert pool.ready_count() == 0
    result = sandbox.run("import workflow.seal\nsys.stdout.write('{}')\n", [], b"",
                         time_limit=20, memory_limit=40 * 1024 * 1024, pythonpath=ROOT,
                         preload=("workflow.seal",))
    assert result == sandbox.SandboxResult(None, "crash")


def test_a_spinning_warm_child_is_ended():
    warm_pool()
    started = time.monotonic()
    spin = sandbox.run("while True:\n    pass\n", [], b"", time_limit=1,
                       memory_limit=MEMORY, preload=PRELOAD)
    # Whichever comes first ends it: the wall time (a "timeout") or the CPU limit (a "crash").
    assert spin.answer is None and spin.failure in {"crash", "timeout"}
    assert time.monotonic() - started < 10


def test_the_cpu_limit_alone_ends_a_job():
    pool = warm_pool()
    child = pool.take()
    assert child is not None
    started = time.monotonic()
    # Handed over with a wall-time limit of 30 s but a CPU limit of 1 s: the kernel ends it.
    header = json.dumps({"code": "while True:\n    pass\n", "args": [], "cpu": 1,
                         "size": 0}).encode()
    child.channel.sendall(len(header).to_bytes(4, "big") + header)
    child.channel.settimeout(60)
    assert child.channel.recv(100) == b""  # no answer: the child was killed
    child.channel.close()
    assert time.monotonic() - started < 30  # 2 s of CPU, on a busy machine
    wait_for(lambda: not alive(child.pid), timeout=10)


def test_the_wall_time_limit_kills_a_sleeping_warm_child(tmp_path):
    warm_pool()
    marker = tmp_path / "pid"
    started = time.monotonic()
    result = run("""\
        import os, time
        open(sys.argv[3], "w").write(str(os.getpid()))
        time.sleep(60)
        """, args=[str(marker)], time_limit=1)
    assert result == sandbox.SandboxResult(None, "timeout")
    assert time.monotonic() - started < 3
    wait_for(lambda: not alive(int(marker.read_text())), timeout=5)


@pytest.mark.parametrize("code", [
    "import os\nos.kill(os.getpid(), 9)\n",
    "raise RuntimeError('a parser bug')\n",
    "raise SystemExit(3)\n",
    "sys.stdout.write('not json at all')\n",
    "sys.stdout.write('[1, 2, 3]')\n",
    "sys.stdout.write('{\"half\": ')\n",
    "sys.stdout.write('{\"answer\": 1}')\nraise SystemExit(1)\n",
])
def test_a_crash_or_garbage_from_a_warm_child_is_a_crash(code):
    warm_pool()
    assert run(code) == sandbox.SandboxResult(None, "crash")


def test_each_job_has_a_process_of_its_own_and_sees_nothing_of_the_last():
    pool = warm_pool()
    first = run("""\
        import json, os
        json.left_behind = "secret of the first file"
        sys.modules["left_behind"] = json
        sys.stdout.write(json.dumps({"pid": os.getpid(), "parent": os.getppid()}))
        """)
    second = run("""\
        import json, os
        sys.stdout.write(json.dumps({"pid": os.getpid(), "parent": os.getppid(),
                                     "seen": hasattr(json, "left_behind")
                                             or "left_behind" in sys.modules}))
        """)
    assert first.answer and second.answer
    assert first.answer["parent"] == second.answer["parent"] == pool.template_pid()
    assert first.answer["pid"] != second.answer["pid"]
    assert second.answer["seen"] is False
    wait_for(lambda: not alive(first.answer["pid"]), timeout=5)


def test_a_used_child_is_replaced_in_the_background():
    pool = warm_pool()
    assert pool.ready_count() == 2
    for _ in range(5):
        assert run('sys.stdout.write("{}")').answer == {}
    wait_for(lambda: pool.ready_count() == 2, timeout=10)
    assert pool.started_templates == 1
    assert len(children_of(pool.template_pid())) == 2  # the spares; used children are gone


def test_without_spare_children_every_job_starts_cold():
    sandbox.configure(0)
    answer = run(REPORT, b"the file", args=["one"], time_limit=3).answer
    assert answer is not None and answer["parent"] == os.getpid()
    assert answer["data"] == "the file" and answer["args"] == ["one"]
    assert answer["isolated"] == 1 and not answer["cwd_on_path"]
    assert answer["memory"] == MEMORY and answer["cpu"] == 3 and answer["fds"] == [0, 1, 2]
    assert sandbox._pools == {}


def test_the_first_job_waits_for_the_template_rather_than_start_beside_it():
    answer = run(PARENT)
    pool = sandbox.pool_for(MEMORY, None, PRELOAD)
    assert answer.answer == {"parent": pool.template_pid()}
    wait_for(lambda: pool.ready_count() == 2)


def test_a_job_that_cannot_wait_for_the_template_starts_cold():
    pool = sandbox.pool_for(MEMORY, None, PRELOAD)
    assert pool.take(wait=0) is None  # the template has only just been asked for
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sandbox, "_WAIT_FOR_TEMPLATE_SECONDS", 0.0)
        sandbox.close_pools()
        assert run(PARENT).answer == {"parent": os.getpid()}


def test_a_forked_process_makes_its_own_pool(tmp_path):
    pool = warm_pool()
    template = pool.template_pid()
    report = tmp_path / "child.json"
    pid = os.fork()
    if pid == 0:  # the forked process: never return into pytest
        status = 1
        try:
            facts: dict = {}
            try:
                pool.take()
            except RuntimeError:
                facts["inherited_refused"] = True
            ours = sandbox.pool_for(MEMORY, None, PRELOAD)
            facts["same_pool"] = ours is pool
            ours.start()
            deadline = time.monotonic() + 60
            while ours.ready_count() < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            result = run(PARENT)
            facts["parent"] = result.answer and result.answer["parent"]
            facts["our_template"] = ours.template_pid()
            report.write_text(json.dumps(facts))
            sandbox.close_pools()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    facts = json.loads(report.read_text())
    assert facts["inherited_refused"] is True and facts["same_pool"] is False
    assert facts["parent"] == facts["our_template"] != template
    # The parent's pool is untouched by the fork and still answers from its own template.
    result = run(PARENT)
    assert result.answer == {"parent": template}


def test_children_die_with_the_process_that_made_them(tmp_path):
    script = textwrap.dedent(f"""\
        import json, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from workflow import sandbox
        sandbox.configure(2)
        pool = sandbox.pool_for({MEMORY}, None, ("json",))
        pool.start()
        while pool.ready_count() < 2:
            time.sleep(0.02)
        print(json.dumps(pool.template_pid()), flush=True)
        time.sleep(600)
        """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        template = int(owner.stdout.readline())
        children = children_of(template)
        assert len(children) == 2 and alive(template)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        owner.stdout.close()
    wait_for(lambda: not any(alive(pid) for pid in [template, *children]), timeout=10)
