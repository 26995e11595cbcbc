"""The token check: Bearer, or HTTP Basic with the token as password (A1111 clients' --api-auth)."""

import base64

import pytest

from ldmkit.serve.guard import _token_matches


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("header, ok", [
    ("Bearer s3cret", True),
    ("bearer s3cret", True),
    (basic("user:s3cret"), True),
    (basic(":s3cret"), True),
    (basic("s3cret:other"), False),  # the token as user name is not the password
    (basic("user:s3cre"), False),
    ("Basic !!!not-base64", False),
    ("Bearer s3cret2", False),
    ("Token s3cret", False),
    ("s3cret", False),
    ("", False),
])
def test_token_forms(header, ok):
    assert _token_matches(header, "s3cret") is ok
