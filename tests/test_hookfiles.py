"""The hook files' package lists come from the managers' adapters (kzguard/managers/hookfiles.py):
a list edited by hand is put back, and a name added to an adapter reaches every hook file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kzguard.managers import dnf, dnf5, hookfiles, pacman

TOP = Path(__file__).resolve().parents[1]


def _committed(rel: str) -> str:
    return (TOP / rel).read_text(encoding="utf-8")


@pytest.mark.parametrize("rel", hookfiles.FILES)
def test_every_generated_file_is_current(rel):
    assert hookfiles.render(rel, _committed(rel)) == _committed(rel)


@pytest.mark.parametrize("rel", ["hooks/dnf5/kzguard.actions", "hooks/dnf5/legacy/kzguard.actions"])
def test_a_dnf5_glob_line_removed_by_hand_comes_back(rel):
    text = _committed(rel)
    edited = "\n".join(line for line in text.split("\n") if ":libzfs*:" not in line)
    assert edited != text
    assert hookfiles.render(rel, edited) == text


def test_a_glob_added_to_the_dnf5_adapter_reaches_both_actions_files(monkeypatch):
    monkeypatch.setattr(dnf5.Dnf5, "guarded", (*dnf5.Dnf5.guarded, "spl*"))
    for rel in ("hooks/dnf5/kzguard.actions", "hooks/dnf5/legacy/kzguard.actions"):
        text = hookfiles.render(rel, _committed(rel))
        hooks = {line.split(":")[0] for line in text.split("\n") if ":kernel*:" in line}
        spl = {line.split(":")[0] for line in text.split("\n") if ":spl*:" in line}
        assert spl == hooks and hooks  # one new line next to every kernel* line


def test_the_alpm_package_targets_are_the_pacman_adapters(monkeypatch):
    rel = "hooks/pacman/05-kzguard-pre.hook"
    text = _committed(rel)
    targets = [line for line in text.split("\n") if line.startswith("Target = ")]
    assert "Target = usr/lib/modules/*/vmlinuz" in targets  # the path trigger is left alone
    assert [t for t in targets if "/" not in t] == [
        f"Target = {name}" for name in pacman.Pacman.guarded
    ]
    edited = text.replace("Target = zfs-utils\n", "")
    assert hookfiles.render(rel, edited) == text
    monkeypatch.setattr(pacman.Pacman, "guarded", ("linux", "zfs-linux*"))
    again = hookfiles.render(rel, text)
    assert "Target = linux-lts" not in again and "Target = usr/src/zfs-*/META" in again


def test_the_dnf_plugin_refuses_what_the_dnf_adapter_guards(monkeypatch):
    rel = "hooks/dnf/kzguard.py"
    text = _committed(rel)
    assert '_GUARDED_PREFIXES = ("kernel", "zfs", "kmod-zfs", "libzfs")' in text
    monkeypatch.setattr(dnf.Dnf, "guarded", ("kernel*", "zfs*"))
    assert '_GUARDED_PREFIXES = ("kernel", "zfs")\n' in hookfiles.render(rel, text)
