"""Renders deploy/helm/pylon offline with the Helm v4 SDK (helm-python-sdk),
lints it, and validates every manifest against the Kubernetes schemas
(kubernetes-validate). Prints the manifests as one JSON list.

usage: render_chart.py CHART_DIR [VALUES_JSON]
"""
import json
import sys

import helm_python as helm
import kubernetes_validate
import yaml

chart_dir = sys.argv[1]
values = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
lint = helm.lint(chart_dir, values)
if lint.get("errors"):
    sys.exit("helm lint: " + json.dumps(lint["errors"]))
for message in lint.get("messages", []):
    # severity 1 is INFO (e.g. "icon is recommended"); warnings and errors fail.
    if message.get("severity", 0) > 1:
        sys.exit("helm lint: " + json.dumps(message))
chart = helm.Chart.load(chart_dir) if hasattr(helm.Chart, "load") else helm.Chart(chart_dir)
rendered = chart.render(values, name="demo", namespace="apis")
manifests = []
for name, text in sorted(rendered.items()):
    for document in yaml.safe_load_all(text):
        if not document:
            continue
        # The Prometheus Operator's ServiceMonitor is a custom resource: it
        # has no schema in the Kubernetes set.
        if document.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            manifests.append(document)
            continue
        kubernetes_validate.validate(document, "1.30", strict=True)
        manifests.append(document)
print(json.dumps(manifests))
