#!/usr/bin/env python3
# Copyright sessiond authors. Licensed under the Apache License 2.0.
"""Checks deploy/prometheus/sessiond.rules.yml.

  --mode promtool  `promtool check rules` on it; exits 77 (ctest: skipped)
                   with a message when promtool is not installed.
  --mode metrics   the file's shape (groups; each rule a record or an alert
                   with an expr; alerts with a severity and a summary), and
                   every sessiond_* series it names is exported by a real
                   sessiond's GET /metrics (so a renamed metric cannot leave
                   a rule silently matching nothing). Exits 77 when PyYAML
                   is missing.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

SKIP = 77
SEVERITIES = {"page", "warning"}
# Exported only by a node with TLS; the plain node scraped here has none.
# tests/integration/http_tls_test.cc reads them off a TLS node's /metrics.
TLS_ONLY = {"sessiond_tls_certificate_expiry_timestamp_seconds",
            "sessiond_tls_files_not_served",
            "sessiond_tls_renewals_refused_total"}


def check_promtool(rules):
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool not found (Debian: apt install prometheus): "
              "`promtool check rules` skipped")
        return SKIP
    run = subprocess.run([promtool, "check", "rules", rules],
                         capture_output=True, text=True, timeout=60)
    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr)
    return run.returncode


def load_rules(path):
    try:
        import yaml  # Debian: python3-yaml
    except ImportError:
        print("PyYAML not found (Debian: apt install python3-yaml): skipped")
        sys.exit(SKIP)
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def check_shape(doc):
    """Returns (problems, exprs, records)."""
    problems, exprs, records = [], [], set()
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not groups:
        return ["no groups"], exprs, records
    names = set()
    for group in groups:
        gname = group.get("name")
        if not gname or gname in names:
            problems.append(f"group without a name or named twice: {gname}")
        names.add(gname)
        for rule in group.get("rules") or []:
            expr = rule.get("expr")
            what = rule.get("alert") or rule.get("record")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{what}: no expr")
                continue
            exprs.append((what, expr))
            if ("alert" in rule) == ("record" in rule):
                problems.append(f"{what}: must be exactly one of alert, record")
            if "record" in rule:
                records.add(rule["record"])
                continue
            severity = (rule.get("labels") or {}).get("severity")
            if severity not in SEVERITIES:
                problems.append(f"{what}: severity {severity!r} is not one "
                                f"of {sorted(SEVERITIES)}")
            if not (rule.get("annotations") or {}).get("summary"):
                problems.append(f"{what}: no summary annotation")
    return problems, exprs, records


def scrape_real_node(binary):
    """The family names a fresh single node exports."""
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "sessiond.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [binary, "--listen", "127.0.0.1:0", "--data_dir",
                 os.path.join(tmp, "data"), "--metrics_listen", "127.0.0.1:0"],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            address = None
            for _ in range(600):  # 60 s
                with open(log_path) as log:
                    for line in log:
                        if line.startswith("METRICS_LISTENING "):
                            address = line.split()[1]
                if address or proc.poll() is not None:
                    break
                time.sleep(0.1)
            if address is None:
                with open(log_path) as log:
                    sys.exit("sessiond printed no METRICS_LISTENING line:\n" +
                             log.read())
            with urllib.request.urlopen(f"http://{address}/metrics",
                                        timeout=10) as resp:
                text = resp.read().decode()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    families = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            families.add(name)
            if kind == "histogram":
                families.update({name + "_bucket", name + "_sum",
                                 name + "_count"})
    return families


def check_metrics(rules, binary):
    problems, exprs, records = check_shape(load_rules(rules))
    exported = scrape_real_node(binary)
    named = set()
    for what, expr in exprs:
        for name in re.findall(r"\bsessiond[a-z0-9_:]*", expr):
            named.add(name)
            if ":" in name:
                if name not in records:
                    problems.append(f"{what}: recording rule {name} is not "
                                    "defined in the file")
            elif name not in exported and name not in TLS_ONLY:
                problems.append(f"{what}: {name} is not exported by sessiond")
    for p in problems:
        print("PROBLEM:", p)
    print(f"{len(exprs)} rules, {len(named)} series names checked against "
          f"{len(exported)} exported families")
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["promtool", "metrics"],
                        required=True)
    parser.add_argument("--rules", required=True)
    parser.add_argument("--binary", help="sessiond (for --mode metrics)")
    args = parser.parse_args()
    if args.mode == "promtool":
        return check_promtool(args.rules)
    return check_metrics(args.rules, args.binary)


if __name__ == "__main__":
    sys.exit(main())
