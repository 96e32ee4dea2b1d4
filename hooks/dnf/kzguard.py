# kzguard dnf plugin: keep a kernel that cannot load the ZFS module out of a dnf transaction.
#
# Install as <python3 sitelib>/dnf-plugins/kzguard.py with /etc/dnf/plugins/kzguard.conf.
# The logic lives in kzguard.managers.dnf; this file only connects dnf's hooks to it:
#   sack()      with `on_unsupported_kernel: hold`, exclude the unsupported kernels' packages
#               (and kernels pinned by kzguard) so the rest of an upgrade goes on;
#   resolved()  judge the resolved transaction on dnf's installroot, before any download;
#               refusing raises dnf.exceptions.Error, the only exception dnf lets abort a run;
#   pre_transaction()  (downloaded, rpm not run yet) judge a new ZFS again by the META in its
#               rpm when resolved() had to use the built-in table; record a kernel or ZFS
#               transaction (kernel-install, run by rpm during it, then only queues its kernel);
#   transaction()  the post-install verdict on the end state: the queued kernels and those
#               kzguard pinned get the full check (pin, boot default) once rpm is done.
# Options in kzguard.conf [main]: enabled, libdir (directories put first on sys.path, for a
# kzguard outside dnf's Python; $KZGUARD_LIBDIR does the same), config (kzguard's config file).
# Runs in dnf's Python: keep it 3.9-compatible and free of imports on the common path.

from __future__ import annotations

import logging
import os
import sys

import dnf
import dnf.exceptions

logger = logging.getLogger("dnf.plugin")

LIBDIR_ENV = "KZGUARD_LIBDIR"
# when kzguard itself cannot be imported, these transactions are refused (on_error's default)
_GUARDED_PREFIXES = ("kernel", "zfs", "kmod-zfs", "libzfs")


class Kzguard(dnf.Plugin):
    name = "kzguard"

    def __init__(self, base, cli):
        super().__init__(base, cli)
        self.config_path = None
        self.judged = None  # resolved()'s outcome, for pre_transaction()
        self.session = None  # one context for this dnf run's hooks (kzguard.managers.dnf)

    def _session(self, adapter):
        if self.session is None:
            self.session = adapter.Session(self.base.conf.installroot, self.config_path)
        return self.session

    def config(self):
        conf = self.read_config(self.base.conf)
        libdir = os.environ.get(LIBDIR_ENV) or _option(conf, "libdir")
        for path in reversed([p for p in libdir.split(os.pathsep) if p]):
            if path not in sys.path:
                sys.path.insert(0, path)
        self.config_path = _option(conf, "config") or None

    def sack(self):
        try:
            from kzguard.managers import dnf as adapter

            query, lines = adapter.sack_excludes(
                self.base.sack,
                self.base.conf.installroot,
                config_path=self.config_path,
                session=self._session(adapter),
            )
        except Exception as exc:  # noqa: BLE001 - resolved() still judges the transaction
            logger.warning(
                "kzguard: cannot work out which kernels to hold back (%s: %s); "
                "the transaction is judged once resolved",
                type(exc).__name__,
                exc,
            )
            return
        for line in lines:
            logger.warning(line)
        if query is not None:
            self.base.sack.add_excludes(query)

    def resolved(self):
        try:
            from kzguard.managers import dnf as adapter
        except Exception as exc:  # kzguard is missing or broken
            if _guarded(self.base.transaction):
                raise dnf.exceptions.Error(
                    f"kzguard failed inside the dnf hook (cannot import kzguard: {exc}); "
                    "refusing the transaction (the default, as the configuration could not be "
                    "read = block); `--disableplugin=kzguard` runs dnf without it"
                ) from exc
            return
        outcome = adapter.resolved(
            self.base.transaction,
            self.base.conf.installroot,
            config_path=self.config_path,
            argv=sys.argv,
            session=self._session(adapter),
        )
        self.judged = outcome
        if outcome.refuse:
            raise dnf.exceptions.Error("\n".join(outcome.lines))
        for line in outcome.lines:
            (logger.warning if outcome.warn else logger.info)(line)

    def pre_transaction(self):
        try:
            from kzguard.managers import dnf as adapter
        except Exception:  # noqa: BLE001 - resolved() has already applied on_error
            return
        if self.judged is not None and self.judged.recheck:
            outcome = adapter.recheck(
                self.base.transaction,
                self.base.conf.installroot,
                config_path=self.config_path,
                allowed=self.judged.allowed,
                argv=sys.argv,
                session=self._session(adapter),
            )
            if outcome.refuse:
                raise dnf.exceptions.Error("\n".join(outcome.lines))
            for line in outcome.lines:
                (logger.warning if outcome.warn else logger.info)(line)
        for line in adapter.begin(
            self.base.transaction,
            self.base.conf.installroot,
            config_path=self.config_path,
            lifted=self.judged.lifted if self.judged is not None else (),
            session=self._session(adapter),
        ):
            logger.warning(line)

    def transaction(self):
        try:
            from kzguard.managers import dnf as adapter
        except Exception:  # noqa: BLE001 - nothing recorded: kernel-install checked at once
            return
        outcome = adapter.finish(self.base.conf.installroot, config_path=self.config_path)
        if outcome.refuse:
            raise dnf.exceptions.Error("\n".join(outcome.lines))
        for line in outcome.lines:
            (logger.warning if outcome.warn else logger.info)(line)


def _option(conf, key):
    if conf.has_section("main") and conf.has_option("main", key):
        return conf.get("main", key).strip()
    return ""


def _guarded(transaction):
    if transaction is None:
        return False
    packages = list(transaction.install_set) + list(transaction.remove_set)
    return any(p.name.startswith(_GUARDED_PREFIXES) for p in packages)
