#!/usr/bin/env bash
# Validate the deployment files: Dockerfile, docker-compose.yml, deploy/rabbitmq/,
# k8s/ and the Grafana dashboard. Prints one line per check ("ok" or "FAIL") and exits non-zero
# if any check failed.
#
#   scripts/check-deploy.sh
#
# Needs the local stack (scripts/stack.sh up): the RabbitMQ definitions are imported into a
# throw-away virtual host of the local broker and exercised there over AMQP and HTTP. Everything
# created there (vhosts, users) is deleted on exit, pass or fail. Python tools (check-jsonschema,
# kubernetes-validate, pika, PyYAML) are installed once into a virtualenv under
# ${XDG_CACHE_HOME:-~/.cache}/msgkit-deploy-venv.
#
# Environment: RABBITMQ_API (http://127.0.0.1:15672/api), RABBITMQ_API_USER / _PASSWORD
# (guest / guest, an administrator), RABBITMQ_AMQP_HOST / _PORT (127.0.0.1 / 5672),
# RABBITMQ_PROMETHEUS (http://127.0.0.1:15692/metrics/per-object, what Prometheus scrapes),
# K8S_VERSION (1.30.0, the Kubernetes schema version to validate against).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export RABBITMQ_API=${RABBITMQ_API:-http://127.0.0.1:15672/api}
export RABBITMQ_API_USER=${RABBITMQ_API_USER:-guest}
export RABBITMQ_API_PASSWORD=${RABBITMQ_API_PASSWORD:-guest}
export RABBITMQ_AMQP_HOST=${RABBITMQ_AMQP_HOST:-127.0.0.1}
export RABBITMQ_AMQP_PORT=${RABBITMQ_AMQP_PORT:-5672}
export RABBITMQ_PROMETHEUS=${RABBITMQ_PROMETHEUS:-http://127.0.0.1:15692/metrics/per-object}
export K8S_VERSION=${K8S_VERSION:-1.30.0}

VENV="${XDG_CACHE_HOME:-$HOME/.cache}/msgkit-deploy-venv"
# Pinned: a new release must not change what passes. Bump together, deliberately.
REQUIREMENTS="check-jsonschema==0.39.0 kubernetes-validate==1.37.0 pika==1.4.4 PyYAML==6.0.3"

# Names of everything this run creates in RabbitMQ start with this prefix (and carry our PID,
# so a later run can sweep what a killed run left behind).
export CHECK_PREFIX="msgkit-deploy-check-$$-${RANDOM}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/msgkit-check-deploy.XXXXXX")
failures=0

