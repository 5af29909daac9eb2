"""The suite's own set-up: under `--dist loadgroup` (the README's test command) the tests of one
xdist group run on one worker, so the session's smoke run is trained once."""
import os

import pytest


@pytest.mark.xdist_group("smoke-run")
def test_xdist_groups_reach_the_scheduler(request):
    """pytest-xdist 3.8 appends the group to the test id, which pytest 9 no longer reads: the
    groups would be ignored silently and every worker would train its own smoke run."""
    if not (os.environ.get("PYTEST_XDIST_WORKER") and getattr(request.config.option, "loadgroup", False)):
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@smoke-run"), (
        f"--dist loadgroup ignored this test's xdist_group (id {request.node.nodeid!r}); install the test "
        "extras as the README says (pytest < 9)")
