"""Metrics that cannot rot: every log-based metric in infra/ (google_logging_metric) must match
JSON lines the product really writes.

The real processes go through real scenarios: the connector (functions.connector.app, in this
process, its lines formatted by the product's own JsonFormatter as in production) reads the demo
relay; the notifier runs under functions-framework (its stdout is the product's JSON); FCM is the
local endpoint answering with scripted errors. Scenarios: a call that rings, is answered and
ends; dead, flaky and rejected FCM tokens; skipped recipients; a bad frame; amiws losing and
regaining its PBX login; the relay dropping every connection; a relay whose address the policy
refuses; a malformed Pub/Sub message.

Each metric's filter is parsed (only the syntax infra/monitoring.tf uses; anything else fails
here rather than being ignored) and its jsonPayload / labels / severity conditions, label
extractors and value extractor are checked against the lines of its component. Renaming a log
message or a field breaks this test, not the dashboard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from devtools.fake_fcm import Fault
from functions.log import JsonFormatter
from tests.infra.conftest import INFRA, load_terraform
from tests.integration.scenario import device, user, write
from tests.integration.test_faults import queue_call
from tests.integration.test_incoming_call_e2e import runtime_for, settle
from tests.integration.test_notifier_http import post_raw_message
from tests.support import eventually

LABELS_KEY = "logging.googleapis.com/labels"
SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"]

# Fields the product does not write yet, which a metric needs (the lead adds them; until then
# the check of that metric fails with this message, on purpose).
WAITING_FOR: dict[str, str] = {}  # metric -> the log line it needs that the product lacks


# --- the filter language of infra/monitoring.tf ----------------------------------------------


@dataclass
class Condition:
    path: str  # "jsonPayload.message", "labels.component", "severity"
    op: str  # "=", ">", ">="
    values: tuple[Any, ...]

    def written(self, line: dict[str, Any]) -> bool:
        """Whether the line could meet it: a numeric threshold (refused_for_s>=300) holds in
        production, not in a test's minutes; here its field must be there, as a number."""
        if self.op == "=" or self.path == "severity":
            return self.holds(line)
        found, value = lookup(line, self.path)
        return found and isinstance(value, int | float) and not isinstance(value, bool)

    def holds(self, line: dict[str, Any]) -> bool:
        if self.path == "severity":
            have = SEVERITIES.index(str(line.get("severity", "DEFAULT")))
            want = SEVERITIES.index(str(self.values[0]))
            return have >= want if self.op == ">=" else have > want
        found, value = lookup(line, self.path)
        if not found or value is None:
            return False
        if self.op == "=":
            return str(value) in self.values
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return value >= self.values[0] if self.op == ">=" else value > self.values[0]


@dataclass
class Metric:
    name: str
    component: str  # whose lines: connector, notifier, or both
    conditions: list[Condition]
    labels: dict[str, str] = field(default_factory=dict)  # label -> extractor
    value_extractor: str | None = None


def lookup(line: dict[str, Any], path: str) -> tuple[bool, Any]:
    """A log filter path on one of the product's JSON lines (its jsonPayload)."""
    root, _, rest = path.partition(".")
    if root == "severity":
        return "severity" in line, line.get("severity")
    if root == "labels":
        labels = line.get(LABELS_KEY, {})
        return rest in labels, labels.get(rest)
    assert root == "jsonPayload", path
    value: Any = line
    for part in rest.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


_STRING = r'"((?:[^"\\]|\\.)*)"'
_TERM = re.compile(
    rf"(?P<path>(?:jsonPayload|labels)\.[\w.]+|severity)\s*"
    rf"(?:(?P<op>>=|>)\s*(?P<num>\w+)|=\s*(?:{_STRING}|\((?P<alts>[^()]*)\)))"
)
_RESOURCE = re.compile(rf"resource\.(?:type|labels\.\w+)\s*=\s*(?:{_STRING}|\([^()]*\))")


