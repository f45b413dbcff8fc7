"""Every shape of the management API, defined once (pydantic models).

Request bodies and query strings are validated with these models, answers are serialised from
them, and the OpenAPI document (``openapi``) is generated from them, so the three cannot
disagree. The field rules come from the identity layer's own constants (name lengths,
password bounds, username and tenant patterns): that layer still checks them for the callers
that do not come through HTTP (``pangolin-gateway init``, the demo).

Bodies are strict: an unknown field, a wrong JSON type (``true`` is not a number, ``1`` is not
a string) or a missing required field is a 400 naming the field (``parsing``). Nothing here
has a field for a key digest or a password hash, so no answer can carry one.

(Over 300 lines on purpose: this file is the API's reference, every shape in one place.)
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from ..auth.authenticator import USAGE_DAYS_KEPT
from ..auth.authz import AccessLevel
from ..identity.grant_admin import MAX_LEVEL_NAME, MAX_LEVELS
from ..identity.grants import AccessRole, Grant, SubjectType
from ..identity.models import Role, ServiceUser, Tenant, User
from ..identity.passwords import MAX_PASSWORD, MIN_PASSWORD
from ..identity.service_users import MAX_DESCRIPTION, MAX_GRACE, MAX_NAME, MAX_NETWORKS
from ..identity.tenants import TENANT_NAME_PATTERN, TENANT_NAME_RULE
from ..identity.users import USERNAME_PATTERN, USERNAME_RULE
from ..routing import Action
from ..settings import NAME_RE
from ..store import AuditRecord
from .times import iso, parse_time

__all__ = (
    "MAX_PAGE",
    "NO_STORE",
    "AuditPage",
    "AuditQuery",
    "AuditRecordView",
    "Catalog",
    "CatalogList",
    "ChangePassword",
    "CreateGrant",
    "CreateRole",
    "CreateServiceUser",
    "CreateTenant",
    "CreateUser",
    "Error",
    "GrantList",
    "GrantQuery",
    "GrantSpec",
    "GrantView",
    "KeyAnswer",
    "Login",
    "LoginAnswer",
    "Me",
    "Paging",
    "RoleList",
    "RoleQuery",
    "RoleView",
    "ServiceUserAccess",
    "ServiceUserPage",
    "ServiceUserQuery",
    "ServiceUserView",
    "TenantList",
    "TenantView",
    "UpdateServiceUser",
    "UpdateUser",
    "Usage",
    "UsageDay",
    "UsageQuery",
    "UserPage",
    "UserView",
)

MAX_PAGE: Final = 1000
MAX_EXPIRES_IN: Final = 100 * 365 * 86400
# Answers that carry a one-time key or a session token must not be cached anywhere.
NO_STORE: Final = {"Cache-Control": "no-store"}


class _Body(BaseModel):
    """A request body: exactly the declared fields, strict JSON types, and ``null`` only for
    the fields in ``NULLABLE`` (an optional field may be left out, not set to null)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _refuse_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                if value is None and name in cls.model_fields and name not in cls.NULLABLE:
                    raise PydanticCustomError("null_forbidden", "must not be null", {"field": name})
        return data


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _time(field: str) -> BeforeValidator:
    """ISO 8601 text with a time zone, read to epoch seconds by the same function everywhere
    (parse_time), so the message names the field and an out-of-range year is a 400."""

    def read(value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"{field}: must be an ISO 8601 time such as 2027-01-31T00:00:00Z")
        return parse_time(field, value)

    return BeforeValidator(read)


_TIME_TEXT: Final = {"type": ["string", "null"], "format": "date-time"}
# A time in an answer: ISO 8601 in UTC with "Z", or null when there is none.
Time = Annotated[str | None, Field(json_schema_extra={"format": "date-time"})]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]
# Seconds from now; JSON has no infinity, and true is not a number (strict).
ExpiresIn = Annotated[
    float | None,
    Field(gt=0, le=MAX_EXPIRES_IN, allow_inf_nan=False, description="seconds from now"),
]
# Epoch seconds once read; ISO 8601 text with a time zone on the wire.
ExpiresAt = Annotated[float | None, _time("expires_at"), WithJsonSchema(_TIME_TEXT)]
# A service user's allowlist: where its key and tokens work from (empty: anywhere).
AllowedNetworks = Annotated[
    list[Annotated[str, Field(max_length=64)]],
    Field(
        max_length=MAX_NETWORKS,
        description="IP addresses or CIDRs (IPv4, IPv6); empty: from anywhere",
    ),
]
# Optional but never null: SkipJsonSchema keeps null out of the document, _refuse_nulls out
# of the input.
_Optional = SkipJsonSchema[None]


