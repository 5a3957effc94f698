"""Model tests run their tiny batches on one thread.

With batches of one or two images every op is tiny: a second OpenMP thread only adds a barrier per
op, and on a shared, oversubscribed 2-core machine each barrier can wait a whole scheduler slice for
the other thread (measured here: DenseNet-BC-100 forward 0.03 s on 1 thread, 5.4 s on 2).
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
