"""Fixtures for the real-browser tests (see harness.py); every test here is marked ``browser``."""
import pytest
from harness import browser_artifacts, browser_context, lab, lab_page, voila_page  # noqa: F401


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
