"""Sign-in for API clients: a bearer token from username and password, and its revocation."""

from __future__ import annotations

from fastapi import APIRouter, Response

from trialdesk.api.deps import ClientDep, CtxDep, TokenDep, TokenRequestDep
from trialdesk.api.schemas import TokenOut
from trialdesk.services.sessions import issue_token, resolve_token, revoke_token

router = APIRouter(prefix="/auth", tags=["auth"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"$ref": "#/components/schemas/TokenRequest"}}
            for media in ("application/json", "application/x-www-form-urlencoded")
        },
    }
}


@router.post("/token", response_model=TokenOut, openapi_extra=_BODY)
def create_token(ctx: CtxDep, body: TokenRequestDep, client: ClientDep) -> TokenOut:
    """Sign in. Every refusal is the same 401 (unknown name, wrong password or code, backing
    off after failures); failures are counted per client and name, and audited."""
    issued = issue_token(
        ctx, body.username, body.password, kind="api", client=client, totp=body.totp
    )
    return TokenOut(
        access_token=issued.token,
        token_type="bearer",
        expires_at=issued.expires_at,
        scope=issued.scope,
    )


@router.post("/revoke", status_code=204, response_class=Response)
def revoke(ctx: CtxDep, token: TokenDep) -> Response:
    """Sign out: the caller's own token stops working at once."""
    resolve_token(ctx, token, kind="api")  # an unknown or dead token is a 401, not a no-op
    # (an enrolment-only token may sign out too)
    revoke_token(ctx, token, kind="api")
    return Response(status_code=204)
