"""The two error trees and their one translation into Iceberg JSON answers."""

from __future__ import annotations

import json

import pytest

from gateway.errors import (
    AlreadyExists,
    BadRequest,
    Conflicting,
    DomainError,
    InvalidInput,
    LoginFailed,
    NoSuchThing,
    describe,
    error_response,
)
from gateway.store import InUse, LastRoot


@pytest.mark.parametrize(
    ("error", "status", "type_", "message"),
    [
        (InvalidInput("name", "must not be empty"), 400, "BadRequestException",
         "name: must not be empty"),
        (NoSuchThing("service user"), 404, "NotFoundException", "No such service user"),
        (NoSuchThing("tenant", field="tenant"), 404, "NotFoundException",
         "tenant: no such tenant"),
        (AlreadyExists("username: already taken"), 409, "AlreadyExistsException",
         "username: already taken"),
        (Conflicting("Cannot delete the tenant: it is in use"), 409, "ConflictException",
         "Cannot delete the tenant: it is in use"),
        (InUse("Cannot delete the tenant: it still has 1 users"), 409, "ConflictException",
         "Cannot delete the tenant: it still has 1 users"),
        (BadRequest("Malformed request"), 400, "BadRequestException", "Malformed request"),
        (LoginFailed(), 401, "NotAuthorizedException", "Invalid username or password"),
    ],
)  # fmt: skip
def test_every_refusal_becomes_one_iceberg_answer(
    error: DomainError | BadRequest, status: int, type_: str, message: str
) -> None:
    assert describe(error) == (status, type_, message)
    response = error_response(error)
    assert response.status == status
    assert response.text is not None
    assert json.loads(response.text) == {
        "error": {"message": message, "type": type_, "code": status}
    }


def test_the_last_root_refusal_says_what_must_remain() -> None:
    status, _, message = describe(LastRoot())
    assert status == 409 and "without an expiry must remain" in message


def test_domain_errors_stay_catchable_as_the_builtin_kinds_they_are() -> None:
    # Callers outside HTTP (the CLI, the demo) may catch LookupError / ValueError.
    assert isinstance(NoSuchThing("user"), LookupError)
    assert isinstance(InvalidInput("f", "bad"), ValueError)
