"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run (a CI run must not find a new example by
# chance and fail where the last one passed); the database is off so no state leaks between runs.
settings.register_profile("qbook", derandomize=True, database=None)
settings.load_profile("qbook")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """One torch thread, as the notebooks use: on a shared 2-core machine more threads thrash."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def pytest_configure(config: pytest.Config) -> None:
    # Registered here because pyproject.toml is shared; `-m "not slow"` skips the tests over a minute.
    config.addinivalue_line("markers", "slow: takes more than a minute (full-size models, tests/test_fullsize.py)")
