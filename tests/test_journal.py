"""Structured journal events: MESSAGE_ID per kind, KZGUARD_ fields, stderr without journald."""

from __future__ import annotations

import sys
import types
import uuid

from kzguard.base import journal


def test_message_ids_are_distinct_uuids():
    ids = list(journal.MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).hex == i for i in ids)


def test_event_goes_to_the_journal_with_fields(monkeypatch, tmp_path, capsys):
    sent = []
    fake = types.ModuleType("systemd.journal")
    fake.send = lambda **fields: sent.append(fields)
    package = types.ModuleType("systemd")
    package.journal = fake
    monkeypatch.setitem(sys.modules, "systemd", package)
    monkeypatch.setitem(sys.modules, "systemd.journal", fake)
    socket = tmp_path / "socket"
    socket.touch()
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(socket))
    journal.event(
        "transaction-blocked", "dnf: block 6.13", priority=journal.ERROR, kernel=["6.13", "6.14"]
    )
    assert sent == [
        {
            "MESSAGE": "dnf: block 6.13",
            "MESSAGE_ID": journal.MESSAGE_IDS["transaction-blocked"],
            "PRIORITY": "3",
            "KZGUARD_KERNEL": "6.13,6.14",
        }
    ]
    assert capsys.readouterr().err == ""


def test_without_journald_warnings_go_to_stderr(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(tmp_path / "absent"))
    journal.event("snapshot-failed", "pool full", priority=journal.ERROR)
    journal.event("snapshot-taken", "took one")  # info: not shown on a terminal
    assert capsys.readouterr().err == "kzguard: pool full\n"


def test_messages_the_admin_already_saw_are_not_repeated(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(tmp_path / "absent"))
    journal.event("transaction-blocked", "dnf: block 6.13", priority=journal.ERROR, shown=True)
    assert capsys.readouterr().err == ""
