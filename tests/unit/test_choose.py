"""The race's choice rules (job/choose.py) as a table of cases: who wins, and which rule says so."""

from __future__ import annotations

import json

import pytest

from toren_action.job.choose import (
    Attempt,
    choose,
    markdown_table,
    parse_diffstat,
    parse_verification,
    pick,
    verification_counts,
    verification_outcome,
)


def att(n: int, state: str = "succeeded", *, fixed: int | None = None, broken: int = 0, outcome: str | None = None,
        lines: int = 10, cost: float | None = None, secs: float | None = 30.0, verify: bool = True,
        commit: str | None = "c", **kw) -> Attempt:
    verification = None
    if fixed is not None or outcome is not None:
        verification = {"outcome": outcome or "passed", "counts": {"fixed": fixed or 0, "broken": broken}}
    return Attempt(number=n, agent=kw.pop("agent", "shell"), state=state, commit=commit if state == "succeeded"
                   else None, verify_set=verify, verification=verification, insertions=lines, deletions=0,
                   cost_usd=cost, duration_s=secs, **kw)


CASES = [
    # (attempts, winner, the rule that decided)
    ([att(1, "no_changes"), att(2)], 2, "only one that passed"),
    ([att(1, "blocked_by_policy"), att(2, "failed", error="--verify exited with code 1"), att(3, "no_changes")],
     None, "no attempt passed"),
    ([att(1, fixed=1), att(2, fixed=3)], 2, "most tests fixed: attempt 2 (3 fixed) over attempt 1 (1 fixed)"),
    ([att(1, fixed=2, broken=1), att(2, fixed=2, broken=0)], 2, "fewest tests broken"),
    ([att(1, lines=40), att(2, lines=4)], 2, "smallest change: attempt 2 (4 lines)"),
    ([att(1, cost=0.5), att(2, cost=0.2)], 2, "cheapest: attempt 2 ($0.2000)"),
    ([att(1, cost=0.2), att(2, cost=None)], 1, "cheapest"),  # a known cost beats an unknown one
    ([att(1, secs=90), att(2, secs=20)], 2, "fastest"),
    ([att(1), att(2)], 1, "a tie with attempt 2 on every rule"),
    # a verification record that says failed beats nothing: the state alone is not enough
    ([att(1, outcome="failed"), att(2, fixed=0)], 2, "only one that passed"),
    ([att(1, outcome="error"), att(2, outcome="failed")], None, "no attempt passed"),
    # the order of the rules: a fix outweighs a smaller change, a smaller change a lower cost
    ([att(1, fixed=1, lines=500), att(2, fixed=0, lines=1)], 1, "most tests fixed"),
    ([att(1, lines=5, cost=9.0), att(2, lines=50, cost=0.01)], 1, "smallest change"),
    # without --verify any delivered change can win
    ([att(1, verify=False, lines=8), att(2, verify=False, lines=3)], 2, "smallest change"),
    ([], None, "no attempt passed"),
]


@pytest.mark.parametrize("attempts,winner,why", CASES)
def test_the_choice(attempts, winner, why):
    choice = choose(attempts)
    assert choice.winner == winner
    assert why in choice.why
    assert sorted(choice.order) == sorted(a.number for a in attempts)
    if winner:
        assert choice.order[0] == winner


def test_the_order_does_not_depend_on_the_input_order():
    attempts = [att(3, fixed=1), att(1, fixed=1, lines=2), att(2, "no_changes"), att(4, fixed=2, broken=1)]
    assert choose(attempts).order == choose(list(reversed(attempts))).order == (4, 1, 3, 2)


def test_reasons_name_why_each_loser_cannot_win():
    choice = choose([att(1, "blocked_by_policy"), att(2, "no_changes"), att(3, "cancelled"), att(4)])
    assert choice.reasons == {1: "blocked by the policy (never pushed)", 2: "changed nothing", 3: "ended cancelled"}


@pytest.mark.parametrize("raw,outcome,fixed", [
    (None, "passed", 0),  # no record: a succeeded job with --verify passed it
    ("{}", "passed", 0),
    ("not json", "passed", 0),
    ('{"outcome": "exploded", "counts": {"fixed": 2}}', "passed", 2),  # an unknown outcome: the state decides
    (json.dumps({"outcome": "failed", "counts": {"fixed": -3, "broken": True}}), "failed", 0),
    (json.dumps({"outcome": "passed", "counts": "lots"}), "passed", 0),
    ({"outcome": "passed", "counts": {"fixed": 4}}, "passed", 4),
    ([1, 2], "passed", 0),
])
def test_the_verification_is_read_defensively(raw, outcome, fixed):
    v = parse_verification(raw)
    assert verification_outcome("succeeded", v, True) == outcome
    assert verification_counts(v)["fixed"] == fixed
    assert set(verification_counts(v)) >= {"fixed", "broken", "total"}


def test_the_outcome_from_the_state_alone():
    assert verification_outcome("succeeded", None, False) is None  # no --verify: nothing was verified
    assert verification_outcome("verification_failed", None, True) == "failed"
    assert verification_outcome("failed", None, True, "--verify exited with code 1 on commit") == "failed"
    assert verification_outcome("failed", None, True, "running: the agent exited") is None
    assert verification_outcome("no_changes", None, True) is None


@pytest.mark.parametrize("stat,parsed", [
    (" a.py | 2 +-\n 1 file changed, 1 insertion(+), 1 deletion(-)", (1, 1, 1)),
    (" 3 files changed, 12 insertions(+)", (3, 12, 0)),
    (" 2 files changed, 7 deletions(-)", (2, 0, 7)),
    ("", (0, 0, 0)),
    (None, (0, 0, 0)),
    ("garbage | 99 files changed", (0, 0, 0)),
])
def test_parse_diffstat(stat, parsed):
    assert parse_diffstat(stat) == parsed


def test_pick():
    attempts = [att(1, fixed=1), att(2, outcome="failed"), att(3, "blocked_by_policy")]
    assert pick(attempts, 1, False).number == 1
    with pytest.raises(ValueError, match="there is no attempt 9"):
        pick(attempts, 9, False)
    with pytest.raises(ValueError, match="attempt 2 cannot be picked: verification failed; --force"):
        pick(attempts, 2, False)
    assert pick(attempts, 2, True).number == 2  # --force: a pushed commit whose verification failed
    for force in (False, True):  # never pushed: nothing to open a pull request from, --force or not
        with pytest.raises(ValueError, match="attempt 3 has no pushed commit"):
            pick(attempts, 3, force)


def test_the_markdown_table_is_inert():
    attempts = [att(1, fixed=1, model="@octocat|fixes #1", agent="claude"), att(2, "no_changes")]
    table = markdown_table(attempts, choose(attempts), links={1: "https://example.invalid/log/1"})
    rows = table.splitlines()
    assert rows[0].startswith("| # | agent | model | state | verify | fixed | broken | diff")
    assert rows[2].startswith("| [**1** ✔](https://example.invalid/log/1) | claude |")
    assert "@octocat" not in table and rows[2].count(" | ") == 10  # no mention; the model's "|" splits nothing
    assert "| 2 | shell | - | no_changes | - | 0 | 0 | - |" in table
    assert "Chosen: attempt 1 is the only one that passed" in table
