"""The acceptance suite: the hostile-user tours (issues 10, 21 and 29), one test per case, grouped
by kind (security, data loss, silent, traceback, hang), under the `acceptance` marker:

    python -m pytest -m acceptance            # just this suite
    python -m pytest -m "not acceptance"      # everything else

cases.tsv lists every case (group, kind, case) so that tests are known before the tour runs; a case
fails when it is not ok, when its group no longer yields it, or when its group breaks, and
test_every_case_is_listed fails when a group yields a case the listing lacks. After adding or
renaming cases, rewrite the listing with DLSR_ACCEPTANCE_RECORD=1 and review its diff.

The groups share one environment (tour.Env: a tiny run and bundle) and run once each, in the tour's
order, whichever test asks first."""

import os
import shutil
from pathlib import Path

import cases_export
import cases_files
import cases_findings
import cases_inputs
import cases_loading
import cases_ray
import cases_service
import cases_trust
import pytest
from tour import KINDS, Env

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

# the order of the tours as they were written: later groups may use what earlier ones made
GROUPS = [
    *cases_trust.GROUPS,
    *cases_service.GROUPS,
    *cases_export.GROUPS,
    *cases_inputs.GROUPS,
    *cases_ray.GROUPS,
    *cases_loading.GROUPS,
    *cases_files.GROUPS,
    *cases_findings.GROUPS,
]
NEEDS_RAY = {"ray_resume", "serve_ray"}
LISTING = Path(__file__).with_name("cases.tsv")


def _listing() -> list:
    rows = [line.split("\t") for line in LISTING.read_text().splitlines() if line.strip()]
    return [tuple(r) for r in rows]


class Tour:
    """Runs each group once, in order, in one temporary environment with its own cache root (the
    verdict cases edit cached verdicts, which must be the tour's, never the user's)."""

    def __init__(self, d: Path):
        self.d, self.env, self.done, self.next = d, None, {}, 0

    def rows(self, group: str):
        """The rows of a group: a list of dicts, an exception the group raised, or a skip reason."""
        names = [g.__name__ for g in GROUPS]
        if group not in names:
            return KeyError(f"no group named {group!r} (groups: {names})")
        while group not in self.done:
            g = GROUPS[self.next]
            self.next += 1
            self.done[g.__name__] = self._run(g)
        return self.done[group]

    def _run(self, g):
        if g.__name__ in NEEDS_RAY:
            try:
                import ray  # noqa: F401
            except ImportError:
                return "ray is not installed (pip install -e '.[ray]')"
        old = os.environ.get("DLSR_CACHE")
        os.environ["DLSR_CACHE"] = str(self.d / "cache")
        try:
            if self.env is None:
                self.env = Env(self.d)
            rows = [dict(zip(("kind", "case", "expected", "ok", "got"), c)) for c in g(self.env)]
            for r in rows:  # a case named after a path of this run is listed with TMP in its place
                r["case"] = r["case"].replace(str(self.d), "TMP")
            return rows
        except Exception as exc:  # the group broke: each of its cases fails with this
            return exc
        finally:
            if old is None:
                os.environ.pop("DLSR_CACHE", None)
            else:
                os.environ["DLSR_CACHE"] = old


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    d = tmp_path_factory.mktemp("acceptance")
    yield Tour(d)
    shutil.rmtree(d, ignore_errors=True)


def _check(tour: Tour, group: str, kind: str, case: str) -> None:
    rows = tour.rows(group)
    if isinstance(rows, str):
        pytest.skip(rows)
    if isinstance(rows, BaseException):
        raise AssertionError(f"group {group} broke before yielding its cases: {rows!r}") from rows
    found = [r for r in rows if r["case"] == case]
    assert found, f"group {group} no longer yields the case {case!r}"
    r = found[0]
    assert r["kind"] == kind, f"{case!r} is now of kind {r['kind']!r}, listed as {kind!r}"
    assert r["ok"], f"{case}: expected {r['expected']}; got {r['got']}"


def _params(kind: str):
    return [pytest.param(g, c, id=f"{g}: {c}") for g, k, c in _listing() if k == kind]


@pytest.mark.parametrize("group,case", _params("security"))
def test_security(tour, group, case):
    _check(tour, group, "security", case)


@pytest.mark.parametrize("group,case", _params("data loss"))
def test_data_loss(tour, group, case):
    _check(tour, group, "data loss", case)


@pytest.mark.parametrize("group,case", _params("silent"))
def test_silent(tour, group, case):
    _check(tour, group, "silent", case)


@pytest.mark.parametrize("group,case", _params("traceback"))
def test_traceback(tour, group, case):
    _check(tour, group, "traceback", case)


@pytest.mark.parametrize("group,case", _params("hang"))
def test_hang(tour, group, case):
    _check(tour, group, "hang", case)


def test_every_case_is_listed(tour):
    """What the groups yield is exactly cases.tsv (DLSR_ACCEPTANCE_RECORD=1 rewrites it)."""
    produced = []
    for g in GROUPS:
        rows = tour.rows(g.__name__)
        if isinstance(rows, str):
            produced += [r for r in _listing() if r[0] == g.__name__]  # skipped group: keep its listing
        elif isinstance(rows, BaseException):
            raise AssertionError(f"group {g.__name__} broke: {rows!r}") from rows
        else:
            produced += [(g.__name__, r["kind"], r["case"]) for r in rows]
    assert all(k in KINDS for _, k, _ in produced), "a case of an unknown kind"
    assert len(set(produced)) == len(produced), "two cases of one group share a name"
    if os.environ.get("DLSR_ACCEPTANCE_RECORD"):
        LISTING.write_text("".join("\t".join(r) + "\n" for r in produced))
    assert produced == _listing(), "cases.tsv is out of date (rewrite it with DLSR_ACCEPTANCE_RECORD=1)"
