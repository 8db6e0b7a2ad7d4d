"""GPU utilisation and memory per GPU, sampled while a block runs (for the multi-GPU benches).

    with GpuSampler(period=0.5) as gpus:
        work()
    gpus.summary()  # {"source": "nvml", "util_mean": [..], "util_peak": [..], "mem_peak_mib": [..]}

Samples come from NVML through `pynvml` (the `nvidia-ml-py` package, which is also what
`torch.cuda.utilization` reads) when it is installed, else from `nvidia-smi` polled every
period; without either (no driver, a CPU machine) nothing is recorded and the summary says so.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time

import numpy as np

SMI_QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


class GpuSampler:
    def __init__(self, period: float = 0.5):
        self.period, self.rows = period, []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source, self.count, self._read = self._open()

    def _open(self):
        try:
            import pynvml
            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                       for i in range(pynvml.nvmlDeviceGetCount())]

            def read():
                return [(pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
                         pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20) for h in handles]
            return "nvml", len(handles), read
        except Exception:  # noqa: BLE001 - not installed or no driver: try nvidia-smi
            pass
        smi = shutil.which("nvidia-smi")
        if smi:
            def read():
                out = subprocess.run([smi, *SMI_QUERY], capture_output=True, text=True,
                                     timeout=10).stdout
                return [tuple(float(v) for v in line.split(",")) for line in
                        out.strip().splitlines()]
            try:
                return "nvidia-smi", len(read()), read
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
        return "none", 0, None

    def __enter__(self) -> "GpuSampler":
        if self.count:
            self._thread = threading.Thread(target=self._loop, args=(time.perf_counter(),),
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self, t0: float) -> None:
        while not self._stop.wait(self.period):
            try:
                values = self._read()
            except Exception:  # noqa: BLE001 - one missed sample is not worth a failed bench
                continue
            self.rows.append([time.perf_counter() - t0, *(v for pair in values for v in pair)])

    def header(self) -> str:
        return "t," + ",".join(f"util{i},mem_mib{i}" for i in range(self.count))

    def save(self, path) -> None:
        """The samples as CSV (time, then utilisation % and memory MiB per GPU)."""
        rows = np.array(self.rows, dtype=float).reshape(len(self.rows), 1 + 2 * self.count)
        np.savetxt(path, rows, delimiter=",", fmt="%.2f", header=self.header())

    def summary(self) -> dict:
        if not self.rows:
            return {"source": self.source, "util_mean": [], "util_peak": [], "mem_peak_mib": []}
        a = np.array(self.rows)
        n = self.count
        return {"source": self.source,
                "util_mean": [round(float(a[:, 1 + 2 * i].mean()), 1) for i in range(n)],
                "util_peak": [int(a[:, 1 + 2 * i].max()) for i in range(n)],
                "mem_peak_mib": [int(a[:, 2 + 2 * i].max()) for i in range(n)]}
