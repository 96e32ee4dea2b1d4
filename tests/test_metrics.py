"""Metrics: the collector's exposition on a root tree, over HTTP and in a textfile; the alert
rules and the Grafana dashboard that read it, checked with the real promtool."""

from __future__ import annotations

import json
import math
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


# --- OpenMetrics, negotiation, the worker cap ------------------------------------------------

ODD_RELEASES = ('6.12.9-"quoted"', "6.12.9-back\\slash", "6.12.9-new\nline", "6.12.9-ünï€😀")
ODD_MANAGER = 'we"ird\\na\nme ü'
PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


def _cores(tmp_path):
    """(name, core) for every example host checked, the Fedora one before its first check,
    with odd kernel names and an odd manager, and with a failed check."""
    from kzguard.actions import state as state_file

    for host in sorted((TOP / "examples" / "hosts").iterdir()):
        target = tmp_path / host.name
        shutil.copytree(host, target, symlinks=True)
        core = Core(Root(target), runner=Runner())
        if host == EXAMPLE:
            yield f"{host.name} before the first check", core
        core.check()
        yield host.name, core
    odd = tmp_path / "odd"
    shutil.copytree(EXAMPLE, odd, symlinks=True)
    for release in ODD_RELEASES:
        HostTree(odd).kernel(release)
    with state_file.locked(Root(odd)) as st:
        state_file.count_blocked(st.data, ODD_MANAGER)
        st.data["counters"]["snapshot_last_success"] = 1700000000.5
        st.save()
    core = Core(Root(odd), runner=Runner())
    core.check()
    yield "odd label values", core
    core.error = "boom"
    core.errors = 3
    yield "odd label values, the last check failed", core


def test_every_format_is_client_pythons_byte_for_byte_on_every_host(tmp_path):
    from prometheus_client.exposition import generate_latest as text_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    seen = 0
    for name, core in _cores(tmp_path):
        fams, reg = metrics.families(core), metrics.registry(core)
        for escaping in metrics.ESCAPINGS:
            om = metrics.render(fams, metrics.OPENMETRICS, escaping)
            assert om == om_latest(reg, escaping=escaping), (name, escaping)
            assert metrics.body(core, metrics.OPENMETRICS, escaping) == om
            plain = metrics.render(fams, metrics.TEXT, escaping)
            assert plain == text_latest(reg, escaping=escaping), (name, escaping)
        om = metrics.body(core, metrics.OPENMETRICS)
        assert om.endswith(b"# EOF\n")
        if name.startswith("odd"):
            release = ODD_RELEASES[1].replace("\\", "\\\\")
            assert f'kzguard_kernel_safe{{release="{release}"}} 0.0\n'.encode() in om
            assert b'manager="we\\"ird\\\\na\\nme \xc3\xbc"' in om
            assert 'release="6.12.9-ünï€😀"'.encode() in om
        seen += 1
    assert seen == 7


def test_units_odd_help_and_floats_render_as_client_python_does():
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
    from prometheus_client.exposition import generate_latest as text_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    values = [0.0, -0.0, 1.0, 0.1, 1e-9, 123456.0, 1234567.0, 1.5e300, -2.5e7]
    values += [math.inf, -math.inf, math.nan, 1700000000.5]
    doc = 'say "hi"\\ to\nme ü'
    ours = [
        metrics.Family("a_seconds", doc, unit="seconds", labels=["x"]),
        metrics.Family("b:c", doc, "counter", labels=["y"], unit="bytes"),
        metrics.Family("d_total", doc, "counter"),
        metrics.Family("e_info", doc, "info"),
    ]
    theirs = [
        GaugeMetricFamily("a", doc, labels=["x"], unit="seconds"),
        CounterMetricFamily("b:c", doc, labels=["y"], unit="bytes"),
        CounterMetricFamily("d_total", doc),
        InfoMetricFamily("e_info", doc),
    ]
    for n, v in enumerate(values):
        for family, twin in zip(ours[:2], theirs[:2]):
            family.add_metric([f'v"{n}\\\n'], v)
            twin.add_metric([f'v"{n}\\\n'], v)
    ours[2].add_metric((), 7)
    theirs[2].add_metric([], 7)
    ours[3].add_metric({"b": "2", "a": 'x"y'}, 1)
    theirs[3].add_metric([], {"b": "2", "a": 'x"y'})

    class Registry:
        def collect(self):
            return iter(theirs)

    for escaping in metrics.ESCAPINGS:
        om = metrics.render(ours, metrics.OPENMETRICS, escaping)
        assert om == om_latest(Registry(), escaping=escaping), escaping
        assert metrics.render(ours, metrics.TEXT, escaping) == text_latest(
            Registry(), escaping=escaping
        )
    assert b"# UNIT a_seconds seconds\n" in metrics.render(ours, metrics.OPENMETRICS)
    with pytest.raises(ValueError):
        metrics.Family("not a name", doc)


ACCEPTS = [
    "",
    "*/*",
    "application/json",
    "text/plain",
    "text/plain;version=0.0.4",
    "text/plain; version=1.0.0",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=dots",
    "text/plain;version=1.0.0;escaping=bogus",
    "text/plain;version=2.0.0;escaping=values",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text;version=0.0.1",
    "application/openmetrics-text;version=0.0.1,text/plain;version=0.0.4",
    "application/openmetrics-text;version=0.0.1,text/plain;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=2.0.0;escaping=values",
    "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "application/openmetrics-text;escaping=dots",
    "text/plain;version=1.0.0, application/openmetrics-text",
    "Application/OpenMetrics-Text;version=1.0.0",
    PROMETHEUS_2,
    PROMETHEUS_3,
]


