"""The audit log: hash chain, tamper detection, concurrency, the API and the command."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.db.utils import DatabaseError

from apps.audit.models import UNSEALED, AuditChainHead, AuditLog
from apps.audit.services import audit_record, audit_seal, audit_verify
from apps.common.context import Actor

pytestmark = pytest.mark.django_db


def _append(tenant_id, count: int, action: str = "test.action", seal: bool = True) -> list[AuditLog]:
    """Record `count` entries and (as the relay does after commit) seal them into the chain."""
    entries = [
        audit_record(
            tenant_id=tenant_id,
            actor=Actor.system(),
            action=action,
            resource_type="thing",
            resource_id=index,
            after={"n": index, "price": "101.25"},
        )
        for index in range(count)
    ]
    if seal:
        audit_seal()
    return entries


def _tamper(sql: str, params: list) -> None:
    """Edit rows behind the application's back, as an intruder with database access would."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL oms.audit_maintenance = 'on'")
        cursor.execute(sql, params)


def test_a_clean_chain_verifies(tenant):
    _append(tenant.id, 5)
    verdict = audit_verify(tenant_id=tenant.id)
    assert verdict.valid
    assert verdict.entries == 5


def test_the_application_role_cannot_update_or_delete_entries(tenant):
    entry = _append(tenant.id, 1)[0]
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditlog SET action = 'x' WHERE id = %s", [entry.id])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditlog WHERE id = %s", [entry.id])


def test_an_edited_entry_is_found(tenant):
    entries = _append(tenant.id, 5)
    _tamper("UPDATE audit_auditlog SET after = '{\"n\": 99}' WHERE id = %s", [entries[2].id])
    verdict = audit_verify(tenant_id=tenant.id)
    assert not verdict.valid
    assert verdict.first_bad_id == str(entries[2].id)
    assert "edited" in verdict.reason


def test_a_deleted_entry_in_the_middle_is_found(tenant):
    entries = _append(tenant.id, 5)
    _tamper("DELETE FROM audit_auditlog WHERE id = %s", [entries[1].id])
    verdict = audit_verify(tenant_id=tenant.id)
    assert not verdict.valid
    assert verdict.first_bad_id == str(entries[2].id)


def test_a_deleted_last_entry_is_found(tenant):
    entries = _append(tenant.id, 3)
    _tamper("DELETE FROM audit_auditlog WHERE id = %s", [entries[-1].id])
    verdict = audit_verify(tenant_id=tenant.id)
    assert not verdict.valid
    assert "head" in verdict.reason


def test_a_rewritten_chain_is_found_by_its_head(tenant):
    """Recomputing every hash after an edit still fails: the head row holds the old end."""
    entries = _append(tenant.id, 2)
    _tamper("UPDATE audit_auditlog SET hash = %s WHERE id = %s", ["f" * 64, entries[-1].id])
    assert not audit_verify(tenant_id=tenant.id).valid


def test_tenants_have_separate_chains(tenant, other_tenant):
    _append(tenant.id, 2)
    other = _append(other_tenant.id, 2)
    _tamper("UPDATE audit_auditlog SET action = 'x' WHERE id = %s", [other[0].id])
    assert audit_verify(tenant_id=tenant.id).valid
    assert not audit_verify(tenant_id=other_tenant.id).valid


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_form_one_unbroken_chain(tenant):
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(10):
                with transaction.atomic():
                    _append(tenant.id, 1, action="concurrent", seal=False)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(AuditLog.objects.filter(tenant_id=tenant.id).values_list("position", flat=True)) == {UNSEALED}
    assert audit_seal() == 80
    positions = sorted(AuditLog.objects.filter(tenant_id=tenant.id).values_list("position", flat=True))
    assert positions == list(range(1, 81))
    assert audit_verify(tenant_id=tenant.id).valid
    assert AuditChainHead.objects.get(chain=tenant.id).seq == 80


def test_audit_verify_command_exits_non_zero_on_a_broken_chain(tenant, capsys):
    entries = _append(tenant.id, 3)
    call_command("audit_verify", "--tenant", tenant.slug)
    assert "valid, 3 entries" in capsys.readouterr().out
    _tamper("UPDATE audit_auditlog SET resource_id = 'forged' WHERE id = %s", [entries[0].id])
    with pytest.raises(CommandError, match="1 audit chain"):
        call_command("audit_verify")
    assert f"BROKEN at entry {entries[0].id}" in capsys.readouterr().out


