#!/usr/bin/env python3
"""Compile every kernels/*.cu to PTX through libnvrtc and assemble it with ptxas, without a GPU.

This is the check CI can run on a machine with no CUDA toolkit and no driver. It installs
nothing itself; it expects these pinned wheels in the Python environment that runs it:

    pip install nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 \
                nvidia-cuda-nvcc-cu12==12.9.86

(libnvrtc.so.12 from the first, ptxas from the third; PTX 8.8 from these loads on the
driver-580 GPU machines, unpinned newer wheels emit PTX the driver rejects.)

Each kernel file is compiled exactly as the Rust side compiles it at run time
(crates/qtrain-cuda/src/registry.rs): the file's source, `common.cuh` handed to NVRTC as an
in-memory header, the options in kernels/nvrtc_options.txt plus `--gpu-architecture=compute_XY`.
The PTX is then assembled with `ptxas -arch=sm_80` and `-arch=sm_90`, and every
`extern "C" __global__` function of the file must appear as a PTX `.entry`.

Prints one line per kernel file and a final "N passed, M failed" line; exits non-zero on any
failure. Override the tool locations with NVRTC_LIB=/path/libnvrtc.so.12 and PTXAS=/path/ptxas.

Usage: python3 tools/check_kernels.py [--verbose] [--keep DIR]
"""

import argparse
import ctypes
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
HEADER = "common.cuh"
ARCHS = ["80", "90"]


def nvidia_dirs():
    """Directories of the `nvidia` namespace package (where the pip wheels unpack)."""
    try:
        import nvidia  # noqa: F401  (namespace package from the nvidia-* wheels)
    except ImportError:
        return []
    return [Path(p) for p in nvidia.__path__]


def find_nvrtc():
    if os.environ.get("NVRTC_LIB"):
        return Path(os.environ["NVRTC_LIB"])
    for d in nvidia_dirs():
        p = d / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"
        if p.exists():
            return p
    return None


def find_ptxas():
    if os.environ.get("PTXAS"):
        return Path(os.environ["PTXAS"])
    for d in nvidia_dirs():
        p = d / "cuda_nvcc" / "bin" / "ptxas"
        if p.exists():
            return p
    return None


class Nvrtc:
    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        L = self.lib
        L.nvrtcCreateProgram.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_char_p),
        ]
        L.nvrtcCompileProgram.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        L.nvrtcGetPTXSize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        L.nvrtcGetPTX.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        L.nvrtcGetProgramLogSize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        L.nvrtcGetProgramLog.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        L.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        L.nvrtcGetErrorString.restype = ctypes.c_char_p
        L.nvrtcVersion.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]

    def version(self):
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        return f"{major.value}.{minor.value}"

    def _check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(rc).decode()}")

    def compile(self, name, source, headers, options):
        """Returns (ptx or None, log)."""
        prog = ctypes.c_void_p()
        hdr_src = (ctypes.c_char_p * len(headers))(*[s.encode() for s in headers.values()])
        hdr_names = (ctypes.c_char_p * len(headers))(*[n.encode() for n in headers.keys()])
        self._check(
            self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), len(headers), hdr_src, hdr_names),
            "nvrtcCreateProgram",
        )
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            rc = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self._check(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
            buf = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
            log = buf.value.decode(errors="replace").strip()
            if rc != 0:
                return None, log or self.lib.nvrtcGetErrorString(rc).decode()
            self._check(self.lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
            buf = ctypes.create_string_buffer(size.value)
            self._check(self.lib.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
            return buf.value.decode(), log
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def kernel_names(source):
    return re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(', source)


def ptxas_resources(stderr):
    """Max registers and total spill bytes from `ptxas -v` output."""
    regs = [int(x) for x in re.findall(r"Used (\d+) registers", stderr)]
    spills = [int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", stderr)]
    return (max(regs) if regs else 0), sum(spills)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--verbose", action="store_true", help="print NVRTC logs and ptxas -v output")
    ap.add_argument("--keep", type=Path, help="write the PTX files into this folder")
    args = ap.parse_args()

    nvrtc_path, ptxas = find_nvrtc(), find_ptxas()
    if nvrtc_path is None or ptxas is None:
        print(
            "check_kernels: libnvrtc.so.12 or ptxas not found; install the pinned wheels:\n"
            "  pip install nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86\n"
            "or point NVRTC_LIB and PTXAS at them.",
            file=sys.stderr,
        )
        print("0 passed, 1 failed")
        return 2
    nvrtc = Nvrtc(nvrtc_path)
    ptxas_version = subprocess.run([str(ptxas), "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    print(f"nvrtc {nvrtc.version()} ({nvrtc_path}); ptxas: {ptxas_version}")

    options = [line.strip() for line in (KERNELS / "nvrtc_options.txt").read_text().splitlines() if line.strip() and not line.startswith("#")]
    headers = {HEADER: (KERNELS / HEADER).read_text()}
    files = sorted(KERNELS.glob("*.cu"))
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out_dir = args.keep or tmp
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in files:
            source = f.read_text()
            names = kernel_names(source)
            problems, notes = [], []
            if not names:
                problems.append('no extern "C" __global__ functions')
            for arch in ARCHS:
                ptx, log = nvrtc.compile(f.name, source, headers, options + [f"--gpu-architecture=compute_{arch}"])
                if args.verbose and log:
                    print(f"--- nvrtc log {f.name} compute_{arch}:\n{log}")
                if ptx is None:
                    problems.append(f"nvrtc compute_{arch}: {log.splitlines()[0] if log else 'failed'}")
                    if not args.verbose:
                        print(log, file=sys.stderr)
                    continue
                if log and "warning" in log:
                    notes.append(f"nvrtc warnings (compute_{arch})")
                    if not args.verbose:
                        print(log, file=sys.stderr)
                version = re.search(r"^\.version\s+(\S+)", ptx, re.M)
                entries = set(re.findall(r"\.entry\s+(\w+)", ptx))
                missing = [n for n in names if n not in entries]
                if missing:
                    problems.append(f"compute_{arch}: no .entry for {', '.join(missing)}")
                ptx_file = out_dir / f"{f.stem}.sm_{arch}.ptx"
                ptx_file.write_text(ptx)
                res = subprocess.run(
                    [str(ptxas), f"-arch=sm_{arch}", "-v", str(ptx_file), "-o", str(tmp / f"{f.stem}.sm_{arch}.cubin")],
                    capture_output=True,
                    text=True,
                )
                if args.verbose:
                    print(f"--- ptxas sm_{arch} {f.name}:\n{res.stderr.strip()}")
                if res.returncode != 0:
                    problems.append(f"ptxas sm_{arch}: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'failed'}")
                    if not args.verbose:
                        print(res.stderr, file=sys.stderr)
                    continue
                regs, spill = ptxas_resources(res.stderr)
                notes.append(f"sm_{arch}: PTX {version.group(1) if version else '?'}, max {regs} regs, {spill} B spill")
                if spill:
                    problems.append(f"sm_{arch}: {spill} bytes of register spills")
            status = "FAIL" if problems else "PASS"
            detail = "; ".join(problems + notes)
            print(f"{status} {f.name:<20} {len(names):2d} kernels  {detail}")
            if problems:
                failed += 1
            else:
                passed += 1
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
