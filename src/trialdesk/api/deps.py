"""What every route needs, as ``Annotated`` aliases: the services' context, the signed-in
actor (bearer token), the study named in the path, a page window.

Nothing here decides access: the token is resolved by the sessions service and the study by
:func:`trialdesk.services.setup.resolve_study`, which only finds studies the actor holds a role
in; each service then checks role, site, state and blinding itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from trialdesk.api.schemas import DEFAULT_LIMIT, MAX_LIMIT, TokenRequest
from trialdesk.bootstrap import Runtime
from trialdesk.domain.errors import AuthenticationFailed, ValidationFailed
from trialdesk.services.access import Actor
from trialdesk.services.context import ServiceContext
from trialdesk.services.request_context import RequestContext, resolve_request, study_of
from trialdesk.services.sessions import TokenSession
from trialdesk.services.setup import StudyInfo

_bearer = HTTPBearer(auto_error=False, description="a token from POST /api/v1/auth/token")


async def get_ctx(request: Request) -> ServiceContext:
    runtime: Runtime = request.app.state.runtime
    return runtime.context


CtxDep = Annotated[ServiceContext, Depends(get_ctx)]


async def get_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The raw bearer token; a missing or non-bearer header is one 401 problem."""
    if credentials is None or not credentials.credentials:
        raise AuthenticationFailed("not signed in: send 'Authorization: Bearer <token>'")
    return credentials.credentials


TokenDep = Annotated[str, Depends(get_token)]


def get_request_context(request: Request, ctx: CtxDep, token: TokenDep) -> RequestContext:
    """The token's session and the study of the path, in one read transaction: the one
    dependency of a request that waits on the database (issue 13)."""
    return resolve_request(ctx, token, kind="api", study_code=request.path_params.get("study"))


RequestContextDep = Annotated[RequestContext, Depends(get_request_context)]


async def get_any_session(context: RequestContextDep) -> TokenSession:
    """The token's session, also one good for second-factor enrolment only."""
    return context.signed_in


AnySessionDep = Annotated[TokenSession, Depends(get_any_session)]


async def get_session(session: AnySessionDep) -> TokenSession:
    """A full session: a token of a user who must still enrol a second factor is refused."""
    if session.scope != "full":
        raise AuthenticationFailed(
            "your roles need a second factor: enrol one first (POST /api/v1/me/totp, then "
            "POST /api/v1/me/totp/confirm)"
        )
    return session


async def get_actor(session: Annotated[TokenSession, Depends(get_session)]) -> Actor:
    return session.actor


async def client_of(request: Request) -> str:
    """The client a sign-in comes from, for throttling (the peer address)."""
    return request.client.host if request.client else "unknown"


ClientDep = Annotated[str, Depends(client_of)]


ActorDep = Annotated[Actor, Depends(get_actor)]


async def get_study(
    context: RequestContextDep,
    actor: ActorDep,
    study: Annotated[str, Path(min_length=1, max_length=40, description="the study code")],
) -> StudyInfo:
    """The study in the path; one the actor holds no role in is 'not found' (PROT-1)."""
    return study_of(context, study)


StudyDep = Annotated[StudyInfo, Depends(get_study)]


@dataclass(frozen=True)
class Window:
    offset: int
    limit: int


async def get_window(
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Window:
    return Window(offset=offset, limit=limit)


WindowDep = Annotated[Window, Depends(get_window)]


async def token_request(request: Request) -> TokenRequest:
    """Username and password from a form (OAuth2 password style) or from JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data: Any
    if content_type in {"application/x-www-form-urlencoded", "multipart/form-data"}:
        form = await request.form()
        data = {k: v for k, v in form.items() if k in {"username", "password", "totp"}}
    else:
        try:
            data = await request.json()
        except ValueError:
            raise ValidationFailed(
                "send username and password as JSON or as a form",
                {"body": "not JSON or a form"},
            ) from None
    if not isinstance(data, dict):
        raise ValidationFailed("send username and password", {"body": "not an object"})
    data = {k: data.get(k) for k in ("username", "password", "totp")}
    try:
        return TokenRequest.model_validate(data)
    except ValidationError as exc:
        problems = {
            ".".join(str(p) for p in err["loc"]) or "body": err["msg"] for err in exc.errors()
        }
        raise ValidationFailed("username and password are required", problems) from None


TokenRequestDep = Annotated[TokenRequest, Depends(token_request)]
