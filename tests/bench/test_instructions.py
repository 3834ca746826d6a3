"""bench/instructions.py: instructions per request under callgrind.

The short tests run in `make test`: the dump readers on a real callgrind dump of a small
Python program, and the HTTP/1.1 client against the trivial instance. The end-to-end run
(the gateway under callgrind, both protocols) takes minutes of valgrind and is slow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fngate.bench import instructions
from fngate.bench.procs import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
needs_valgrind = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("valgrind", "callgrind_control", "callgrind_annotate")),
    reason="needs valgrind (make bench-instr installs it)",
)


@needs_valgrind
def test_dump_readers_find_the_totals_and_the_functions_that_cost_them(tmp_path):
    out = tmp_path / "cg.out"
    program = "def spin(n):\n    return sum(i * i for i in range(n))\nspin(20000)\n"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-S", "-c", program],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    total = instructions.total_instructions(out)
    assert total > 1_000_000
    own = instructions.self_costs(out, 10)
    assert own and all(ir > 0 for _, ir in own)
    assert own == sorted(own, key=lambda kv: -kv[1])
    assert any("_PyEval_EvalFrameDefault" in name for name, _ in own), own  # the interpreter ran the loop
    assert own[0][1] <= total
    top = instructions.top_functions(out, 10)
    assert top and all(ir < 0.9 * total for _, ir in top), top  # the frames holding everything are left out
    assert not any("'" in name.split(" [")[0] for name, _ in top), top  # recursion levels too


def test_the_h1_client_counts_answers_of_the_trivial_instance():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fngate.bench.instructions", "--instance", str(port)])
    try:
        wait_port(port)
        assert instructions.h1_requests(port, 25, {"x-test": "1"}) == 25
    finally:
        proc.terminate()
        proc.wait(10)


def test_short_names_drop_paths_but_keep_the_library():
    assert instructions.short_name("/a/b/ceval.c:_PyEval_EvalFrameDefault [/x/lib/libpython3.11.so.1.0]") == (
        "_PyEval_EvalFrameDefault [libpython3.11.so.1.0]"
    )
    assert instructions.short_name("???:0x0000000004936718") == "0x0000000004936718"


@needs_valgrind
@pytest.mark.slow
@pytest.mark.timeout(1500)  # the gateway starts under valgrind: minutes on a loaded machine
@pytest.mark.skipif(not shutil.which("h2load"), reason="needs h2load (nghttp2-client)")
def test_the_gateway_under_callgrind_gives_instructions_per_request_of_both_protocols(tmp_path):
    cmd = [sys.executable, "-m", "fngate.bench.instructions", "--requests", "40", "--warmup", "10", "--top", "5", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = tmp_path.glob("*/result.json")
    doc = json.loads(result.read_text())
    assert doc["build"] in ("compiled", "pure", "mixed")
    rows = {r["protocol"]: r for r in doc["results"]}
    assert set(rows) == {"h1", "h2"}
    for r in rows.values():
        assert r["ok"] == r["requests"] == 40
        # a proxied request is tens of thousands of instructions at least, and not millions
        assert 10_000 < r["per_request"] < 5_000_000, r
        assert r["per_request"] == pytest.approx(r["instructions"] / 40)
        assert len(r["top"]) == 5 and len(r["top_self"]) == 5
