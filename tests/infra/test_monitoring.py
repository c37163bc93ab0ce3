"""Log-based metrics, alert policies and the dashboard (infra/monitoring.tf, alerts.tf,
dashboard.tf) hang together: every metric an alert or chart reads exists, with the labels it
filters and groups by; every alert notifies the configured channels, links its runbook section
(which exists in docs/runbook.md) and depends on its metrics. Whether the metrics match the
product's real log lines is tests/integration/test_log_metrics.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .conftest import INFRA, ROOT, Terraform, one
from .test_tenancy_and_rules import accepts, needs_terraform, terraform

METRIC = "google_logging_metric"
POLICY = "google_monitoring_alert_policy"
EXPECTED_POLICIES = {"relay_down", "push_failures", "ring_latency", "dead_letters", "no_connector"}


def metrics_by_short_name(tf: Terraform) -> dict[str, tuple[str, dict]]:
    """'pushes' -> (resource name, body), from name = "${var.name_prefix}/pushes"."""
    out = {}
    for rname, body in tf.resources[METRIC].items():
        m = re.fullmatch(r"\$\{var\.name_prefix\}/(\w+)", body["name"])
        assert m, f"{rname}: metric name must be ${{var.name_prefix}}/<name>: {body['name']}"
        out[m.group(1)] = (rname, body)
    return out


def test_each_metric_declares_the_labels_it_extracts(tf: Terraform) -> None:
    for rname, body in tf.resources[METRIC].items():
        descriptor = one(body["metric_descriptor"], "metric_descriptor")
        declared = {label["key"] for label in descriptor.get("labels", [])}
        assert declared == set(body.get("label_extractors", {})), rname
        assert descriptor["metric_kind"] == "DELTA", rname
        if "value_extractor" in body:
            assert descriptor["value_type"] == "DISTRIBUTION" and "bucket_options" in body, rname
        else:
            assert descriptor["value_type"] == "INT64", rname
        if rname != "problem_lines":  # that one reads both services' WARNING and ERROR lines
            assert body["filter"].startswith(
                ("${local.connector_logs} AND", "${local.notifier_logs} AND")
            ), rname
        assert "${google_project_service.enabled}" in body.get("depends_on", []), rname


def test_log_filters_read_each_service_s_own_lines(tf: Terraform) -> None:
    connector = tf.locals["connector_logs"]
    notifier = tf.locals["notifier_logs"]
    assert 'resource.type="cloud_run_revision"' in connector and connector == notifier.replace(
        "notifier_function_name", "connector_service_name"
    ).replace('component="notifier"', 'component="connector"')
    assert 'resource.labels.service_name="${local.connector_service_name}"' in connector
    # functions/log.py puts the component into logging.googleapis.com/labels: entry labels.
    assert 'labels.component="connector"' in connector


def _metric_uses(text: str, prefix: str) -> list[tuple[str, set[str]]]:
    """(metric short name, metric.label keys) for each line of text naming a metric."""
    uses = []
    for line in text.splitlines():
        names = re.findall(rf"\$\{{{re.escape(prefix)}\}}/(\w+)", line)
        if names:
            uses += [(n, set(re.findall(r"metric\.label\.(\w+)", line))) for n in names]
    return uses


def test_dashboard_and_alerts_read_metrics_and_labels_that_exist(tf: Terraform) -> None:
    metrics = metrics_by_short_name(tf)
    dashboard = (INFRA / "dashboard.tf").read_text(encoding="utf-8")
    alerts = (INFRA / "alerts.tf").read_text(encoding="utf-8")
    uses = _metric_uses(dashboard, "local.m") + _metric_uses(alerts, "local.metric_prefix")
    assert len(uses) >= 15, uses
    for name, labels in uses:
        assert name in metrics, f"no google_logging_metric named {name}"
        _, body = metrics[name]
        assert labels <= set(body.get("label_extractors", {})), (name, labels)
    # Every metric is shown on the dashboard.
    shown = {name for name, _ in _metric_uses(dashboard, "local.m")}
    assert shown | {"relays_refused_5min"} == set(metrics), set(metrics) - shown
    depends_on = tf.resource("google_monitoring_dashboard", "operations")["depends_on"]
    listed = {re.fullmatch(r"\$\{google_logging_metric\.(\w+)\}", d).group(1) for d in depends_on}
    assert {metrics[n][0] for n in shown} == listed


def _conditions(policy: dict) -> list[tuple[str, dict]]:
    out = []
    for condition in policy["conditions"]:
        for kind in ("condition_threshold", "condition_absent"):
            if kind in condition:
                out.append((kind, one(condition[kind], kind)))
    assert len(out) == len(policy["conditions"]), policy["display_name"]
    return out


def test_alert_policies_group_by_labels_of_their_metric_and_depend_on_it(tf: Terraform) -> None:
    metrics = metrics_by_short_name(tf)
    log_metric = tf.locals["log_metric"]
    policies = tf.resources[POLICY]
    assert set(policies) == EXPECTED_POLICIES
    for pname, policy in policies.items():
        needed = set()
        for _, cond in _conditions(policy):
            keys = re.findall(r"\$\{local\.log_metric\.(\w+)\}", cond["filter"])
            for key in keys:
                short = re.search(r"/(\w+)\"", log_metric[key]).group(1)
                rname, body = metrics[short]
                needed.add(f"${{google_logging_metric.{rname}}}")
                labels = set(re.findall(r"metric\.label\.(\w+)", cond["filter"]))
                for agg in cond.get("aggregations", []):
                    labels |= {
                        f.removeprefix("metric.label.") for f in agg.get("group_by_fields", [])
                    }
                assert labels <= set(body.get("label_extractors", {})), (pname, labels)
        # The 404 of a just-created log-based metric: the policy waits for its metrics.
        assert needed <= set(policy.get("depends_on", [])), (pname, needed)


def test_alerts_notify_the_channels_and_link_the_runbook(tf: Terraform) -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    for pname, policy in tf.resources[POLICY].items():
        assert policy["notification_channels"] == "${var.alert_notification_channels}", pname
        doc = one(policy["documentation"], "documentation")
        assert doc["mime_type"] == "text/markdown"
        links = re.findall(r"\$\{local\.runbook\}#([\w-]+)", doc["content"])
        assert len(links) == 1, (pname, links)
        assert links[0] in anchors, f"{pname}: docs/runbook.md has no section #{links[0]}"
        assert policy["severity"] in {"CRITICAL", "ERROR", "WARNING"}


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_thresholds_are_variables_and_the_issue_s_windows(tf: Terraform) -> None:
    policies = tf.resources[POLICY]
    [(_, failures)] = _conditions(policies["push_failures"])
    assert failures["threshold_value"] == "${var.push_failure_ratio_threshold}"
    assert failures["duration"] == "600s" and "denominator_filter" in failures
    [(_, latency)] = _conditions(policies["ring_latency"])
    assert latency["threshold_value"] == "${var.ring_latency_p95_threshold_ms}"
    assert one(latency["aggregations"])["cross_series_reducer"] == "REDUCE_PERCENTILE_95"
    down = dict((c["display_name"], c) for c in policies["relay_down"]["conditions"])
    disconnected = one(down["relay keeps disconnecting"]["condition_threshold"])
    assert disconnected["duration"] == "300s"
    kinds = [k for k, _ in _conditions(policies["no_connector"])]
    assert kinds == ["condition_threshold", "condition_absent"]
    assert tf.variables["ring_latency_p95_threshold_ms"]["default"] == 2000
    assert tf.variables["alert_notification_channels"]["default"] == []


def test_connector_scaling_variables(tf: Terraform) -> None:
    assert tf.variables["connector_min_instances"]["default"] == 1
    assert tf.variables["connector_max_instances"]["default"] == 3
    template = one(tf.resource("google_cloud_run_v2_service", "connector")["template"])
    scaling = one(template["scaling"])
    assert scaling["max_instance_count"] == "${var.connector_max_instances}"
    assert scaling["min_instance_count"] == "${var.connector_min_instances}"


@needs_terraform
def test_monitoring_variable_validations(tmp_path: Path) -> None:
    good = ["projects/my-project/notificationChannels/1234567"]
    assert accepts(tmp_path, "alert_notification_channels", good)
    assert not accepts(tmp_path, "alert_notification_channels", ["1234567"])
    assert accepts(tmp_path, "push_failure_ratio_threshold", 0.05)
    assert not accepts(tmp_path, "push_failure_ratio_threshold", 20)
    assert not accepts(tmp_path, "runbook_url", "docs/runbook.md#relay-down")


ALIGNERS = {"ALIGN_DELTA", "ALIGN_SUM", "ALIGN_MAX", "ALIGN_PERCENTILE_50"}
REDUCERS = {"REDUCE_SUM", "REDUCE_PERCENTILE_50", "REDUCE_PERCENTILE_95", "REDUCE_PERCENTILE_99"}
BUILTIN_METRICS = {
    "run.googleapis.com/container/instance_count",
    "pubsub.googleapis.com/subscription/push_request_count",
    "pubsub.googleapis.com/subscription/num_undelivered_messages",
}


def dashboard_module(workdir: Path) -> None:
    """variables.tf and the locals of the monitoring files, with the few resource attributes
    they read replaced by names: enough for `terraform console` to evaluate the dashboard."""
    blocks = [(INFRA / "variables.tf").read_text(encoding="utf-8")]
    for name in ("monitoring.tf", "alerts.tf", "dashboard.tf"):
        text = (INFRA / name).read_text(encoding="utf-8")
        blocks += re.findall(r"^locals \{\n.*?^\}\n", text, re.M | re.S)
    module = "\n".join(blocks)
    module = re.sub(r"google_pubsub_subscription\.(\w+)\.name", r'"sub-\1"', module)
    module = re.sub(r"google_pubsub_topic\.(\w+)\.name", r'"topic-\1"', module)
    module += 'locals {\n  connector_service_name = "callpush-connector"\n'
    module += '  notifier_function_name = "callpush-notifier"\n}\n'
    (workdir / "main.tf").write_text(module, encoding="utf-8")


@needs_terraform
def test_dashboard_evaluates_to_a_valid_mosaic(tmp_path: Path, tf: Terraform) -> None:
    dashboard_module(tmp_path)
    result = terraform(
        tmp_path,
        "console",
        "-var",
        "project_id=my-project",
        "-var",
        "connector_image_tag=abc123",
        stdin="jsonencode(local.dashboard_tiles)\n",
    )
    assert result.returncode == 0, result.stderr
    tiles = json.loads(json.loads(result.stdout.strip()))
    metrics = {f"logging.googleapis.com/user/callpush/{n}" for n in metrics_by_short_name(tf)}
    cells: set[tuple[int, int]] = set()
    for tile in tiles:
        assert tile["xPos"] + tile["width"] <= 48
        area = {
            (x, y)
            for x in range(tile["xPos"], tile["xPos"] + tile["width"])
            for y in range(tile["yPos"], tile["yPos"] + tile["height"])
        }
        assert not cells & area, f"tiles overlap: {tile['widget']['title']}"
        cells |= area
        chart = tile["widget"]["xyChart"]
        for data_set in chart["dataSets"]:
            query = data_set["timeSeriesQuery"]["timeSeriesFilter"]
            [metric_type] = re.findall(r'metric\.type="([^"]+)"', query["filter"])
            assert metric_type in metrics | BUILTIN_METRICS, metric_type
            aggregation = query["aggregation"]
            assert aggregation["perSeriesAligner"] in ALIGNERS, aggregation
            assert aggregation["crossSeriesReducer"] in REDUCERS, aggregation
            assert re.fullmatch(r"\d+s", aggregation["alignmentPeriod"]), aggregation
            assert "${" not in data_set["legendTemplate"].replace("${metric.label.", "")
    titles = [t["widget"]["title"] for t in tiles]
    for wanted in ("Calls per minute", "Pushes per minute", "Ring latency", "Relays connected"):
        assert any(t.startswith(wanted) for t in titles), wanted
    latency = next(t for t in tiles if t["widget"]["title"].startswith("Ring latency"))
    reducers = [
        d["timeSeriesQuery"]["timeSeriesFilter"]["aggregation"]["crossSeriesReducer"]
        for d in latency["widget"]["xyChart"]["dataSets"]
    ]
    assert reducers == ["REDUCE_PERCENTILE_50", "REDUCE_PERCENTILE_95", "REDUCE_PERCENTILE_99"]