def test_audit_api_lists_with_filters_and_verifies(admin, manager):
    _append(admin.tenant.id, 3, action="widget.made")
    logs = admin.api.get("/audit/logs?action=widget.made&limit=2").json_body
    assert len(logs["items"]) == 2
    assert logs["next"]
    assert {item["action"] for item in logs["items"]} == {"widget.made"}
    assert logs["items"][0]["seq"] > logs["items"][1]["seq"]
    by_resource = admin.api.get("/audit/logs?resource=thing:1").json_body["items"]
    assert [item["resource"] for item in by_resource] == [{"type": "thing", "id": "1"}]
    assert admin.api.get("/audit/verify").json_body == {
        "valid": True,
        "entries": 3,
        "first_bad_id": None,
        "reason": None,
    }
    assert manager.api.get("/audit/logs").status_code == 403
    assert admin.api.get("/audit/logs?from=yesterday").status_code == 422


def test_audit_api_never_shows_another_tenants_entries(admin, other_tenant):
    _append(other_tenant.id, 2, action="secret.thing")
    assert admin.api.get("/audit/logs?action=secret.thing").json_body["items"] == []


def test_actor_filter_matches_label_or_id(admin):
    admin.api.patch("/tenants/current", {"name": "By admin"})
    by_label = admin.api.get(f"/audit/logs?actor={admin.user.email}").json_body["items"]
    by_id = admin.api.get(f"/audit/logs?actor={admin.user.id}").json_body["items"]
    assert [item["action"] for item in by_label] == [item["action"] for item in by_id] == ["tenant.updated"]
    assert admin.api.get(f"/audit/logs?actor={uuid.uuid4()}").json_body["items"] == []


def test_entries_are_sealed_after_commit_in_the_order_the_sealer_sees_them(tenant, other_tenant):
    """Writers take no lock; the sealer chains committed entries, each tenant on its own chain."""
    first = _append(tenant.id, 2, seal=False)
    other = _append(other_tenant.id, 1, seal=False)
    stored = AuditLog.objects.get(id=first[0].id)
    assert (stored.position, stored.prev_hash, stored.hash) == (UNSEALED, "", "")
    assert first[0].seq < first[1].seq < other[0].seq  # insertion numbers, given by the INSERT
    assert audit_seal() == 3
    assert audit_seal() == 0  # nothing left: sealing twice changes nothing
    chain = list(
        AuditLog.objects.filter(tenant_id=tenant.id).order_by("position").values_list("id", "position", "prev_hash")
    )
    assert [(entry_id, position) for entry_id, position, _ in chain] == [(first[0].id, 1), (first[1].id, 2)]
    assert chain[0][2] == "0" * 64
    assert AuditLog.objects.get(id=other[0].id).position == 1
    late = _append(tenant.id, 1, seal=False)  # committed after the first seal: the next place
    verdict = audit_verify(tenant_id=tenant.id)  # seals first
    assert verdict.valid and verdict.entries == 3
    assert AuditLog.objects.get(id=late[0].id).position == 3
    assert AuditChainHead.objects.get(chain=tenant.id).seq == 3


def test_an_unsealed_entry_cannot_be_edited_by_the_application(tenant):
    entry = _append(tenant.id, 1, seal=False)[0]
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditlog SET position = 1, hash = %s WHERE id = %s", ["a" * 64, entry.id])
    # Sealing may set the position and the hashes, nothing else.
    forged = "UPDATE audit_auditlog SET position = 1, prev_hash = %s, hash = %s, action = 'x' WHERE id = %s"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(forged, ["0" * 64, "a" * 64, entry.id])
    assert audit_verify(tenant_id=tenant.id).valid
    # A sealed entry cannot be sealed again.
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditlog SET position = 2 WHERE id = %s", [entry.id])


@pytest.mark.django_db(transaction=True)
def test_an_open_transaction_does_not_hold_up_other_writers_or_the_sealer(tenant):
    """The entry of a transaction still open is invisible to the sealer; it is sealed after its commit."""
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                _append(tenant.id, 1, action="slow", seal=False)
                started.set()
                release.wait(10)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert started.wait(10)
    _append(tenant.id, 2, action="fast")  # no wait on the open transaction, sealed at once
    assert list(AuditLog.objects.filter(tenant_id=tenant.id, position__gt=0).values_list("action", flat=True)) == [
        "fast",
        "fast",
    ]
    release.set()
    thread.join()
    assert errors == []
    assert audit_verify(tenant_id=tenant.id).valid
    slow = AuditLog.objects.get(tenant_id=tenant.id, action="slow")
    assert slow.position == 3  # inserted first (the lowest seq), sealed last: after its commit
    assert slow.seq < min(AuditLog.objects.filter(action="fast").values_list("seq", flat=True))
