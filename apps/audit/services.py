"""Append to the audit log and verify it.

`audit_record` is called inside the caller's transaction, as its last write: it takes the row lock
on the tenant's chain head, so the lock is held only for the rest of that transaction (its
commit), and entries are chained in commit order without gaps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from apps.audit import chain
from apps.audit.models import NIL_CHAIN, AuditChainHead, AuditLog
from apps.common.context import Actor, current_trace_id


def audit_record(
    *,
    tenant_id: UUID | None,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: Any = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditLog:
    """Append one entry to the tenant's chain; call it as the last write of a transaction."""
    chain_key = tenant_id or NIL_CHAIN
    # No savepoint inside the caller's transaction (two round trips, the second one while holding
    # the chain head); outside one, this is the transaction.
    with transaction.atomic(savepoint=False):
        head = AuditChainHead.objects.select_for_update().filter(chain=chain_key).first()
        if head is None:  # the chain's first entry
            AuditChainHead.objects.get_or_create(chain=chain_key)
            head = AuditChainHead.objects.select_for_update().get(chain=chain_key)
        entry = AuditLog(
            tenant_id=tenant_id,
            seq=head.seq + 1,
            created_at=timezone.now(),
            actor_kind=actor.kind.value,
            actor_label=actor.label[:255],
            actor_user_id=actor.user_id,
            actor_api_key_id=actor.api_key_id,
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id or ""),
            before=chain.jsonable(before) if before is not None else None,
            after=chain.jsonable(after) if after is not None else None,
            ip=actor.ip,
            user_agent=actor.user_agent[:512],
            trace_id=current_trace_id(),
            prev_hash=head.hash,
        )
        entry.hash = chain.entry_hash(_content(entry), head.hash)
        entry.save(force_insert=True)
        head.seq, head.hash = entry.seq, entry.hash
        head.save(update_fields=["seq", "hash"])
    return entry


def _content(entry: AuditLog) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in chain.HASHED_FIELDS}


def audit_verify(*, tenant_id: UUID | None) -> chain.ChainVerdict:
    """Walk one tenant's chain and report the first entry that does not hold."""
    chain_key = tenant_id or NIL_CHAIN
    head = AuditChainHead.objects.filter(chain=chain_key).first()
    if head is None:
        head = AuditChainHead(chain=chain_key)
    rows = (
        AuditLog.objects.filter(tenant_id=tenant_id, seq__gt=head.anchor_seq)
        .order_by("seq")
        .values("id", "prev_hash", "hash", *chain.HASHED_FIELDS)
        .iterator(chunk_size=2000)
    )
    return chain.verify_chain(
        rows, anchor_seq=head.anchor_seq, anchor_hash=head.anchor_hash, head_seq=head.seq, head_hash=head.hash
    )


def audit_anchor_before_drop(partition: str) -> None:
    """Move each chain's anchor past the entries a retention drop is about to delete."""
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        # The partition name comes from pg_inherits, never from a request; it is quoted anyway.
        query = f"SELECT DISTINCT ON (tenant_id) tenant_id, seq, hash FROM {qn(partition)} ORDER BY tenant_id, seq DESC"  # noqa: S608
        cursor.execute(query)
        for tenant_id, seq, last_hash in cursor.fetchall():
            AuditChainHead.objects.filter(chain=tenant_id or NIL_CHAIN, anchor_seq__lt=seq).update(
                anchor_seq=seq, anchor_hash=last_hash
            )