def parse_filter(expr: str, tf_locals: dict[str, Any]) -> tuple[str, list[Condition]]:
    """Conditions of a metric filter, and whose lines it reads (from labels.component)."""
    text = re.sub(r"\$\{local\.(\w+)\}", lambda m: str(tf_locals[m.group(1)]), expr)
    conditions: list[Condition] = []
    rest = _RESOURCE.sub("", text)  # where the lines come from: checked in tests/infra

    def take(m: re.Match[str]) -> str:
        path, op = m.group("path"), m.group("op") or "="
        if op != "=":
            raw = m.group("num")
            values: tuple[Any, ...] = (raw if path == "severity" else float(raw),)
        elif m.group("alts") is not None:
            alts = [a.strip() for a in m.group("alts").split(" OR ")]
            assert all(re.fullmatch(_STRING, a) for a in alts), f"unsupported: {m.group(0)}"
            values = tuple(a[1:-1] for a in alts)
        else:
            values = (m.group(4),)
        conditions.append(Condition(path, op, values))
        return ""

    rest = _TERM.sub(take, rest)
    leftover = re.sub(r"\bAND\b|\s", "", rest)
    assert not leftover, f"filter syntax this test does not understand: {leftover!r} in {expr}"
    components = next((c.values for c in conditions if c.path == "labels.component"), ())
    assert components, f"a metric must name its component (labels.component): {expr}"
    return "/".join(sorted(components)), conditions


def load_metrics() -> list[Metric]:
    tf = load_terraform(INFRA)
    metrics = []
    for name, body in sorted(tf.resources.get("google_logging_metric", {}).items()):
        component, conditions = parse_filter(body["filter"], tf.locals)
        metrics.append(
            Metric(
                name=name,
                component=component,
                conditions=conditions,
                labels=dict(body.get("label_extractors", {})),
                value_extractor=body.get("value_extractor"),
            )
        )
    assert metrics, "no google_logging_metric in infra/"
    return metrics


_EXTRACT = re.compile(r"EXTRACT\(((?:jsonPayload|labels)\.[\w.]+|severity)\)")
_REGEXP = re.compile(rf"REGEXP_EXTRACT\(((?:jsonPayload|labels)\.[\w.]+),\s*{_STRING}\)")


def problems(metric: Metric, lines: list[dict[str, Any]]) -> list[str]:
    """What is wrong with `metric` on these real lines (empty: it works)."""
    components = set(metric.component.split("/"))
    own = [ln for ln in lines if ln.get(LABELS_KEY, {}).get("component") in components]
    matching = [ln for ln in own if all(c.written(ln) for c in metric.conditions)]
    if not matching:
        # the conditions no line meets: the renamed message or field
        near = [c for c in metric.conditions if not any(c.written(ln) for ln in own)]
        return [f"no {metric.component} line matches; nothing meets {near or metric.conditions}"]
    out = []
    # Each alternative of ("a" OR "b") must be written too: a renamed "b" must not hide behind "a".
    for i, cond in enumerate(metric.conditions):
        others = metric.conditions[:i] + metric.conditions[i + 1 :]
        if len(cond.values) < 2 or not cond.path.startswith("jsonPayload."):
            continue  # labels.component=("connector" OR "notifier") says whose lines, only
        for value in cond.values:
            alone = Condition(cond.path, cond.op, (value,))
            if not any(alone.holds(ln) and all(c.written(ln) for c in others) for ln in own):
                out.append(f"no {metric.component} line has {cond.path}={value!r}")
    extractors = dict(metric.labels)
    if metric.value_extractor:
        extractors["(value)"] = metric.value_extractor
    for label, extractor in extractors.items():
        if m := _REGEXP.fullmatch(extractor):
            path, pattern = m.group(1), m.group(2).encode().decode("unicode_escape")
            missed = [ln for ln in matching if not re.search(pattern, str(lookup(ln, path)[1]))]
            if missed:
                out.append(f"label {label}: {pattern!r} does not match {lookup(missed[0], path)}")
        elif m := _EXTRACT.fullmatch(extractor):
            path = m.group(1)
            if not all(lookup(ln, path)[0] for ln in matching):
                out.append(f"label {label}: matching lines lack {path}")
            elif label == "(value)" and not all(
                isinstance(lookup(ln, path)[1], int | float) for ln in matching
            ):
                out.append(f"value: {path} is not a number on every matching line")
        else:
            out.append(f"label {label}: unsupported extractor {extractor!r}")
    return out


