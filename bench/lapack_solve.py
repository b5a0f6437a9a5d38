"""External baseline for bench/solve: LAPACK (OpenBLAS) Cholesky solve via scipy (dpotrf + dpotrs).

Reads A (n x n) and R (n x rhs) as raw little-endian float64 from the paths given, prints one JSON line
{"ms": median, "runs": k, "method": ..., "kernel": ..., "relErrorVsGramfuse": ...}. "kernel" is the BLAS library and
the core type it runs, as threadpoolctl reports them ("unknown (threadpoolctl missing)" without it). bench/solve
runs this with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (see ../shared/PLATFORM.md): they slow a current
OpenBLAS down.
"""
import json
import sys
import time

import numpy as np

n, rhs, a_path, r_path, x_path, runs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
a = np.fromfile(a_path, dtype="<f8").reshape(n, n)
r = np.fromfile(r_path, dtype="<f8").reshape(n, rhs)
try:
    from scipy.linalg import cho_factor, cho_solve

    def solve():
        return cho_solve(cho_factor(a, lower=True, check_finite=False), r, check_finite=False)

    method = "scipy cho_factor+cho_solve (LAPACK dpotrf+dpotrs)"
except ImportError:
    def solve():
        return np.linalg.solve(a, r)

    method = "numpy.linalg.solve (LAPACK dgesv, LU)"
times = []
x = None
for _ in range(runs):
    t = time.perf_counter()
    x = solve()
    times.append((time.perf_counter() - t) * 1000)
try:
    from threadpoolctl import threadpool_info

    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    kernel = ", ".join(f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')} ({p.get('num_threads')} threads)" for p in blas) or "none found"
except ImportError:
    kernel = "unknown (threadpoolctl missing)"
ours = np.fromfile(x_path, dtype="<f8").reshape(n, rhs)
print(json.dumps({"ms": float(np.median(times)), "runs": runs, "method": method, "kernel": kernel, "relErrorVsGramfuse": float(np.linalg.norm(x - ours) / np.linalg.norm(x))}))
