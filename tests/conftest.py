"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: the 2-core CI is shared with other jobs, and oversubscribed threads slow
    the small iterative loops of the inversion tests several times over. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
