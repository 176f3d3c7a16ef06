"""The peers of the comparison, started as child processes in front of one upstream.

nginx and Envoy run from their own binaries when installed (`make bench-deps` installs nginx
from Debian; Envoy is measured when an `envoy` binary is on PATH); each returns None, with
the reason, when it cannot run. nginx runs as one process (`master_process off`, one worker):
its CPU time is then the whole proxy's, and it competes on one core like the Python proxies.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import ROOT, free_port, toml_dump

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    client_max_body_size 8m;
    keepalive_requests 1000000;
    upstream primary {{
        server {upstream_host};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://primary;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ENVOY_CONF = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {hcm_type}
          stat_prefix: bench
          codec_type: HTTP1
          stream_idle_timeout: 600s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: primary, timeout: 600s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: primary
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: primary
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}
"""


def raise_nofile(count: int) -> None:
    """Soft and hard open-file limits to at least `count` (a root process may raise the hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= count:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, max(hard, count)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(command: list[str], nofile: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stderr = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - child owns it
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        preexec_fn=lambda: raise_nofile(nofile),
    )


def bare(upstream: str, nofile: int) -> tuple[subprocess.Popen[bytes], str]:
    """The floor: bench/harness.py's smallest aiohttp+uvloop streaming pass-through."""
    port = free_port()
    harness = str(Path(__file__).with_name("harness.py"))
    child = spawn([sys.executable, harness, "bare", str(port), upstream], nofile)
    return child, f"http://127.0.0.1:{port}"


def nginx(upstream: str, work: Path, nofile: int) -> tuple[subprocess.Popen[bytes] | None, str]:
    """(process, base URL), or (None, why not)."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        return None, "nginx is not installed (make bench-deps installs it from Debian)"
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            work=work,
            connections=nofile // 2,
            upstream_host=upstream.removeprefix("http://"),
            port=port,
        )
    )
    return spawn([binary, "-c", str(conf), "-e", str(work / "nginx-error.log")], nofile), (
        f"http://127.0.0.1:{port}"
    )


def envoy(upstream: str, work: Path, nofile: int) -> tuple[subprocess.Popen[bytes] | None, str]:
    """(process, base URL), or (None, why not). One worker thread (`--concurrency 1`)."""
    binary = shutil.which("envoy")
    if binary is None:
        return None, "envoy is not installed (Debian does not package it): skipped"
    port, admin = free_port(), free_port()
    conf = work / "envoy.yaml"
    conf.write_text(
        ENVOY_CONF.format(
            hcm_type=HCM_TYPE, admin=admin, port=port, upstream_port=upstream.rsplit(":", 1)[1]
        )
    )
    command = [binary, "-c", str(conf), "--concurrency", "1", "--log-level", "error"]
    return spawn(command, nofile, work / "envoy.log"), f"http://127.0.0.1:{port}"


def shadowtap(
    config: dict[str, Any], work: Path, nofile: int
) -> tuple[subprocess.Popen[bytes], str, int]:
    """`shadowtap serve` with `config` on fresh ports: (process, base URL, admin port)."""
    port, admin = free_port(), free_port()
    server = {**config.get("server", {}), "listen": f"127.0.0.1:{port}"}
    server["admin_listen"] = f"127.0.0.1:{admin}"
    path = work / f"shadowtap-{port}.toml"
    path.write_text(toml_dump({**config, "server": server}))
    binary = str(Path(sys.executable).parent / "shadowtap")
    child = spawn([binary, "serve", "--config", str(path)], nofile, work / f"shadowtap-{port}.log")
    return child, f"http://127.0.0.1:{port}", admin


def role(name: str, arg: str, nofile: int = 20_000) -> tuple[subprocess.Popen[bytes], str]:
    """A bench/harness.py role (a canned upstream): (process, base URL)."""
    port = free_port()
    harness = str(Path(__file__).with_name("harness.py"))
    return spawn([sys.executable, harness, name, str(port), arg], nofile), (
        f"http://127.0.0.1:{port}"
    )


def stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
