"""The fault-injection suite (:mod:`fault_injection`): every fault and bad input gets its expected outcome.

Kills, flipped bits, truncated files, a full and a read-only file system, two commands at once, bad settings and
labels, each driven through the ``cac-jax`` command on digits or small synthetic data. A case passes when the
command fails with one line naming the problem, or absorbs the fault and a rerun ends with the uninterrupted run's
results, or accepts an odd input and gives the right result -- whichever the case expects; never a traceback, a
hang, a corrupted file or a silently wrong number. ``python tests/fault_injection.py`` prints the same cases as a
table (and ``--code DIR`` for another checkout).
"""

import pytest

import fault_injection as fi


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("faults_shared")


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in fi.CASES if not c.run_by], ids=[c.name for c in fi.CASES if not c.run_by])
def test_fault(case, shared, tmp_path):
    out = fi.run_case(case, fi.ROOT, shared, keep=tmp_path)
    if out.kind == "unavailable":
        pytest.skip(out.detail)
    assert out.kind == case.expected, f"{case.name}: {out.kind} ({fi.OUTCOMES.get(out.kind)}): {out.detail}"


def test_every_group_of_the_issue_has_cases():
    groups = {c.group for c in fi.CASES}
    assert groups == {"silently wrong", "concurrency", "corrupted caches", "messages", "promised commands"}
    assert len({c.name for c in fi.CASES}) == len(fi.CASES)
    assert {c.expected for c in fi.CASES} <= {"one_line", "recovered", "harmless"}
