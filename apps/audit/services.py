"""Append to the audit log, seal it into the hash chain, and verify it.

`audit_record` inserts the entry inside the caller's transaction and nothing else: no lock, so
writes of one tenant never wait for each other (the chain head used to be locked through every
writer's commit). The entry gets its insertion number `seq` from a database sequence and
is *unsealed* (`position` 0, empty hashes) until `audit_seal` chains it: one sealer at a time (an
advisory lock) takes the committed unsealed entries in `seq` order and gives each the next
`position` in its tenant's chain and its hash, so an entry whose transaction committed late
simply gets a later position. The relay seals after publishing (at most once a second while
busy, and on its idle sweeps, every few seconds); `audit_verify`, `GET /audit/verify`,
`GET /audit/logs`, `manage.py audit_verify` and the retention drop seal first.

Tamper evidence covers sealed entries: an edit, a deletion in the middle or at the end, or a
rewritten chain is found by `audit_verify`. An entry is sealed seconds after its commit at most;
deleting one before that leaves no trace in the chain (the append-only trigger still refuses it
to the application).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from apps.audit import chain
from apps.audit.models import NIL_CHAIN, UNSEALED, AuditChainHead, AuditLog
from apps.common.context import Actor, current_trace_id

SEAL_LOCK_KEY = 0x0A0D_5EA1  # one sealer at a time
SEAL_BATCH = 2000
_SEAL_UPDATE = """
    UPDATE audit_auditlog AS entry SET position = v.position, prev_hash = v.prev_hash, hash = v.hash
    FROM unnest(%s::uuid[], %s::timestamptz[], %s::bigint[], %s::varchar[], %s::varchar[])
        AS v(id, created_at, position, prev_hash, hash)
    WHERE entry.id = v.id AND entry.created_at = v.created_at AND entry.position = 0
"""


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
    """Append one (unsealed) entry inside the caller's transaction; one INSERT, no lock.

    The returned entry has its `seq` (the INSERT returns it) but no chain position yet."""
    entry = audit_entry(
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        before=before,
        after=after,
    )
    entry.save(force_insert=True)
    return entry


def audit_entry(
    *,
    tenant_id: UUID | None,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: Any = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditLog:
    """An unsaved, unsealed entry (for callers that insert several at once with `bulk_create`)."""
    return AuditLog(
        tenant_id=tenant_id,
        position=UNSEALED,
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
        prev_hash="",
        hash="",
    )


def audit_seal(*, batch: int = SEAL_BATCH) -> int:
    """Chain every committed unsealed entry (all tenants); return how many were sealed."""
    total = 0
    while True:
        sealed = _seal_batch(batch)
        total += sealed
        if sealed < batch:
            return total


def _seal_batch(limit: int) -> int:
    unsealed = AuditLog.objects.filter(position=UNSEALED).order_by("seq").values("id", *chain.HASHED_FIELDS)
    if not unsealed[:1].exists():  # the usual case for a sweep: one indexed read, no lock
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEAL_LOCK_KEY])
        # Read after the lock: what an earlier sealer sealed is no longer at position 0.
        rows = list(unsealed[:limit])
        if not rows:
            return 0
        keys = sorted({row["tenant_id"] or NIL_CHAIN for row in rows})
        heads = {head.chain: head for head in AuditChainHead.objects.select_for_update().filter(chain__in=keys)}
        if len(heads) < len(keys):  # a chain's first entries
            AuditChainHead.objects.bulk_create(
                [AuditChainHead(chain=key) for key in keys if key not in heads], ignore_conflicts=True
            )
            heads = {head.chain: head for head in AuditChainHead.objects.select_for_update().filter(chain__in=keys)}
        columns: tuple[list[Any], ...] = ([], [], [], [], [])
        for row in rows:
            head = heads[row["tenant_id"] or NIL_CHAIN]
            position, digest = head.seq + 1, chain.entry_hash(row, head.hash)
            for column, value in zip(columns, (row["id"], row["created_at"], position, head.hash, digest), strict=True):
                column.append(value)
            head.seq, head.hash = position, digest
        # The append-only trigger lets exactly this through: an unsealed entry gets its place once.
        cursor.execute(_SEAL_UPDATE, list(columns))
        if cursor.rowcount != len(rows):  # cannot happen under the lock; never leave a hole in a chain
            raise RuntimeError(f"audit seal updated {cursor.rowcount} of {len(rows)} entries")
        AuditChainHead.objects.bulk_update(list(heads.values()), ["seq", "hash"])
    return len(rows)


def _content(entry: AuditLog) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in chain.HASHED_FIELDS}


def audit_verify(*, tenant_id: UUID | None) -> chain.ChainVerdict:
    """Seal what has committed, then walk one tenant's chain and report the first entry that does not hold."""
    audit_seal()
    chain_key = tenant_id or NIL_CHAIN
    head = AuditChainHead.objects.filter(chain=chain_key).first()
    if head is None:
        head = AuditChainHead(chain=chain_key)
    rows = (
        AuditLog.objects.filter(tenant_id=tenant_id, position__gt=head.anchor_seq)
        .order_by("position")
        .values("id", "position", "prev_hash", "hash", *chain.HASHED_FIELDS)
        .iterator(chunk_size=2000)
    )
    return chain.verify_chain(
        rows, anchor_seq=head.anchor_seq, anchor_hash=head.anchor_hash, head_seq=head.seq, head_hash=head.hash
    )


def audit_anchor_before_drop(partition: str) -> None:
    """Move each chain's anchor past the entries a retention drop is about to delete."""
    audit_seal()  # every committed entry of the partition gets its place in the chain first
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        # The partition name comes from pg_inherits, never from a request; it is quoted anyway.
        query = f"SELECT DISTINCT ON (tenant_id) tenant_id, position, hash FROM {qn(partition)}"  # noqa: S608
        cursor.execute(f"{query} ORDER BY tenant_id, position DESC")
        for tenant_id, seq, last_hash in cursor.fetchall():
            AuditChainHead.objects.filter(chain=tenant_id or NIL_CHAIN, anchor_seq__lt=seq).update(
                anchor_seq=seq, anchor_hash=last_hash
            )
