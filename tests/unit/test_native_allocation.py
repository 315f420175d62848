"""Native e-gift allocation: Luhn-valid numbers under the program prefix, program validation."""

from __future__ import annotations

import pytest

from gateway.adapters.native.allocation import Program, draw_credentials, luhn_check_digit, luhn_valid


@pytest.mark.parametrize("number", ["4111111111111111", "79927398713", "6011000990139424", "378282246310005"])
def test_known_valid_numbers_pass_luhn(number):
    assert luhn_valid(number)
    assert luhn_check_digit(number[:-1]) == number[-1]


@pytest.mark.parametrize("number", ["4111111111111112", "79927398710", "", "12a4"])
def test_invalid_numbers_fail_luhn(number):
    assert not luhn_valid(number)


def test_drawn_numbers_are_luhn_valid_with_prefix_and_length():
    program = Program.parse("p", {"prefix": "603572", "number_length": 19, "pin_digits": 6})
    for _ in range(500):
        creds = draw_credentials(program)
        assert creds.card_number.startswith("603572") and len(creds.card_number) == 19
        assert luhn_valid(creds.card_number)
        assert len(creds.pin) == 6 and creds.pin.isdigit() and creds.cvv2 == "" and creds.claim_url == ""


def test_cvv2_and_claim_link_programs():
    cvv2 = draw_credentials(Program.parse("c", {"prefix": "6035", "cvv2": True}))
    assert len(cvv2.cvv2) == 3 and cvv2.pin == "" and cvv2.ledger_pin == cvv2.cvv2
    claim = draw_credentials(Program.parse("l", {"prefix": "6035", "claim_links": True, "claim_url_base": "https://c/"}))
    assert claim.claim_url.startswith("https://c/") and claim.pin == "" and claim.ledger_pin is None
    assert claim.proxy_number.isdigit() and claim.proxy_number != claim.card_number


def test_secrets_stay_out_of_reprs():
    creds = draw_credentials(Program.parse("p", {"prefix": "603572", "pin_digits": 8}))
    assert creds.card_number not in repr(creds) and creds.pin not in repr(creds)


@pytest.mark.parametrize(
    "options",
    [{"prefix": "60a5"}, {"prefix": ""}, {"prefix": "6035720000"}, {"prefix": "6035", "number_length": 30},
     {"prefix": "6035", "pin_digits": 20}, {"prefix": "6035", "claim_links": True}],
)
def test_bad_programs_are_refused_at_startup(options):
    with pytest.raises(ValueError):
        Program.parse("p", options)
