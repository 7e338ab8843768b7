"""pytest-benchmark suites. Peers (CP-SAT, HiGHS, cvxpy) are slow: they run only with
--peers, on the same instances as ours, one round each."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--peers", action="store_true", default=False,
                     help="also benchmark the peer solvers (slow)")


@pytest.fixture
def peers_enabled(request):
    if not request.config.getoption("--peers"):
        pytest.skip("peer solvers run only with --peers")
