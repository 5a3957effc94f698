"""docs/troubleshooting.md is the case list of these tests, written out: it cannot drift from them."""

from tests.faults.cases import KINDS, PAGE, all_cases, page


def test_every_kind_has_cases_and_the_page_is_up_to_date():
    cases = all_cases()
    assert set(cases) == set(KINDS) and all(cases.values())
    assert sum(len(c) for c in cases.values()) >= 60
    assert PAGE.read_text() == page(), "run `make docs` (python -m tests.faults.cases) and commit the page"
