#!/usr/bin/env bash
# Checks deploy/monitoring: the Prometheus rules (promtool check rules), their unit tests
# (promtool test rules deploy/monitoring/tests/*.yaml), that the PrometheusRule wrapper holds
# exactly the plain rules, that every alert has its runbook, that rules, tests and dashboard
# use only the metric names Pylon exports, and that every PromQL query of the Grafana
# dashboard parses.
#
#   scripts/check-alerts.sh            check; exit non-zero on any failure
#   scripts/check-alerts.sh --update   first regenerate deploy/monitoring/prometheusrule.yaml
#
# Installs promtool (Debian's `prometheus` package, Prometheus 2.42) and PyYAML when missing.
# Idempotent: it writes nothing outside a temporary directory unless --update is given.
set -euo pipefail
cd "$(dirname "$0")/.."

MON=deploy/monitoring
RULES=$MON/pylon-alerts.rules.yaml
WRAPPER=$MON/prometheusrule.yaml
DASHBOARD=$MON/pylon-dashboard.json
UPDATE=0
case "${1:-}" in
  --update) UPDATE=1 ;;
  "") ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "check-alerts: need root to run: $*" >&2; return 1; fi
}

# Install Debian packages (an apt-get update only when the first attempt fails).
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y --no-install-recommends "$@" >/dev/null ||
    { as_root apt-get update >/dev/null && as_root apt-get install -y --no-install-recommends "$@" >/dev/null; }
}

if ! command -v promtool >/dev/null; then
  echo "== installing promtool (Debian package prometheus)"
  apt_install prometheus
fi
promtool --version 2>&1 | head -1

# A Python with PyYAML: the one on PATH, else Debian's.
PY=python3
if ! "$PY" -c 'import yaml' 2>/dev/null; then
  PY=/usr/bin/python3
  if ! [ -x "$PY" ] || ! "$PY" -c 'import yaml' 2>/dev/null; then
    echo "== installing python3-yaml"
    apt_install python3 python3-yaml
  fi
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILED=()

step() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then echo "   ok"; else echo "   FAILED: $name"; FAILED+=("$name"); fi
}

step "promtool check rules $RULES" promtool check rules "$RULES"

