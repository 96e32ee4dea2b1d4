"""Keep the boot default on a kernel, and undo it: the only code that changes the boot default.

:func:`keep` records the original default in the state file (``data["boot"]``: ``loader``,
``original``, ``kept``, ``reason``, ``time``, plus ``entry``, ``value`` and where the default
lives) under the state lock BEFORE it changes anything, then moves the default with the
bootloader's own tool; :func:`release` restores ``original`` and then drops the record.

======================  ==========================================================================
loader                  how the default is changed (``original`` is that tool's value, None unset)
======================  ==========================================================================
grub-bls                ``grubby --set-default=/boot/vmlinuz-<release>`` when the root has
                        ``/usr/sbin/grubby`` (with ``--env``/``--bls-directory`` into a root that
                        is not ``/``), else ``grub-editenv <grubenv> set saved_entry=<entry id>``
grub                    ``grub-editenv <grubenv> set saved_entry=<submenu id>><entry id>``; only
                        with ``GRUB_DEFAULT=saved`` (kzguard never edits /etc/default/grub: the
                        change reports that as the reason it could not act)
systemd-boot            ``bootctl set-default <id>`` where ``LoaderEntryDefault`` exists (it wins
                        over loader.conf), else loader.conf's ``default`` line, replaced atomically
zfsbootmenu             ``zfs set org.zfsbootmenu:kernel=<release> <boot environment>``; an
                        inherited or unset original comes back with ``zfs inherit``
======================  ==========================================================================

Both are idempotent, log a journal event (``boot-default-kept``, ``boot-default-released``,
``boot-default-failed``) and honour ``runner.dry_run``: nothing is written, the record is not
saved, and the message says "would" (``changed`` then says whether it would change). A grubenv
is only ever rewritten by grub-editenv (GRUB's 1024-byte block), loader.conf atomically. After a
change the default is read back; a default that did not move is a failure, never a success.
:func:`release` leaves a default that someone changed since kzguard set it alone.
"""

from __future__ import annotations

import time

from kzguard.base import journal
from kzguard.base.errors import CommandError
from kzguard.base.record import Record
from kzguard.facts import bootloader as bootloader
from kzguard.facts import grub

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    from kzguard.facts.bootloader import BootEntry, BootState
    from kzguard.root import Root, Runner


class BootChange(Record):
    """What :func:`keep` or :func:`release` did. ``before``/``after`` are the bootloader's own
    default values (a grubenv ``saved_entry``, an entry id, a ZFS property; None: unset)."""

    changed: bool
    loader: str
    before: Optional[str]
    after: Optional[str]
    message: str
    failed: bool = False  # the guard could not act; ``message`` says why

    def to_dict(self) -> dict[str, object]:
        return self._asdict()


def keep(root: Root, runner: Runner, release: str, *, reason: str) -> BootChange:
    """Make the entry that boots ``release`` the persistent boot default."""
    from kzguard.actions import state

    boot = bootloader.read_boot(root, runner)
    target = _target(root, boot, runner)
    entry = boot.entry_for(release)
    if target is None:
        why_not: Optional[str] = boot.source  # says which bootloaders were looked for
    elif entry is None:
        why_not = f"{boot.loader} has no boot entry for {release}"
    else:
        why_not = target.refusal()
    if why_not or target is None or entry is None:
        message = f"cannot keep {release} as the boot default: {why_not}"
        _log("boot-default-failed", message, boot.loader, release, None, None, reason)
        return _failed(boot.loader, None, message)
    with state.locked(root, dry_run=runner.dry_run) as state_file:
        try:
            before = target.current()
        except (CommandError, OSError) as exc:
            message = f"cannot keep {release} as the boot default: {exc}"
            _log("boot-default-failed", message, boot.loader, release, None, None, reason)
            return _failed(boot.loader, None, message)
        previous = dict(state_file.data.get("boot") or {})
        wanted = target.value_for(entry)
        if before == wanted and previous.get("kept") == release:
            return BootChange(False, boot.loader, before, before, f"{release} is already kept")
        state_file.data["boot"] = _record(previous, target, before, entry, wanted, reason)
        verb = "would keep" if runner.dry_run else "kept"
        state_file.event("boot-default-kept", f"{verb} {release}: {reason}", kernel=release)
        state_file.save()  # record before you change
        if before == wanted:
            message = f"{release} is already the boot default ({wanted}); kzguard now keeps it"
            _log("boot-default-kept", message, boot.loader, release, before, wanted, reason)
            return BootChange(False, boot.loader, before, wanted, message)
        after, error = _apply(runner, wanted, lambda: target.set(runner, wanted, entry), target)
        if error:
            if after in (before, None):
                state_file.data["boot"] = previous  # nothing changed, so nothing to undo either
                state_file.save()
            message = f"cannot keep {release} as the boot default: {error}"
            _log("boot-default-failed", message, boot.loader, release, before, after, reason)
            return _failed(boot.loader, before, message)
    message = (
        f"{verb} {release} as the boot default ({boot.loader}: {wanted}; was {_shown(before)})"
    )
    message += _one_shot_note(boot, release)
    _log("boot-default-kept", message, boot.loader, release, before, wanted, reason)
    return BootChange(True, boot.loader, before, wanted, f"{message}: {reason}")


