"""One run's context: built once at each entry point (a CLI command, a hook, the dnf plugin, a
service check) and handed to every layer.

It holds the root, the runner (which carries ``--dry-run`` and the hook's deadline), and, read
on first use and then kept: the configuration, the state file's contents and the host facts.
Nothing below the entry points builds a :class:`~kzguard.root.Root` or a
:class:`~kzguard.root.Runner` of its own; they take them from here.
"""

import os

from kzguard.root import Root, Runner

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Optional

    from kzguard.base.deadline import Overall
    from kzguard.config import Config
    from kzguard.facts.host import Host
    from kzguard.managers.base import Manager


class Context:
    """The root, runner, configuration, state and host facts of one run."""

    def __init__(
        self,
        root: "Root",
        runner: "Runner",
        *,
        config_path: "Optional[str]" = None,
        config: "Optional[Config]" = None,
        env: "Optional[Mapping[str, str]]" = None,
    ):
        self.root = root
        self.runner = runner
        self.config_path = config_path
        # what the run reads (KZGUARD_ALLOW...): the process environment unless a test says
        self.env: Mapping[str, str] = os.environ if env is None else env
        self._config = config
        self._host: Optional[Host] = None
        self._state: Optional[dict[str, Any]] = None
        self._managers: Optional[list[Manager]] = None

    @classmethod
    def open(
        cls,
        root_path: "Optional[str]" = None,
        *,
        dry_run: bool = False,
        config_path: "Optional[str]" = None,
        overall: "Optional[Overall]" = None,
        env: "Optional[Mapping[str, str]]" = None,
        must_exist: bool = True,
        command_env: "Optional[Mapping[str, str]]" = None,
    ) -> "Context":
        """The context of a run on ``root_path`` (``/`` by default). ``env`` is what the run
        reads (``KZGUARD_ALLOW``...), ``command_env`` what the commands it runs get."""
        path = root_path or "/"
        root = Root.open(path) if must_exist else Root(path)
        return cls(
            root,
            Runner(dry_run=dry_run, overall=overall, env=command_env),
            config_path=config_path,
            env=env,
        )

    @classmethod
    def of_command(cls, options: "Any") -> "Context":
        """A CLI command's context, from its parsed global options (``--root``,
        ``--config``, ``--dry-run``)."""
        return cls.open(options.root, dry_run=options.dry_run, config_path=options.config)

    def move_to(self, root_path: str) -> None:
        """Work on ``root_path`` instead (the root a hook's input names), nothing read yet."""
        if root_path != self.root.top:
            self.root = Root(root_path)
            self._config = self._host = self._state = self._managers = None

    def require_root(self) -> None:
        """From here on the root must be a directory (a :class:`UsageError` if not): a hook
        opened without that check, as its upkeep or a missing record may end it first."""
        self.root = Root.open(self.root.top)

    @property
    def dry_run(self) -> bool:
        return self.runner.dry_run

    @property
    def config(self) -> "Config":
        """The configuration, loaded (and validated) once; a hook's deadline follows it."""
        if self._config is None:
            from kzguard.config import load_config

            self._config = load_config(self.root, self.config_path)
            if self.runner.overall is not None:
                self.runner.overall.rearm(self._config.hook_timeout)
        return self._config

    @property
    def host(self) -> "Host":
        """The host facts, gathered once on first use (:meth:`refresh` after a change)."""
        if self._host is None:
            from kzguard.facts.host import gather_for

            self._host = gather_for(self.root, self.config, runner=self.runner)
        return self._host

    def refresh(self) -> None:
        """Forget the facts and the state read so far (an action changed the host)."""
        self._host = None
        self._state = None

    @property
    def state(self) -> "dict[str, Any]":
        """The state file's contents, read once (empty when missing or corrupt); a change
        goes through :func:`kzguard.actions.state.locked`, which reads it again under its
        lock, and then :meth:`refresh`."""
        if self._state is None:
            from kzguard.actions import state

            self._state = state.read(self.root)
        return self._state

    @property
    def managers(self) -> "list[Manager]":
        """The package managers whose databases are on this root (the registry's answer)."""
        if self._managers is None:
            from kzguard import managers

            self._managers = managers.on(self.root)
        return self._managers

    @property
    def all_managers(self) -> "list[Manager]":
        """Every registered manager (a pin is lifted from every form it may have taken)."""
        from kzguard import managers

        return managers.every()