ok() { printf 'ok    %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failures=$((failures + 1)); }

api() { # METHOD PATH: a management API call as the administrator; prints the body
    curl -sS --fail-with-body -m 20 -u "$RABBITMQ_API_USER:$RABBITMQ_API_PASSWORD" \
        -X "$1" "$RABBITMQ_API$2"
}

urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# Delete this run's vhosts and users (by name prefix). A quorum queue with at-least-once
# dead-lettering that is deleted while still starting can kill the broker's dead-letter
# supervisor on RabbitMQ 3.10-4.2 (rabbitmq-server#16652): wait before deleting vhosts.
rabbit_cleanup() { # PREFIX
    local prefix=$1 names name
    names=$(api GET "/vhosts?columns=name" 2>/dev/null |
        jq -r --arg p "$prefix" '.[].name | select(startswith($p))' 2>/dev/null) || names=""
    if [[ -n "$names" ]]; then
        sleep 1.5
        while IFS= read -r name; do
            api DELETE "/vhosts/$(urlencode "$name")" >/dev/null 2>&1 || true
        done <<<"$names"
    fi
    names=$(api GET "/users?columns=name" 2>/dev/null |
        jq -r --arg p "$prefix" '.[].name | select(startswith($p))' 2>/dev/null) || names=""
    if [[ -n "$names" ]]; then
        while IFS= read -r name; do
            api DELETE "/users/$(urlencode "$name")" >/dev/null 2>&1 || true
        done <<<"$names"
    fi
}

on_exit() {
    local status=$?
    rabbit_cleanup "$CHECK_PREFIX"
    rm -rf "$WORK"
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftovers of runs that were killed (their PID is gone): sweep them.
sweep_stale() {
    local names name pid
    names=$( { api GET "/vhosts?columns=name"; api GET "/users?columns=name"; } 2>/dev/null |
        jq -r '.[].name | select(startswith("msgkit-deploy-check-"))' 2>/dev/null | sort -u) || return 0
    while IFS= read -r name; do
        [[ -n "$name" ]] || continue
        pid=${name#msgkit-deploy-check-}
        pid=${pid%%-*}
        if [[ "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
            rabbit_cleanup "msgkit-deploy-check-$pid-"
        fi
    done <<<"$names"
}

# ------------------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------------------
ensure_venv() {
    local stamp="$VENV/.msgkit-requirements"
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$REQUIREMENTS" ]]; then
        return 0
    fi
    echo "..    installing $REQUIREMENTS into $VENV (first run only)" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $REQUIREMENTS >&2
    printf '%s' "$REQUIREMENTS" >"$stamp"
}

for tool in python3 curl jq openssl; do
    command -v "$tool" >/dev/null || { fail "tools: $tool is not installed"; exit 1; }
done
if ensure_venv; then
    ok "tools: virtualenv $VENV ($REQUIREMENTS)"
else
    fail "tools: could not install $REQUIREMENTS into $VENV"
    exit 1
fi
PY="$VENV/bin/python"

# The checks written in Python; `$PY $CHECKS <name>` runs one group, printing its own lines.
CHECKS="$WORK/checks.py"
cat >"$CHECKS" <<'PYTHON'
import base64
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path.cwd()
FAILED = 0


def ok(msg):
    print(f"ok    {msg}", flush=True)


def fail(msg):
    global FAILED
    FAILED += 1
    print(f"FAIL  {msg}", flush=True)


def load_yaml_all(path):
    import yaml
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ------------------------------------------------------------------------------------------
# The kit's topology, read from its sources so that the definitions are compared with what
# the services really declare (shared/src/topology/, services/contracts/src/lib.rs).
# ------------------------------------------------------------------------------------------
ARG_KEYS = {"x-queue-type", "x-delivery-limit", "x-dead-letter-exchange",
            "x-dead-letter-routing-key", "x-dead-letter-strategy", "x-overflow", "x-message-ttl",
            # the event archive's stream (Archive::arguments)
            "x-max-age", "x-max-length-bytes", "x-stream-max-segment-size-bytes"}
# The settings every service reads for the archive (Archive::from_config); the deployment turns
# it on, with the same retention everywhere and in definitions.json.
ARCHIVE_ENV = {"ARCHIVE_MAX_AGE": "x-max-age", "ARCHIVE_MAX_BYTES": "x-max-length-bytes",
               "ARCHIVE_SEGMENT_BYTES": "x-stream-max-segment-size-bytes"}
# Services that read the archive (a projection) with a broker user of their own. rebate is
# expected even before services/rebate exists in the workspace (the deployment files may land
# first); once it does, its startup.rs must call .project( (checked below).
PROJECTION_SERVICES = {"rebate"}


def read_archive(topo):
    """The event archive in shared/src/topology/: its name and default retention (impl
    Default for Archive), checking the settings that turn it on and override the retention
    (Archive::from_config) are still those this script knows."""
    m = re.search(r'ARCHIVE_STREAM:\s*&str\s*=\s*"([^"]+)"', topo)
    if not m:
        raise ValueError("cannot find ARCHIVE_STREAM in shared/src/topology/")
    name = m.group(1)
    m = re.search(r"impl Default for Archive \{(.*?)\n\}", topo, re.S)
    if not m:
        raise ValueError("cannot find impl Default for Archive in shared/src/topology/")
    default = m.group(1)

    def field(pattern, what):
        f = re.search(pattern, default)
        if not f:
            raise ValueError(f"cannot find the archive's default {what} in shared/src/topology/")
        return f.group(1)
    defaults = {
        "x-max-age": field(r'max_age:\s*"([^"]+)"', "max_age"),
        "x-max-length-bytes": int(field(r"max_bytes:\s*([0-9_]+)", "max_bytes").replace("_", "")),
        "x-stream-max-segment-size-bytes": int(field(r"segment_bytes:\s*([0-9_]+)", "segment_bytes").replace("_", "")),
    }
    for setting in ["ARCHIVE_ENABLED", *ARCHIVE_ENV]:
        if f'"{setting}"' not in topo:
            raise ValueError(f"Archive::from_config no longer reads {setting}; update this check")
    return name, defaults


def topology_source():
    """The kit's topology module, every file of it."""
    return "".join(f.read_text() for f in sorted((ROOT / "shared/src/topology").glob("*.rs")))


class Kit:
    def __init__(self):
        topo = topology_source()
        contracts = (ROOT / "services/contracts/src/lib.rs").read_text()

        def const(pattern, what):
            m = re.search(pattern, topo)
            if not m:
                raise ValueError(f"cannot find {what} in shared/src/topology/")
            return m.group(1)

        self.exchange = const(r'EVENTS_EXCHANGE:\s*&str\s*=\s*"([^"]+)"', "EVENTS_EXCHANGE")
        self.delivery_limit = int(const(r"DEFAULT_DELIVERY_LIMIT:\s*u32\s*=\s*(\d+)", "DEFAULT_DELIVERY_LIMIT"))
        base = int(const(r"DELAY_TIER_BASE:\s*Duration\s*=\s*Duration::from_millis\((\d+)\)", "DELAY_TIER_BASE"))
        count = int(const(r"DELAY_TIER_COUNT:\s*u32\s*=\s*(\d+)", "DELAY_TIER_COUNT"))
        self.delays = [base * 2 ** k for k in range(count)]
        used = set(re.findall(r'"(x-[a-z-]+)"', topo))
        if used != ARG_KEYS:
            raise ValueError(f"the kit's queue arguments changed: {sorted(used ^ ARG_KEYS)}; update this check")
        self.archive, self.archive_defaults = read_archive(topo)

        body = contracts[contracts.index("pub fn topology()"):]
        body = body[:body.index("\n}\n")]
        self.queues = {}  # name -> {"bindings": [...], "limit": n}
        current = None
        # Bindings name a pattern ("inventory.*") or a typed event constant (ORDER_PLACED).
        events = dict(re.findall(r'pub const ([A-Z_]+): EventType<[^>]+>\s*=\s*EventType::new\("([^"]+)"\)', contracts))
        for m in re.finditer(r'WorkQueue::new\("([^"]+)"\)|\.bind\("([^"]+)"\)|\.bind\(([A-Z_]+)\)|\.delivery_limit\((\d+)\)', body):
            if m.group(1):
                current = m.group(1)
                self.queues[current] = {"bindings": [], "limit": self.delivery_limit}
            elif m.group(2):
                self.queues[current]["bindings"].append(m.group(2))
            elif m.group(3):
                if m.group(3) not in events:
                    raise ValueError(f"binding {m.group(3)} is not an event constant of services/contracts")
                self.queues[current]["bindings"].append(events[m.group(3)])
            else:
                self.queues[current]["limit"] = int(m.group(4))
        if not self.queues:
            raise ValueError("no WorkQueue found in services/contracts/src/lib.rs topology()")
        # Which services publish events (run an outbox relay): they need write on `events`.
        self.publishers = set()
        for svc in self.queues:
            startup = ROOT / f"services/{svc}/src/startup.rs"
            if startup.exists() and ".with_relay(" in startup.read_text():
                self.publishers.add(svc)
        # Which services read the archive (run a projection): they need read on it. A service
        # that only projects has no relay and no consumer, so it declares nothing.
        self.readers = set()
        for startup in sorted(ROOT.glob("services/*/src/startup.rs")):
            svc = startup.parent.parent.name
            text = startup.read_text()
            if ".project(" in text:
                if svc not in self.queues and (".with_relay(" in text or ".consume" in text):
                    raise ValueError(f"services/{svc} projects and also publishes or consumes without a work "
                                     f"queue of its own; its broker permissions need a new rule here")
                self.readers.add(svc)
        for svc in PROJECTION_SERVICES:
            if (ROOT / f"services/{svc}").exists() and svc not in self.readers:
                raise ValueError(f"services/{svc} does not run a projection (.project( in src/startup.rs), "
                                 f"but the deployment gives it a projection's permissions")
        self.readers |= PROJECTION_SERVICES
        # Every broker user of a service: those declaring the topology (a work queue), then the
        # projections that only read.
        self.users = list(self.queues) + sorted(self.readers - set(self.queues))

    def work_args(self, q):
        return {"x-queue-type": "quorum", "x-delivery-limit": self.queues[q]["limit"],
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{q}.dlq",
                "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}

    @staticmethod
    def dlq_args():
        return {"x-queue-type": "quorum"}

    @staticmethod
    def delay_args(d):
        return {"x-queue-type": "quorum", "x-message-ttl": d, "x-dead-letter-exchange": "",
                "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}

    def delay_name(self, d):
        return f"msgkit.delay.{d}ms"

    def archive_args(self):
        return {"x-queue-type": "stream", **self.archive_defaults}

    def expected_queues(self):
        """name -> arguments, for every queue the kit declares (with the archive on)."""
        out = {}
        for q in self.queues:
            out[f"{q}.dlq"] = self.dlq_args()
            out[q] = self.work_args(q)
        for d in self.delays:
            out[self.delay_name(d)] = self.delay_args(d)
        out[self.archive] = self.archive_args()
        return out

    def queue_type(self, name):
        return "stream" if name == self.archive else "quorum"

    def expected_exchanges(self):
        out = {self.exchange: "topic"}
        for d in self.delays:
            out[self.delay_name(d)] = "fanout"
        return out

    def expected_bindings(self):
        out = set()
        for q, spec in self.queues.items():
            for key in spec["bindings"]:
                out.add((self.exchange, q, key))
        for d in self.delays:
            out.add((self.delay_name(d), self.delay_name(d), ""))
        return out

    # What each user's permissions must allow, from the AMQP methods the kit calls
    # (RabbitMQ access control: queue.declare = configure on the queue, and when the queue is
    # created with a dead-letter exchange also read on the queue and write on the DLX;
    # exchange.declare = configure; queue.bind = write on the queue, read on the exchange;
    # basic.publish = write on the exchange, "" being checked as amq.default;
    # basic.consume = read on the queue).
    # The services run with TOPOLOGY_DECLARE=own (docker-compose.yml, k8s/): each declares the
    # events exchange and its own queue with its DLQ and bindings (Topology::declaring_only),
    # nothing else; the shared rest (the other queues, the delay tiers, the archive) is the
    # topology user's (`msgkit topology apply`), and the definitions pre-declare all of it.
    # At run time a consumer consumes its queue, republishes retries to a delay tier exchange
    # (routing key = its queue) and dead letters through the default exchange to its DLQ; a
    # relay publishes to events, and its archive copies and its timers through the default
    # exchange; a projection consumes the archive.
    def needed(self, svc):
        delays = [self.delay_name(d) for d in self.delays]
        archive = [self.archive] if svc in self.readers else []
        if svc not in self.queues:  # a projection only: declares nothing, publishes nothing
            return {"configure": [], "write": [], "read": archive}
        # configure: exchange.declare events, queue.declare <svc> and <svc>.dlq.
        configure = [self.exchange, svc, f"{svc}.dlq"]
        # write: queue.bind <svc>; publishing retries (the tier exchanges), dead letters, archive
        # copies and timers (amq.default, which creating <svc> with its dead-letter exchange ""
        # needs too), events (the relay).
        write = [svc, "amq.default"] + delays + ([self.exchange] if svc in self.publishers else [])
        # read: queue.bind from events; consuming <svc> (and creating it: it has a DLX).
        read = [self.exchange, svc] + archive
        return {"configure": configure, "write": write, "read": read}

    def not_needed(self, svc):
        """Names each permission should NOT match (least privilege), checked statically."""
        foreign = ["amq.direct", "amq.topic", "other", "events2", "xorder", "order2",
                   "msgkit.delay.x", "msgkit.delayed", f"{self.archive}2", f"{self.exchange}.archived"]
        work = list(self.queues)
        delays = [self.delay_name(d) for d in self.delays]
        others = [q for q in work if q != svc]
        out = {"configure": foreign + [f"{self.exchange}.dlq", "amq.default", self.archive] + delays
                           + others + [f"{q}.dlq" for q in others],
               "write": foreign + [f"{q}.dlq" for q in work] + [self.archive] + others,
               "read": foreign + [f"{q}.dlq" for q in work] + ["amq.default"] + delays + others}
        if svc not in self.publishers:
            out["write"].append(self.exchange)
        if svc not in self.readers:
            out["read"].append(self.archive)
        if svc not in self.queues:
            everything = [self.exchange, self.archive, "amq.default"] + work + delays
            out["configure"] += everything
            out["write"] += everything
            out["read"] += [n for n in everything if n != self.archive]
        return out

    # The topology user (`msgkit topology apply`, Topology::declare of the whole topology):
    # declares the exchange, every work queue with its DLQ and bindings, the delay tiers (a
    # fanout exchange and a queue of the same name, bound) and the archive; it publishes and
    # consumes nothing. Creating the work queues and the tier queues (dead-letter exchange "")
    # needs read on them and write on amq.default.
    def topology_needed(self):
        work = list(self.queues)
        delays = [self.delay_name(d) for d in self.delays]
        return {"configure": [self.exchange] + work + [f"{q}.dlq" for q in work] + delays + [self.archive],
                "write": work + delays + ["amq.default"],
                "read": [self.exchange] + work + delays}

    def topology_not_needed(self):
        foreign = ["amq.direct", "amq.topic", "other", "events2", "xorder", "order2",
                   "msgkit.delay.x", "msgkit.delayed", f"{self.archive}2", f"{self.exchange}.archived"]
        dlqs = [f"{q}.dlq" for q in self.queues]
        return {"configure": foreign + [f"{self.exchange}.dlq", "amq.default"],
                "write": foreign + dlqs + [self.exchange, self.archive],
                "read": foreign + dlqs + [self.archive, "amq.default"]}


# The broker user of the deploy step that declares the whole topology (`msgkit topology apply`:
# a one-shot in docker-compose.yml, a Job in k8s/) before the services start.
TOPOLOGY_USER = "topology"

# Each service's HTTP port (compose, Kubernetes, Prometheus).
SERVICE_PORTS = {"order": 8080, "inventory": 8081, "payment": 8082, "notify": 8083, "risk": 8084,
                 "reconcile": 8085, "rebate": 8086}


def archive_settings(env, defs, where, problems):
    """The archive settings a service gets from `env` must turn it on with the retention of the
    definitions' stream (unset: the kit's default, which must then be the definitions' value)."""
    try:
        archive, defaults = read_archive(topology_source())
    except Exception as e:
        problems.append(f"{where}: {e}")
        return
    stream = next((x for x in defs.get("queues", []) if x.get("name") == archive), None)
    if stream is None:
        problems.append(f"{where}: definitions.json has no {archive} queue")
        return
    if str(env.get("ARCHIVE_ENABLED", "")).strip() != "true":
        problems.append(f"{where}: ARCHIVE_ENABLED must be \"true\" (every service archives its events)")
    for name, arg in ARCHIVE_ENV.items():
        value = env.get(name)
        want = stream.get("arguments", {}).get(arg)
        got = defaults[arg] if value is None else (
            int(value) if isinstance(want, int) and str(value).strip().isdigit() else str(value).strip())
        if got != want:
            problems.append(f"{where}: {name} gives {arg} = {got!r}, but definitions.json declares {want!r} "
                            f"(the broker would refuse the service's declaration)")


def check_hash(password, password_hash):
    raw = base64.b64decode(password_hash, validate=True)
    if len(raw) != 36:
        return False
    salt = raw[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode() == password_hash


# ------------------------------------------------------------------------------------------
# definitions.json, statically
# ------------------------------------------------------------------------------------------
SERVICE_USERS = None


def definitions_static(kit, path):
    global SERVICE_USERS
    label = "rabbitmq definitions"
    try:
        doc = json.loads(Path(path).read_text())
    except Exception as e:
        fail(f"{label}: {path} does not parse: {e}")
        return None
    problems = []
    if [v.get("name") for v in doc.get("vhosts", [])] != ["/"]:
        problems.append("vhosts must be exactly [\"/\"]")
    for kind in ("queues", "exchanges", "bindings", "permissions"):
        for item in doc.get(kind, []):
            if item.get("vhost") != "/":
                problems.append(f"{kind}: {item.get('name') or item.get('user') or item} is not in vhost /")

    # Queues: exactly the kit's, with exactly its arguments (types included: 20, not "20").
    expected = kit.expected_queues()
    got = {q.get("name"): q for q in doc.get("queues", [])}
    for name in sorted(set(expected) - set(got)):
        problems.append(f"queue {name} is missing")
    for name in sorted(set(got) - set(expected)):
        problems.append(f"queue {name} is not declared by the kit")
    for name in sorted(set(expected) & set(got)):
        q = got[name]
        args = q.get("arguments", {})
        if not (q.get("durable") is True and q.get("auto_delete") is False):
            problems.append(f"queue {name}: must be durable and not auto-delete")
        if args != expected[name] or any(type(args[k]) is not type(v) for k, v in expected[name].items() if k in args):
            problems.append(f"queue {name}: arguments {json.dumps(args, sort_keys=True)} != the kit's {json.dumps(expected[name], sort_keys=True)}")

    expected_x = kit.expected_exchanges()
    got_x = {x.get("name"): x for x in doc.get("exchanges", [])}
    if set(got_x) != set(expected_x):
        problems.append(f"exchanges differ from the kit's: {sorted(set(got_x) ^ set(expected_x))}")
    for name in sorted(set(expected_x) & set(got_x)):
        x = got_x[name]
        if x.get("type") != expected_x[name] or x.get("durable") is not True or x.get("auto_delete") or x.get("internal") or x.get("arguments"):
            problems.append(f"exchange {name}: must be a durable {expected_x[name]} exchange without arguments")

    got_b = {(b.get("source"), b.get("destination"), b.get("routing_key")) for b in doc.get("bindings", [])
             if b.get("destination_type") == "queue" and not b.get("arguments")}
    if len(got_b) != len(doc.get("bindings", [])):
        problems.append("a binding is not to a queue, has arguments, or is duplicated")
    for b in sorted(kit.expected_bindings() - got_b):
        problems.append(f"binding {b[0]} -> {b[1]} ({b[2]!r}) is missing")
    for b in sorted(got_b - kit.expected_bindings()):
        problems.append(f"binding {b[0]} -> {b[1]} ({b[2]!r}) is not the kit's")

    # Users: password hashes in RabbitMQ's SHA-256 format, of the documented dev passwords.
    users = {u.get("name"): u for u in doc.get("users", [])}
    SERVICE_USERS = list(kit.users)
    for name in SERVICE_USERS + [TOPOLOGY_USER, "admin", "keda"]:
        u = users.get(name)
        if u is None:
            problems.append(f"user {name} is missing")
            continue
        if u.get("hashing_algorithm") != "rabbit_password_hashing_sha256":
            problems.append(f"user {name}: hashing_algorithm must be rabbit_password_hashing_sha256")
        try:
            good = check_hash(f"{name}-dev-password", u.get("password_hash", ""))
        except Exception:
            good = False
        if not good:
            problems.append(f"user {name}: password_hash is not base64(salt4 + sha256(salt4 + '{name}-dev-password'))")
    want_tags = {**{s: [] for s in SERVICE_USERS}, TOPOLOGY_USER: [], "admin": ["administrator"],
                 "keda": ["management"]}
    for name, tags in want_tags.items():
        if name in users and sorted(users[name].get("tags") or []) != tags:
            problems.append(f"user {name}: tags must be {tags}")
    for name in sorted(set(users) - set(want_tags)):
        problems.append(f"user {name} is not expected")

    # Permissions: allow what the kit does, nothing more (checked on names; the live check
    # below proves it on the broker).
    perms = {p.get("user"): p for p in doc.get("permissions", [])}
    expectations = [(svc, kit.needed(svc), kit.not_needed(svc)) for svc in SERVICE_USERS]
    expectations.append((TOPOLOGY_USER, kit.topology_needed(), kit.topology_not_needed()))
    for user, needed, not_needed in expectations:
        p = perms.get(user)
        if p is None:
            problems.append(f"permissions of {user} are missing")
            continue
        for what, names in needed.items():
            rx = p.get(what, "")
            miss = [n for n in names if not re.search(rx, n)]
            if miss:
                problems.append(f"{user}: {what} permission {rx!r} does not allow {miss[:4]}")
        for what, names in not_needed.items():
            rx = p.get(what, "")
            extra = [n for n in names if re.search(rx, n)]
            if extra:
                problems.append(f"{user}: {what} permission {rx!r} allows more than needed: {extra[:4]}")
    if "keda" in perms and any(perms["keda"].get(k) != "^$" for k in ("configure", "write", "read")):
        problems.append("keda must have no configure/write/read permission (^$)")
    if problems:
        for p in problems:
            fail(f"{label}: {p}")
        return None
    ok(f"{label}: {len(expected)} queues, {len(expected_x)} exchanges, {len(got_b)} bindings equal the kit's "
       f"(shared/src/topology/, services/contracts); {len(users)} users with valid sha256 hashes; "
       f"least-privilege permissions (each service its own queue and DLQ, {TOPOLOGY_USER} the whole topology)")
    return doc


# ------------------------------------------------------------------------------------------
# definitions.json, live on the local broker
# ------------------------------------------------------------------------------------------
class Api:
    def __init__(self, base, user, password):
        self.base, self.user, self.password = base.rstrip("/"), user, password

    def call(self, method, path, body=None, user=None, password=None, expect=(200, 201, 204)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        cred = f"{user or self.user}:{password if password is not None else self.password}"
        req.add_header("authorization", "Basic " + base64.b64encode(cred.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        if expect and status not in expect:
            raise RuntimeError(f"{method} {path}: HTTP {status} {text[:300]}")
        return status, (json.loads(text) if text.strip() else None)


def q(s):
    return urllib.parse.quote(s, safe="")


def definitions_live(kit, doc):
    import pika
    from pika.exceptions import ChannelClosedByBroker, UnroutableError

    prefix = os.environ["CHECK_PREFIX"]
    api = Api(os.environ["RABBITMQ_API"], os.environ["RABBITMQ_API_USER"], os.environ["RABBITMQ_API_PASSWORD"])
    host, port = os.environ["RABBITMQ_AMQP_HOST"], int(os.environ["RABBITMQ_AMQP_PORT"])
    services = list(kit.queues)
    v_defs = f"{prefix}-defs"
    # Two empty vhosts for the creation paths: in v_apply the topology user creates everything
    # (as `msgkit topology apply` on a broker without the definitions), in v_own each service
    # first creates its own part, then the topology user the rest.
    v_apply, v_own = f"{prefix}-fresh-apply", f"{prefix}-fresh-own"
    fresh_users = set(services) | {TOPOLOGY_USER}
    rename = lambda user: f"{prefix}-{user}"  # noqa: E731

    # The definitions, into throw-away vhosts: v_defs gets everything (users renamed, since
    # users are global); the empty vhosts get only the permissions of the topology user and of
    # the services that declare something.
    def moved(items, vhost):
        return [{**i, "vhost": vhost} for i in items]

    perms = doc["permissions"]
    imp = {
        "vhosts": [{"name": v} for v in (v_defs, v_apply, v_own)],
        "users": [{**u, "name": rename(u["name"])} for u in doc["users"]],
        "permissions": [{**p, "user": rename(p["user"]), "vhost": v_defs} for p in perms]
                       + [{**p, "user": rename(p["user"]), "vhost": v} for v in (v_apply, v_own)
                          for p in perms if p["user"] in fresh_users],
        "exchanges": moved(doc["exchanges"], v_defs),
        "queues": moved(doc["queues"], v_defs),
        "bindings": moved(doc["bindings"], v_defs),
    }
    label = "rabbitmq live"
    started = time.monotonic()
    api.call("POST", "/definitions", imp)

    # 1. What the broker made of the import: every queue with exactly the kit's arguments.
    problems = []
    _, queues = api.call("GET", f"/queues/{q(v_defs)}?columns=name,durable,auto_delete,arguments,type")
    got = {x["name"]: x for x in queues}
    for name, args in kit.expected_queues().items():
        x = got.get(name)
        if x is None:
            problems.append(f"queue {name} was not created by the import")
        elif x["arguments"] != args or not x["durable"] or x["auto_delete"] or x.get("type") != kit.queue_type(name):
            problems.append(f"queue {name} on the broker: {x['arguments']} (type {x.get('type')}) != {args}")
    _, bindings = api.call("GET", f"/bindings/{q(v_defs)}")
    got_b = {(b["source"], b["destination"], b["routing_key"]) for b in bindings if b["source"]}
    if got_b != kit.expected_bindings():
        problems.append(f"bindings on the broker differ: {sorted(got_b ^ kit.expected_bindings())[:4]}")
    _, got_perms = api.call("GET", f"/vhosts/{q(v_defs)}/permissions")
    got_perms = {p["user"]: p for p in got_perms}
    for p in perms:
        g = got_perms.get(rename(p["user"]))
        if not g or any(g[k] != p[k] for k in ("configure", "write", "read")):
            problems.append(f"permissions of {p['user']} were not imported as written")
    if problems:
        for p in problems:
            fail(f"{label}: {p}")
    else:
        ok(f"{label}: definitions imported into vhost {v_defs}; the broker holds every queue with the "
           f"exact arguments, every binding and every permission")

    # 2. Each user (its dev password must match its hash) does what the kit does with it, and is
    #    refused what it does not need.
    def connect(user, vhost):
        params = pika.ConnectionParameters(host=host, port=port, virtual_host=vhost,
                                           credentials=pika.PlainCredentials(rename(user), f"{user}-dev-password"),
                                           connection_attempts=1, socket_timeout=10, blocked_connection_timeout=30)
        return pika.BlockingConnection(params)

    def declare_queue(ch, name):
        """A work queue with its DLQ and bindings, in Topology::declare's order."""
        ch.queue_declare(f"{name}.dlq", durable=True, arguments=kit.dlq_args())
        ch.queue_declare(name, durable=True, arguments=kit.work_args(name))
        for key in kit.queues[name]["bindings"]:
            ch.queue_bind(name, kit.exchange, routing_key=key)

    def declare_topology(ch):
        """What `msgkit topology apply` declares (Topology::declare, the whole topology)."""
        ch.exchange_declare(kit.exchange, exchange_type="topic", durable=True)
        for name in kit.queues:
            declare_queue(ch, name)
        for d in kit.delays:
            n = kit.delay_name(d)
            ch.exchange_declare(n, exchange_type="fanout", durable=True)
            ch.queue_declare(n, durable=True, arguments=kit.delay_args(d))
            ch.queue_bind(n, n, routing_key="")
        ch.queue_declare(kit.archive, durable=True, arguments=kit.archive_args())

    def declare_own(ch, svc):
        """What a service with TOPOLOGY_DECLARE=own declares (Topology::declaring_only): the
        exchange and its own queue with its DLQ and bindings."""
        ch.exchange_declare(kit.exchange, exchange_type="topic", durable=True)
        declare_queue(ch, svc)

    def consume_archive(ch, on_message=lambda *a: None, offset="first"):
        # A stream consumer needs a per-consumer prefetch (basic.qos, not global). Where only the
        # right to consume is probed, offset "next" gets no message: pika would reject the ones
        # it holds when the channel closes, which a stream answers by closing the connection.
        ch.basic_qos(prefetch_count=50)
        return ch.basic_consume(kit.archive, on_message, arguments={"x-stream-offset": offset})

    def refused(conn, action):
        """Run action on a fresh channel; return the broker's reply code if it closed the channel."""
        ch = conn.channel()
        ch.confirm_delivery()
        try:
            action(ch)
        except ChannelClosedByBroker as e:
            return e.reply_code
        except UnroutableError:
            ch.close()
            return "unroutable"
        ch.close()
        return None

    def routed_key(svc):
        for spec in kit.queues.values():
            for key in spec["bindings"]:
                if key.startswith(f"{svc}."):
                    return key.replace("*", "deploy-check")
        # A service may publish events it consumes itself, named for the fact rather than the
        # service (risk: `transaction.recorded`, recorded by its API, evaluated by its consumer).
        own = kit.queues.get(svc, {}).get("bindings", [])
        return own[0].replace("*", "deploy-check") if own else None

    def expect_refused(conn, denied, problems):
        for what, action, code in denied:
            got_code = refused(conn, action)
            if got_code != code:
                problems.append(f"{what}: expected to be refused with {code}, got {got_code}")

    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    first = kit.delay_name(kit.delays[0])
    connections = []
    try:
        # 2a. Each service, as its own user, in own mode: declares the exchange and its own part
        #     over the imported topology (an inequivalent argument would close the channel with
        #     PRECONDITION_FAILED); publishes events and their archive copies and fires timers
        #     (publishers: the relay), retries (delay tier exchange, routing key = its queue) and
        #     dead letters (default exchange -> <queue>.dlq), all mandatory and confirmed, and
        #     consumes its queue.
        for svc in services:
            problems = []
            try:
                conn = connect(svc, v_defs)
            except Exception as e:
                fail(f"{label}: {svc} cannot log in with {svc}-dev-password: {e!r}")
                continue
            connections.append(conn)
            steps = [(f"declare {kit.exchange} and {svc} with its DLQ and bindings",
                      lambda ch, svc=svc: declare_own(ch, svc))]
            if svc in kit.publishers:
                key = routed_key(svc)
                steps.append((f"publish {key} to {kit.exchange}",
                              lambda ch, key=key: ch.basic_publish(kit.exchange, key, b"{}", props, mandatory=True)))
                # The relay's archive copy: through the default exchange, to the stream.
                steps.append((f"publish an archive copy to {kit.archive}",
                              lambda ch, svc=svc: ch.basic_publish("", kit.archive, svc.encode(), props, mandatory=True)))
                # A timer firing: the relay publishes it through the default exchange to the queue.
                steps.append((f"publish a timer to {svc} (default exchange)",
                              lambda ch, svc=svc: ch.basic_publish("", svc, b"{}", props, mandatory=True)))
            steps.append((f"publish a retry to {first}",
                          lambda ch, svc=svc: ch.basic_publish(first, svc, b"{}", props, mandatory=True)))
            steps.append((f"publish a dead letter to {svc}.dlq",
                          lambda ch, svc=svc: ch.basic_publish("", f"{svc}.dlq", b"{}", props, mandatory=True)))
            steps.append((f"consume {svc}",
                          lambda ch, svc=svc: ch.basic_cancel(ch.basic_consume(svc, lambda *a: None))))
            for what, action in steps:
                code = refused(conn, action)
                if code is not None:
                    problems.append(f"{what}: refused ({code})")
            # Least privilege, live: what the service does not need is refused.
            other = next(x for x in services if x != svc)
            other_key = (kit.queues[other]["bindings"] or ["x.y"])[0]
            denied = [("declare a foreign queue", lambda ch: ch.queue_declare(f"{prefix}-foreign", durable=True), 403),
                      (f"declare {other} (another service's queue)",
                       lambda ch: ch.queue_declare(other, durable=True, arguments=kit.work_args(other)), 403),
                      (f"declare {other}.dlq", lambda ch: ch.queue_declare(f"{other}.dlq", durable=True,
                                                                            arguments=kit.dlq_args()), 403),
                      (f"bind {other} to {kit.exchange}",
                       lambda ch: ch.queue_bind(other, kit.exchange, routing_key=other_key), 403),
                      (f"consume {other}", lambda ch: ch.basic_consume(other, lambda *a: None), 403),
                      (f"declare the delay tier exchange {first}",
                       lambda ch: ch.exchange_declare(first, exchange_type="fanout", durable=True), 403),
                      (f"declare the delay tier queue {first}",
                       lambda ch: ch.queue_declare(first, durable=True, arguments=kit.delay_args(kit.delays[0])), 403),
                      (f"declare {kit.archive}",
                       lambda ch: ch.queue_declare(kit.archive, durable=True, arguments=kit.archive_args()), 403),
                      (f"consume {svc}.dlq", lambda ch: ch.basic_consume(f"{svc}.dlq", lambda *a: None), 403),
                      ("publish to amq.topic", lambda ch: ch.basic_publish("amq.topic", "x", b"{}", props), 403)]
            if svc not in kit.publishers:
                denied.append((f"publish to {kit.exchange}",
                               lambda ch: ch.basic_publish(kit.exchange, "x.y", b"{}", props), 403))
            if svc not in kit.readers:
                denied.append((f"consume {kit.archive}", lambda ch: consume_archive(ch, offset="next"), 403))
            expect_refused(conn, denied, problems)
            if problems:
                for p in problems:
                    fail(f"{label}: as {svc}: {p}")
            else:
                ok(f"{label}: as {svc} (own mode): declares {kit.exchange} and {svc} with its DLQ and bindings over "
                   f"the imported ones (equivalent), "
                   f"{'publishes events, their archive copies and timers, ' if svc in kit.publishers else ''}"
                   f"retries to {first} and dead letters, consumes {svc}; refused declaring, binding or consuming "
                   f"{other}, declaring a delay tier or the archive, and what else it does not need")

        # 2b. Each projection, as its own user, reads the archive from its first offset and gets
        #     the copies the publishers just wrote; it is refused everything else (it declares
        #     nothing: the topology user declares the archive, the definitions pre-declare it).
        for svc in sorted(kit.readers - set(services)):
            problems = []
            try:
                conn = connect(svc, v_defs)
            except Exception as e:
                fail(f"{label}: {svc} cannot log in with {svc}-dev-password: {e!r}")
                continue
            connections.append(conn)
            ch = conn.channel()
            got = []
            try:
                tag = consume_archive(ch, lambda c, m, p, body: (got.append(body), c.basic_ack(m.delivery_tag)))
                want = {x.encode() for x in kit.publishers}
                deadline = time.monotonic() + 10
                while not want <= set(got) and time.monotonic() < deadline:
                    conn.process_data_events(time_limit=0.2)
                ch.basic_cancel(tag)
                ch.close()
                if not want <= set(got):
                    problems.append(f"read {kit.archive} from first: got {sorted(got)[:6]}, "
                                    f"not every publisher's copy {sorted(want)}")
            except ChannelClosedByBroker as e:
                problems.append(f"consume {kit.archive}: refused ({e.reply_code})")
            denied = [(f"declare {kit.archive}",
                       lambda ch: ch.queue_declare(kit.archive, durable=True, arguments=kit.archive_args()), 403),
                      ("declare a foreign queue", lambda ch: ch.queue_declare(f"{prefix}-foreign", durable=True), 403),
                      (f"consume {services[0]}", lambda ch: ch.basic_consume(services[0], lambda *a: None), 403),
                      (f"publish to {kit.exchange}", lambda ch: ch.basic_publish(kit.exchange, "x.y", b"{}", props), 403),
                      (f"publish to {kit.archive} (default exchange)",
                       lambda ch: ch.basic_publish("", kit.archive, b"{}", props), 403)]
            expect_refused(conn, denied, problems)
            if problems:
                for p in problems:
                    fail(f"{label}: as {svc}: {p}")
            else:
                ok(f"{label}: as {svc}: reads {kit.archive} from its first offset (every publisher's copy is "
                   f"there); refused declaring, publishing and consuming anything else")

        # 2c. The topology user (`msgkit topology apply`) declares the whole topology over the
        #     imported one (equivalent). It is refused publishing events and reading the archive
        #     and the DLQs. (Not refusable by name: write on the delay tiers, since a tier's
        #     exchange and queue share a name and binding the queue needs write; read on the work
        #     queues and amq.default, which creating them with their dead-letter exchange needs.)
        problems = []
        topo = None
        try:
            topo = connect(TOPOLOGY_USER, v_defs)
        except Exception as e:
            fail(f"{label}: {TOPOLOGY_USER} cannot log in with {TOPOLOGY_USER}-dev-password: {e!r}")
        if topo is not None:
            connections.append(topo)
            code = refused(topo, declare_topology)
            if code is not None:
                problems.append(f"declare the whole topology: refused ({code})")
            denied = [("declare a foreign queue", lambda ch: ch.queue_declare(f"{prefix}-foreign", durable=True), 403),
                      (f"publish to {kit.exchange}", lambda ch: ch.basic_publish(kit.exchange, "x.y", b"{}", props), 403),
                      (f"consume {kit.archive}", lambda ch: consume_archive(ch, offset="next"), 403),
                      (f"consume {services[0]}.dlq", lambda ch: ch.basic_consume(f"{services[0]}.dlq", lambda *a: None), 403),
                      ("publish to amq.topic", lambda ch: ch.basic_publish("amq.topic", "x", b"{}", props), 403)]
            expect_refused(topo, denied, problems)
            if problems:
                for p in problems:
                    fail(f"{label}: as {TOPOLOGY_USER}: {p}")
            else:
                ok(f"{label}: as {TOPOLOGY_USER}: declares the whole topology (exchange, work queues with their "
                   f"DLQs and bindings, {len(kit.delays)} delay tiers, the archive) over the imported one; refused "
                   f"publishing to {kit.exchange}, consuming the archive or a DLQ, another name")

        # 3. Negative controls: the same declaration with one argument changed must fail, or the
        #    equivalence above proves nothing. A service redeclares its own queue; the topology
        #    user the archive (services with other retention settings must not start silently
        #    against it, and `msgkit topology apply` with them must fail).
        conn = connections[0] if connections else connect(services[0], v_defs)
        name = services[0]
        bad = {**kit.work_args(name), "x-delivery-limit": kit.queues[name]["limit"] + 1}
        code = refused(conn, lambda ch: ch.queue_declare(name, durable=True, arguments=bad))
        if code == 406:
            ok(f"{label}: negative control: {name} declaring {name} with x-delivery-limit "
               f"{bad['x-delivery-limit']} is refused with PRECONDITION_FAILED")
        else:
            fail(f"{label}: negative control: an inequivalent {name} declaration was not refused (got {code})")
        other_age = "1D" if kit.archive_defaults["x-max-age"] != "1D" else "2D"
        bad = {**kit.archive_args(), "x-max-age": other_age}
        code = refused(topo, lambda ch: ch.queue_declare(kit.archive, durable=True, arguments=bad)) if topo else None
        if code == 406:
            ok(f"{label}: negative control: {TOPOLOGY_USER} declaring {kit.archive} with x-max-age {other_age} is "
               f"refused with PRECONDITION_FAILED")
        else:
            fail(f"{label}: negative control: an inequivalent {kit.archive} declaration was not refused (got {code})")

        # 4. Creation paths (creating a queue with a dead-letter exchange needs read on it and
        #    write on amq.default, which re-declaring does not). The result must equal the
        #    definitions: queues with their arguments, exchanges, bindings.
        want = {x["name"]: x["arguments"] for x in doc["queues"]}
        want_x = {x["name"]: x["type"] for x in doc["exchanges"]}
        want_b = {(b["source"], b["destination"], b["routing_key"]) for b in doc["bindings"]}

        def differs(vhost):
            _, fresh = api.call("GET", f"/queues/{q(vhost)}?columns=name,arguments")
            fresh = {x["name"]: x["arguments"] for x in fresh}
            _, xs = api.call("GET", f"/exchanges/{q(vhost)}?columns=name,type")
            xs = {x["name"]: x["type"] for x in xs if x["name"] and not x["name"].startswith("amq.")}
            _, bs = api.call("GET", f"/bindings/{q(vhost)}")
            bs = {(b["source"], b["destination"], b["routing_key"]) for b in bs if b["source"]}
            diff = sorted(n for n in set(fresh) | set(want) if fresh.get(n) != want.get(n))
            diff += sorted(n for n in set(xs) | set(want_x) if xs.get(n) != want_x.get(n))
            diff += [f"binding {b}" for b in sorted(bs ^ want_b)]
            return diff

        def apply_as_topology(vhost, what):
            try:
                conn = connect(TOPOLOGY_USER, vhost)
            except Exception as e:
                fail(f"{label}: {TOPOLOGY_USER} cannot log in to {vhost}: {e!r}")
                return False
            connections.append(conn)
            code = refused(conn, declare_topology)
            if code is not None:
                fail(f"{label}: as {TOPOLOGY_USER}: declaring the topology {what} is refused ({code})")
                return False
            diff = differs(vhost)
            if diff:
                fail(f"{label}: the topology {TOPOLOGY_USER} declared {what} differs from the definitions: {diff[:4]}")
                return False
            return True

        def own_parts(vhost, what):
            good = []
            for svc in services:
                conn = connect(svc, vhost)
                connections.append(conn)
                code = refused(conn, lambda ch, svc=svc: declare_own(ch, svc))
                if code is not None:
                    fail(f"{label}: as {svc}: declaring its own part {what} is refused ({code})")
                else:
                    good.append(svc)
            return good == services

        # 4a. As `msgkit topology apply` on a broker without the definitions: the topology user
        #     creates everything in an empty vhost; then each service declares its own part there.
        if apply_as_topology(v_apply, "in an empty vhost") and own_parts(v_apply, "after the apply"):
            ok(f"{label}: {TOPOLOGY_USER} creates the whole topology in an empty vhost with its own permissions "
               f"and the result equals definitions.json; then each of {', '.join(services)} declares its own part "
               f"there in own mode")
        # 4b. A service finding its own queue missing (a service started before the apply, or a
        #     queue an operator deleted) creates it with its own permissions; the apply then
        #     declares the rest, and the result is the same.
        if own_parts(v_own, "in an empty vhost") and apply_as_topology(v_own, "after the services' own parts"):
            ok(f"{label}: each of {', '.join(services)} creates {kit.exchange} and its own queue, DLQ and bindings "
               f"in an empty vhost with its own permissions; {TOPOLOGY_USER} then declares the rest, and the "
               f"result equals definitions.json")

        # 5. KEDA's user reads queue lengths over HTTP and nothing else; the admin logs in.
        status, body = api.call("GET", f"/queues/{q(v_defs)}/{services[-1]}", user=rename("keda"),
                                password="keda-dev-password", expect=None)
        # (A fresh queue's message counts appear with the next statistics emission; the
        # access is what is checked here.)
        if status == 200 and (body or {}).get("name") == services[-1]:
            ok(f"{label}: keda (management tag, no permissions) reads queue {services[-1]} over the management API")
        else:
            fail(f"{label}: keda cannot read /api/queues/{v_defs}/{services[-1]}: HTTP {status}")
        status, body = api.call("GET", "/whoami", user=rename("admin"), password="admin-dev-password", expect=None)
        if status == 200 and "administrator" in str((body or {}).get("tags")):
            ok(f"{label}: admin logs in to the management API as an administrator")
        else:
            fail(f"{label}: admin cannot log in with admin-dev-password: HTTP {status}")
    finally:
        for conn in connections:
            try:
                conn.close()
            except Exception:
                pass
        # rabbitmq-server#16652: let quorum queues finish starting before deleting their vhost.
        time.sleep(1.5)
        for v in (v_defs, v_apply, v_own):
            api.call("DELETE", f"/vhosts/{q(v)}", expect=None)
        for u in doc["users"]:
            api.call("DELETE", f"/users/{q(rename(u['name']))}", expect=None)
        _, vhosts = api.call("GET", "/vhosts?columns=name")
        _, users = api.call("GET", "/users?columns=name")
        left = [x["name"] for x in vhosts + users if x["name"].startswith(prefix)]
        if left:
            fail(f"{label}: could not delete {left}")
        else:
            ok(f"{label}: throw-away vhosts and users deleted ({time.monotonic() - started:.1f} s)")


def cmd_definitions():
    try:
        kit = Kit()
    except Exception as e:
        fail(f"rabbitmq definitions: cannot read the kit's topology: {e}")
        return
    doc = definitions_static(kit, ROOT / "deploy/rabbitmq/definitions.json")
    if doc is None:
        fail("rabbitmq live: skipped, the definitions are broken")
        return
    try:
        definitions_live(kit, doc)
    except Exception as e:
        fail(f"rabbitmq live: {type(e).__name__}: {e}")


# ------------------------------------------------------------------------------------------
# docker-compose.yml (beyond the schema), Dockerfile, rabbitmq.conf
# ------------------------------------------------------------------------------------------
def amqp_credentials_ok(url, doc, problems, where):
    u = urllib.parse.urlsplit(url)
    users = {x["name"]: x for x in doc.get("users", [])}
    user = urllib.parse.unquote(u.username or "")
    if user not in users:
        problems.append(f"{where}: user {user!r} is not in definitions.json")
    elif not check_hash(urllib.parse.unquote(u.password or ""), users[user]["password_hash"]):
        problems.append(f"{where}: the password of {user} does not match its hash in definitions.json")
    return user


def compose_argv(svc):
    """What a compose service runs: its entrypoint and command, as lists."""
    import shlex
    argv = []
    for key in ("entrypoint", "command"):
        v = svc.get(key)
        argv += shlex.split(v) if isinstance(v, str) else [str(x) for x in v or []]
    return argv


def runs_topology_apply(argv):
    """Whether argv runs `msgkit ... topology apply` (the CLI's global flags may come first)."""
    if not argv or Path(argv[0]).name != "msgkit" or "topology" not in argv:
        return False
    i = argv.index("topology")
    return argv[i + 1:i + 2] == ["apply"]


def cmd_compose():
    import yaml
    label = "compose semantics"
    problems = []
    try:
        data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        doc = json.loads((ROOT / "deploy/rabbitmq/definitions.json").read_text())
    except Exception as e:
        fail(f"{label}: {e}")
        return
    services = data.get("services") or {}
    # Interpolation: this file means every "$" literally, so each must be written "$$".
    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, str) and "$" in node.replace("$$", ""):
            problems.append(f"{path}: unescaped $ (compose would interpolate it): {node[:60]}")
    walk({k: v for k, v in data.items() if not k.startswith("x-")}, "")  # x-*: merged into services
    duration = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
    for name, svc in services.items():
        hc = svc.get("healthcheck") or {}
        if "retries" in hc and not isinstance(hc["retries"], int):
            problems.append(f"{name}: healthcheck.retries must be an integer, not {hc['retries']!r}")
        for key in ("interval", "timeout", "start_period", "start_interval"):
            if key in hc and not duration.match(str(hc[key])):
                problems.append(f"{name}: healthcheck.{key} {hc[key]!r} is not a duration")
        if "stop_grace_period" in svc and not duration.match(str(svc["stop_grace_period"])):
            problems.append(f"{name}: stop_grace_period {svc['stop_grace_period']!r} is not a duration")
        for dep in (svc.get("depends_on") or {}):
            if dep not in services:
                problems.append(f"{name}: depends_on unknown service {dep}")
        for vol in svc.get("volumes") or []:
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith((".", "/")) and not (ROOT / src).exists():
                problems.append(f"{name}: mounted file {src} does not exist")
        build = svc.get("build")
        if build:
            ctx = ROOT / build.get("context", ".")
            if not (ctx / build.get("dockerfile", "Dockerfile")).exists():
                problems.append(f"{name}: no Dockerfile at {ctx}")
    want_ports = SERVICE_PORTS
    targets = set(re.findall(r'"([a-z]+:\d+)"', (ROOT / "observability/prometheus-docker.yml").read_text()))
    for name, port in want_ports.items():
        svc = services.get(name)
        if svc is None:
            problems.append(f"service {name} is missing")
            continue
        env = svc.get("environment") or {}
        if (svc.get("build") or {}).get("args", {}).get("SERVICE") != name:
            problems.append(f"{name}: build arg SERVICE must be {name}")
        if env.get(f"{name.upper()}_HTTP_ADDR") != f"0.0.0.0:{port}":
            problems.append(f"{name}: {name.upper()}_HTTP_ADDR must be 0.0.0.0:{port}")
        if f"{name}:{port}" not in targets:
            problems.append(f"{name}: observability/prometheus-docker.yml does not scrape {name}:{port}")
        for key in ("DATABASE_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "AMQP_URL"):
            if not env.get(key):
                problems.append(f"{name}: {key} is not set")
        if env.get("LOG_FORMAT") != "json":
            problems.append(f"{name}: LOG_FORMAT must be json")
        archive_settings(env, doc, name, problems)
        if env.get("AMQP_URL"):
            user = amqp_credentials_ok(env["AMQP_URL"], doc, problems, f"{name} AMQP_URL")
            if user != name:
                problems.append(f"{name}: must connect as its own broker user, not {user!r}")
        for dep in ("rabbitmq", "postgres"):
            cond = ((svc.get("depends_on") or {}).get(dep) or {}).get("condition")
            if cond != "service_healthy":
                problems.append(f"{name}: depends_on {dep} must wait for service_healthy")
        test = " ".join((svc.get("healthcheck") or {}).get("test") or [])
        if "/readyz" not in test:
            problems.append(f"{name}: the healthcheck must probe /readyz")
        if svc.get("restart") != "unless-stopped":
            problems.append(f"{name}: restart must be unless-stopped")
    for name in ("rabbitmq", "postgres"):
        if not (services.get(name) or {}).get("healthcheck"):
            problems.append(f"{name}: needs a healthcheck (services wait for it)")
    # The topology step: a one-shot running `msgkit topology apply` as the topology user, from
    # the image (which ships the CLI), once the broker is up; every service waits for it to have
    # succeeded and declares only its own part (TOPOLOGY_DECLARE=own), which is all its broker
    # user may configure.
    steps = [name for name, svc in services.items() if runs_topology_apply(compose_argv(svc))]
    if len(steps) != 1:
        problems.append(f"exactly one service must run `msgkit topology apply` (the topology step); found {steps}")
    else:
        step = steps[0]
        svc = services[step]
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        if not svc.get("build"):
            problems.append(f"{step}: must be built from the Dockerfile (the image that ships the msgkit CLI)")
        if str(svc.get("restart", "no")) != "no":
            problems.append(f"{step}: a one-shot must not restart (restart: \"no\")")
        if ((svc.get("depends_on") or {}).get("rabbitmq") or {}).get("condition") != "service_healthy":
            problems.append(f"{step}: depends_on rabbitmq must wait for service_healthy")
        if not env.get("AMQP_URL"):
            problems.append(f"{step}: AMQP_URL is not set")
        elif amqp_credentials_ok(env["AMQP_URL"], doc, problems, f"{step} AMQP_URL") != TOPOLOGY_USER:
            problems.append(f"{step}: must connect as the broker user {TOPOLOGY_USER}")
        # It declares the archive: with the definitions' retention, or the services' and the
        # broker's would disagree with it.
        archive_settings(env, doc, step, problems)
        for name in SERVICE_PORTS:
            svc = services.get(name)
            if svc is None:
                continue  # reported above
            if str((svc.get("environment") or {}).get("TOPOLOGY_DECLARE", "")).strip() != "own":
                problems.append(f"{name}: TOPOLOGY_DECLARE must be own (its broker user may configure only its own queue)")
            cond = ((svc.get("depends_on") or {}).get(step) or {}).get("condition")
            if cond != "service_completed_successfully":
                problems.append(f"{name}: depends_on {step} must wait for service_completed_successfully "
                                f"(the topology is declared before the service starts)")
    if problems:
        for p in problems:
            fail(f"{label}: {p}")
    else:
        ok(f"{label}: mounts exist, depends_on/healthchecks/ports/env consistent, AMQP passwords match "
           f"definitions.json, no unescaped $, Prometheus targets match, every service archives with "
           f"the definitions' retention; the one-shot {steps[0]} runs `msgkit topology apply` as {TOPOLOGY_USER} "
           f"before every service, each with TOPOLOGY_DECLARE=own")


# ------------------------------------------------------------------------------------------
# TLS: what both deployments share
# ------------------------------------------------------------------------------------------
AMQPS_PORT = 5671
# The uid the official images run their server as (rabbitmq:3.13 and postgres:15: 999 both).
SERVER_UID = {"rabbitmq": 999, "postgres": 999}


def pg_key_problem(uid, gid, mode, server_uid, server_groups):
    """Why PostgreSQL would refuse (or could not read) a key file with this owner and mode:
    owned by its user with no group or other access, or owned by root with at most 0640
    (src/backend/libpq/be-secure-common.c); None if it takes it."""
    if uid == server_uid:
        return None if mode & 0o077 == 0 else f"mode {mode:04o}: owned by the server's user, it must be 0600 or less"
    if uid != 0:
        return f"owned by uid {uid}: PostgreSQL takes a key owned by its user or by root only"
    if mode & 0o037:
        return f"mode {mode:04o}: owned by root, it must be 0640 or less"
    if not (mode & 0o040 and gid in server_groups):
        return f"root-owned with group {gid} and mode {mode:04o}: the server (groups {sorted(server_groups)}) cannot read it"
    return None


def openssl(*args):
    import subprocess
    r = subprocess.run(["openssl", *args], capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def cert_verifies(ca, cert, host):
    """Whether `cert` chains to `ca` and names `host` (a DNS name or an IP address)."""
    flag = "-verify_ip" if re.fullmatch(r"[0-9.]+|.*:.*", host) else "-verify_hostname"
    good, out = openssl("verify", "-CAfile", str(ca), flag, host, str(cert))
    reasons = [line for line in out.splitlines() if re.match(r"error \d+ at \d+ depth", line)]
    return good, (reasons or out.splitlines() or [""])[0]


def same_key(cert, key):
    a = openssl("x509", "-noout", "-pubkey", "-in", str(cert))
    b = openssl("pkey", "-pubout", "-in", str(key))
    return a[0] and b[0] and a[1] == b[1]


def url_query(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def postgres_settings(args):
    """`-c name=value` pairs of a postgres command line."""
    out = {}
    args = [str(a) for a in args or []]
    for i, a in enumerate(args):
        if a == "-c" and i + 1 < len(args) and "=" in args[i + 1]:
            k, v = args[i + 1].split("=", 1)
            out[k.strip()] = v.strip()
        elif a.startswith("-c") and "=" in a[2:]:
            k, v = a[2:].split("=", 1)
            out[k.strip()] = v.strip()
    return out


def rabbitmq_conf_settings(text):
    return {k.strip(): v.strip() for k, v in (line.split("=", 1) for line in text.splitlines()
                                              if "=" in line and not line.lstrip().startswith("#"))}


# ------------------------------------------------------------------------------------------
# docker-compose.yml: TLS
# ------------------------------------------------------------------------------------------
def compose_mounts(svc):
    """[(source, target, read_only)] of a compose service's volumes (short or long syntax)."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            target = parts[1] if len(parts) > 1 else parts[0]
            out.append((parts[0], target, len(parts) > 2 and "ro" in parts[2].split(",")))
        else:
            out.append((v.get("source", ""), v.get("target", ""), bool(v.get("read_only"))))
    return out


def compose_resolve(svc, path):
    """(source, path inside it) of the file a compose service sees at `path`, or None."""
    best = None
    for source, target, _ in compose_mounts(svc):
        t = target.rstrip("/")
        if path.startswith(t + "/") and (best is None or len(t) > best[2]):
            best = (source, path[len(t) + 1:], len(t))
    return best and best[:2]


def cmd_compose_tls():
    """The TLS of docker-compose.yml: the certificate generator is run here (as the one-shot
    service does) and every path the servers and services are given is followed through their
    mounts into what it wrote; the certificates must verify for the host names the URLs use."""
    import tempfile
    import yaml
    label = "compose tls"
    p = []
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = data.get("services") or {}
    named = set((data.get("volumes") or {}).keys())
    gen_name = "tls-certs"
    gen = services.get(gen_name)
    if gen is None:
        fail(f"{label}: no {gen_name} service (it writes the certificates)")
        return
    # The generator: a committed script, bind-mounted and run with the volume's mount as OUT_DIR.
    script = "./deploy/tls/make-certs.sh"
    argv = [str(a) for a in (gen.get("entrypoint") or []) + (gen.get("command") or [])]
    script_at = [t for s, t, _ in compose_mounts(gen) if s == script]
    if not script_at or script_at[0] not in argv:
        p.append(f"{gen_name}: must mount {script} and run it")
    out_arg = argv[-1] if argv else ""
    outs = [(s, t, ro) for s, t, ro in compose_mounts(gen) if t.rstrip("/") == out_arg.rstrip("/")]
    if not outs or outs[0][0] not in named or outs[0][2]:
        fail(f"{label}: {gen_name} must write into a named volume, mounted read-write at its OUT_DIR argument ({out_arg!r})")
        return
    volume = outs[0][0]
    if gen.get("restart", "no") != "no":
        p.append(f"{gen_name}: a one-shot must not restart (restart: \"no\")")
    gen_env = {k: str(v) for k, v in (gen.get("environment") or {}).items()}

    def uses_volume(name):
        return [(s, t, ro) for s, t, ro in compose_mounts(services[name]) if s == volume]
    for name, svc in services.items():
        if name != gen_name and any(not ro for _, _, ro in uses_volume(name)):
            p.append(f"{name}: mounts volume {volume} read-write (only {gen_name} writes it)")
    for name in ("rabbitmq", "postgres"):
        cond = (((services.get(name) or {}).get("depends_on") or {}).get(gen_name) or {}).get("condition")
        if cond != "service_completed_successfully":
            p.append(f"{name}: must depend on {gen_name} with condition service_completed_successfully")

    import atexit
    import shutil
    import subprocess
    work = Path(tempfile.mkdtemp(prefix="compose-tls-"))
    atexit.register(shutil.rmtree, work, True)  # also when a check below raises
    out = work / "tls"
    gen_run = {**os.environ, **gen_env}
    r = subprocess.run(["sh", str(ROOT / script), str(out)], env=gen_run, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{label}: {script} failed ({r.returncode}): {(r.stdout + r.stderr).strip()[-400:]}")
        return
    as_root = os.geteuid() == 0

    def volume_file(name, path, what):
        """The generated file service `name` sees at `path`, or None (a problem is recorded)."""
        hit = compose_resolve(services[name], path)
        if hit is None or hit[0] != volume:
            p.append(f"{name}: {what} {path} is not in a mount of volume {volume}")
            return None
        f = out / hit[1]
        if not f.is_file():
            p.append(f"{name}: {what} {path} is {volume}:{hit[1]}, which {script} does not write")
            return None
        return f

    def key_ok(name, f, what):
        st = f.stat()
        if st.st_mode & 0o077:
            p.append(f"{name}: {what} has mode {st.st_mode & 0o777:04o}; nobody but its server may read it")
        if as_root and st.st_uid != SERVER_UID[name]:
            p.append(f"{name}: {what} is owned by uid {st.st_uid}, not the server's {SERVER_UID[name]}")
        if name == "postgres" and as_root:
            why = pg_key_problem(st.st_uid, st.st_gid, st.st_mode & 0o777, SERVER_UID[name], {SERVER_UID[name]})
            if why:
                p.append(f"postgres: {what}: {why}")

    # RabbitMQ: its rabbitmq.conf's TLS listener and files, through its mounts.
    rabbit = services.get("rabbitmq") or {}
    conf_src = next((s for s, t, _ in compose_mounts(rabbit) if t == "/etc/rabbitmq/rabbitmq.conf"), None)
    rabbit_cert = None
    conf = {}
    if not conf_src:
        p.append("rabbitmq: no rabbitmq.conf mounted at /etc/rabbitmq/rabbitmq.conf")
    else:
        conf = rabbitmq_conf_settings((ROOT / conf_src).read_text())
        ssl_ports = [v.rsplit(":", 1)[-1] for k, v in conf.items() if re.fullmatch(r"listeners\.ssl\.[^.]+", k)]
        if ssl_ports != [str(AMQPS_PORT)]:
            p.append(f"rabbitmq.conf: needs one TLS listener on {AMQPS_PORT} (listeners.ssl.<name>), has {ssl_ports}")
        if conf.get("ssl_options.verify") != "verify_peer" or conf.get("ssl_options.fail_if_no_peer_cert") != "false":
            p.append("rabbitmq.conf: ssl_options.verify must be verify_peer and fail_if_no_peer_cert false")
        files = {}
        for key in ("cacertfile", "certfile", "keyfile"):
            path = conf.get(f"ssl_options.{key}")
            files[key] = volume_file("rabbitmq", path, f"ssl_options.{key}") if path else None
            if not path:
                p.append(f"rabbitmq.conf: ssl_options.{key} is not set")
        if files["keyfile"]:
            key_ok("rabbitmq", files["keyfile"], "ssl_options.keyfile")
        if files["certfile"] and files["keyfile"] and not same_key(files["certfile"], files["keyfile"]):
            p.append("rabbitmq: ssl_options.keyfile is not the key of ssl_options.certfile")
        rabbit_cert = files["certfile"]
    if f"{AMQPS_PORT}:{AMQPS_PORT}" not in [str(x) for x in rabbit.get("ports") or []]:
        p.append(f"rabbitmq: port {AMQPS_PORT} is not published")

    # PostgreSQL: ssl=on and its files, through its mounts.
    pg = services.get("postgres") or {}
    settings = postgres_settings(pg.get("command"))
    pg_cert = None
    if settings.get("ssl") != "on":
        p.append("postgres: must run with -c ssl=on")
    for key in ("ssl_cert_file", "ssl_key_file"):
        if key not in settings:
            p.append(f"postgres: -c {key}=... is not set")
    if "ssl_cert_file" in settings and "ssl_key_file" in settings:
        pg_cert = volume_file("postgres", settings["ssl_cert_file"], "ssl_cert_file")
        pg_key = volume_file("postgres", settings["ssl_key_file"], "ssl_key_file")
        if pg_key:
            key_ok("postgres", pg_key, "ssl_key_file")
        if pg_cert and pg_key and not same_key(pg_cert, pg_key):
            p.append("postgres: ssl_key_file is not the key of ssl_cert_file")
    if "ssl_ca_file" in settings:
        volume_file("postgres", settings["ssl_ca_file"], "ssl_ca_file")
    # A copy of the key per server: each readable by its own server's user only.
    rabbit_key = compose_resolve(rabbit, conf.get("ssl_options.keyfile", "")) if conf_src else None
    pg_key_at = compose_resolve(pg, settings.get("ssl_key_file", ""))
    if rabbit_key and rabbit_key == pg_key_at:
        p.append(f"rabbitmq and postgres share the key file {rabbit_key[1]}: each needs its own copy")

    # The services and the topology step: amqps on 5671 (and the services verify-full), each
    # trusting a mounted CA that signed the server's certificate for the host name in its URL.
    steps = [n for n, svc in services.items() if runs_topology_apply(compose_argv(svc))]
    for name in [*SERVICE_PORTS, *steps]:
        svc = services.get(name)
        if svc is None:
            continue  # compose semantics reports it
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        if not uses_volume(name):
            p.append(f"{name}: does not mount volume {volume}")
        amqp = urllib.parse.urlsplit(env.get("AMQP_URL", ""))
        if amqp.scheme != "amqps" or amqp.port != AMQPS_PORT:
            p.append(f"{name}: AMQP_URL must be amqps://...:{AMQPS_PORT}, not {amqp.scheme}://...:{amqp.port}")
        ca = env.get("AMQP_TLS_CA_CERT_FILE")
        ca_file = volume_file(name, ca, "AMQP_TLS_CA_CERT_FILE") if ca else None
        if not ca:
            p.append(f"{name}: AMQP_TLS_CA_CERT_FILE is not set (an amqps URL needs it)")
        if ca_file and rabbit_cert and amqp.hostname:
            good, why = cert_verifies(ca_file, rabbit_cert, amqp.hostname)
            if not good:
                p.append(f"{name}: RabbitMQ's certificate does not verify against AMQP_TLS_CA_CERT_FILE for "
                         f"{amqp.hostname}: {why}")
        if name in steps:
            continue  # no database
        db = env.get("DATABASE_URL", "")
        query = url_query(db)
        if query.get("sslmode") != "verify-full":
            p.append(f"{name}: DATABASE_URL must have sslmode=verify-full, not {query.get('sslmode')!r}")
        root = query.get("sslrootcert")
        root_file = volume_file(name, root, "DATABASE_URL's sslrootcert") if root else None
        if not root:
            p.append(f"{name}: DATABASE_URL has no sslrootcert")
        host = urllib.parse.urlsplit(db).hostname
        if root_file and pg_cert and host:
            good, why = cert_verifies(root_file, pg_cert, host)
            if not good:
                p.append(f"{name}: PostgreSQL's certificate does not verify against sslrootcert for {host}: {why}")

    # Run again: what is there is kept (the servers and the services keep one CA across restarts).
    before = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", str(out / "ca.pem"))[1]
    r = subprocess.run(["sh", str(ROOT / script), str(out)], env=gen_run, capture_output=True, text=True)
    after = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", str(out / "ca.pem"))[1]
    if r.returncode != 0 or before != after:
        p.append(f"{script}: a second run must keep the certificates (exit {r.returncode}, CA "
                 f"{'kept' if before == after else 'replaced'})")
    if p:
        for x in p:
            fail(f"{label}: {x}")
    else:
        owners = "owned by uid 999 (rabbitmq, postgres), mode 0600" if as_root else "mode 0600 (not root here: owners not checked)"
        ok(f"{label}: {script} run as {gen_name} does: RabbitMQ (listener {AMQPS_PORT}, rabbitmq.conf) and PostgreSQL "
           f"(ssl=on) find their files in volume {volume}, keys {owners}; every service uses amqps:{AMQPS_PORT} "
           f"and verify-full with a mounted CA that verifies both servers' certificates for the URLs' hosts "
           f"(the topology step amqps likewise); "
           f"a second run keeps them")


def cmd_dockerfile():
    label = "Dockerfile"
    text = (ROOT / "Dockerfile").read_text()
    problems = []
    pending = []
    for svc in SERVICE_PORTS:
        manifest = ROOT / f"services/{svc}/Cargo.toml"
        if manifest.exists():
            if not re.search(rf'\[\[bin\]\]\s*\nname\s*=\s*"{svc}"', manifest.read_text()):
                problems.append(f"services/{svc} has no [[bin]] named {svc}")
        elif svc in PROJECTION_SERVICES:
            # Its deployment files may land before its crate; the image cannot build until then.
            pending.append(svc)
        else:
            problems.append(f"services/{svc} does not exist, but the image ships it")
        if f"/out/{svc}" not in text or not re.search(rf"for svc in [^;]*\b{svc}\b", text):
            problems.append(f"the builder stage does not build {svc} or the runtime stage does not copy it")
    # The operator CLI: the deploy step `msgkit topology apply` (compose one-shot, k8s Job) runs
    # from this image.
    cli = ROOT / "tools/msgkit-cli/Cargo.toml"
    if not (cli.exists() and re.search(r'\[\[bin\]\]\s*\nname\s*=\s*"msgkit"', cli.read_text())):
        problems.append("tools/msgkit-cli has no [[bin]] named msgkit")
    if "/out/msgkit" not in text or not re.search(r"for svc in [^;]*\bmsgkit\b", text) \
            or not re.search(r"COPY --from=builder [^\n]*(\\\n[^\n]*)*/out/msgkit", text):
        problems.append("the builder stage does not copy the msgkit CLI to /out or the runtime stage does not ship it "
                        "(the topology apply step runs it)")
    for needle in ("FROM rust:1-bookworm", "FROM debian:bookworm-slim", "cargo build --release --locked --bins",
                   "USER 10001", "STOPSIGNAL SIGTERM", "ARG SERVICE", "ENV SERVICE"):
        if needle not in text:
            problems.append(f"missing {needle!r}")
    ignore = (ROOT / ".dockerignore").read_text().split()
    for needle in ("target/", ".git/"):
        if needle not in ignore:
            problems.append(f".dockerignore does not exclude {needle}")
    # The planner stubs src/lib.rs, src/main.rs and src/bin/*.rs; a member with another target
    # root (a `path =` elsewhere, or a build script) would break the dependency layer.
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", (ROOT / "Cargo.toml").read_text())
    for member in re.findall(r'"([^"]+)"', members.group(1) if members else ""):
        cargo = (ROOT / member / "Cargo.toml").read_text()
        for path in re.findall(r'^path\s*=\s*"([^"]+)"', cargo, re.M):
            if not re.fullmatch(r"src/(lib|main)\.rs|src/bin/[^/]+\.rs", path):
                problems.append(f"{member}: target path {path} is not stubbed by the planner stage")
        if (ROOT / member / "build.rs").exists() or re.search(r"^build\s*=", cargo, re.M):
            problems.append(f"{member}: has a build script, which the planner stage does not copy")
    if problems:
        for p in problems:
            fail(f"{label}: {p}")
    else:
        note = f" (not yet in this workspace: {', '.join(pending)}, so the image does not build yet)" if pending else ""
        ok(f"{label}: builds --release --locked, ships the {len(SERVICE_PORTS)} services' [[bin]]s{note} and the msgkit CLI, non-root, "
           f"STOPSIGNAL SIGTERM; every workspace member's targets are covered by the dependency-layer stubs")


def schema_pattern(mapping):
    """A RabbitMQ config schema mapping name as a regex over keys: its `$var` segments
    (`listeners.ssl.$name`, `auth_backends.$num.authn`) stand for any one segment."""
    return re.compile(r"\.".join("[^.]+" if seg.startswith("$") else re.escape(seg) for seg in mapping.split(".")))


def cmd_rabbitmq_conf():
    label = "rabbitmq.conf"
    conf = (ROOT / "deploy/rabbitmq/rabbitmq.conf").read_text()
    keys = [line.split("=", 1)[0].strip() for line in conf.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    if "load_definitions" not in keys:
        fail(f"{label}: load_definitions is not set")
        return
    path = re.search(r"^load_definitions\s*=\s*(\S+)", conf, re.M).group(1)
    compose = (ROOT / "docker-compose.yml").read_text()
    if f":{path}:" not in compose and not compose.rstrip().endswith(path):
        fail(f"{label}: {path} is not where docker-compose.yml mounts definitions.json")
        return
    # The keys must be known to RabbitMQ's config schema (the local broker's, when installed).
    schemas = list(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*/plugins/*/priv/schema/*.schema"))
    if schemas:
        known = set()
        for s in schemas:
            known |= set(re.findall(r'\{mapping,\s*"([^"]+)"', s.read_text(errors="replace")))
        patterns = [schema_pattern(m) for m in sorted(known)]
        unknown = [k for k in keys if not any(p.fullmatch(k) for p in patterns)]
        if unknown:
            fail(f"{label}: unknown keys {unknown} (not in RabbitMQ's config schema)")
            return
        ok(f"{label}: keys {keys} are in the local RabbitMQ's config schema; definitions path matches the compose mount")
    else:
        ok(f"{label}: sets load_definitions = {path} (the compose mount); no local RabbitMQ schema to check keys against")


# ------------------------------------------------------------------------------------------
# Kubernetes manifests
# ------------------------------------------------------------------------------------------
CUSTOM = {("rabbitmq.com/v1beta1", "RabbitmqCluster"), ("keda.sh/v1alpha1", "ScaledObject"),
          ("keda.sh/v1alpha1", "TriggerAuthentication"), ("cert-manager.io/v1", "Certificate"),
          ("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "ClusterIssuer")}
# Kinds without a namespace.
CLUSTER_SCOPED = {"Namespace", "ClusterIssuer"}


def dig(obj, *path):
    for p in path:
        if isinstance(obj, dict):
            obj = obj.get(p)
        elif isinstance(obj, list) and isinstance(p, int) and p < len(obj):
            obj = obj[p]
        else:
            return None
    return obj


# cert-manager (cert-manager.io/v1): the fields used, checked by hand like the other CRDs.
ISSUER_TYPES = {"selfSigned", "ca", "acme", "vault", "venafi"}
CERTIFICATE_FIELDS = {"secretName", "secretTemplate", "commonName", "dnsNames", "ipAddresses", "uris",
                      "emailAddresses", "otherNames", "subject", "literalSubject", "duration", "renewBefore",
                      "renewBeforePercentage", "usages", "privateKey", "issuerRef", "isCA", "keystores",
                      "revisionHistoryLimit", "additionalOutputFormats", "encodeUsagesInRequest", "nameConstraints"}
KEY_USAGES = {"signing", "digital signature", "content commitment", "key encipherment", "key agreement",
              "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
              "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
              "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}
KEY_SIZES = {"RSA": range(2048, 8193), "ECDSA": {256, 384, 521}, "Ed25519": {None}}
GO_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")


def go_duration(text):
    """Seconds of a Go duration (`2160h`, `1h30m`), or None if it is not one."""
    if not isinstance(text, str) or not re.fullmatch(f"(?:{GO_DURATION.pattern})+", text):
        return None
    unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * unit[u] for n, u in GO_DURATION.findall(text))


def certificate_problems(spec):
    p = [f"spec.{k} is not a Certificate field" for k in spec if k not in CERTIFICATE_FIELDS]
    if not (isinstance(spec.get("secretName"), str) and spec["secretName"]):
        p.append("spec.secretName is required")
    ref = spec.get("issuerRef") or {}
    if not (isinstance(ref.get("name"), str) and ref["name"]):
        p.append("spec.issuerRef.name is required")
    if ref.get("group", "cert-manager.io") == "cert-manager.io" and ref.get("kind", "Issuer") not in ("Issuer", "ClusterIssuer"):
        p.append(f"spec.issuerRef.kind must be Issuer or ClusterIssuer, not {ref.get('kind')!r}")
    if not any(spec.get(k) for k in ("commonName", "dnsNames", "ipAddresses", "uris", "emailAddresses",
                                     "otherNames", "literalSubject")):
        p.append("needs a commonName, dnsNames, ipAddresses, uris or emailAddresses")
    if len(str(spec.get("commonName", ""))) > 64:
        p.append("spec.commonName is longer than X.509's 64 characters")
    for k in ("dnsNames", "ipAddresses", "uris", "emailAddresses", "usages"):
        if k in spec and not (isinstance(spec[k], list) and all(isinstance(x, str) and x for x in spec[k])):
            p.append(f"spec.{k} must be a list of strings")
    if "isCA" in spec and not isinstance(spec["isCA"], bool):
        p.append("spec.isCA must be a boolean")
    durations = {}
    for k in ("duration", "renewBefore"):
        if k in spec:
            durations[k] = go_duration(spec[k])
            if durations[k] is None:
                p.append(f"spec.{k} {spec[k]!r} is not a duration (e.g. 2160h)")
    if durations.get("duration") is not None and durations["duration"] < 3600:
        p.append("spec.duration must be at least 1h")
    if None not in (durations.get("duration"), durations.get("renewBefore")) and len(durations) == 2 \
            and durations["renewBefore"] >= durations["duration"]:
        p.append("spec.renewBefore must be shorter than spec.duration")
    p += [f"spec.usages: {u!r} is not a key usage" for u in spec.get("usages") or [] if u not in KEY_USAGES]
    key = spec.get("privateKey") or {}
    p += [f"spec.privateKey.{k} is not a field" for k in key if k not in {"algorithm", "encoding", "size", "rotationPolicy"}]
    algorithm = key.get("algorithm", "RSA")
    if algorithm not in KEY_SIZES:
        p.append(f"spec.privateKey.algorithm must be one of {sorted(KEY_SIZES)}")
    elif key.get("size", {"RSA": 2048, "ECDSA": 256, "Ed25519": None}[algorithm]) not in KEY_SIZES[algorithm]:
        p.append(f"spec.privateKey.size {key.get('size')!r} is not a {algorithm} size")
    if key.get("encoding", "PKCS1") not in ("PKCS1", "PKCS8"):
        p.append("spec.privateKey.encoding must be PKCS1 or PKCS8")
    if key.get("rotationPolicy", "Always") not in ("Always", "Never"):
        p.append("spec.privateKey.rotationPolicy must be Always or Never")
    return p


def check_custom(doc):
    """Required fields of the custom resources (their CRD schemas are not bundled offline)."""
    p = []
    kind, spec = doc["kind"], doc.get("spec") or {}
    if kind == "RabbitmqCluster":
        allowed = {"replicas", "image", "imagePullSecrets", "service", "persistence", "resources", "affinity",
                   "tolerations", "rabbitmq", "tls", "override", "skipPostDeploySteps",
                   "terminationGracePeriodSeconds", "secretBackend"}
        p += [f"spec.{k} is not a RabbitmqCluster field" for k in spec if k not in allowed]
        if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 3 or spec["replicas"] % 2 == 0:
            p.append("spec.replicas must be an odd integer >= 3 (quorum queues)")
        if not isinstance(dig(spec, "resources", "limits", "memory"), str):
            p.append("spec.resources.limits.memory must be set")
        rmq = spec.get("rabbitmq") or {}
        p += [f"spec.rabbitmq.{k} is not a field" for k in rmq
              if k not in {"additionalPlugins", "additionalConfig", "advancedConfig", "envConfig"}]
        conf = rmq.get("additionalConfig") or ""
        if len(conf) > 2000:
            p.append("spec.rabbitmq.additionalConfig is longer than the CRD's 2000 characters")
        m = re.search(r"^\s*load_definitions\s*=\s*(\S+)", conf, re.M)
        if not m:
            p.append("spec.rabbitmq.additionalConfig must set load_definitions")
        sts = dig(spec, "override", "statefulSet", "spec", "template", "spec") or {}
        containers = {c.get("name"): c for c in sts.get("containers") or []}
        if "rabbitmq" not in containers:
            p.append("override.statefulSet...containers must patch the container named rabbitmq")
        mounts = {mt.get("name"): mt.get("mountPath") for mt in (containers.get("rabbitmq") or {}).get("volumeMounts") or []}
        vols = {v.get("name"): v for v in sts.get("volumes") or []}
        if m and not any(m.group(1).startswith(str(path).rstrip("/") + "/") for path in mounts.values()):
            p.append(f"load_definitions path {m.group(1)} is not under a mounted volume")
        for name in mounts:
            if name not in vols:
                p.append(f"volumeMount {name} has no volume")
        tls = spec.get("tls")
        if tls is not None:
            p += [f"spec.tls.{k} is not a field" for k in tls if k not in {"secretName", "caSecretName", "disableNonTLSListeners"}]
            if not (isinstance(tls.get("secretName"), str) and tls["secretName"]):
                p.append("spec.tls.secretName is required with spec.tls")
    elif kind == "TriggerAuthentication":
        refs = spec.get("secretTargetRef") or []
        if not refs:
            p.append("spec.secretTargetRef is empty")
        for r in refs:
            if not all(isinstance(r.get(k), str) and r.get(k) for k in ("parameter", "name", "key")):
                p.append("each secretTargetRef needs parameter, name and key")
        if "host" not in {r.get("parameter") for r in refs}:
            p.append("the rabbitmq scaler needs the host parameter")
    elif kind == "ScaledObject":
        allowed = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "idleReplicaCount", "minReplicaCount",
                   "maxReplicaCount", "fallback", "advanced", "triggers", "initialCooldownPeriod"}
        p += [f"spec.{k} is not a ScaledObject field" for k in spec if k not in allowed]
        if not dig(spec, "scaleTargetRef", "name"):
            p.append("spec.scaleTargetRef.name is required")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
            p.append("minReplicaCount/maxReplicaCount must be integers, min <= max")
        triggers = spec.get("triggers") or []
        if not triggers:
            p.append("spec.triggers is required")
        for t in triggers:
            md = t.get("metadata") or {}
            if t.get("type") != "rabbitmq":
                p.append(f"trigger type {t.get('type')!r} is not rabbitmq")
                continue
            if md.get("protocol") not in ("amqp", "http", "auto"):
                p.append("rabbitmq trigger: protocol must be amqp, http or auto")
            if md.get("mode") not in ("QueueLength", "MessageRate"):
                p.append("rabbitmq trigger: mode must be QueueLength or MessageRate")
            if md.get("mode") == "MessageRate" and md.get("protocol") != "http":
                p.append("rabbitmq trigger: MessageRate needs protocol http")
            if not md.get("queueName"):
                p.append("rabbitmq trigger: queueName is required")
            if not dig(t, "authenticationRef", "name") and not (md.get("host") or md.get("hostFromEnv")):
                p.append("rabbitmq trigger: needs authenticationRef (or host)")
            for k, v in md.items():
                if not isinstance(v, str):
                    p.append(f"rabbitmq trigger: metadata.{k} must be a string")
    elif kind == "Certificate":
        p += certificate_problems(spec)
    elif kind in ("Issuer", "ClusterIssuer"):
        types = [k for k in spec if k in ISSUER_TYPES]
        p += [f"spec.{k} is not an {kind} field" for k in spec if k not in ISSUER_TYPES]
        if len(types) != 1:
            p.append(f"spec needs exactly one issuer type of {sorted(ISSUER_TYPES)}, has {types}")
        if "selfSigned" in spec:
            self_signed = spec["selfSigned"]
            if not isinstance(self_signed, dict):
                p.append("spec.selfSigned must be an object ({})")
            else:
                p += [f"spec.selfSigned.{k} is not a field" for k in self_signed if k != "crlDistributionPoints"]
        if "ca" in spec:
            ca = spec["ca"] if isinstance(spec["ca"], dict) else {}
            if not (isinstance(ca.get("secretName"), str) and ca.get("secretName")):
                p.append("spec.ca.secretName is required")
            p += [f"spec.ca.{k} is not a field" for k in ca
                  if k not in {"secretName", "crlDistributionPoints", "ocspServers", "issuingCertificateURLs"}]
    return p


def cmd_k8s():
    import yaml
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    version = os.environ.get("K8S_VERSION", "1.30.0")
    files = sorted((ROOT / "k8s").glob("*.yaml"))
    if not files:
        fail("k8s: no manifests in k8s/")
        return
    objects = []
    for f in files:
        rel = f.relative_to(ROOT)
        problems = []
        try:
            docs = load_yaml_all(f)
        except yaml.YAMLError as e:
            fail(f"{rel}: not YAML: {' '.join(str(e).split())}")
            continue
        if not docs:
            problems.append("no object")
        for doc in docs:
            if not isinstance(doc, dict) or not all(k in doc for k in ("apiVersion", "kind", "metadata")):
                problems.append("an object lacks apiVersion/kind/metadata")
                continue
            name = dig(doc, "metadata", "name")
            where = f"{doc['kind']}/{name}"
            if not name:
                problems.append(f"{doc['kind']}: metadata.name is required")
            if doc["kind"] in CLUSTER_SCOPED:
                if dig(doc, "metadata", "namespace") is not None:
                    problems.append(f"{where}: a {doc['kind']} is cluster-scoped: no metadata.namespace")
            elif dig(doc, "metadata", "namespace") != "msgkit":
                problems.append(f"{where}: metadata.namespace must be msgkit")
            if (doc["apiVersion"], doc["kind"]) in CUSTOM:
                problems += [f"{where}: {p}" for p in check_custom(doc)]
            else:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except ValidationError as e:
                    path = ".".join(str(x) for x in e.path)
                    problems.append(f"{where}: {path}: {e.message}")
                except SchemaNotFoundError:
                    problems.append(f"{where}: no schema for {doc['apiVersion']} {doc['kind']} in Kubernetes {version}")
            objects.append((rel, doc))
        if problems:
            for p in problems:
                fail(f"{rel}: {p}")
        else:
            kinds = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
            ok(f"{rel}: valid ({kinds})")
    k8s_references(objects)


def k8s_apply_jobs(by):
    """The Jobs whose (first) container runs `msgkit topology apply`."""
    out = {}
    for name, job in by.get("Job", {}).items():
        c = (dig(job, "spec", "template", "spec", "containers") or [{}])[0]
        if runs_topology_apply([str(x) for x in (c.get("command") or []) + (c.get("args") or [])]):
            out[name] = job
    return out


def k8s_tls(by, secrets, configmaps, p):
    """TLS across the manifests: the cert-manager chain, the servers' certificates and the
    services' trust, following each path through the pod's volumes to a Certificate's Secret."""
    certs = by.get("Certificate", {})
    by_secret = {dig(c, "spec", "secretName"): c for c in certs.values()}

    def issuer_of(cert):
        ref = dig(cert, "spec", "issuerRef") or {}
        if ref.get("group", "cert-manager.io") != "cert-manager.io":
            return None
        return by.get(ref.get("kind", "Issuer"), {}).get(ref.get("name"))

    def ca_of(cert):
        """The CA Certificate that signs `cert` (itself when self-signed), or None."""
        issuer = issuer_of(cert)
        spec = (issuer or {}).get("spec") or {}
        if "selfSigned" in spec:
            return cert
        if "ca" in spec:
            return by_secret.get(dig(spec, "ca", "secretName"))
        return None

    for name, cert in certs.items():
        ref = dig(cert, "spec", "issuerRef") or {}
        issuer = issuer_of(cert)
        if issuer is None:
            p.append(f"Certificate {name}: issuerRef {ref.get('kind', 'Issuer')}/{ref.get('name')} is not in these manifests")
        elif "selfSigned" in issuer["spec"] and not dig(cert, "spec", "isCA"):
            p.append(f"Certificate {name}: self-signed but not isCA (only the CA should be self-signed)")
    for issuer in [*by.get("Issuer", {}).values(), *by.get("ClusterIssuer", {}).values()]:
        where = f"{issuer['kind']} {issuer['metadata']['name']}"
        if not any(issuer_of(c) is issuer for c in certs.values()):
            p.append(f"{where}: issues no Certificate here")
        if "ca" in issuer["spec"]:
            ca = by_secret.get(dig(issuer, "spec", "ca", "secretName"))
            if ca is None:
                p.append(f"{where}: spec.ca.secretName {dig(issuer, 'spec', 'ca', 'secretName')} is no Certificate's secretName")
            elif not dig(ca, "spec", "isCA"):
                p.append(f"{where}: its Certificate {ca['metadata']['name']} is not isCA")
            elif ca_of(ca) is not ca:
                p.append(f"{where}: its Certificate {ca['metadata']['name']} is not self-signed (the chain's root here)")

    def pod_file(pod, container, path):
        """(Certificate, key, mode) of the cert-manager Secret file a container sees at `path`;
        a problem is recorded and None returned when it is something else or nothing."""
        vols = {v.get("name"): v for v in pod.get("volumes") or []}
        for m in container.get("volumeMounts") or []:
            base = m.get("mountPath", "").rstrip("/")
            if not path or not path.startswith(base + "/") or m.get("subPath"):
                continue
            rel = path[len(base) + 1:]
            secret = (vols.get(m.get("name")) or {}).get("secret")
            if not secret:
                break
            mode = secret.get("defaultMode", 0o644)
            items = secret.get("items")
            if items:
                item = next((i for i in items if i.get("path") == rel), None)
                key, mode = (item["key"], item.get("mode", mode)) if item else (None, mode)
            else:
                key = rel if rel in secrets.get(secret.get("secretName"), {}) else None
            cert = by_secret.get(secret.get("secretName"))
            if key and cert:
                return cert, key, mode
            break
        return None

    def ca_in(found):
        """The CA Certificate a mounted file holds: ca.crt of any Certificate's Secret (its
        issuer's CA), or tls.crt of a CA's own."""
        if not found:
            return None
        cert, key, _ = found
        if key == "ca.crt":
            return ca_of(cert)
        if key == "tls.crt" and dig(cert, "spec", "isCA"):
            return cert
        return None

    def names(cert):
        return dig(cert, "spec", "dnsNames") or []

    # RabbitMQ: the Cluster Operator serves spec.tls.secretName on 5671.
    rabbit = {}  # Service host -> its Certificate
    for name, cluster in by.get("RabbitmqCluster", {}).items():
        tls = dig(cluster, "spec", "tls") or {}
        cert = by_secret.get(tls.get("secretName"))
        host = f"{name}.msgkit.svc"
        if cert is None:
            p.append(f"RabbitmqCluster {name}: spec.tls.secretName {tls.get('secretName')!r} is no Certificate's secretName")
            continue
        if host not in names(cert):
            p.append(f"Certificate {cert['metadata']['name']}: dnsNames lack {host}, RabbitmqCluster {name}'s Service")
        if tls.get("caSecretName") and tls["caSecretName"] not in by_secret:
            p.append(f"RabbitmqCluster {name}: spec.tls.caSecretName {tls['caSecretName']} is no Certificate's secretName (no ca.crt)")
        if tls.get("disableNonTLSListeners"):
            p.append(f"RabbitmqCluster {name}: disableNonTLSListeners would close the management API's HTTP port KEDA reads")
        rabbit[host] = cert

    # PostgreSQL: ssl=on, its certificate and key from a Certificate's Secret, a key it accepts.
    postgres = {}  # Service host -> its Certificate
    for name, sts in by.get("StatefulSet", {}).items():
        pod = sts["spec"]["template"]["spec"]
        for c in pod.get("containers") or []:
            if not str(c.get("image", "")).startswith("postgres:"):
                continue
            settings = postgres_settings((c.get("command") or [])[1:] + (c.get("args") or []))
            where = f"StatefulSet {name}"
            if settings.get("ssl") != "on":
                p.append(f"{where}: postgres must run with -c ssl=on")
                continue
            cert_file = pod_file(pod, c, settings.get("ssl_cert_file"))
            key_file = pod_file(pod, c, settings.get("ssl_key_file"))
            if not cert_file or cert_file[1] != "tls.crt":
                p.append(f"{where}: ssl_cert_file {settings.get('ssl_cert_file')} is not tls.crt of a mounted Certificate's Secret")
                continue
            if not key_file or key_file[1] != "tls.key" or key_file[0] is not cert_file[0]:
                p.append(f"{where}: ssl_key_file {settings.get('ssl_key_file')} is not tls.key of ssl_cert_file's Secret")
                continue
            if settings.get("ssl_ca_file") and not ca_in(pod_file(pod, c, settings["ssl_ca_file"])):
                p.append(f"{where}: ssl_ca_file {settings['ssl_ca_file']} is not a mounted CA certificate")
            # Secret files are root's; with fsGroup the kubelet makes them that group and adds group read.
            sec = pod.get("securityContext") or {}
            fs_group = sec.get("fsGroup")
            mode = key_file[2] | (0o440 if fs_group is not None else 0)
            uid = dig(c, "securityContext", "runAsUser") or sec.get("runAsUser")
            groups = {g for g in (sec.get("runAsGroup"), fs_group, *(sec.get("supplementalGroups") or [])) if g is not None}
            why = pg_key_problem(0, fs_group if fs_group is not None else 0, mode, uid, groups)
            if why:
                p.append(f"{where}: ssl_key_file {settings['ssl_key_file']}: {why}")
            host = f"{sts['spec'].get('serviceName')}.msgkit.svc"
            if host not in names(cert_file[0]):
                p.append(f"Certificate {cert_file[0]['metadata']['name']}: dnsNames lack {host}, StatefulSet {name}'s Service")
            postgres[host] = cert_file[0]

    # The services: amqps to the cluster's Service, verify-full to PostgreSQL's, each trusting a
    # mounted CA that is the one that signed that server's certificate. The topology Job: amqps
    # likewise (it has no database).
    workloads = [(f"Deployment {name}", by.get("Deployment", {}).get(name)) for name in SERVICE_PORTS]
    workloads += [(f"Job {name}", job) for name, job in k8s_apply_jobs(by).items()]
    for where, dep in workloads:
        if dep is None:
            continue  # reported above
        pod = dep["spec"]["template"]["spec"]
        c = (pod.get("containers") or [{}])[0]
        plain = {}
        for e in c.get("envFrom") or []:
            plain.update(configmaps.get(dig(e, "configMapRef", "name"), {}))
        plain.update({e["name"]: e["value"] for e in c.get("env") or [] if "value" in e})
        for e in c.get("env") or []:
            ref = dig(e, "valueFrom", "secretKeyRef")
            if ref:
                plain[e["name"]] = secrets.get(ref.get("name"), {}).get(ref.get("key"), "")
        amqp = urllib.parse.urlsplit(plain.get("AMQP_URL", ""))
        if amqp.scheme != "amqps" or amqp.port != AMQPS_PORT:
            p.append(f"{where}: AMQP_URL must be amqps://...:{AMQPS_PORT}, not {amqp.scheme}://...:{amqp.port}")
        ca_path = plain.get("AMQP_TLS_CA_CERT_FILE")
        ca = ca_in(pod_file(pod, c, ca_path)) if ca_path else None
        if not ca_path:
            p.append(f"{where}: AMQP_TLS_CA_CERT_FILE is not set (an amqps URL needs it)")
        elif ca is None:
            p.append(f"{where}: AMQP_TLS_CA_CERT_FILE {ca_path} is not a mounted CA certificate (ca.crt of a Certificate's Secret)")
        server = rabbit.get(amqp.hostname)
        if server is None:
            p.append(f"{where}: AMQP_URL host {amqp.hostname} is no RabbitmqCluster's Service with TLS")
        elif ca is not None and ca_of(server) is not ca:
            p.append(f"{where}: AMQP_TLS_CA_CERT_FILE is not the CA that signs {server['metadata']['name']}")
        if where.startswith("Job "):
            continue  # no database
        db = plain.get("DATABASE_URL", "")
        query = url_query(db)
        if query.get("sslmode") != "verify-full":
            p.append(f"{where}: DATABASE_URL must have sslmode=verify-full, not {query.get('sslmode')!r}")
        root = query.get("sslrootcert")
        root_ca = ca_in(pod_file(pod, c, root)) if root else None
        if not root:
            p.append(f"{where}: DATABASE_URL has no sslrootcert")
        elif root_ca is None:
            p.append(f"{where}: DATABASE_URL's sslrootcert {root} is not a mounted CA certificate (ca.crt of a Certificate's Secret)")
        host = urllib.parse.urlsplit(db).hostname
        server = postgres.get(host)
        if server is None:
            p.append(f"{where}: DATABASE_URL host {host} is no PostgreSQL StatefulSet's Service with TLS")
        elif root_ca is not None and ca_of(server) is not root_ca:
            p.append(f"{where}: sslrootcert is not the CA that signs {server['metadata']['name']}")


def k8s_references(objects):
    """Cross-references between the manifests, and agreement with deploy/rabbitmq/."""
    label = "k8s references"
    p = []
    by = {}
    for _, d in objects:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    secrets = {n: {**(d.get("stringData") or {}), **{k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()}}
               for n, d in by.get("Secret", {}).items()}
    configmaps = {n: d.get("data") or {} for n, d in by.get("ConfigMap", {}).items()}
    # cert-manager writes each Certificate's Secret: tls.crt, tls.key and ca.crt.
    for c in by.get("Certificate", {}).values():
        sname = dig(c, "spec", "secretName")
        if sname in secrets:
            p.append(f"Secret {sname} is also Certificate {c['metadata']['name']}'s secretName (cert-manager overwrites it)")
        else:
            secrets[sname] = {"tls.crt": "", "tls.key": "", "ca.crt": ""}
    defs = json.loads((ROOT / "deploy/rabbitmq/definitions.json").read_text())
    want_ports = SERVICE_PORTS

    def check_pod(owner, pod):
        for c in (pod.get("containers") or []):
            for e in c.get("env") or []:
                ref = dig(e, "valueFrom", "secretKeyRef")
                if ref and ref.get("key") not in secrets.get(ref.get("name"), {}):
                    p.append(f"{owner}: env {e['name']} refers to missing secret key {ref.get('name')}/{ref.get('key')}")
            for e in c.get("envFrom") or []:
                if "configMapRef" in e and e["configMapRef"]["name"] not in configmaps:
                    p.append(f"{owner}: envFrom missing ConfigMap {e['configMapRef']['name']}")
                if "secretRef" in e and e["secretRef"]["name"] not in secrets:
                    p.append(f"{owner}: envFrom missing Secret {e['secretRef']['name']}")
        for v in pod.get("volumes") or []:
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                p.append(f"{owner}: volume {v['name']} refers to missing Secret {v['secret']['secretName']}")
            elif "secret" in v:
                for item in v["secret"].get("items") or []:
                    if item.get("key") not in secrets[v["secret"]["secretName"]]:
                        p.append(f"{owner}: volume {v['name']} projects missing key {v['secret']['secretName']}/{item.get('key')}")

    for name, port in want_ports.items():
        dep = by.get("Deployment", {}).get(name)
        if dep is None:
            p.append(f"Deployment {name} is missing")
            continue
        spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels") or {}
        sel = dig(spec, "selector", "matchLabels") or {}
        if any(labels.get(k) != v for k, v in sel.items()):
            p.append(f"Deployment {name}: selector does not match the pod labels")
        c = (pod.get("containers") or [{}])[0]
        env = {e["name"]: e for e in c.get("env") or []}
        if spec.get("replicas") != 2:
            p.append(f"Deployment {name}: replicas must be 2")
        if pod.get("terminationGracePeriodSeconds") != 30:
            p.append(f"Deployment {name}: terminationGracePeriodSeconds must be 30")
        if dig(env, f"{name.upper()}_HTTP_ADDR", "value") != f"0.0.0.0:{port}":
            p.append(f"Deployment {name}: {name.upper()}_HTTP_ADDR must be 0.0.0.0:{port}")
        if dig(env, "SERVICE", "value") != name:
            p.append(f"Deployment {name}: SERVICE must be {name}")
        if [x.get("containerPort") for x in c.get("ports") or []] != [port]:
            p.append(f"Deployment {name}: containerPort must be {port}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            if dig(c, probe, "httpGet", "path") != path:
                p.append(f"Deployment {name}: {probe} must GET {path}")
        if not (dig(pod, "securityContext", "runAsNonRoot") and dig(c, "securityContext", "readOnlyRootFilesystem")):
            p.append(f"Deployment {name}: must run as non-root with a read-only root filesystem")
        if not (dig(c, "resources", "requests") and dig(c, "resources", "limits")):
            p.append(f"Deployment {name}: needs resource requests and limits")
        ann = dig(dep, "spec", "template", "metadata", "annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port):
            p.append(f"Deployment {name}: prometheus.io scrape annotations missing or wrong port")
        amqp = dig(env, "AMQP_URL", "valueFrom", "secretKeyRef")
        if amqp and amqp.get("key") in secrets.get(amqp.get("name"), {}):
            url = secrets[amqp["name"]][amqp["key"]]
            if amqp_credentials_ok(url, defs, p, f"Deployment {name} AMQP_URL") != name:
                p.append(f"Deployment {name}: must connect as broker user {name}")
        if not (dig(env, "OTEL_EXPORTER_OTLP_ENDPOINT") or any(
                "OTEL_EXPORTER_OTLP_ENDPOINT" in configmaps.get(dig(e, "configMapRef", "name"), {}) for e in c.get("envFrom") or [])):
            p.append(f"Deployment {name}: OTEL_EXPORTER_OTLP_ENDPOINT is not set")
        # The environment the container gets: its ConfigMaps (in order), then its own values.
        plain = {}
        for e in c.get("envFrom") or []:
            plain.update(configmaps.get(dig(e, "configMapRef", "name"), {}))
        plain.update({k: v["value"] for k, v in env.items() if "value" in v})
        archive_settings(plain, defs, f"Deployment {name}", p)
        if str(plain.get("TOPOLOGY_DECLARE", "")).strip() != "own":
            p.append(f"Deployment {name}: TOPOLOGY_DECLARE must be own (its broker user may configure only its own queue)")
        check_pod(f"Deployment {name}", pod)
        svc = by.get("Service", {}).get(name)
        if svc is None or any(labels.get(k) != v for k, v in (svc["spec"].get("selector") or {}).items()):
            p.append(f"Service {name}: missing or its selector does not match the Deployment's pods")
        elif [x.get("port") for x in svc["spec"].get("ports") or []] != [port]:
            p.append(f"Service {name}: port must be {port}")
        pdb = by.get("PodDisruptionBudget", {}).get(name)
        if pdb is None or pdb["spec"].get("minAvailable") != 1 or any(
                labels.get(k) != v for k, v in (dig(pdb, "spec", "selector", "matchLabels") or {}).items()):
            p.append(f"PodDisruptionBudget {name}: missing, not minAvailable 1, or not selecting the pods")
    # The topology step: a Job running `msgkit topology apply` as the topology user, with the
    # services' CA and archive settings, applied before the Deployments (its file sorts first).
    jobs = k8s_apply_jobs(by)
    if len(jobs) != 1:
        p.append(f"exactly one Job must run `msgkit topology apply` (the topology step); found {sorted(jobs)}")
    for name, job in jobs.items():
        where = f"Job {name}"
        pod = job["spec"]["template"]["spec"]
        c = (pod.get("containers") or [{}])[0]
        env = {e["name"]: e for e in c.get("env") or []}
        plain = {}
        for e in c.get("envFrom") or []:
            plain.update(configmaps.get(dig(e, "configMapRef", "name"), {}))
        plain.update({k: v["value"] for k, v in env.items() if "value" in v})
        amqp = dig(env, "AMQP_URL", "valueFrom", "secretKeyRef")
        if not amqp:
            p.append(f"{where}: AMQP_URL must come from a Secret (secretKeyRef)")
        elif amqp.get("key") in secrets.get(amqp.get("name"), {}):
            url = secrets[amqp["name"]][amqp["key"]]
            if amqp_credentials_ok(url, defs, p, f"{where} AMQP_URL") != TOPOLOGY_USER:
                p.append(f"{where}: must connect as the broker user {TOPOLOGY_USER}")
            for dname in SERVICE_PORTS:
                dpod = dig(by.get("Deployment", {}).get(dname) or {}, "spec", "template", "spec") or {}
                for dc in dpod.get("containers") or []:
                    if any(dig(e, "valueFrom", "secretKeyRef", "name") == amqp["name"] for e in dc.get("env") or []):
                        p.append(f"Deployment {dname}: refers to Secret {amqp['name']}, the topology user's "
                                 f"(keep it out of the services' pods)")
        archive_settings(plain, defs, where, p)
        if pod.get("restartPolicy") not in ("OnFailure", "Never"):
            p.append(f"{where}: restartPolicy must be OnFailure or Never")
        if not (dig(pod, "securityContext", "runAsNonRoot") and dig(c, "securityContext", "readOnlyRootFilesystem")):
            p.append(f"{where}: must run as non-root with a read-only root filesystem")
        if not (dig(c, "resources", "requests") and dig(c, "resources", "limits")):
            p.append(f"{where}: needs resource requests and limits")
        check_pod(where, pod)
        files = {d["metadata"]["name"]: rel for rel, d in objects if d["kind"] in ("Job", "Deployment")}
        late = [n for n in SERVICE_PORTS if n in files and str(files[n]) <= str(files[name])]
        if late:
            p.append(f"{where}: its file {files[name]} must sort before the Deployments' (kubectl apply -f k8s/ "
                     f"applies in name order), not after {late}")
    for name, sts in by.get("StatefulSet", {}).items():
        check_pod(f"StatefulSet {name}", sts["spec"]["template"]["spec"])
        if sts["spec"].get("serviceName") not in by.get("Service", {}):
            p.append(f"StatefulSet {name}: serviceName {sts['spec'].get('serviceName')} has no Service")
    for name in ("inventory", "payment", "notify"):
        so = by.get("ScaledObject", {}).get(name)
        if so is None:
            p.append(f"ScaledObject {name} is missing")
            continue
        if dig(so, "spec", "scaleTargetRef", "name") not in by.get("Deployment", {}):
            p.append(f"ScaledObject {name}: scaleTargetRef is not a Deployment here")
        for t in so["spec"].get("triggers") or []:
            md = t.get("metadata") or {}
            if md.get("queueName") not in {x["name"] for x in defs["queues"]}:
                p.append(f"ScaledObject {name}: queue {md.get('queueName')} is not in definitions.json")
            if md.get("mode") != "QueueLength" or md.get("value") != "50":
                p.append(f"ScaledObject {name}: must scale on QueueLength 50")
            auth = by.get("TriggerAuthentication", {}).get(dig(t, "authenticationRef", "name"))
            if auth is None:
                p.append(f"ScaledObject {name}: authenticationRef has no TriggerAuthentication")
                continue
            for ref in auth["spec"].get("secretTargetRef") or []:
                if ref["key"] not in secrets.get(ref["name"], {}):
                    p.append(f"TriggerAuthentication {auth['metadata']['name']}: missing secret key {ref['name']}/{ref['key']}")
                elif ref["parameter"] == "host":
                    host = secrets[ref["name"]][ref["key"]]
                    if md.get("protocol", "auto") not in ("auto", urllib.parse.urlsplit(host).scheme):
                        p.append(f"ScaledObject {name}: protocol {md.get('protocol')} does not match the host URL")
                    user = amqp_credentials_ok(host, defs, p, "keda host")
                    if user != "keda":
                        p.append("the KEDA host URL must use the keda user")
    for name, cluster in by.get("RabbitmqCluster", {}).items():
        vols = dig(cluster, "spec", "override", "statefulSet", "spec", "template", "spec", "volumes") or []
        for v in vols:
            if "secret" in v:
                content = secrets.get(v["secret"]["secretName"], {})
                if "definitions.json" not in content:
                    p.append(f"RabbitmqCluster {name}: Secret {v['secret']['secretName']} has no definitions.json")
                elif json.loads(content["definitions.json"]) != defs:
                    p.append(f"RabbitmqCluster {name}: Secret {v['secret']['secretName']} differs from deploy/rabbitmq/definitions.json")
        pdbs = [d for d in by.get("PodDisruptionBudget", {}).values()
                if dig(d, "spec", "selector", "matchLabels", "app.kubernetes.io/name") == name]
        if not pdbs or pdbs[0]["spec"].get("maxUnavailable") != 1:
            p.append(f"RabbitmqCluster {name}: needs a PodDisruptionBudget with maxUnavailable 1")
        for sname, s in secrets.items():
            for key, val in s.items():
                if val.startswith(("amqp://", "amqps://")) and urllib.parse.urlsplit(val).hostname != f"{name}.msgkit.svc":
                    p.append(f"Secret {sname}/{key}: AMQP host is not the RabbitmqCluster's Service {name}.msgkit.svc")
    db = secrets.get("msgkit-database", {})
    if db:
        u = urllib.parse.urlsplit(db.get("DATABASE_URL", ""))
        if (u.username, u.password, u.path.lstrip("/")) != (db.get("POSTGRES_USER"), db.get("POSTGRES_PASSWORD"), db.get("POSTGRES_DB")):
            p.append("Secret msgkit-database: DATABASE_URL does not match POSTGRES_USER/PASSWORD/DB")
        if u.hostname and u.hostname.split(".")[0] not in by.get("Service", {}):
            p.append(f"Secret msgkit-database: DATABASE_URL host {u.hostname} is not a Service here")
    k8s_tls(by, secrets, configmaps, p)
    if p:
        for x in p:
            fail(f"{label}: {x}")
    else:
        ok(f"{label}: secret/configmap keys exist, selectors match, ports/probes/env consistent, "
           f"passwords match definitions.json, the definitions Secret equals deploy/rabbitmq/definitions.json; "
           f"the Job {', '.join(k8s_apply_jobs(by))} runs `msgkit topology apply` as {TOPOLOGY_USER} before the "
           f"Deployments, each with TOPOLOGY_DECLARE=own")
        ok(f"k8s tls: cert-manager chain self-signed issuer -> CA Certificate -> CA Issuer -> "
           f"{sum(not dig(c, 'spec', 'isCA') for c in by.get('Certificate', {}).values())} server Certificates; RabbitmqCluster spec.tls and PostgreSQL "
           f"(ssl=on, a key it accepts) serve them for their Services' names; every service uses amqps:{AMQPS_PORT} "
           f"and verify-full with mounted CA files that are the CA signing each server (the topology Job amqps likewise)")


# ------------------------------------------------------------------------------------------
# Grafana dashboard
# ------------------------------------------------------------------------------------------
# RabbitMQ's per-object queue series carry `vhost` and `queue` (rabbitmq_prometheus, 3.10:
# rabbitmq_queue_messages{vhost="/",queue="order"}). A queue name exists in several vhosts (every
# test vhost has an `order`), so each dashboard query on them filters on the `vhost` variable.
VHOST_VARIABLE = "vhost"
VHOST_MATCHER = re.compile(r'^vhost=~"\$(vhost|\{vhost\})"$')
RABBIT_SELECTOR = re.compile(r"\b(rabbitmq_[a-zA-Z0-9_]+)\s*(?:\{([^}]*)\})?")
PROMQL_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def dashboard_exprs(dash):
    """Every PromQL expression of the dashboard (panels' targets), in order."""
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr" and isinstance(v, str):
                    exprs.append(v)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash.get("panels", []))
    return exprs


def rabbit_selectors(expr):
    """The RabbitMQ series selectors of `expr`: (metric, [(label, op, raw value)]) each, the
    value as written between the quotes (PromQL escapes not yet undone)."""
    out = []
    for m in RABBIT_SELECTOR.finditer(expr):
        body = m.group(2) or ""
        matchers, pos = [], 0
        while pos < len(body.strip()):
            mm = PROMQL_MATCHER.match(body, pos)
            if not mm:
                raise ValueError(f"cannot parse the label matchers of {m.group(0)!r}")
            matchers.append((mm.group(1), mm.group(2), mm.group(3)))
            pos = mm.end()
        out.append((m.group(1), matchers))
    return out


def vhost_problems(dash):
    """What is wrong with the dashboard's vhost variable and its use by RabbitMQ queries."""
    problems = []
    variables = {v.get("name"): v for v in dig(dash, "templating", "list") or []}
    var = variables.get(VHOST_VARIABLE)
    if var is None:
        problems.append(f"no `{VHOST_VARIABLE}` template variable (RabbitMQ panels would sum a queue name across vhosts)")
    else:
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        if var.get("type") != "query" or not re.fullmatch(r"label_values\(\s*rabbitmq_[a-z_]+\s*,\s*vhost\s*\)", query.strip()):
            problems.append(f"variable `{VHOST_VARIABLE}` must be a query variable on label_values(rabbitmq_..., vhost), "
                            f"not {var.get('type')} {query!r}")
        current = (var.get("current") or {}).get("value")
        if current not in ("/", "$__all"):
            problems.append(f"variable `{VHOST_VARIABLE}` must default to / or All, not {current!r}")
        if current == "$__all" and not var.get("includeAll"):
            problems.append(f"variable `{VHOST_VARIABLE}` defaults to All without includeAll")
    rabbit = 0
    for expr in dashboard_exprs(dash):
        for metric, matchers in rabbit_selectors(expr):
            rabbit += 1
            if not any(VHOST_MATCHER.match(f'{k}{op}"{v}"') for k, op, v in matchers):
                problems.append(f'{metric} in {expr!r} lacks vhost=~"$vhost"')
    if not rabbit:
        problems.append("no RabbitMQ query found (rabbitmq_* series)")
    return problems, rabbit


def promql_unquote(raw):
    """A PromQL double-quoted string's value (its escapes are JSON's for what dashboards use)."""
    return json.loads(f'"{raw}"')


def grafana_regex_escape(value):
    """A variable's value as Grafana writes it into a regex matcher (multi-value or All
    variables: prometheusSpecialRegexEscape), after the PromQL string is unquoted."""
    return re.sub(r"([\\$^*{}\[\]'+?.()|])", r"\\\1", value)


def selects(matchers, labels, variables):
    """Whether a series with `labels` is selected by `matchers`, with `variables` substituted."""
    for key, op, raw in matchers:
        want = promql_unquote(raw)
        for name, value in variables.items():
            want = want.replace("${" + name + "}", value).replace("$" + name, value)
        have = labels.get(key, "")
        if op == "=":
            hit = have == want
        elif op == "!=":
            hit = have != want
        elif op == "=~":
            hit = re.fullmatch(want, have) is not None
        else:
            hit = re.fullmatch(want, have) is None
        if not hit:
            return False
    return True


def parse_exposition(text):
    """[(metric, {label: value}, value)] of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if not m:
            continue
        labels = {k: promql_unquote(v) for k, v in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def dashboard_live():
    """On the local broker: two throw-away vhosts with the same queue names and different
    depths; each RabbitMQ query of the dashboard, with the vhost variable set to one of them,
    selects that vhost's series and no other's."""
    label = "grafana dashboard live"
    dash = json.loads((ROOT / "observability/grafana/dashboards/msgkit.json").read_text())
    kit = Kit()
    api = Api(os.environ["RABBITMQ_API"], os.environ["RABBITMQ_API_USER"], os.environ["RABBITMQ_API_PASSWORD"])
    endpoint = os.environ["RABBITMQ_PROMETHEUS"]
    prefix = os.environ["CHECK_PREFIX"]
    work = sorted(kit.queues)[0]
    names = [work, f"{work}.dlq", kit.delay_name(kit.delays[0])]
    depth = {f"{prefix}-vhost-a": 1, f"{prefix}-vhost-b": 2}
    try:
        for vhost, n in depth.items():
            api.call("PUT", f"/vhosts/{q(vhost)}", {})
            api.call("PUT", f"/permissions/{q(vhost)}/{q(api.user)}", {"configure": ".*", "write": ".*", "read": ".*"})
            for name in names:
                api.call("PUT", f"/queues/{q(vhost)}/{q(name)}", {"durable": False, "auto_delete": False,
                                                                  "arguments": {"x-queue-type": "classic"}})
                for _ in range(n):
                    _, routed = api.call("POST", f"/exchanges/{q(vhost)}/amq.default/publish",
                                         {"properties": {}, "routing_key": name, "payload": "x", "payload_encoding": "string"})
                    if not (routed or {}).get("routed"):
                        raise RuntimeError(f"a message to {vhost}/{name} was not routed")
        # Queues report their depth every statistics interval (5 s by default): wait for it.
        want = {(v, name): float(n) for v, n in depth.items() for name in names}
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(endpoint, timeout=20) as r:
                series = parse_exposition(r.read().decode())
            seen = {(l.get("vhost"), l.get("queue")): v for m, l, v in series if m == "rabbitmq_queue_messages"}
            if all(seen.get(k) == v for k, v in want.items()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{endpoint} did not show the check's queue depths within 60 s: "
                                   f"{ {k: seen.get(k) for k in want} }")
            time.sleep(1)
        problems, checked = [], 0
        for vhost in depth:
            variables = {VHOST_VARIABLE: grafana_regex_escape(vhost)}
            for expr in dashboard_exprs(dash):
                for metric, matchers in rabbit_selectors(expr):
                    picked = [l for m, l, _ in series if m == metric and selects(matchers, l, variables)]
                    others = sorted({l.get("vhost", "") for l in picked} - {vhost})
                    if others:
                        problems.append(f"with vhost={vhost}, {metric} in {expr!r} also selects vhosts {others[:3]}")
                    elif not any(l.get("queue") in names for l in picked):
                        problems.append(f"with vhost={vhost}, {metric} in {expr!r} selects none of the check's queues {names}")
                    checked += 1
        if problems:
            for x in problems:
                fail(f"{label}: {x}")
        else:
            ok(f"{label}: {checked} RabbitMQ selectors, each with vhost set to one of two vhosts holding queues "
               f"{names} at different depths, select only that vhost's series ({endpoint})")
    finally:
        for vhost in depth:
            api.call("DELETE", f"/vhosts/{q(vhost)}", expect=None)


def cmd_dashboard_live():
    try:
        dashboard_live()
    except Exception as e:
        fail(f"grafana dashboard live: {type(e).__name__}: {e}")


def cmd_dashboard():
    label = "grafana dashboard"
    path = ROOT / "observability/grafana/dashboards/msgkit.json"
    try:
        dash = json.loads(path.read_text())
    except Exception as e:
        fail(f"{label}: {path.relative_to(ROOT)} does not parse: {e}")
        return
    # The metrics the kit exports, from docs/observability.md's table.
    doc = (ROOT / "docs/observability.md").read_text()
    documented = dict(re.findall(r"^\|\s*`(msgkit_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|", doc, re.M))
    if not documented:
        fail(f"{label}: no metric table found in docs/observability.md")
        return
    series = set()
    for name, kind in documented.items():
        series |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr" and isinstance(v, str):
                    exprs.append(v)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    used = set(re.findall(r"\bmsgkit_[a-zA-Z0-9_]+", " ".join(exprs)))
    problems = [f"{m} is not a metric the kit exports (docs/observability.md)" for m in sorted(used - series)]
    # A service's own metrics (risk_*, reconcile_*): documented in the same file, registered in its
    # src/metrics.rs under the service's prefix.
    for service in ("risk", "reconcile"):
        own = dict(re.findall(rf"^\|\s*`({service}_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|", doc, re.M))
        own_series = set()
        for name, kind in own.items():
            own_series |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
        own_used = set(re.findall(rf"\b{service}_[a-zA-Z0-9_]+", " ".join(exprs)))
        problems += [f"{m} is not a metric the {service} service exports (docs/observability.md)" for m in sorted(own_used - own_series)]
        src = ROOT / f"services/{service}/src/metrics.rs"
        registered_own = {f"{service}_" + n for n in re.findall(r'register\(\s*"([a-z0-9_]+)"', src.read_text())} if src.exists() else set()
        for name, kind in own.items():
            base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
            if base not in registered_own:
                problems.append(f"{name} (docs/observability.md) is not registered in {src.relative_to(ROOT)}")
        used |= own_used
    if not exprs:
        problems.append("no PromQL expression found")
    vhost, rabbit = vhost_problems(dash)
    problems += vhost
    # The docs' names against the registry in shared/src/metrics/ (prefix msgkit_; counters
    # get _total from the Prometheus client).
    metrics_src = sorted((ROOT / "shared/src/metrics").glob("*.rs"))
    if not metrics_src:
        problems.append("no metrics source found in shared/src/metrics/")
    else:
        source = "".join(f.read_text() for f in metrics_src)
        registered = {"msgkit_" + n for n in re.findall(r'register\(\s*"([a-z0-9_]+)"', source)}
        for name in documented:
            base = name[: -len("_total")] if documented[name] == "counter" and name.endswith("_total") else name
            if base not in registered:
                problems.append(f"{name} (docs/observability.md) is not registered in shared/src/metrics/")
    if problems:
        for p in problems:
            fail(f"{label}: {p}")
    else:
        ok(f"{label}: parses; {len(exprs)} expressions use {len(used)} msgkit_*/risk_*/reconcile_* series, all exported "
           f"(docs/observability.md, shared/src/metrics/); its {rabbit} RabbitMQ selectors filter on the vhost variable")


if __name__ == "__main__":
    try:
        {"definitions": cmd_definitions, "compose": cmd_compose, "compose-tls": cmd_compose_tls,
         "dockerfile": cmd_dockerfile,
         "rabbitmq-conf": cmd_rabbitmq_conf, "k8s": cmd_k8s, "dashboard": cmd_dashboard,
         "dashboard-live": cmd_dashboard_live}[sys.argv[1]]()
    except Exception as e:  # a broken input the checks did not foresee: still one FAIL line
        fail(f"{sys.argv[1]}: {type(e).__name__}: {e}")
    sys.exit(1 if FAILED else 0)
PYTHON

run_py() { # GROUP: run one group of Python checks; its lines are printed as they come
    local rc=0
    "$PY" "$CHECKS" "$1" || rc=$?
    if ((rc == 1)); then
        failures=$((failures + 1))
    elif ((rc != 0)); then
        fail "$1: the check did not finish (exit $rc)"
    fi
}

# ------------------------------------------------------------------------------------------
# a. docker-compose.yml and the Dockerfile
# ------------------------------------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
    if out=$(docker compose -f docker-compose.yml config -q 2>&1); then
        ok "compose: docker compose config -q"
    else
        fail "compose: docker compose config -q: $out"
    fi
else
    # No compose plugin here: validate against the Compose Specification's JSON schema, which
    # check-jsonschema ships (offline).
    if out=$("$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml 2>&1); then
        ok "compose: docker-compose.yml valid against the compose-spec schema (no docker compose plugin here)"
    else
        fail "compose: docker-compose.yml against the compose-spec schema: $(tr -s '\n ' ' ' <<<"$out" | cut -c1-600)"
    fi
fi
run_py compose
run_py compose-tls
run_py dockerfile

# ------------------------------------------------------------------------------------------
# b. RabbitMQ definitions: statically against the kit, then live on the local broker
# ------------------------------------------------------------------------------------------
run_py rabbitmq-conf
dlx_sup_alive() { # prints true/false, or nothing when it cannot be asked (not root)
    rabbitmqctl -q eval 'is_pid(whereis(rabbit_fifo_dlx_sup)).' </dev/null 2>/dev/null || true
}
api_up() { # the management API answers (waits up to 30 s: the broker may be restarting)
    local _
    for _ in $(seq 1 30); do
        api GET /whoami >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}
broker_up=0
if ! api_up; then
    fail "rabbitmq live: the management API at $RABBITMQ_API does not answer as $RABBITMQ_API_USER (scripts/stack.sh up)"
else
    broker_up=1
    before=$(dlx_sup_alive)
    if [[ "$before" == "false" ]]; then
        fail "rabbitmq live: the broker's dead-letter supervisor is already dead (rabbitmq-server#16652); scripts/stack.sh up heals it"
    else
        sweep_stale
        run_py definitions
        after=$(dlx_sup_alive)
        if [[ "$after" == "false" ]]; then
            fail "rabbitmq live: the broker's dead-letter supervisor died during the check (rabbitmq-server#16652)"
        elif [[ "$after" == "true" ]]; then
            ok "rabbitmq live: the broker is healthy afterwards (dead-letter supervisor alive)"
        fi
    fi
fi

# ------------------------------------------------------------------------------------------
# c. Kubernetes manifests, offline
# ------------------------------------------------------------------------------------------
run_py k8s

# ------------------------------------------------------------------------------------------
# d. Grafana dashboard: statically, then its RabbitMQ queries against the local broker
# ------------------------------------------------------------------------------------------
run_py dashboard
if ((broker_up)); then
    run_py dashboard-live
else
    fail "grafana dashboard live: skipped, the broker does not answer"
fi

if ((failures > 0)); then
    echo "check-deploy: FAILED ($failures group(s) with failures)"
    exit 1
fi
echo "check-deploy: all checks passed"