def release(root: Root, runner: Runner) -> BootChange:
    """Undo :func:`keep`: restore the recorded original default, then drop the record."""
    from kzguard.actions import state

    with state.locked(root, dry_run=runner.dry_run) as state_file:
        record = dict(state_file.data.get("boot") or {})
        boot = bootloader.read_boot(root, runner)
        if not record.get("loader"):
            return BootChange(False, boot.loader, None, None, "nothing to release")
        kept, original = record.get("kept"), record.get("original")
        target = _target(root, boot, runner)
        verb = "would release" if runner.dry_run else "released"
        if target is None or not _same_place(record, boot.loader, target):
            message = (
                f"{verb} the guard on {kept}, but the bootloader is now {boot.loader} "
                f"({target.method if target else 'unsupported'}), not {record['loader']} "
                f"({record.get('method')}): the recorded default {_shown(original)} "
                "was not restored"
            )
            return _drop(state_file, boot.loader, None, None, message, kept, failed=True)
        try:
            now = target.current()
        except (CommandError, OSError) as exc:
            return _failed(boot.loader, None, f"cannot read the boot default: {exc}")
        if now != record.get("value"):
            message = (
                f"{verb} the guard on {kept}; the default changed since ({_shown(now)}): "
                "left as it is"
            )
            return _drop(state_file, boot.loader, now, now, message, kept)
        if now == original:
            return _drop(state_file, boot.loader, now, now, f"{verb} the guard on {kept}", kept)
        after, error = _apply(
            runner, original, lambda: target.restore(runner, record, boot), target, now
        )
        if error:
            message = f"cannot restore the boot default {_shown(original)}: {error}"
            _log("boot-default-failed", message, boot.loader, kept, now, after, None)
            return _failed(boot.loader, now, message)
        restored = "would restore" if runner.dry_run else "restored"
        message = f"{verb} the guard on {kept}: {restored} the boot default {_shown(original)}"
        return _drop(state_file, boot.loader, now, original, message, kept, changed=True)


def _apply(
    runner: Runner,
    wanted: Optional[str],
    change: Callable[[], None],
    target: _Target,
    unchanged: Optional[str] = None,
) -> tuple[Optional[str], str]:
    """Run ``change`` and read the default back: ``(value afterwards, error or "")``."""
    try:
        change()
        after = wanted if runner.dry_run else target.current()
    except (CommandError, OSError) as exc:
        return unchanged, str(exc)
    return after, "" if after == wanted else f"the default reads {after!r} afterwards"


