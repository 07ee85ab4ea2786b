"""TOTP multi-factor authentication: enrol, confirm, check, disable.

The seed is encrypted at rest. A code is accepted once: the last accepted time step is stored,
so a code seen over someone's shoulder cannot be replayed within its 30-second window.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyotp
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common import crypto
from apps.common.context import Actor
from apps.common.errors import AuthenticationFailed, StateConflict
from apps.tenants.authcache import auth_epoch_bump
from apps.tenants.models import Tenant, User

VALID_WINDOW = 1  # one 30 s step either side, for clock drift


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    secret: str
    otpauth_uri: str


def _matching_counter(secret: str, otp: str) -> int | None:
    totp = pyotp.TOTP(secret)
    now = timezone.now()
    current = totp.timecode(now)
    for step in range(-VALID_WINDOW, VALID_WINDOW + 1):
        if totp.generate_otp(current + step) == otp.strip():
            return current + step
    return None


def totp_check(*, user: User, otp: str) -> bool:
    """Accept a code once; on success remember its time step so it cannot be replayed."""
    if not user.totp_secret_encrypted:
        return False
    counter = _matching_counter(crypto.decrypt(user.totp_secret_encrypted), otp)
    if counter is None:
        return False
    # The conditional update is the replay guard: it fails for a step already used.
    return bool(User.objects.filter(id=user.id, totp_last_counter__lt=counter).update(totp_last_counter=counter))


@transaction.atomic(durable=True)
def totp_enrol(*, user: User, tenant: Tenant, actor: Actor) -> TotpEnrolment:
    """Start (or restart) enrolment: a new seed, not active until confirmed with a code."""
    user = User.objects.select_for_update().get(id=user.id)
    if user.mfa_enabled:
        raise StateConflict("Two-factor authentication is already enabled; disable it first")
    secret = pyotp.random_base32()
    user.totp_secret_encrypted = crypto.encrypt(secret)
    user.totp_last_counter = 0
    user.save(update_fields=["totp_secret_encrypted", "totp_last_counter"])
    audit_record(
        tenant_id=tenant.id, actor=actor, action="mfa.enrol_started", resource_type="user", resource_id=user.id
    )
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=settings.TOTP_ISSUER)
    return TotpEnrolment(secret=secret, otpauth_uri=uri)


@transaction.atomic(durable=True)
def totp_confirm(*, user: User, tenant: Tenant, actor: Actor, otp: str) -> User:
    """Activate TOTP once the user proves their authenticator produces the right codes."""
    user = User.objects.select_for_update().get(id=user.id)
    if user.mfa_enabled:
        raise StateConflict("Two-factor authentication is already enabled")
    if not user.totp_secret_encrypted:
        raise StateConflict("Start enrolment first (POST /auth/mfa/totp)")
    if not totp_check(user=user, otp=otp):
        raise AuthenticationFailed("Invalid one-time code", details={"otp": ["invalid or already used"]})
    user.totp_confirmed_at = timezone.now()
    user.save(update_fields=["totp_confirmed_at"])
    auth_epoch_bump(tenant.id)
    audit_record(tenant_id=tenant.id, actor=actor, action="mfa.enabled", resource_type="user", resource_id=user.id)
    return user


@transaction.atomic(durable=True)
def totp_disable(*, user: User, tenant: Tenant, actor: Actor, otp: str) -> User:
    """Turn TOTP off; needs a current code so a stolen session alone cannot do it."""
    user = User.objects.select_for_update().get(id=user.id)
    if not user.mfa_enabled:
        raise StateConflict("Two-factor authentication is not enabled")
    if not totp_check(user=user, otp=otp):
        raise AuthenticationFailed("Invalid one-time code", details={"otp": ["invalid or already used"]})
    user.totp_secret_encrypted, user.totp_confirmed_at = "", None
    user.save(update_fields=["totp_secret_encrypted", "totp_confirmed_at"])
    auth_epoch_bump(tenant.id)
    audit_record(tenant_id=tenant.id, actor=actor, action="mfa.disabled", resource_type="user", resource_id=user.id)
    return user
