"""Splitting an order refund across its gift card payments: exact to the cent, never more than a
payment's refundable amount, in the strategy's order."""

from __future__ import annotations

import itertools
import random

import pytest

from services.refund.split import (
    FIRST_PAID_FIRST, LAST_PAID_FIRST, PRO_RATA, Payment, RefundTooLarge, split_refund,
)

PAYMENTS = [Payment("t1", 1, 3000), Payment("t2", 2, 2000), Payment("t3", 3, 5000)]


def test_last_paid_first_refunds_the_latest_payment_first():
    assert split_refund(6000, PAYMENTS, LAST_PAID_FIRST) == [("t2", 1000), ("t3", 5000)]


def test_first_paid_first_refunds_the_oldest_payment_first():
    assert split_refund(4000, PAYMENTS, FIRST_PAID_FIRST) == [("t1", 3000), ("t2", 1000)]


def test_pro_rata_splits_in_proportion_with_cents_by_largest_remainder():
    assert split_refund(1000, PAYMENTS, PRO_RATA) == [("t1", 300), ("t2", 200), ("t3", 500)]
    # 100 over 3000/2000/5000 -> 30/20/50 exactly; 101 -> the extra cent to the largest remainder.
    assert split_refund(101, PAYMENTS, PRO_RATA) == [("t1", 30), ("t2", 20), ("t3", 51)]
    # Equal payments, 1 cent: the earlier payment takes it.
    assert split_refund(1, [Payment("a", 1, 500), Payment("b", 2, 500)], PRO_RATA) == [("a", 1)]


def test_payment_order_is_by_time_not_by_list_position():
    shuffled = [PAYMENTS[2], PAYMENTS[0], PAYMENTS[1]]
    assert split_refund(6000, shuffled, LAST_PAID_FIRST) == [("t2", 1000), ("t3", 5000)]


@pytest.mark.parametrize("strategy", [LAST_PAID_FIRST, FIRST_PAID_FIRST, PRO_RATA])
def test_more_than_refundable_is_refused_with_the_refundable_amount(strategy):
    with pytest.raises(RefundTooLarge) as caught:
        split_refund(10001, PAYMENTS, strategy)
    assert caught.value.refundable_minor == 10000


@pytest.mark.parametrize("strategy", [LAST_PAID_FIRST, FIRST_PAID_FIRST, PRO_RATA])
def test_parts_always_sum_to_the_amount_and_respect_each_payment(strategy):
    rng = random.Random(7)
    for _ in range(2000):
        payments = [Payment(f"t{i}", rng.randint(0, 5), rng.randint(0, 5000)) for i in range(rng.randint(1, 5))]
        total = sum(p.refundable_minor for p in payments)
        if total == 0:
            continue
        amount = rng.randint(1, total)
        parts = dict(split_refund(amount, payments, strategy))
        assert sum(parts.values()) == amount
        for payment in payments:
            assert 0 <= parts.get(payment.transaction_id, 0) <= payment.refundable_minor