def test_content_negotiation_is_client_pythons(tmp_path, monkeypatch):
    """respond() answers every request as client_python's WSGI app does (status, headers,
    body once gunzipped), and renders every format itself: prometheus_client is only asked
    for a name[] selection."""
    import gzip

    from prometheus_client.exposition import make_wsgi_app

    _, core = next(c for c in _cores(tmp_path) if c[0] == "odd label values")
    app = make_wsgi_app(metrics.registry(core))

    def theirs(method, accept, encoding, query):
        answer = {}
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": "/metrics",
            "QUERY_STRING": query,
            "HTTP_ACCEPT": accept,
            "HTTP_ACCEPT_ENCODING": encoding,
        }
        data = b"".join(app(environ, lambda s, h: answer.update(status=s, headers=h)))
        return answer["status"], answer["headers"], data

    def unzip(answer):
        status, headers, data = answer
        return (
            status,
            headers,
            gzip.decompress(data) if ("Content-Encoding", "gzip") in headers else data,
        )

    calls = []
    real = metrics._client_python
    monkeypatch.setattr(metrics, "_client_python", lambda *a: calls.append(a) or real(*a))
    for accept in ACCEPTS:
        for encoding in ("", "gzip", "deflate, gzip;q=0.5"):
            headers = {"accept": accept, "accept-encoding": encoding}
            ours = metrics.respond(core, "GET", "/metrics", "", headers)
            assert unzip(ours) == unzip(theirs("GET", accept, encoding, "")), (accept, encoding)
    assert calls == []
    for method in ("OPTIONS", "POST", "HEAD"):
        assert metrics.respond(core, method, "/", "", {}) == theirs(method, "", "", "")
    selected = "name[]=kzguard_next_boot_safe"
    ours = metrics.respond(core, "GET", "/metrics", selected, {"accept": PROMETHEUS_2})
    assert ours == theirs("GET", PROMETHEUS_2, "", selected) and len(calls) == 1
    assert b"kzguard_kernel_safe" not in ours[2]


def test_a_prometheus_scrape_does_not_import_prometheus_client(root):
    """The daemon's memory goal: what a Prometheus server (2.x and 3.x) and plain tools ask
    for is rendered without client_python."""
    script = f"""
import gzip, sys, urllib.request
from kzguard.root import Root, Runner
from kzguard.service import metrics
from kzguard.service.core import Core
core = Core(Root({str(root)!r}), runner=Runner())
core.check()
server = metrics.serve(core, "127.0.0.1:0")
for accept in ({PROMETHEUS_2!r}, {PROMETHEUS_3!r}, "", "text/plain;version=1.0.0"):
    headers = {{"Accept": accept, "Accept-Encoding": "gzip"}}
    request = urllib.request.Request(server.url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = gzip.decompress(response.read())
        assert response.status == 200 and b"kzguard_next_boot_safe" in body
server.shutdown()
print(sorted(m for m in sys.modules if m.startswith("prometheus_client")))
"""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=TOP
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _scrape_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "kzguard-scrape"]


def test_stalled_connections_hold_at_most_the_cap_and_the_next_is_refused_at_once(core):
    """MAX_WORKERS clients that connect and send nothing hold every worker; each connection
    beyond them is answered 503 at once (without waiting for its request), the thread count
    stays bounded, and once the stalled clients go a scrape is answered again."""
    import time

    server = metrics.serve(core, "127.0.0.1:0", client_timeout=60.0)
    threads_before = threading.active_count()
    stalled, extra = [], []
    try:
        address = server.address
        stalled = [
            socket.create_connection(address, timeout=10) for _ in range(metrics.MAX_WORKERS)
        ]
        extra = [
            socket.create_connection(address, timeout=10) for _ in range(3 * metrics.MAX_WORKERS)
        ]
        for sock in extra:  # refused without a request: the 503, then the server's FIN
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            assert data == metrics.BUSY
        assert threading.active_count() <= threads_before + metrics.MAX_WORKERS
        start = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url, timeout=10)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "1"
        assert time.monotonic() - start < 5  # not held until a stalled client times out (60 s)
        assert len(_scrape_threads()) <= metrics.MAX_WORKERS
        assert threading.active_count() <= threads_before + metrics.MAX_WORKERS
        for sock in stalled:
            sock.close()  # each worker reads the end of its connection and returns
        stalled = []
        for thread in _scrape_threads():
            thread.join(10)
        assert not _scrape_threads()
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.status == 200 and b"kzguard_next_boot_safe" in response.read()
    finally:
        for sock in stalled + extra:
            sock.close()
        server.shutdown()


def test_a_client_that_never_finishes_its_request_is_dropped_at_the_timeout(core):
    server = metrics.serve(core, "127.0.0.1:0", client_timeout=0.3)
    try:
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n")  # never the blank line
            assert sock.recv(4096) == b""  # closed by the server, well before our 10 s
    finally:
        server.shutdown()
