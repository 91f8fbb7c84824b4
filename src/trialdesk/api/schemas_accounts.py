"""Request and response models of the account, administration and approval routes (issue 12).
No response carries a link token, and an invitation's answer never says whether the address
already has an account."""

from __future__ import annotations

from pydantic import BaseModel, Field

from trialdesk.api.schemas import Password, _In


class RoleHeldPublic(BaseModel):
    role: str
    site: str | None = None


class UserPublic(BaseModel):
    username: str
    full_name: str
    active: bool
    roles: list[RoleHeldPublic]
    locked_until: str | None = Field(
        default=None, description="while sign-in for the name backs off for new clients"
    )
    email: str | None = None
    totp: bool = False
    pending: list[RoleHeldPublic] = Field(
        default_factory=list, description="roles awaiting a second person's approval"
    )


class InviteIn(_In):
    email: str = Field(min_length=3, max_length=254)
    full_name: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=20)
    site: str | None = Field(default=None, max_length=40)


class InvitationPublic(BaseModel):
    id: int
    email: str
    full_name: str
    role: str
    site: str | None
    status: str = Field(
        description="awaiting_approval, sent, accepted, rejected, cancelled or expired"
    )
    invited_by: str
    created_at: str
    expires_at: str | None


class GrantIn(_In):
    role: str = Field(min_length=1, max_length=20)
    site: str | None = Field(default=None, max_length=40)


class ResetSentPublic(BaseModel):
    sent_to: str = Field(description="the user's own address on file")


class ApprovalPublic(BaseModel):
    id: int
    role: str
    site: str | None
    grantee: str
    requested_by: str
    requested_at: str
    status: str
    decided_by: str | None = None
    decided_at: str | None = None
    meaning: str | None = None
    reason: str | None = None


class ApproveIn(_In):
    password: str = Password


class RejectIn(_In):
    password: str = Password
    reason: str = Field(min_length=1, max_length=4000)


class InvitationLinkPublic(BaseModel):
    study: str
    study_name: str
    role: str
    site: str | None
    full_name: str
    email: str
    existing_account: bool
    expires_at: str


class AcceptIn(_In):
    password: str = Field(
        min_length=1,
        max_length=1024,
        description="a new password you choose, or your current one for an existing account",
    )


class AcceptedPublic(BaseModel):
    username: str
    study: str
    role: str
    site: str | None
    new_account: bool


class ForgotIn(_In):
    identifier: str = Field(min_length=1, max_length=254, description="username or address")


class NewPasswordIn(_In):
    password: str = Field(min_length=1, max_length=1024)


class ChangePasswordIn(_In):
    old_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class MePublic(BaseModel):
    username: str
    full_name: str
    scope: str
    totp_enrolled: bool
    totp_required: bool


class TotpEnrolmentPublic(BaseModel):
    secret: str = Field(description="shown once; enter it in an authenticator app")
    uri: str = Field(description="otpauth:// URI with the same secret")


class CodeIn(_In):
    code: str = Field(min_length=1, max_length=16)


class DisableTotpIn(_In):
    password: str = Password
    code: str = Field(min_length=1, max_length=16)


class TotpStatusPublic(BaseModel):
    enrolled: bool
    required: bool
    enrolled_at: str | None