# Role names follow the tenant (and catalog) name rule.
RoleName = Annotated[str, Field(pattern=TENANT_NAME_PATTERN, description=TENANT_NAME_RULE)]
Level = Annotated[str, Field(min_length=1, max_length=MAX_LEVEL_NAME)]


class GrantSpec(_Body):
    """One action on one resource: a catalog (``*``: every catalog of the tenant), and in it
    nothing (the whole catalog), a namespace's levels, or those followed by a table's or
    view's name. A grant holds for everything below its resource; no globs inside names."""

    catalog: Annotated[
        str, Field(pattern=rf"^(\*|{NAME_RE.pattern})$", description="a catalog name, or *")
    ]
    resource: Annotated[list[Level], Field(max_length=MAX_LEVELS)] = []
    action: Action


# A service user's own rate limit: requests per second (0: none; null: the default) and its
# burst (null: the default).
RateLimit = Annotated[
    float | None,
    Field(ge=0, le=1e6, allow_inf_nan=False, description="requests/s; 0: none; null: default"),
]
RateBurst = Annotated[int | None, Field(ge=1, le=10_000_000, description="null: default")]


class CreateServiceUser(_Body):
    # null: never expires; the default rate limit
    NULLABLE = frozenset({"expires_at", "expires_in", "rate_limit", "rate_burst"})

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
    role: Role | _Optional = None
    description: Description = ""
    tenant: str | _Optional = None
    expires_at: ExpiresAt = None
    expires_in: ExpiresIn = None
    # Its rights in the same transaction: grants, and the names of roles of its tenant.
    grants: Annotated[list[GrantSpec], Field(max_length=1000)] = []
    roles: Annotated[list[RoleName], Field(max_length=100)] = []
    allowed_networks: AllowedNetworks = []
    rate_limit: RateLimit = None
    rate_burst: RateBurst = None


class CreateGrant(GrantSpec):
    """A grant to a service user or to a role (its id): exactly one of the two."""

    service_user: str | _Optional = None
    role: str | _Optional = None


class CreateRole(_Body):
    name: RoleName
    description: Description = ""
    tenant: str | _Optional = None


class UpdateServiceUser(_Body):
    # null: never expires; back to the default rate limit
    NULLABLE = frozenset({"expires_at", "expires_in", "rate_limit", "rate_burst"})

    description: Description | _Optional = None
    role: Role | _Optional = None
    active: bool | _Optional = None
    expires_at: ExpiresAt = None
    expires_in: ExpiresIn = None
    allowed_networks: AllowedNetworks | _Optional = None
    rate_limit: RateLimit = None
    rate_burst: RateBurst = None


class RotateKey(_Body):
    """An empty body (or none) rotates with no overlap: the old key dies at once."""

    grace_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=MAX_GRACE,
            allow_inf_nan=False,
            description="how long the old key (and its tokens) keep working; 0: not at all",
        ),
    ] = 0


