"""The next-step decision of a dunning case, on its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from billing.dunning.decide import (
    Action,
    Case,
    Email,
    Policy,
    Step,
    after_failure,
    at_waiting_slot,
    slot_time,
)
from billing.payments.declines import FailureClass

T0 = datetime(2026, 11, 2, tzinfo=UTC)
POLICY = Policy(retry_schedule_days=(3, 5, 7))
SOFT, HARD, ACTION = FailureClass.SOFT, FailureClass.HARD, FailureClass.ACTION_REQUIRED


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def case(next_slot: int = 0, final_notice_sent: bool = False) -> Case:
    return Case(T0, next_slot, final_notice_sent)


def test_soft_declines_are_retried_at_the_offsets_from_the_first_failure_with_a_final_notice() -> None:
    assert after_failure(POLICY, case(), SOFT, T0) == Step(Email.PAYMENT_FAILED, 0, day(3), Action.RETRY)
    assert after_failure(POLICY, case(1), SOFT, day(3)) == Step(Email.PAYMENT_FAILED, 1, day(5), Action.RETRY)
    # The retry before the last failed: the last one is next, so the customer gets the final notice.
    assert after_failure(POLICY, case(2), SOFT, day(5)) == Step(Email.FINAL_NOTICE, 2, day(7), Action.RETRY)
    last = after_failure(POLICY, case(3, final_notice_sent=True), SOFT, day(7))
    assert last == Step(None, 3, None, None) and last.exhausted


def test_hard_declines_wait_for_a_new_method_while_the_slots_pass() -> None:
    first = after_failure(POLICY, case(), HARD, T0)
    assert first == Step(Email.PAYMENT_FAILED, 0, day(3), Action.WAIT)
    assert at_waiting_slot(POLICY, case(0), day(3)) == Step(None, 1, day(5), Action.WAIT)
    assert at_waiting_slot(POLICY, case(1), day(5)) == Step(Email.FINAL_NOTICE, 2, day(7), Action.WAIT)
    assert at_waiting_slot(POLICY, case(2, final_notice_sent=True), day(7)).exhausted


def test_authentication_required_asks_the_customer_to_act() -> None:
    assert after_failure(POLICY, case(), ACTION, T0) == Step(
        Email.PAYMENT_ACTION_REQUIRED, 0, day(3), Action.WAIT
    )


def test_a_retry_after_a_new_card_does_not_use_a_slot_and_the_schedule_goes_on() -> None:
    # Card replaced on day 4 (after the day-3 slot passed while waiting): its retry fails softly.
    assert after_failure(POLICY, case(1), SOFT, day(4)) == Step(Email.PAYMENT_FAILED, 1, day(5), Action.RETRY)


def test_slots_missed_while_an_outcome_was_unknown_pass() -> None:
    assert after_failure(POLICY, case(), SOFT, day(5.5)) == Step(Email.FINAL_NOTICE, 2, day(7), Action.RETRY)
    exhausted = after_failure(POLICY, case(), SOFT, day(8))
    assert exhausted.exhausted and exhausted.email is Email.PAYMENT_FAILED  # never told: told now


def test_an_empty_schedule_exhausts_at_the_first_failure_and_one_retry_is_announced_as_final() -> None:
    assert after_failure(Policy(retry_schedule_days=()), case(), SOFT, T0) == Step(
        Email.PAYMENT_FAILED, 0, None, None
    )
    one = Policy(retry_schedule_days=(4,))
    assert after_failure(one, case(), SOFT, T0) == Step(Email.FINAL_NOTICE, 0, day(4), Action.RETRY)


@given(
    schedule=st.lists(st.integers(1, 60), min_size=1, max_size=8, unique=True).map(sorted),
    failures=st.lists(st.sampled_from([SOFT, HARD, ACTION]), min_size=1, max_size=12),
)
def test_a_case_always_ends_sends_one_final_notice_and_never_acts_before_its_slot(
    schedule: list[int], failures: list[FailureClass]
) -> None:
    """Walk a case through failures at each next action; it must end, in order, with one final notice."""
    policy = Policy(retry_schedule_days=tuple(schedule))
    state, now, emails = case(), T0, []
    step = after_failure(policy, state, failures[0], now)
    for failure in [*failures[1:], *[SOFT] * (len(schedule) + 2)]:
        emails.append(step.email)
        state = Case(T0, step.next_slot, state.final_notice_sent or step.email is Email.FINAL_NOTICE)
        if step.exhausted:
            break
        assert step.next_action_at is not None and step.next_action_at > now
        assert step.next_action_at == slot_time(policy, state, step.next_slot)
        now = step.next_action_at
        if step.action is Action.WAIT:
            step = at_waiting_slot(policy, state, now)
        else:
            state = Case(T0, state.next_slot + 1, state.final_notice_sent)
            step = after_failure(policy, state, failure, now)
    assert step.exhausted
    assert emails.count(Email.FINAL_NOTICE) == 1
    assert (
        emails.index(Email.FINAL_NOTICE) == len(emails) - 1
        or emails[-1] is None
        or Email.FINAL_NOTICE in emails
    )
