"""Static checks of the CUDA kernel without a GPU: build ``recursion.cu`` for a GPU architecture
with ``nvcc``, read ptxas's resource report, and count the SASS of the recursion's pass loop.

What it owns: finding the tools (``nvcc`` on PATH; ``cuobjdump``/``nvdisasm`` on PATH or from the
``nvidia-cuda-cuobjdump`` / ``nvidia-cuda-nvdisasm`` wheels), running them, and parsing their text.
The test suite uses it to prove the kernel has no register spills and no local memory; the kernel
benchmark records the SASS instructions per compression (docs/performance.md §1.2: ≈1,381 for a
plain kernel, ≈1,024 ALU-pipe ops the floor).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hasher_core import design

from . import cuda

#: Compressions one pass of ``hasher_evaluate`` nominally does (header blocks 1 and 2, the re-hash).
COMPRESSIONS_PER_PASS = design.COMPRESSIONS_PER_HASH

_PROPS = re.compile(
    r"Function properties for (\w+)\n\s*(\d+) bytes stack frame, "
    r"(\d+) bytes spill stores, (\d+) bytes spill loads"
)
_REGS = re.compile(r"Compiling entry function '(\w+)'.*?Used (\d+) registers", re.S)
_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


class CudaToolMissing(RuntimeError):
    """nvcc or cuobjdump is not installed here."""


@dataclass(frozen=True)
class KernelResources:
    """ptxas's report for one kernel: registers per thread and bytes of local memory traffic."""

    registers: int
    stack_frame_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int


@dataclass(frozen=True)
class Instruction:
    """One SASS instruction: byte address, opcode (with modifiers) and operands."""

    address: int
    opcode: str
    operands: str


def tool(name: str) -> str:
    """Path of ``name`` (nvcc, cuobjdump, nvdisasm): PATH first, then NVIDIA's pip wheels.

    Raises CudaToolMissing naming the package that provides it."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import nvidia  # namespace package of NVIDIA's CUDA wheels

        for root in nvidia.__path__:
            for candidate in sorted(Path(root).glob(f"*/bin/{name}")):
                if os.access(candidate, os.X_OK):
                    return str(candidate)
    except ImportError:
        pass
    package = {"nvcc": "the CUDA toolkit (nvcc)", "cuobjdump": "nvidia-cuda-cuobjdump"}.get(
        name, f"nvidia-cuda-{name}"
    )
    raise CudaToolMissing(f"{name} not found on PATH or in NVIDIA's pip wheels: install {package}")


def build_cubin(
    out_dir: Path,
    arch: str = "sm_90",
    *,
    source: str | None = None,
    name: str = "recursion",
    options: tuple[str, ...] = (),
) -> tuple[Path, str]:
    """Compile a generated kernel source (default ``cuda.cuda_source()``) to ``out_dir/<name>_<arch>.cubin``
    with nvcc and extra ``options`` (e.g. the device search's float options).

    Returns (cubin path, ptxas's ``-v`` report). Raises CudaToolMissing without nvcc and
    RuntimeError with nvcc's output when compilation fails."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}_full.cu"
    path.write_text(cuda.cuda_source() if source is None else source)
    cubin = out_dir / f"{name}_{arch}.cubin"
    done = subprocess.run(
        [tool("nvcc"), "-cubin", f"-arch={arch}", *options, "-Xptxas", "-v", "-o", str(cubin), str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"nvcc failed for {arch} (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return cubin, done.stdout + done.stderr


def kernel_resources(report: str) -> dict[str, KernelResources]:
    """Per kernel name, ptxas's registers and stack/spill bytes from a ``-Xptxas -v`` report."""
    registers = {m.group(1): int(m.group(2)) for m in _REGS.finditer(report)}
    return {
        m.group(1): KernelResources(registers.get(m.group(1), -1), *(int(m.group(i)) for i in (2, 3, 4)))
        for m in _PROPS.finditer(report)
    }


def sass(cubin: Path) -> dict[str, list[Instruction]]:
    """The SASS of every kernel in ``cubin`` (``cuobjdump -sass``), per kernel name, in address order.

    Raises CudaToolMissing without cuobjdump, RuntimeError when it fails."""
    env = dict(os.environ)
    with contextlib.suppress(CudaToolMissing):  # cuobjdump calls nvdisasm for the SASS text
        env["PATH"] = f"{Path(tool('nvdisasm')).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        [tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True, timeout=300, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"cuobjdump -sass {cubin} failed (exit {done.returncode}): {done.stderr}")
    kernels: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    for line in done.stdout.splitlines():
        if "Function :" in line:
            current = kernels.setdefault(line.split("Function :", 1)[1].strip(), [])
        elif current is not None and (m := _INSTRUCTION.search(line)):
            current.append(Instruction(int(m.group(1), 16), m.group(3), m.group(4).strip()))
    return kernels


def pass_loop(instructions: list[Instruction]) -> list[Instruction]:
    """The body of the kernel's largest loop: the instructions from the target of the backward
    branch with the longest span up to that branch (for ``hasher_evaluate``, the 22-pass loop).
    Empty when the code has no loop."""
    best: tuple[int, int] | None = None
    for ins in instructions:
        if ins.opcode == "BRA":
            target = int(ins.operands.split()[-1], 16)
            if target < ins.address and (best is None or ins.address - target > best[1] - best[0]):
                best = (target, ins.address)
    if best is None:
        return []
    return [ins for ins in instructions if best[0] <= ins.address <= best[1]]


def local_memory(instructions: list[Instruction]) -> list[Instruction]:
    """Loads and stores to thread-local memory (LDL/STL): what a dynamic array index or a spill costs."""
    return [ins for ins in instructions if ins.opcode.split(".")[0] in ("LDL", "STL")]