# --- the filter reader itself (no services) ----------------------------------------------------


def line(message: str, component: str = "notifier", **fields: Any) -> dict[str, Any]:
    return {"severity": "INFO", "message": message, LABELS_KEY: {"component": component}, **fields}


def test_filter_reader_understands_every_metric_and_rejects_other_syntax() -> None:
    metrics = {m.name: m for m in load_metrics()}
    ring = metrics["ring_latency"]
    assert ring.component == "notifier"
    assert Condition("jsonPayload.message", "=", ("call event handled",)) in ring.conditions
    assert Condition("jsonPayload.latency_ms", ">=", (0.0,)) in ring.conditions
    with pytest.raises(AssertionError, match="does not understand"):
        parse_filter('labels.component="notifier" AND jsonPayload.x=~"a.*"', {})
    with pytest.raises(AssertionError, match="does not understand"):
        parse_filter('labels.component="notifier" OR jsonPayload.x="a"', {})


def test_a_renamed_message_or_field_breaks_the_check() -> None:
    metrics = {m.name: m for m in load_metrics()}
    handled = line("call event handled", kind="ringing", latency_ms=812.5, attempts=1, dropped=None)
    assert problems(metrics["ring_latency"], [handled]) == []
    assert problems(metrics["ring_latency"], [{**handled, "message": "call handled"}])
    renamed = {k: v for k, v in handled.items() if k != "latency_ms"} | {"latency": 812.5}
    assert problems(metrics["ring_latency"], [renamed])
    # The right message from the wrong component matches nothing either.
    assert problems(metrics["ring_latency"], [{**handled, LABELS_KEY: {"component": "connector"}}])
    failed = line("push not delivered", push="incoming", outcome="transient", error_code="X")
    assert problems(metrics["pushes"], [failed]) == [
        "no notifier line has jsonPayload.message='push sent'"
    ]
    no_kind = {k: v for k, v in handled.items() if k != "kind"}
    assert any(
        "lack jsonPayload.kind" in p for p in problems(metrics["notifier_events"], [no_kind])
    )


def test_the_lines_these_metrics_were_specified_with_satisfy_them() -> None:
    # The lines as they were specified for the product (service.py, relay_client.py, app.py):
    # the specification and the metrics agree; the real-process test checks the product.
    metrics = {m.name: m for m in load_metrics()}
    relay = {"relay": "ws://127.0.0.1:7099"}
    awaited = {
        "pushes": [
            line("push sent", event_id="e", push="incoming", outcome="sent", error_code=""),
            line("push not delivered", push="incoming", outcome="transient", error_code="X"),
        ],
        "recipients_skipped": [
            line("recipients skipped", event_id="e", reason="suspended", count=1)
        ],
        "relays_connected": [
            line("connector relays", "connector", holder="h", relays=2, connected=1, refused=1)
        ],
        "relays_refused_long": [
            line("relay refused", "connector", reason="private", refused_for_s=330, **relay)
        ],
    }
    for name, lines in awaited.items():
        assert problems(metrics[name], lines) == [], name


# --- the real processes --------------------------------------------------------------------------


