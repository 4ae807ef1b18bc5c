"""tools/aot_compile_triton.py as the GPU script uses it, to fill Triton's cache before the
checks: its compiles are exactly the ones a launch requests, so a launch finds them.

No GPU needed: Triton's active driver is replaced by one that names an sm_90 target, and a
launch's compile path runs through ``kernel.warmup`` (which compiles and launches nothing).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") == "1",
    reason="needs triton (not its interpreter)",
)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCH = 90  # H100, H200


def _tool():
    spec = importlib.util.spec_from_file_location(
        "aot_compile_triton", os.path.join(ROOT, "tools", "aot_compile_triton.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tool(monkeypatch, tmp_path):
    """The tool's module, with an empty Triton cache of its own."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))  # before the tool loads
    return _tool()


def on_gpu(tool, arch=ARCH):
    """Triton's launch path as on a GPU of ``arch`` (its driver names the target only)."""
    from laperm_kernels.ops.backends.triton import kernels as tk

    return tool.target_only(
        arch, [tk.rank_match_block_kernel, tk.sort_chunks_kernel, tk.merge_runs_kernel]
    )


def test_the_checks_request_exactly_the_tools_compiles(tool, monkeypatch):
    # Every group the GPU checks and tests launch (the presets, the Triton GPU tests'
    # buckets and long rows) in every dtype, prepared as the backend prepares a call, and
    # every configuration the tool compiles: each compile request (signature, constants,
    # attributes, options) is recorded instead of compiled.
    from triton.runtime.jit import JITFunction

    from bench.presets import PRESETS
    from laperm_kernels.ops.backends.triton import backend as tb
    from laperm_kernels.ops.backends.triton import kernels as tk
    from tests.triton_backend.test_triton import GPU_SHAPES

    requests = set()

    def record(self, key, signature, device, constexprs, options, attrs, warmup):
        requests.add(
            (
                self.fn.__name__,
                repr(sorted(signature.items())),
                repr(sorted(constexprs.items())),
                repr(sorted(attrs.items())),
                repr(sorted(options.__dict__.items())),
            )
        )
        return None  # nothing compiled; a warm-up accepts that

    monkeypatch.setattr(JITFunction, "_do_compile", record)
    groups = {**PRESETS, **{k: v for k, v in GPU_SHAPES.items() if v is not None}}
    with on_gpu(tool):
        for shapes in groups.values():
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                ws = [torch.empty(s, dtype=dtype) for s in shapes]  # plans read shapes only
                tb.prepare(ws, [torch.empty_like(w) for w in ws])
        launched, requests = requests, set()
        for _, kernel_name, signature, constexprs, warps in tool.configurations():
            fn = getattr(tk, kernel_name)
            fn.warmup(
                *tool.launch_arguments(fn, signature), grid=(1,), num_warps=warps, **constexprs
            )
    assert launched == requests
    assert len(requests) == 30  # 3 dtypes x (8 block tiles, the chunk sort, the merge)


def test_a_launch_finds_the_tools_compile_in_the_cache(tool, tmp_path):
    from laperm_kernels.ops.backends.triton import kernels as tk

    cache = tmp_path / "cache"
    jobs = {cfg[0]: (*cfg, ARCH) for cfg in tool.configurations()}
    *_, err = tool.compile_one(jobs["block f32 BLOCK=64 ROWS=32"])
    assert err is None, err
    entries = set(os.listdir(cache))
    assert len(entries) == 1

    def launch_compile(block):  # the backend's warm-up of a block bucket of 5 rows
        rows, warps = tk.BLOCK_CONFIGS[block]
        tables = (
            torch.zeros(5, dtype=torch.int64),
            torch.zeros(5, dtype=torch.int64),
            torch.ones(5, dtype=torch.int32),
        )
        return tk.rank_match_block_kernel.warmup(
            *tables, 5, KIND=tk.KIND_FLOAT32, BLOCK=block, ROWS=rows, num_warps=warps, grid=(1,)
        )

    with on_gpu(tool):
        launch_compile(64)
        assert set(os.listdir(cache)) == entries  # the tool's binary, found in the cache
        launch_compile(128)  # not compiled by the tool: compiled now, a new entry
    assert len(set(os.listdir(cache)) - entries) == 1


def test_an_integer_specialised_at_launch_is_refused(tool):
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(x, n, BLOCK: tl.constexpr):
        pass

    with pytest.raises(ValueError, match="n \\(i32\\) is specialised by value"):
        tool.launch_arguments(kernel, {"x": "*i64", "n": "i32", "BLOCK": "constexpr"})
