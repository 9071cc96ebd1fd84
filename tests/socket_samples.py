"""What the client processes of tests/test_sources_socket.py push: sample i of client k, reproducible."""

import numpy as np


def expected(k: int, i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 * k + i)
    out = {"id": np.array([k, i], np.int32), "act": rng.standard_normal((2, 3 + i)).astype(np.float32),
           "q": rng.integers(-128, 128, 40, dtype=np.int8), "be": np.arange(4, dtype=">f8") * i}
    if i % 5 == 0:
        out["big"] = rng.standard_normal(50_000).astype(np.float32)  # 200 kB: many frames
    return out