class Captured(logging.Handler):
    """The connector's records, formatted exactly as its stdout in production."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter({"component": "connector"}))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def find(self, message: str) -> list[dict[str, Any]]:
        return [ln for ln in self.lines if ln.get("message") == message]


@pytest.fixture
def connector_lines() -> Iterator[Captured]:
    handler = Captured()
    loggers = [logging.getLogger(n) for n in ("connector", "tenants")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


NUMBER = "+31150010004"  # the queue capture's company number (tests/integration/test_faults.py)


def owner_with_troubled_devices(db, relay_port: int) -> None:
    write(
        db,
        {
            "users": {"nl": user(relay_port), "nl-off": user(relay_port)},
            "my_extensions": {
                "e-nl": {"userId": "nl", "extension": "201", "accountCode": NUMBER},
                "e-nl-off": {"userId": "nl-off", "extension": "202", "accountCode": NUMBER},
            },
            "fcm_tokens": {
                "nl_ok_Android": device("nl", "tok-ok"),
                "nl_flaky_Android": device("nl", "tok-flaky"),
                "nl_dead_Android": device("nl", "tok-dead"),
                "nl_quota_iOS": device("nl", "tok-quota", platform="ios"),
                "nl_web_Web": device("nl", "web_dummy_token_1762257300000", platform="web"),
                "nl-off_a_Android": device("nl-off", "tok-off"),
            },
            "user_notification_settings": {"nl-off": {"pushEnabled": False}},
        },
    )


async def wait_until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    return await asyncio.to_thread(eventually, check, timeout)


def json_lines(raw: list[str]) -> list[dict[str, Any]]:
    out = []
    for text in raw:
        if text.startswith("{"):
            try:
                out.append(json.loads(text))
            except ValueError:
                continue
    return out


async def test_every_log_metric_matches_lines_the_product_writes(
    connector, connector_lines, relay, db, fcm, notifier
):
    metrics = load_metrics()  # parse first: a filter this test cannot read fails at once

    # FCM: one device fine, one flaky (retried, then sent), one dead (pruned), one over quota.
    fcm.script("tok-flaky", [Fault(status=503, error_code="UNAVAILABLE")])
    fcm.script("tok-dead", [Fault(status=404, error_code="UNREGISTERED")] * 4)
    fcm.script("tok-quota", [Fault(status=429, error_code="QUOTA_EXCEEDED")] * 8)
    owner_with_troubled_devices(db, relay.port)
    await relay.wait_for_clients(1, timeout=15)

    # Ring, with a frame the connector cannot read while the call is in progress.
    events = queue_call("metrics-")
    await relay.replay(events[:20], server_name="voipgrid")
    [first, *_] = await asyncio.to_thread(fcm.wait_for, 2, 20)
    linkedid = first["data"]["linkedid"]
    ring = await settle(notifier, linkedid, kind="ringing", timeout=20)
    assert ring["results"].get("incoming_sent") == 2, ring  # ok + flaky after a retry
    # cut short, as amiws cuts a frame: it names the call in progress, so it could matter
    cut = f'{{"type": 3, "server_id": 1, "data": {{"Event": "Hangup", "Linkedid": "{linkedid}", '
    await relay.broadcast(cut.encode())
    await wait_until(lambda: connector_lines.find("bad frame skipped"))

    # amiws loses its AMI login to the PBX, then gets it back.
    await relay.login_reply(accepted=False)
    await relay.login_reply(accepted=True)
    await wait_until(lambda: len(connector_lines.find("relay PBX link")) == 2)

    # The relay drops every connection; the call is answered and ends after the reconnect.
    await relay.drop_clients()
    runtime = runtime_for(connector, relay)
    await wait_until(lambda: runtime.client.status.connects == 2)
    await relay.wait_for_clients(1, timeout=15)
    await relay.replay(events[20:], server_name="voipgrid")
    await settle(notifier, linkedid, kind="ended", timeout=20)

    # A relay the address policy refuses (a private address, not in RELAY_ALLOWED_NETWORKS).
    write(db, {"users": {"far": user(7099, host="10.254.1.2")}})
    await wait_until(lambda: connector_lines.find("relay refused"))

    # A Pub/Sub message that is no call event.
    assert post_raw_message(notifier, b"not json").status_code == 200
    await wait_until(lambda: any("malformed call event dropped" in t for t in notifier.log_lines()))

    lines = connector_lines.lines + json_lines(notifier.log_lines())
    broken, waiting = {}, {}
    for metric in metrics:
        found = problems(metric, lines)
        if found:
            (waiting if metric.name in WAITING_FOR else broken)[metric.name] = found
    assert not broken, "log-based metrics that match no real line:\n" + json.dumps(broken, indent=1)
    ready = sorted(set(WAITING_FOR) - set(waiting))
    assert not ready, f"{ready} match real lines now: take them out of WAITING_FOR"
    assert not waiting, (
        "WAITING FOR THE LEAD: these metrics need log fields the product does not write yet:\n"
        + "\n".join(
            f"- {name}: {WAITING_FOR[name]}\n  ({found})" for name, found in waiting.items()
        )
    )
