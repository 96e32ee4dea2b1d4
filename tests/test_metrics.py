"""Metrics: the collector's exposition on a root tree, over HTTP and in a textfile; the alert
rules and the Grafana dashboard that read it, checked with the real promtool."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devtools.hostbuilder import HostTree
from kzguard import __version__
from kzguard.actions import state
from kzguard.root import Root, Runner
from kzguard.service import metrics
from kzguard.service.core import Core
from tests import tools

TOP = Path(__file__).resolve().parent.parent
EXAMPLE = TOP / "examples" / "hosts" / "fedora-dkms-pending"
RULES = TOP / "packaging" / "prometheus" / "kzguard-rules.yml"
RULE_TESTS = TOP / "packaging" / "prometheus" / "kzguard-rules.test.yml"
DASHBOARD = TOP / "packaging" / "grafana" / "kzguard-dashboard.json"

OLD, RUNNING = "6.11.10-300.fc41.x86_64", "6.12.9-200.fc41.x86_64"
PENDING = "6.13.2-200.fc41.x86_64"  # in dnf's cache; ZFS 2.2.7 stops at Linux 6.12
NO_MODULE = "6.12.10-200.fc41.x86_64"

_SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Samples of a text exposition: (name, frozenset of label pairs) -> value."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        assert match, line
        # An empty label value is no label at all, as Prometheus reads it.
        labels = frozenset((k, v) for k, v in _LABEL.findall(match["labels"] or "") if v)
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(text: str) -> set[str]:
    return {name for name, _ in parse(text)} | set(re.findall(r"^# TYPE (\S+)", text, re.M))


def promtool(*args: str, input: str | None = None):
    tools.need("promtool")
    return tools.run("promtool", *args, input=input, check=False)


@pytest.fixture
def root(tmp_path) -> Path:
    """The Fedora example (zfs-dkms 2.2.7, two good kernels, 6.13.2 pending in dnf's cache)."""
    target = tmp_path / "root"
    shutil.copytree(EXAMPLE, target, symlinks=True)
    return target


@pytest.fixture
def core(root) -> Core:
    core = Core(Root(root), runner=Runner())
    core.check()
    return core


def text(core: Core) -> str:
    return metrics.exposition(core).decode()


# --- values ----------------------------------------------------------------------------------


def test_values_on_a_host_with_an_unsupported_pending_kernel(core):
    samples = parse(text(core))
    assert value(samples, "kzguard_next_boot_safe") == 1
    assert value(samples, "kzguard_pending_kernel_supported", release=PENDING) == 0
    assert value(samples, "kzguard_kernel_safe", release=OLD) == 1
    assert value(samples, "kzguard_kernel_safe", release=RUNNING) == 1
    assert ("kzguard_kernel_safe", frozenset({("release", PENDING)})) not in samples
    assert value(samples, "kzguard_kernel_module_missing", release=RUNNING) == 0
    for manager in ("apt", "dnf", "dnf5", "pacman"):
        assert value(samples, "kzguard_transactions_blocked_total", manager=manager) == 0
    pending = {"release": PENDING, "state": "pending"}
    assert value(samples, "kzguard_kernel_verdict", **pending, verdict="unsafe") == 1
    assert value(samples, "kzguard_kernel_verdict", **pending, verdict="safe") == 0
    assert value(samples, "kzguard_kernel_verdict", **pending, verdict="unknown") == 0
    assert value(samples, "kzguard_kernel_reason", **pending, reason="kernel-too-new") == 1
    info = {"release": RUNNING, "verdict": "safe", "source": "newest-installed"}
    assert value(samples, "kzguard_next_boot_info", **info) == 1
    assert value(samples, "kzguard_build_info", version=__version__) == 1
    assert value(samples, "kzguard_secure_boot_enabled") == 0
    assert value(samples, "kzguard_root_on_zfs") == 0
    assert value(samples, "kzguard_snapshot_last_success_timestamp_seconds") == 0
    assert value(samples, "kzguard_last_check_timestamp_seconds") == core.last.taken_at
    assert value(samples, "kzguard_check_duration_seconds") == core.last.duration > 0
    assert value(samples, "kzguard_check_errors_total") == 0
    assert value(samples, "kzguard_last_check_failed") == 0


def test_before_the_first_check_only_what_needs_no_judgement(root):
    samples = parse(text(Core(Root(root), runner=Runner())))
    assert {name for name, _ in samples} == {
        "kzguard_build_info",
        "kzguard_last_check_timestamp_seconds",
        "kzguard_check_duration_seconds",
        "kzguard_last_check_failed",
        "kzguard_check_errors_total",
        "kzguard_snapshots_enabled",
    }
    assert value(samples, "kzguard_last_check_timestamp_seconds") == 0


def test_a_kernel_without_its_module_blocked_transactions_and_a_snapshot(root, core):
    HostTree(root).kernel(NO_MODULE)  # installed, no zfs.ko: the newest, so the next boot
    with state.locked(Root(root)) as st:
        for manager in ("dnf", "dnf", "zypper"):
            state.count_blocked(st.data, manager)
        st.data["counters"]["snapshot_last_success"] = 1700000000.0
        st.save()
    core.check()
    samples = parse(text(core))  # the collector reads the new snapshot: nothing cached
    assert value(samples, "kzguard_kernel_module_missing", release=NO_MODULE) == 1
    assert value(samples, "kzguard_kernel_safe", release=NO_MODULE) == 0
    assert value(samples, "kzguard_kernel_module_missing", release=RUNNING) == 0
    assert value(samples, "kzguard_next_boot_safe", reason="module-missing") == 0
    reason = {"release": NO_MODULE, "state": "installed", "reason": "module-missing"}
    assert value(samples, "kzguard_kernel_reason", **reason) == 1
    assert value(samples, "kzguard_transactions_blocked_total", manager="dnf") == 2
    assert value(samples, "kzguard_transactions_blocked_total", manager="zypper") == 1
    assert value(samples, "kzguard_transactions_blocked_total", manager="apt") == 0
    assert value(samples, "kzguard_snapshot_last_success_timestamp_seconds") == 1700000000.0


def test_check_errors_count_each_failed_check(core):
    core.error = "cannot read /lib/modules: Permission denied"
    core.error = "cannot read /lib/modules: Permission denied"
    samples = parse(text(core))
    assert value(samples, "kzguard_last_check_failed") == 1
    assert value(samples, "kzguard_check_errors_total") == 2
    assert value(samples, "kzguard_next_boot_safe") == 1  # the last good check still stands
    core.check()
    samples = parse(text(core))
    assert value(samples, "kzguard_last_check_failed") == 0
    assert value(samples, "kzguard_check_errors_total") == 2


@pytest.mark.real
def test_promtool_accepts_the_exposition(root, core):
    fresh = Core(Root(root), runner=Runner())
    HostTree(root.parent / "second").os_release("fedora41")  # no kernel at all: empty families
    bare = Core(Root(root.parent / "second"), runner=Runner())
    bare.check()
    for exposition in (text(core), text(fresh), text(bare)):
        proc = promtool("check", "metrics", input=exposition)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout + proc.stderr == ""
    # nothing to boot, and nothing seen is never safe: the alert's reason says so
    assert value(parse(text(bare)), "kzguard_next_boot_safe", reason="kernel-unreadable") == 0


# --- HTTP and textfile -----------------------------------------------------------------------


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode(), response.headers["Content-Type"]


def test_served_over_http_fresh_on_each_scrape(root, core):
    server = metrics.serve(core, "127.0.0.1:0")
    try:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        body, content_type = scrape(server.url)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert body == text(core)
        HostTree(root).kernel(NO_MODULE)
        core.check()
        body, _ = scrape(server.url)
        assert value(parse(body), "kzguard_kernel_module_missing", release=NO_MODULE) == 1
    finally:
        server.shutdown()
    with pytest.raises(urllib.error.URLError):
        scrape(server.url)
    server.shutdown()  # twice is fine


def test_served_on_ipv6_loopback(core):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = metrics.serve(core, "[::1]:0")
    try:
        assert server.address[0] == "::1"
        assert server.url.startswith("http://[::1]:")
        body, _ = scrape(server.url)
        assert body == text(core)
    finally:
        server.shutdown()


def test_listen_addresses(core):
    assert metrics.parse_listen("127.0.0.1:9737") == ("127.0.0.1", 9737)
    assert metrics.parse_listen("[::1]:9737") == ("::1", 9737)
    assert metrics.parse_listen("localhost:80") == ("localhost", 80)
    for bad in ("9737", "::1:9737", "[::1]", "host:port"):
        with pytest.raises(ValueError):
            metrics.parse_listen(bad)
    with pytest.raises(ValueError, match="disabled"):
        metrics.serve(core, "")
    assert core.config.metrics.listen == metrics.DEFAULT_LISTEN  # loopback unless configured


def test_textfile_is_replaced_atomically_and_equals_a_scrape(tmp_path, core):
    target = tmp_path / "textfile" / "kzguard.prom"
    target.parent.mkdir()
    target.write_text("# old content\n")
    before = target.stat().st_ino
    assert metrics.write_textfile(core, str(target)) == str(target)
    assert [p.name for p in target.parent.iterdir()] == ["kzguard.prom"]  # no temp file left
    assert target.stat().st_ino != before  # a new file renamed over the old one
    server = metrics.serve(core, "127.0.0.1:0")
    try:
        assert target.read_text() == scrape(server.url)[0]
    finally:
        server.shutdown()


def test_textfile_from_the_configuration_lands_in_the_root(root):
    HostTree(root).config("metrics:\n  textfile: /var/lib/node_exporter/kzguard.prom\n")
    (root / "var/lib/node_exporter").mkdir(parents=True)
    core = Core(Root(root), runner=Runner())
    core.check()
    written = metrics.write_textfile(core)
    assert written == str(root / "var/lib/node_exporter/kzguard.prom")
    assert Path(written).read_text() == text(core)
    core.config = core.config._replace(metrics=core.config.metrics._replace(textfile=None))
    with pytest.raises(ValueError, match=r"metrics\.textfile"):
        metrics.write_textfile(core)


def test_textfile_is_never_written_through_a_planted_link(root, core, tmp_path):
    from kzguard.base.fileio import TMP_MARK, UnsafeDirectory

    victim = tmp_path / "root-only"
    victim.write_text("secret\n")
    collector = tmp_path / "collector"
    collector.mkdir()
    target = collector / "kzguard.prom"
    for pid in range(os.getpid() - 2, os.getpid() + 3):  # client_python's predictable names
        os.symlink(victim, f"{target}.{pid}.{threading.get_ident()}")
        os.symlink(victim, f"{target}{TMP_MARK}{pid}")
    metrics.write_textfile(core, str(target))
    assert victim.read_text() == "secret\n" and "kzguard_build_info" in target.read_text()
    target.unlink()
    os.symlink(victim, target)  # the textfile itself a link: refused
    with pytest.raises(UnsafeDirectory, match="symbolic link"):
        metrics.write_textfile(core, str(target))
    os.chmod(collector, 0o777)  # anyone may plant files here: refused
    with pytest.raises(UnsafeDirectory, match="not sticky"):
        metrics.write_textfile(core, str(collector / "other.prom"))
    assert victim.read_text() == "secret\n"


# --- rules and dashboard ---------------------------------------------------------------------


@pytest.mark.real
def test_promtool_checks_and_tests_the_rules():
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout
    proc = promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_test_that_fires_it_and_one_that_does_not():
    import yaml

    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    firing, quiet = set(), set()
    for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert firing == alerts and quiet == alerts


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
    variables = data["templating"]["list"]
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in variables)
    exprs += [v["definition"] for v in variables if v["type"] == "query"]
    return exprs