def _record(
    previous: dict[str, Any],
    target: _Target,
    before: Optional[str],
    entry: BootEntry,
    wanted: str,
    reason: str,
) -> dict[str, Any]:
    """The state record: the first recorded original (and where it lived) survives a keep of
    another kernel; a record of another loader or method is replaced."""
    first = previous if _same_place(previous, target.boot.loader, target) else {}
    kept = ("kept", "entry", "value", "reason", "time")
    return {
        **target.where(),
        **{k: v for k, v in first.items() if k not in kept},
        "loader": target.boot.loader,
        "original": first.get("original", before),
        "kept": entry.kernel,
        "entry": entry.id,
        "value": wanted,
        "reason": reason,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- where each loader keeps its default ---------------------------------------------------


class _Target:
    """Where one bootloader keeps its persistent default, and how to change it."""

    method = ""

    def __init__(self, root: Root, boot: BootState, runner: Runner):
        self.root = root
        self.boot = boot
        self.runner = runner

    def where(self) -> dict[str, Any]:
        return {"method": self.method}

    def refusal(self) -> Optional[str]:
        return None

    def current(self) -> Optional[str]:
        raise NotImplementedError

    def value_for(self, entry: BootEntry) -> str:
        return entry.id

    def set(self, runner: Runner, value: Optional[str], entry: Optional[BootEntry]) -> None:
        raise NotImplementedError

    def restore(self, runner: Runner, record: dict[str, Any], boot: BootState) -> None:
        original = record.get("original")
        self.set(runner, original, next((e for e in boot.entries if e.id == original), None))


class _Grub(_Target):
    def __init__(self, root: Root, boot: BootState, runner: Runner):
        super().__init__(root, boot, runner)
        self.bls = boot.loader == bootloader.GRUB_BLS
        self.grubenv = f"{grub.grub_dir(root) or grub.GRUB_DIRS[-1]}/grubenv"
        grubby = self.bls and root.exists("/usr/sbin/grubby")
        self.method = "grubby" if grubby else "grub-editenv"

    def where(self) -> dict[str, Any]:
        return {"method": self.method, "file": self.grubenv}

    def refusal(self) -> Optional[str]:
        setting, where = grub.grub_default(self.root, bls=self.bls)
        if setting == "saved":
            return None
        return (
            f"GRUB_DEFAULT={setting} ({where}) makes GRUB ignore saved_entry; keeping the "
            "default needs GRUB_DEFAULT=saved in /etc/default/grub and a regenerated grub.cfg "
            "(kzguard does not edit /etc/default/grub)"
        )

    def current(self) -> Optional[str]:
        return grub.read_grubenv(self.root, self.grubenv).get("saved_entry")

    def set(self, runner: Runner, value: Optional[str], entry: Optional[BootEntry]) -> None:
        env = self.root.host_path(self.grubenv)
        if self.method == "grubby" and value is not None and entry and entry.kernel:
            argv = ["grubby", f"--set-default=/boot/vmlinuz-{entry.kernel}"]
            if not self.root.is_host:
                entries = self.root.host_path(grub.BLS_DIR)
                argv += [f"--env={env}", f"--bls-directory={entries}"]
        elif value is None:
            argv = [_editenv(runner), env, "unset", "saved_entry"]
        else:
            argv = [_editenv(runner), env, "set", f"saved_entry={value}"]
        runner.run(argv, changes=True)


class _SystemdBoot(_Target):
    def __init__(self, root: Root, boot: BootState, runner: Runner):
        super().__init__(root, boot, runner)
        self.efivar = bootloader.efi_string(root, "LoaderEntryDefault") is not None
        self.method = "bootctl" if self.efivar else "loader.conf"
        self.conf = bootloader.loader_conf(root) or _new_loader_conf(root)

    def where(self) -> dict[str, Any]:
        if self.efivar:
            return {"method": self.method}
        text = self.root.read_text_or(self.conf) or ""
        found = bootloader.loader_conf_default(text)
        line = text.splitlines()[found[0]] if found else None
        missing_eol = found is None and bool(text) and not text.endswith("\n")
        created = not self.root.exists(self.conf)
        return {
            "method": self.method,
            "file": self.conf,
            "line": line,
            "missing_eol": missing_eol,
            "created": created,
        }

    def current(self) -> Optional[str]:
        if self.efivar:
            return bootloader.efi_string(self.root, "LoaderEntryDefault")
        found = bootloader.loader_conf_default(self.root.read_text_or(self.conf) or "")
        return found[1] if found else None

    def set(self, runner: Runner, value: Optional[str], entry: Optional[BootEntry]) -> None:
        if self.efivar:
            runner.run(["bootctl", "set-default", value or ""], changes=True)
        else:
            self._edit(runner, None if value is None else f"default {value}")

    def restore(self, runner: Runner, record: dict[str, Any], boot: BootState) -> None:
        if self.efivar:
            super().restore(runner, record, boot)
        else:
            self._edit(
                runner,
                record.get("line"),
                strip_eol=bool(record.get("missing_eol")),
                created=bool(record.get("created")),
            )

    def _edit(
        self, runner: Runner, line: Optional[str], *, strip_eol: bool = False, created: bool = False
    ) -> None:
        """Replace the effective ``default`` line by ``line`` (None: remove it), every other
        line kept as it is; written atomically, nothing under ``--dry-run``. A file kzguard
        ``created`` goes again when nothing else was written into it."""
        import os

        from kzguard.base.fileio import remove_file, replace_file

        path = self.root.host_path(self.conf)
        text = self.root.read_text_or(self.conf) or ""
        lines = text.splitlines(keepends=True)
        found = bootloader.loader_conf_default(text)
        if found is not None:
            old = lines[found[0]]
            ending = old[len(old.rstrip("\r\n")) :]
            lines[found[0]] = "" if line is None else line + ending
            new = "".join(lines)
            if line is None and strip_eol and new.endswith("\n"):
                new = new[:-1]
        elif line is None:
            new = text
        else:
            new = f"{text}{'' if not text or text.endswith(chr(10)) else chr(10)}{line}\n"
        if runner.dry_run:
            return
        if created and not new:
            remove_file(path)
            return
        mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
        replace_file(path, new, mode=mode)


class _ZfsBootMenu(_Target):
    method = "zfs"

    def __init__(self, root: Root, boot: BootState, runner: Runner):
        from kzguard.facts.mounts import root_dataset

        super().__init__(root, boot, runner)
        self.dataset = root_dataset(root)

    def where(self) -> dict[str, Any]:
        return {"method": self.method, "dataset": self.dataset}

    def refusal(self) -> Optional[str]:
        return None if self.dataset else "the root file system is not a ZFS dataset"

    def current(self) -> Optional[str]:
        value, source = bootloader.zbm_property(self.runner, self.dataset or "")
        return value if source == "local" else None

    def value_for(self, entry: BootEntry) -> str:
        """The release where ZFSBootMenu's match picks this entry with it, else the file name,
        else an anchored expression."""
        import re

        for value in (entry.kernel, entry.id, f"^/boot/{re.escape(entry.id)}$"):
            if value and bootloader.zbm_match(self.boot.entries, value) == entry:
                return value
        return entry.id

    def set(self, runner: Runner, value: Optional[str], entry: Optional[BootEntry]) -> None:
        dataset = self.dataset or ""
        if value is None:
            runner.run(["zfs", "inherit", bootloader.ZBM_PROPERTY, dataset], changes=True)
        else:
            runner.run(["zfs", "set", f"{bootloader.ZBM_PROPERTY}={value}", dataset], changes=True)


_TARGETS = {
    bootloader.GRUB_BLS: _Grub,
    bootloader.GRUB: _Grub,
    bootloader.SYSTEMD_BOOT: _SystemdBoot,
    bootloader.ZFSBOOTMENU: _ZfsBootMenu,
}


def _target(root: Root, boot: BootState, runner: Runner) -> Optional[_Target]:
    kind = _TARGETS.get(boot.loader)
    return kind(root, boot, runner) if kind else None


def _same_place(record: dict[str, Any], loader: str, target: _Target) -> bool:
    """Whether a record was made for the same loader and the same kind of default."""
    return bool(record) and record.get("loader") == loader and record.get("method") == target.method


def _new_loader_conf(root: Root) -> str:
    esp = next((e for e in bootloader.ESPS if root.is_dir(f"{e}/loader")), bootloader.ESPS[0])
    return f"{esp}/loader/loader.conf"


def _editenv(runner: Runner) -> str:
    """grub-editenv (Debian, Arch) or grub2-editenv (Fedora, EL): whichever the host has."""
    import shutil

    for name in ("grub-editenv", "grub2-editenv"):
        if shutil.which(name, path=runner.env.get("PATH")):
            return name
    return "grub-editenv"


def _one_shot_note(boot: BootState, release: str) -> str:
    once = boot.next
    if once is None or once == boot.default or once.kernel == release:
        return ""
    return f"; note: the next boot only uses {once.id} ({boot.source})"


def _drop(
    state_file: Any,
    loader: str,
    before: Optional[str],
    after: Optional[str],
    message: str,
    kept: Optional[str],
    *,
    changed: bool = False,
    failed: bool = False,
) -> BootChange:
    state_file.data["boot"] = {}
    state_file.event("boot-default-released", message, kernel=kept)
    state_file.save()
    _log("boot-default-released", message, loader, kept, before, after, None)
    return BootChange(changed, loader, before, after, message, failed)


def _shown(value: Optional[str]) -> str:
    if value is None:
        return "(unset)"
    return value or repr(value)


def _failed(loader: str, before: Optional[str], message: str) -> BootChange:
    return BootChange(False, loader, before, before, message, failed=True)


def _log(
    kind: str,
    message: str,
    loader: str,
    kernel: Optional[str],
    before: Optional[str],
    after: Optional[str],
    reason: Optional[str],
) -> None:
    priority = journal.ERROR if kind == "boot-default-failed" else journal.NOTICE
    journal.event(
        kind,
        message,
        priority=priority,
        shown=True,
        kernel=kernel,
        loader=loader,
        before=before,
        after=after,
        reason=reason,
    )
