"""Shared by the model-family tests: one intra-op thread.

The families' test models are tiny; on a small shared machine an oversubscribed thread pool makes
their many small ops several times slower (measured 5-100x), so every test here runs on one thread
and restores the count afterwards.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