def test_the_dashboard_reads_only_metrics_the_collector_emits(root, core):
    HostTree(root).kernel(NO_MODULE)
    core.check()
    emitted = names(text(core))
    used = {name for expr in dashboard_exprs() for name in re.findall(r"kzguard_\w+", expr)}
    assert used and used <= emitted, used - emitted
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.real
def test_the_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses each query as a recording rule (Grafana's variables filled in)."""
    import yaml

    fill = {"$job": ".*", "$instance": ".*", "$__rate_interval": "5m"}
    rules = []
    for n, expr in enumerate(dashboard_exprs()):
        if expr.startswith("label_values("):
            expr = re.sub(r"label_values\((.*), \w+\)$", r"\1", expr)
        for variable, replacement in fill.items():
            expr = expr.replace(variable, replacement)
        rules.append({"record": f"kzguard:dashboard_{n}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_rendered_text_is_client_pythons_byte_for_byte(root, core):
    """exposition() renders the text format itself (once per state); it must be what
    prometheus_client's generate_latest writes for the same families, in every state."""
    from prometheus_client.exposition import generate_latest

    fresh = Core(Root(root), runner=Runner())
    assert metrics.exposition(fresh) == generate_latest(metrics.registry(fresh))
    HostTree(root).kernel(NO_MODULE)
    with state.locked(Root(root)) as st:
        state.count_blocked(st.data, 'we"ird\\na\nme')
        st.data["counters"]["snapshot_last_success"] = 1700000000.5
        st.save()
    core.check()
    assert metrics.exposition(core) == generate_latest(metrics.registry(core))
    core.error = "boom"
    assert metrics.exposition(core) == generate_latest(metrics.registry(core))  # not stale


def test_a_prometheus_server_gets_openmetrics_and_gzip_as_before(core):
    import gzip

    server = metrics.serve(core, "127.0.0.1:0")
    try:
        request = urllib.request.Request(
            server.url,
            headers={
                "Accept": "application/openmetrics-text;version=1.0.0",
                "Accept-Encoding": "gzip",
            },
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = gzip.decompress(response.read()).decode()
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.endswith("# EOF\n") and "kzguard_next_boot_safe" in body
    finally:
        server.shutdown()
