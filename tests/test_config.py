"""The configuration file: defaults, every key, every error with its key and line, the docs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kzguard.base.errors import ConfigError
from kzguard.base.record import Record
from kzguard.config import (
    DEFAULT_PATH,
    SCHEMA,
    Config,
    load_config,
    loads,
    render_docs,
)
from kzguard.root import Root

DOCS = Path(__file__).resolve().parent.parent / "docs" / "config.md"

FULL = """\
# every key, none at its default
on_unsupported_kernel: hold
on_module_failure: fail
on_error: allow
on_unknown: block
snapshots:
  enabled: false
  dataset: rpool/ROOT/debian
  keep: 12
  required: yes
metrics:
  listen: "[::1]:9100"
  textfile: /var/lib/node_exporter/textfile_collector/kzguard.prom
modules: [zfs, spl, nvidia-drm, nvidia-drm]
zfs_ranges:
  "2.4.5": {linux_min: "4.18", linux_max: "6.18"}
  2.2.7-1:
    linux_min: "4.18.0"
    linux_max: "6.12"
"""


@pytest.fixture(params=["libyaml", "pure"])
def loader(request, monkeypatch):
    """Run a test with the C loader and again with the pure-Python fallback."""
    if request.param == "pure":
        monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    elif not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML built without libyaml")
    return request.param


def write(tmp_path: Path, text, name: str = DEFAULT_PATH) -> Path:
    path = tmp_path / name.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text) -> Config:
    write(tmp_path, text)
    return load_config(Root(tmp_path))


def error(tmp_path: Path, text) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value


# ---------------------------------------------------------------- defaults and values


def test_defaults_when_the_file_is_missing(tmp_path):
    config = load_config(Root(tmp_path))
    assert config == Config.defaults()
    assert config.source == "defaults"
    assert config.on_unsupported_kernel == "block"
    assert config.on_module_failure == "keep-default"
    assert config.on_error == "block"
    assert config.on_unknown == "warn"
    assert config.snapshots == type(config.snapshots)(True, "auto", 5, False)
    assert config.metrics.listen == "127.0.0.1:9737"
    assert config.metrics.textfile is None
    assert config.modules == ("zfs", "spl")
    assert config.zfs_ranges == {}


@pytest.mark.parametrize(
    "text", ["", "\n\n", "# only a comment\n", "---\n", "~\n", b"\xef\xbb\xbf"]
)
def test_empty_file_gives_defaults(tmp_path, text):
    config = load(tmp_path, text)
    assert config == Config.defaults()
    assert config.source == str(tmp_path / "etc/kzguard/kzguard.yaml")


def test_every_key_is_parsed(tmp_path, loader):
    config = load(tmp_path, FULL)
    assert config.on_unsupported_kernel == "hold"
    assert config.on_module_failure == "fail"
    assert config.on_error == "allow"
    assert config.on_unknown == "block"
    assert config.snapshots.enabled is False
    assert config.snapshots.dataset == "rpool/ROOT/debian"
    assert config.snapshots.keep == 12
    assert config.snapshots.required is True
    assert config.metrics.listen == "[::1]:9100"
    assert config.metrics.textfile == "/var/lib/node_exporter/textfile_collector/kzguard.prom"
    assert config.modules == ("zfs", "spl", "nvidia_drm")
    assert config.zfs_ranges == {"2.4.5": ("4.18", "6.18"), "2.2.7-1": ("4.18.0", "6.12")}
    assert config.get("snapshots.keep") == 12
    assert config.source.endswith("/etc/kzguard/kzguard.yaml")


def test_a_partial_section_keeps_the_other_defaults(tmp_path):
    config = load(tmp_path, "snapshots:\n  keep: 2\nmetrics:\n")
    assert config.snapshots == Config.defaults().snapshots._replace(keep=2)
    assert config.metrics == Config.defaults().metrics


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('""', ""),
        ("", ""),
        ("127.0.0.1:9737", "127.0.0.1:9737"),
        ("0.0.0.0:9100", "0.0.0.0:9100"),
        ("localhost:9737", "localhost:9737"),
        ("'[::1]:9737'", "[::1]:9737"),
        ("'[::]:1'", "[::]:1"),
    ],
)
def test_metrics_listen_forms(tmp_path, value, expected):
    assert load(tmp_path, f"metrics:\n  listen: {value}\n").metrics.listen == expected


def test_config_option_reads_a_host_path(tmp_path):
    path = write(tmp_path, "on_error: allow\n", "elsewhere.yaml")
    config = load_config(Root(tmp_path / "no-such-root"), str(path))
    assert config.on_error == "allow"
    assert config.source == str(path)


def test_to_dict_loads_back_equal(tmp_path):
    config = load(tmp_path, FULL)
    assert loads(yaml.safe_dump(config.to_dict())) == config
    assert loads(yaml.safe_dump(Config.defaults().to_dict())) == Config.defaults()
    assert config.to_dict()["zfs_ranges"]["2.4.5"] == {"linux_min": "4.18", "linux_max": "6.18"}


def test_config_is_frozen():
    with pytest.raises(AttributeError, match="immutable"):
        Config.defaults().on_error = "allow"  # type: ignore[misc]


# ---------------------------------------------------------------- errors: key and line

ERRORS = [
    # (text, line, key, fragment)
    (
        "# c\n\n# c\nmodules: [zfs]\n\n# c\non_unsupported_kernel: blok\n",
        7,
        "on_unsupported_kernel",
        "'blok' is not one of block, hold, warn; did you mean 'block'?",
    ),
    ("on_error: yes\n", 1, "on_error", "'yes' is not one of block, allow"),
    ("on_module_failure: [warn]\n", 1, "on_module_failure", "expected one of keep-default"),
    ("on_unknown:\n", 1, "on_unknown", "expected one of block, warn, got nothing"),
    ("on_error: block\n\nsnapshot:\n  keep: 3\n", 3, "snapshot", "did you mean 'snapshots'?"),
    ("snapshots:\n  keeep: 3\n", 2, "snapshots.keeep", "did you mean 'keep'?"),
    ("keep: 3\n", 1, "keep", "'snapshots.keep' is written as 'keep' indented under 'snapshots:'"),
    ("snapshots.keep: 3\n", 1, "snapshots.keep", "indented under 'snapshots:'"),
    ("frobnicate: 1\n", 1, "frobnicate", "unknown key (known here: on_unsupported_kernel"),
    ("zfs_ranges:\n  '2.2.7':\n    linux_minn: '4.18'\n", 3, "linux_minn", "did you mean"),
    ("snapshots: [keep, 3]\n", 1, "snapshots", "expected a mapping, got a list"),
    ("snapshots: 5\n", 1, "snapshots", "expected a mapping, got an integer 5"),
    ("snapshots:\n  keep: -1\n", 2, "snapshots.keep", "must be at least 1, got -1"),
    ("snapshots:\n  keep: 0\n", 2, "snapshots.keep", "must be at least 1, got 0"),
    ("snapshots:\n  keep: '5'\n", 2, "snapshots.keep", "expected an integer, got a string '5'"),
    ("snapshots:\n  keep: true\n", 2, "snapshots.keep", "expected an integer, got a boolean"),
    ("snapshots:\n  keep: 2.5\n", 2, "snapshots.keep", "expected an integer, got a number"),
    ("snapshots:\n  keep: !!int x\n", 2, "snapshots.keep", "'x' is not a valid integer"),
    ("snapshots:\n  enabled: 'yes'\n", 2, "snapshots.enabled", "expected true or false"),
    ("snapshots:\n  required: 1\n", 2, "snapshots.required", "expected true or false"),
    ("snapshots:\n  dataset: /rpool\n", 2, "snapshots.dataset", "is not a dataset name"),
    ("snapshots:\n  dataset: tank@snap\n", 2, "snapshots.dataset", "is not a dataset name"),
    ("snapshots:\n  dataset: 2024\n", 2, "snapshots.dataset", "quote it"),
    ("metrics:\n  listen: localhost\n", 2, "metrics.listen", "is not host:port"),
    ("metrics:\n  listen: 9737\n", 2, "metrics.listen", "got an integer 9737"),
    ("metrics:\n  listen: '[::1]'\n", 2, "metrics.listen", "is not host:port"),
    ("metrics:\n  listen: ':9737'\n", 2, "metrics.listen", "is not host:port"),
    ("metrics:\n  listen: '1.2.3.4:70000'\n", 2, "metrics.listen", "port outside 1-65535"),
    ("metrics:\n  listen: '999.1.1.1:80'\n", 2, "metrics.listen", "invalid IP address"),
    ("metrics:\n  listen: '[zz::1]:80'\n", 2, "metrics.listen", "invalid IP address"),
    ("metrics:\n  textfile: kzguard.prom\n", 2, "metrics.textfile", "not an absolute path"),
    ("metrics:\n  textfile: /run/kzguard.txt\n", 2, "metrics.textfile", "must end in .prom"),
    ("modules: zfs\n", 1, "modules", "expected a list of module names, got a string 'zfs'"),
    ("modules: []\n", 1, "modules", "an empty list guards nothing"),
    ("modules:\n", 1, "modules", "expected a list of module names, got nothing"),
    ("modules:\n  - zfs\n  - zfs.ko\n", 3, "modules[1]", "'zfs.ko' is not a module name"),
    ("modules:\n  - zfs\n  - ''\n", 3, "modules[1]", "is not a module name"),
    ("modules:\n  - zfs\n  - 42\n", 3, "modules[1]", "got an integer 42; quote it"),
    ("modules:\n  - [zfs]\n", 2, "modules[0]", "expected a module name, got a list"),
    ("zfs_ranges: [2.2.7]\n", 1, "zfs_ranges", "expected a mapping of OpenZFS version"),
    (
        "zfs_ranges:\n  '2.2.7':\n    linux_min: '4.18'\n    linux_max: 6.10\n",
        4,
        "zfs_ranges['2.2.7'].linux_max",
        "6.10 is read as a number (6.10 would become 6.1); quote it: '6.10'",
    ),
    (
        "zfs_ranges:\n  '2.2.7':\n    linux_min: 4.18\n    linux_max: '6.10'\n",
        3,
        "zfs_ranges['2.2.7'].linux_min",
        "quote it: '4.18'",
    ),
    (
        "zfs_ranges:\n  '2.2.7':\n    linux_min: '4.18'\n    linux_max: '6.x'\n",
        4,
        "zfs_ranges['2.2.7'].linux_max",
        "is not a kernel version",
    ),
    (
        "zfs_ranges:\n  '2.2.7': {linux_min: '4.18'}\n",
        2,
        "zfs_ranges['2.2.7']",
        "missing linux_max",
    ),
    ("zfs_ranges:\n  '2.2.7':\n", 2, "zfs_ranges['2.2.7']", "missing linux_min and linux_max"),
    (
        "zfs_ranges:\n  '2.2.7': {linux_min: '6.12.4', linux_max: '6.1'}\n",
        2,
        "zfs_ranges['2.2.7']",
        "linux_min 6.12.4 is above linux_max 6.1",
    ),
    ("zfs_ranges:\n  2.3: {linux_min: '4.18', linux_max: '6.1'}\n", 2, "zfs_ranges", "quote"),
    ("zfs_ranges:\n  zfs: {linux_min: '4.18', linux_max: '6.1'}\n", 2, "zfs_ranges", "version"),
    ("1: one\n", 1, "1", "expected a string key, got an integer 1; quote it"),
    ("? [a, b]\n: c\n", 1, "", "keys must be strings, got a list"),
    ("base: &b {keep: 1}\nsnapshots:\n  <<: *b\n", 1, "base", "unknown key"),
    ("snapshots:\n  <<: {keep: 1}\n", 2, "snapshots", "merge keys (<<) are not supported"),
    ("on_error: !!python/name:os.system\n", 1, "on_error", "got a value tagged"),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), ERRORS)
def test_error_names_file_key_and_line(tmp_path, loader, text, line, key, fragment):
    exc = error(tmp_path, text)
    path = str(tmp_path / "etc/kzguard/kzguard.yaml")
    assert exc.path == path
    assert exc.line == line, str(exc)
    assert key in exc.key, str(exc)
    assert fragment in str(exc)
    assert str(exc).startswith(f"{path}:{line}: ")


def test_unknown_key_message_matches_the_documented_form():
    with pytest.raises(ConfigError) as info:
        loads("on_error: block\n\nsnapshot:\n  keep: 3\n", source="")
    assert str(info.value) == "line 3: snapshot: unknown key; did you mean 'snapshots'?"


def test_bad_choice_message_matches_the_documented_form(tmp_path):
    text = "\n" * 6 + "on_unsupported_kernel: blok\n"
    exc = error(tmp_path, text)
    assert str(exc) == (
        f"{tmp_path}/etc/kzguard/kzguard.yaml:7: on_unsupported_kernel: "
        "'blok' is not one of block, hold, warn; did you mean 'block'?"
    )


@pytest.mark.parametrize(
    ("text", "key", "first", "second"),
    [
        ("on_error: block\nmodules: [zfs]\non_error: allow\n", "on_error", 1, 3),
        ("snapshots:\n  keep: 1\n  enabled: true\n  keep: 2\n", "snapshots.keep", 2, 4),
        ("snapshots:\n  keep: 1\nsnapshots:\n  keep: 2\n", "snapshots", 1, 3),
        (
            "zfs_ranges:\n  '2.2.7': {linux_min: '4.18', linux_max: '6.1'}\n"
            "  2.2.7: {linux_min: '4.18', linux_max: '6.2'}\n",
            "zfs_ranges['2.2.7']",
            2,
            3,
        ),
    ],
)
def test_duplicate_keys_name_both_lines(tmp_path, loader, text, key, first, second):
    exc = error(tmp_path, text)
    assert exc.key == key
    assert exc.line == second
    assert f"line {first}" in str(exc) and f"line {second}" in str(exc)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("on_error: block\nsnapshots:\n  keep: [1\n", 4, "YAML syntax error at column"),
        ("on_error: block\n  modules: x\n", 2, "YAML syntax error at column 10"),
        ("a: 'unterminated\n", 2, "YAML syntax error"),
        ("on_error: *nowhere\n", 1, "YAML syntax error at column 11"),
        ("\tkeep: 1\n", 1, "YAML syntax error at column 1"),
    ],
)
def test_syntax_errors_give_line_and_column(tmp_path, loader, text, line, fragment):
    exc = error(tmp_path, text)
    assert exc.line == line, str(exc)
    assert fragment in str(exc)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("- on_error\n- block\n", 1, "expected a mapping of settings, got a list"),
        ("\n\nblock\n", 3, "expected a mapping of settings, got a string 'block'"),
        ("on_error: block\n---\non_error: allow\n", 2, "more than one YAML document"),
        ("on_error: block\n---\n", 2, "more than one YAML document"),
        ("on_error: block\n...\n\n--- x\n", 4, "more than one YAML document"),
        ("on_error: block\nmodules: [zfs]\x00\n", 2, "character U+0000 is not allowed"),
    ],
)
def test_document_shape_errors(tmp_path, loader, text, line, fragment):
    exc = error(tmp_path, text)
    assert exc.line == line, str(exc)
    assert fragment in str(exc)


def test_non_utf8_bytes_name_the_line(tmp_path):
    exc = error(tmp_path, b"on_error: block\nsnapshots:\n  dataset: r\xf6ot\n")
    assert exc.line == 3
    assert "not UTF-8 text: byte 0xf6 at column 13" in str(exc)


def test_missing_config_option_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(Root(tmp_path), str(missing))
    assert info.value.path == str(missing)
    assert str(info.value).startswith(f"{missing}: cannot read")


def test_unreadable_default_file_is_an_error(tmp_path):
    (tmp_path / "etc/kzguard/kzguard.yaml").mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        load_config(Root(tmp_path))
    assert "cannot read" in str(info.value)


def test_deep_nesting_is_a_config_error(tmp_path, loader):
    with pytest.raises(ConfigError):
        load(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n")


# ---------------------------------------------------------------- the table and the docs


def test_docs_match_the_schema():
    assert DOCS.read_text(encoding="utf-8") == render_docs(), (
        "docs/config.md is stale: run `python -m kzguard.config > docs/config.md`"
    )


def test_docs_example_loads_to_the_defaults():
    example = re.search(r"```yaml\n(.*?)```", render_docs(), re.S)
    assert example is not None
    assert loads(example.group(1)) == Config.defaults()


def nested(name: str, value) -> str:
    """YAML text setting the dotted key ``name`` to ``value``."""
    *parents, leaf = name.split(".")
    data = {leaf: list(value) if isinstance(value, tuple) else value}
    for parent in reversed(parents):
        data = {parent: data}
    return yaml.safe_dump(data)


def test_schema_and_config_attributes_agree():
    def flat(cls, prefix=""):
        for name in cls._fields:
            kind = getattr(Config.defaults(), name, None) if not prefix else None
            if isinstance(kind, Record):
                yield from flat(type(kind), f"{name}.")
            elif name != "source":
                yield prefix + name

    assert list(flat(Config)) == [setting.name for setting in SCHEMA]


@pytest.mark.parametrize("setting", SCHEMA, ids=lambda s: s.name)
def test_each_default_and_example_passes_its_own_check(setting):
    assert loads(nested(setting.name, setting.default)).get(setting.name) == setting.default
    if setting.example is not None:
        assert loads(nested(setting.name, setting.example)) != Config.defaults()
    assert "|" not in setting.doc and "\n" not in setting.doc


def test_importing_config_does_not_import_yaml():
    code = "import sys, kzguard.config; sys.exit('yaml' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(DOCS.parent.parent))
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


# ---------------------------------------------------------------- properties

_FRAGMENTS = st.sampled_from(
    [
        "on_unsupported_kernel: ",
        "on_error: ",
        "snapshots:\n  ",
        "keep: ",
        "metrics:\n  listen: ",
        "textfile: ",
        "modules:\n  - ",
        "zfs_ranges:\n  ",
        "'2.2.7': ",
        "linux_min: ",
        "linux_max: ",
        "{",
        "}",
        "[",
        "]",
        "- ",
        "\n",
        "  ",
        ", ",
        "block",
        "6.10",
        "'6.10'",
        "-1",
        "true",
        "~",
        "&a ",
        "*a",
        "!!int ",
        "<<: ",
        "---\n",
        "'",
        '"',
        "#",
        "[::1]:9737",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.lists(_FRAGMENTS).map("".join), st.binary()))
def test_loads_returns_a_config_or_raises_config_error(data):
    try:
        result = loads(data)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(result, Config)


def test_signature_keys(tmp_path):
    config = load(
        tmp_path,
        "require_signature: always\n"
        "trusted_certificates:\n  - /etc/pki/a.pem\n  - /etc/pki/a.pem\n",
    )
    assert config.require_signature == "always"
    assert config.trusted_certificates == ("/etc/pki/a.pem",)
    assert Config.defaults().require_signature == "auto"
    assert Config.defaults().trusted_certificates == ()


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("require_signature: sometimes\n", 1, "require_signature: 'sometimes' is not one of"),
        ("trusted_certificates: /etc/a.pem\n", 1, "trusted_certificates"),
        ("trusted_certificates:\n  - a.pem\n", 2, "'a.pem' is not an absolute path"),
    ],
)
def test_signature_key_errors(tmp_path, text, line, needle):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.line == line
    assert needle in str(info.value)


def test_deep_flow_nesting_is_refused_before_the_parser_recurses():
    """100k nested `[` segfaulted Python 3.9's YAML composer (C stack): refused first."""
    with pytest.raises(ConfigError, match="nested more than 32 levels"):
        loads("modules: " + "[" * 100_000)
    assert loads("# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\nmodules: ['zfs']\n").modules == ("zfs",)


def test_deep_block_nesting_is_refused_too():
    with pytest.raises(ConfigError, match="nested too deeply"):
        loads("- " * 100_000 + "x\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        loads("".join(" " * n + f"k{n}:\n" for n in range(0, 600, 2)))
