"""Streaming values to writers: order, the read-ahead of large tensors past the small ones
between them, the bound on values held, and a computation read from two threads."""

from __future__ import annotations

import threading
import time
import weakref

import numpy as np

from convert.core.tensor import Tensor
from convert.io import stream
from convert.rules import ops
from convert.rules.derive import derive

LARGE = stream.INLINE_BYTES // 4 * 2  # float32 elements of a tensor read ahead


class _Log:
    """Loaders that record when each read starts and how many large values are alive."""

    def __init__(self):
        self.started: list[str] = []
        self.alive = 0
        self.most_alive = 0
        self.lock = threading.Lock()

    def tensor(self, name: str, size: int) -> Tensor:
        def load() -> np.ndarray:
            with self.lock:
                self.started.append(name)
            time.sleep(0.01)  # (a read that takes a while)
            value = np.full(size, len(name), np.float32)
            if size >= LARGE:
                with self.lock:
                    self.alive += 1
                    self.most_alive = max(self.most_alive, self.alive)
                weakref.finalize(value, self._gone)
            return value

        return Tensor(np.float32, (size,), load, {"key": name})

    def _gone(self) -> None:
        with self.lock:
            self.alive -= 1


def test_values_come_in_order_and_the_next_kernel_is_read_past_the_biases():
    log = _Log()
    names = []
    tensors = []
    for i in range(4):
        for part, size in (("kernel", LARGE), ("bias", 4), ("norm", 4)):
            names.append(f"{i}.{part}")
            tensors.append(log.tensor(names[-1], size))
    seen = []
    for tensor, value in stream.values(tensors):
        seen.append(tensor.meta["key"])
        assert value.shape == tensor.shape
        if tensor.meta["key"].endswith("kernel") and tensor is not tensors[-3]:
            # when a kernel is handed out, the next one's read has started already
            nxt = f"{int(tensor.meta['key'][0]) + 1}.kernel"
            deadline = time.monotonic() + 5
            while nxt not in log.started and time.monotonic() < deadline:
                time.sleep(0.001)
            assert nxt in log.started
        del value
    assert seen == names
    assert log.most_alive <= 2  # the one written and the one read ahead


def test_small_tensors_alone_are_read_in_place():
    log = _Log()
    tensors = [log.tensor(f"t{i}", 3) for i in range(50)]
    main = threading.current_thread()
    readers = []
    original = Tensor.read

    def read(self):
        readers.append(threading.current_thread())
        return original(self)

    Tensor.read = read
    try:
        assert [t.meta["key"] for t, _ in stream.values(tensors)] == [f"t{i}" for i in range(50)]
    finally:
        Tensor.read = original
    assert all(r is main for r in readers)


def test_a_computation_read_from_two_threads_is_computed_once():
    calls = []
    source = np.arange(LARGE + 6, dtype=np.float32)

    def load():
        calls.append(1)
        time.sleep(0.02)
        return source

    tensor = Tensor(np.float32, source.shape, load, {"key": "fused"})
    big, small = derive([tensor], ops.Chain([ops.Split(0, (LARGE, 6))]))
    results = {}
    threads = [
        threading.Thread(target=lambda t=t, n=n: results.__setitem__(n, t.read()))
        for n, t in (("big", big), ("small", small))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert np.array_equal(np.concatenate([results["big"], results["small"]]), source)