shopt -s nullglob
TESTS=("$MON"/tests/*.yaml)
if [ ${#TESTS[@]} -eq 0 ]; then
  echo "== no test files in $MON/tests"; FAILED+=("tests present")
else
  step "promtool test rules ${TESTS[*]}" promtool test rules "${TESTS[@]}"
fi

# The rest is Python: the PrometheusRule, runbooks, metric names, dashboard queries (which it
# writes as recording rules into $TMP/dashboard.rules.yaml for promtool to parse).
step "PrometheusRule, runbooks, metric names, dashboard" \
  "$PY" - "$RULES" "$WRAPPER" "$DASHBOARD" "$TMP" "$UPDATE" "${TESTS[@]}" <<'PYEOF'
import json, os, re, sys
import yaml

rules_path, wrapper_path, dash_path, tmp, update = sys.argv[1:6]
names_path = os.path.join(os.path.dirname(rules_path), "metric-names.txt")
test_paths = sys.argv[6:]
ok = True

def fail(msg):
    global ok
    ok = False
    print("   error: " + msg)

# ---------------------------------------------------------------- PrometheusRule wrapper
class Dumper(yaml.SafeDumper):
    pass

def str_rep(dumper, s):
    if "\n" in s:
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", s)

Dumper.add_representer(str, str_rep)

plain = yaml.safe_load(open(rules_path))
wrapper = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {
        "name": "pylon-alerts",
        "labels": {"app.kubernetes.io/name": "pylon", "app.kubernetes.io/component": "monitoring"},
    },
    "spec": {"groups": plain["groups"]},
}
header = ("# GENERATED from pylon-alerts.rules.yaml by `scripts/check-alerts.sh --update`: do not edit.\n"
          "# The same rules as a prometheus-operator PrometheusRule; add the labels your Prometheus'\n"
          "# ruleSelector wants (for example with kustomize).\n")
text = header + yaml.dump(wrapper, Dumper=Dumper, sort_keys=False, width=4096, allow_unicode=True)
if update == "1":
    open(wrapper_path, "w").write(text)
    print(f"   wrote {wrapper_path}")
if not os.path.exists(wrapper_path):
    fail(f"{wrapper_path} is missing (run scripts/check-alerts.sh --update)")
else:
    got = yaml.safe_load(open(wrapper_path))
    if got.get("apiVersion") != "monitoring.coreos.com/v1" or got.get("kind") != "PrometheusRule":
        fail(f"{wrapper_path}: not a monitoring.coreos.com/v1 PrometheusRule")
    if not (got.get("metadata") or {}).get("name"):
        fail(f"{wrapper_path}: metadata.name missing")
    if (got.get("spec") or {}).get("groups") != plain["groups"]:
        fail(f"{wrapper_path}: spec.groups differ from {rules_path} (run scripts/check-alerts.sh --update)")

# ---------------------------------------------------------------- alerts: labels, runbooks, tests
alerts, records = set(), set()
for g in plain["groups"]:
    for r in g["rules"]:
        if "record" in r:
            records.add(r["record"])
            continue
        name = r["alert"]
        first = name not in alerts
        alerts.add(name)
        sev = (r.get("labels") or {}).get("severity")
        if sev not in ("page", "ticket"):
            fail(f"alert {name}: severity must be page or ticket, not {sev!r}")
        ann = r.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                fail(f"alert {name}: annotation {key} missing")
        want = f"docs/runbooks/{name}.md"
        if ann.get("runbook_url") != want:
            fail(f"alert {name}: runbook_url {ann.get('runbook_url')!r}, expected {want!r}")
        if first and not os.path.isfile(want):
            fail(f"alert {name}: {want} does not exist")

tested = set()
test_series = []
for p in test_paths:
    t = yaml.safe_load(open(p))
    for group in t.get("tests", []):
        for a in group.get("alert_rule_test", []):
            if a.get("exp_alerts"):
                tested.add(a["alertname"])
            if a["alertname"] not in alerts:
                fail(f"{p}: test of unknown alert {a['alertname']}")
        test_series += [s["series"] for s in group.get("input_series", [])]
for name in sorted(alerts - tested):
    fail(f"alert {name}: no unit test expects it to fire")

# ---------------------------------------------------------------- metric names
# What Pylon exports (LiveKit's names where the concept exists; deploy/monitoring/metric-names.txt,
# checked against a live node by tests/e2e/test_metrics.py); anything else is a typo.
KNOWN = {"up"} | {
    line.strip() for line in open(names_path) if line.strip() and not line.startswith("#")
}
RECORD_RE = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")
METRIC_RE = re.compile(r"\b(?:livekit|pylon)_[a-z0-9_]+\b")

def check_names(where, expr):
    for rec in RECORD_RE.findall(expr):
        if rec not in records:
            fail(f"{where}: unknown recording rule {rec}")
    for m in METRIC_RE.findall(RECORD_RE.sub("", expr)):
        if m not in KNOWN:
            fail(f"{where}: unknown metric {m}")

for g in plain["groups"]:
    for r in g["rules"]:
        check_names(f"rule {r.get('record') or r.get('alert')}", r["expr"])
for s in test_series:
    name = s.split("{")[0].strip()
    if name not in KNOWN:
        fail(f"test input series of unknown metric {name}")

# ---------------------------------------------------------------- dashboard
dash = json.load(open(dash_path))
if dash.get("schemaVersion", 0) < 38:
    fail(f"{dash_path}: schemaVersion {dash.get('schemaVersion')} < 38")
variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
for v in ("datasource", "region", "instance"):
    if v not in variables:
        fail(f"{dash_path}: template variable {v} missing")
if variables.get("datasource", {}).get("type") != "datasource":
    fail(f"{dash_path}: variable datasource must be of type datasource")

# Grafana variables -> values that keep the query valid PromQL.
BUILTIN = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
           "__range_ms": "3600000", "__interval_ms": "60000"}
def substitute(expr):
    def value(name):
        if name in BUILTIN:
            return BUILTIN[name]
        if name in variables:
            return ".*"
        return None
    def rep(m):
        name = m.group(1) or m.group(2) or m.group(3)
        v = value(name)
        return m.group(0) if v is None else v
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)", rep, expr)

exprs = []  # (where, expr)
def walk(node, where):
    if isinstance(node, dict):
        title = node.get("title", where)
        ds = node.get("datasource")
        if "targets" in node and isinstance(ds, dict) and ds.get("uid") != "${datasource}":
            fail(f"panel {title!r}: datasource uid must be ${{datasource}}, not {ds.get('uid')!r}")
        for t in node.get("targets", []) or []:
            if t.get("expr"):
                exprs.append((f"panel {title!r} {t.get('refId', '')}", t["expr"]))
            elif not t.get("hide"):
                fail(f"panel {title!r}: target {t.get('refId')} has no expr")
        for k, v in node.items():
            if k != "targets":
                walk(v, title)
    elif isinstance(node, list):
        for v in node:
            walk(v, where)
walk(dash.get("panels", []), "dashboard")
for name, v in variables.items():
    if v.get("type") != "query":
        continue
    q = v.get("query")
    q = q.get("query", "") if isinstance(q, dict) else (q or "")
    m = re.fullmatch(r"\s*(?:label_values|query_result)\((.*?)(?:,\s*\w+)?\)\s*", q, re.S)
    if m and m.group(1).strip() and not re.fullmatch(r"\w+", m.group(1).strip()):
        exprs.append((f"variable {name}", m.group(1)))
    elif not m:
        fail(f"variable {name}: cannot read query {q!r}")

if not exprs:
    fail(f"{dash_path}: no PromQL found")
for where, e in exprs:
    check_names(where, e)
rules = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:expr_{i}:check", "expr": substitute(e)} for i, (_, e) in enumerate(exprs)]}]}
with open(os.path.join(tmp, "dashboard.rules.yaml"), "w") as f:
    yaml.safe_dump(rules, f, sort_keys=False, width=1000)
with open(os.path.join(tmp, "dashboard.index"), "w") as f:
    for i, (where, _) in enumerate(exprs):
        f.write(f"dashboard:expr_{i}:check\t{where}\n")
print(f"   {len(alerts)} alerts, {len(records)} recording rules, {len(test_paths)} test files, "
      f"{len(exprs)} dashboard queries")
sys.exit(0 if ok else 1)
PYEOF

if [ -f "$TMP/dashboard.rules.yaml" ]; then
  # Errors name the recording rule; $TMP/dashboard.index maps it back to the panel.
  check_dashboard() {
    local out
    if out=$(promtool check rules "$TMP/dashboard.rules.yaml" 2>&1); then echo "$out"; return 0; fi
    echo "$out"
    grep -o 'dashboard:expr_[0-9]*:check' <<<"$out" | sort -u | while read -r rule; do
      grep -F "$rule" "$TMP/dashboard.index" | cut -f2 | sed "s/^/   that is: /"
    done
    return 1
  }
  step "promtool check rules (the dashboard's queries)" check_dashboard
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "check-alerts: FAILED: ${FAILED[*]}"
  exit 1
fi
echo "check-alerts: all checks passed"
