"""Where ../shared is present or CI=true, a skip CI has not accepted fails (tests/conftest.py)."""

from __future__ import annotations

import pytest

SUITE = '''
import pytest

def test_needs_a_missing_tool():
    pytest.skip("needs the frobnicate command line tool")

def test_on_a_kernel_that_ignores_the_hint():
    pytest.skip("this kernel ignores MADV_PAGEOUT")

@pytest.mark.skipif(True, reason="Linux madvise")
def test_linux_only():
    pass

@pytest.mark.xfail(reason="a known bug, not a skip")
def test_known_bug():
    assert False
'''

MISSING_MODULE = '''
import pytest
pytest.importorskip("edge_gesture_no_such_module", reason="needs an extra that is not installed")

def test_uses_it():
    pass
'''


@pytest.fixture
def suite(pytester, monkeypatch, tmp_path):
    """A small suite under the project's skip policy; `shared` says whether ../shared exists."""
    pytester.makeconftest(
        "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport  # noqa\n")
    pytester.makepyfile(test_suite=SUITE, test_missing_module=MISSING_MODULE)
    monkeypatch.delenv("CI", raising=False)

    def run(shared: bool, ci: bool = False):
        root = tmp_path / "shared"
        if shared:
            (root / "gesture-data").mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("EDGE_GESTURE_SHARED", str(root))
        if ci:
            monkeypatch.setenv("CI", "true")
        return pytester.runpytest("-p", "no:cacheprovider", "--continue-on-collection-errors")

    return run


def test_with_shared_present_an_unaccepted_skip_fails_and_says_why(suite):
    result = suite(shared=True)
    result.assert_outcomes(failed=1, skipped=2, xfailed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*skipped ('needs an extra that is not installed'), but ../shared is present*",
        "*skipped ('needs the frobnicate command line tool'), but ../shared is present*",
    ])


def test_on_ci_an_unaccepted_skip_fails_even_without_shared(suite):
    result = suite(shared=False, ci=True)
    result.assert_outcomes(failed=1, skipped=2, xfailed=1, errors=1)


def test_without_shared_outside_ci_skips_stay_skips(suite):
    result = suite(shared=False)
    result.assert_outcomes(skipped=4, xfailed=1)