class CreateUser(_Body):
    username: Annotated[str, Field(pattern=USERNAME_PATTERN, description=USERNAME_RULE)]
    password: Annotated[str, Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
    role: Role | _Optional = None
    tenant: str | _Optional = None


class UpdateUser(_Body):
    active: bool


class ChangePassword(_Body):
    password: Annotated[str, Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
    current_password: Annotated[str, Field(max_length=MAX_PASSWORD)] | _Optional = None


class Login(_Body):
    # No pattern or length rule here: a login answers one thing ("wrong username or
    # password") for every bad guess, and says nothing about which rule a guess broke.
    username: Annotated[str, Field(max_length=MAX_PASSWORD)]
    password: Annotated[str, Field(max_length=MAX_PASSWORD)]


class CreateTenant(_Body):
    name: Annotated[str, Field(pattern=TENANT_NAME_PATTERN, description=TENANT_NAME_RULE)]


# Query strings: every value arrives as text, so numbers are read from digits and booleans
# from exactly "true" or "false" (not pydantic's lax "yes", "on" or "1").
def _query_bool(value: object) -> object:
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError("must be true or false")
        return value.lower() == "true"
    return value


def _digits(value: object) -> object:
    # isascii: "²".isdigit() is true as well; int() refuses it.
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise ValueError("must be a whole number")
        return int(value)
    return value


QueryBool = Annotated[bool | _Optional, BeforeValidator(_query_bool)]


class Paging(_Body):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    limit: Annotated[int, Field(ge=1, le=MAX_PAGE), BeforeValidator(_digits)] = 100
    offset: Annotated[int, Field(ge=0, le=2**31), BeforeValidator(_digits)] = 0


# Seconds in a query: a whole number of them.
QuerySeconds = Annotated[
    int | _Optional, Field(ge=1, le=10 * 365 * 86400), BeforeValidator(_digits)
]


class ServiceUserQuery(Paging):
    active: QueryBool = None
    role: Role | _Optional = None
    tenant: str | _Optional = None
    # Stale ones: not used for this many seconds (never used: since they were made).
    unused_for: QuerySeconds = None
    # Those whose expiry falls within this many seconds from now.
    expiring_within: QuerySeconds = None


class Prune(_Body):
    """Deactivate the active service users not used for ``unused_for`` seconds."""

    unused_for: Annotated[
        int, Field(ge=86400, le=10 * 365 * 86400, description="seconds; at least a day")
    ]
    dry_run: bool = False
    tenant: str | _Optional = None  # Root only; a TenantAdmin prunes its own tenant


class UsageQuery(_Body):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    # Up to the days the store keeps (older counts are pruned).
    days: Annotated[
        int,
        Field(ge=1, le=USAGE_DAYS_KEPT, description="days up to today (UTC)"),
        BeforeValidator(_digits),
    ] = 14


class GrantQuery(_Body):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    service_user: str | _Optional = None
    role: str | _Optional = None
    catalog: str | _Optional = None


class RoleQuery(_Body):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    tenant: str | _Optional = None


class AuditQuery(Paging):
    actor: str | _Optional = None
    action: str | _Optional = None
    target: str | _Optional = None
    outcome: Literal["success", "failure"] | _Optional = None
    since: Annotated[
        float | _Optional, _time("since"), WithJsonSchema({"type": "string", "format": "date-time"})
    ] = None


class ServiceUserView(_Answer):
    """The public view of a service user: no key material beyond the public key id."""

    id: Annotated[str, Field(json_schema_extra={"format": "uuid"})]
    name: str
    description: str
    tenant: str
    role: Role
    key_id: str
    active: bool
    created_at: Time
    created_by: str | None
    expires_at: Time
    last_used_at: Time
    key_rotated_at: Time
    key_generation: int
    # The key the last rotation replaced, while its overlap is open: it (and its tokens)
    # stop working at previous_key_expires_at. Both null otherwise.
    previous_key_id: str | None
    previous_key_expires_at: Time
    allowed_networks: list[str]
    # Its own rate limit (requests/s, 0: none) and burst; null: the configured default.
    rate_limit: float | None
    rate_burst: int | None

    @classmethod
    def of(cls, user: ServiceUser, now: float, last_used_at: float | None) -> ServiceUserView:
        """``last_used_at``: a newer use still waiting in memory to be written."""
        last_used = max(filter(None, (user.last_used_at, last_used_at)), default=None)
        overlap = user.overlap_open(now)
        return cls(
            id=user.id, name=user.name, description=user.description,
            tenant=user.tenant_name, role=user.role, key_id=user.key_id, active=user.active,
            created_at=iso(user.created_at), created_by=user.created_by,
            expires_at=iso(user.expires_at), last_used_at=iso(last_used),
            key_rotated_at=iso(user.key_rotated_at), key_generation=user.key_generation,
            previous_key_id=user.previous_key_id if overlap else None,
            previous_key_expires_at=iso(user.previous_key_until) if overlap else None,
            allowed_networks=list(user.allowed_networks), rate_limit=user.rate_limit,
            rate_burst=user.rate_burst,
        )  # fmt: skip


class PruneAnswer(_Answer):
    """What a prune deactivated (or, with dry_run, would), and the last active Root it kept."""

    dry_run: bool
    deactivated: list[ServiceUserView]
    kept: list[ServiceUserView]


class UsageDay(_Answer):
    day: Annotated[str, Field(json_schema_extra={"format": "date"}, description="UTC day")]
    requests: int


class Usage(_Answer):
    """Authenticated requests of a service user per UTC day, oldest first, every day present
    (zero when there were none), counts not yet written by this process included."""

    days: list[UsageDay]


class UserView(_Answer):
    id: str
    username: str
    tenant: str
    role: Role
    active: bool
    created_at: Time
    created_by: str | None
    last_login_at: Time
    failed_logins: int
    password_changed_at: Time

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(
            id=user.id, username=user.username, tenant=user.tenant_name, role=user.role,
            active=user.active, created_at=iso(user.created_at), created_by=user.created_by,
            last_login_at=iso(user.last_login_at), failed_logins=user.failed_logins,
            password_changed_at=iso(user.password_changed_at),
        )  # fmt: skip


class TenantView(_Answer):
    id: str
    name: str
    created_at: Time

    @classmethod
    def of(cls, tenant: Tenant) -> TenantView:
        return cls(id=tenant.id, name=tenant.name, created_at=iso(tenant.created_at))


class KeyAnswer(_Answer):
    """Create and rotate: the only answers that carry a key (once, ``no-store``)."""

    service_user: ServiceUserView
    api_key: str


class LoginAnswer(_Answer):
    token: str
    token_type: Literal["bearer"]
    expires_in: int
    user: UserView


class GrantView(_Answer):
    id: str
    tenant_id: str
    subject_type: SubjectType
    subject_id: str
    catalog: str
    resource: list[str]
    action: Action
    on: Annotated[str, Field(description="catalog, or catalog:namespace.table")]
    created_at: Time
    created_by: str | None

    @classmethod
    def of(cls, grant: Grant) -> GrantView:
        return cls(
            id=grant.id, tenant_id=grant.tenant_id, subject_type=grant.subject_type,
            subject_id=grant.subject_id, catalog=grant.catalog, resource=list(grant.resource),
            action=grant.action, on=grant.on, created_at=iso(grant.created_at),
            created_by=grant.created_by,
        )  # fmt: skip


class GrantList(_Answer):
    items: list[GrantView]
    total: int


class RoleView(_Answer):
    id: str
    name: str
    description: str
    tenant: str
    created_at: Time
    created_by: str | None
    members: list[str]  # service user ids
    grants: list[GrantView]

    @classmethod
    def of(cls, role: AccessRole, members: list[str], grants: list[Grant]) -> RoleView:
        return cls(
            id=role.id, name=role.name, description=role.description, tenant=role.tenant_name,
            created_at=iso(role.created_at), created_by=role.created_by, members=members,
            grants=[GrantView.of(g) for g in grants],
        )  # fmt: skip


class RoleList(_Answer):
    items: list[RoleView]
    total: int


class ServiceUserAccess(_Answer):
    """What a service user may do beyond its catalogs' default access: its own grants, its
    roles, and everything it holds (own and roles' grants together)."""

    grants: list[GrantView]
    roles: list[RoleView]
    effective: list[GrantView]


class Me(_Answer):
    id: str
    name: str
    type: str
    role: Role
    tenant: str
    # Per catalog the caller may use: "full" (Root, TenantAdmin, or default_access "write"),
    # "read" or "none" (then only its grants count).
    access: dict[str, AccessLevel]
    # Everything the caller holds (own and roles' grants), as enforced now.
    grants: list[GrantView]


class AuditRecordView(_Answer):
    at: Time
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    tenant_id: str | None
    outcome: Annotated[str, Field(json_schema_extra={"enum": ["success", "failure"]})]
    client_addr: str | None
    user_agent: str | None
    detail: str | None

    @classmethod
    def of(cls, record: AuditRecord) -> AuditRecordView:
        return cls(
            at=iso(record.at), actor=record.actor, action=record.action,
            target_type=record.target_type, target_id=record.target_id,
            tenant_id=record.tenant_id, outcome=record.outcome,
            client_addr=record.client_addr, user_agent=record.user_agent, detail=record.detail,
        )  # fmt: skip


class _Page(_Answer):
    total: int
    limit: int
    offset: int


class ServiceUserPage(_Page):
    items: list[ServiceUserView]


class UserPage(_Page):
    items: list[UserView]


class AuditPage(_Page):
    items: list[AuditRecordView]


class TenantList(_Answer):
    items: list[TenantView]
    total: int


class Catalog(_Answer):
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    name: str
    tenant: str
    default: bool
    uri: str
    oauth2_server_uri: str = Field(serialization_alias="oauth2-server-uri")


class CatalogList(_Answer):
    catalogs: list[Catalog]


class ErrorDetail(_Answer):
    message: str
    type: str
    code: int


class Error(_Answer):
    """Every refusal, in the Iceberg REST error shape."""

    error: ErrorDetail
