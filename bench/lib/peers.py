"""The proxies under test and their origin: one config generator per peer (nginx, HAProxy,
Envoy, Portico; each with one worker, upstream keep-alive, access log off), the origin's config,
and starting a peer pinned to the proxy core.

kind: h1 (HTTP/1.1 upstream; h1 and h2c listeners), h2up (h2c listener, h2c upstream),
tls (HTTPS listener, HTTP/1.1 upstream), idle (h1 with connection limits raised for 10k).
"""

import os
import subprocess
import sys

from .procs import ENVOY, LOAD_CORE, PORTICO, PROXY_CORE, Proc, free_port, wait_port

HAPROXY_IDLE_MAXCONN = 9990
PEERS = ("portico", "nginx", "haproxy", "envoy")


def tls_files(work):
    """One ECDSA P-256 self-signed certificate for every proxy."""
    cert, key, both = work / "cert.pem", work / "key.pem", work / "cert+key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=bench.local",
                        "-addext", "subjectAltName=DNS:bench.local,IP:127.0.0.1"],
                       check=True, capture_output=True)
        both.write_text(cert.read_text() + key.read_text())  # HAProxy wants both in one file
        for f in (cert, key, both):
            os.chmod(f, 0o644)
    return cert, key, both


def origin_conf(port, h2_port, work):
    big = work / "big.bin"
    big.write_bytes(os.urandom(1 << 20))
    os.chmod(big, 0o644)
    return f"""
worker_processes 1;
daemon off;
pid {work}/origin.pid;
error_log /dev/null;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  http2_max_concurrent_streams 1024;
  server {{
    listen 127.0.0.1:{port};
    location = /big {{ alias {big}; }}
    location / {{ return 200 "ok"; }}
  }}
  server {{
    # h2c with prior knowledge only (the h2 upstream of scenario 4)
    listen 127.0.0.1:{h2_port} http2;
    location / {{ return 200 "ok"; }}
  }}
}}
"""


# Idle upstream connections each proxy may keep per endpoint (nginx `keepalive`, Portico
# `max_idle_connections_per_endpoint`; HAProxy's `http-reuse always` keeps them without a cap).
# Above the h2c scenario's 16 x 32 = 512 concurrent streams, so that no proxy closes and reopens
# upstream connections between bursts (with 64 or 128 both nginx and Portico did).
UPSTREAM_IDLE = 1024


def nginx_conf(port, h2_port, origin, work, kind="h1", workers=1, label=None):
    if kind == "h2up":
        server = f"""
  upstream origin_h2 {{ server 127.0.0.1:{origin['h2']}; keepalive {UPSTREAM_IDLE}; }}
  server {{
    listen 127.0.0.1:{port} http2;
    location / {{ grpc_pass grpc://origin_h2; }}
  }}"""
    else:
        tls = ""
        listen = f"listen 127.0.0.1:{port};\n    listen 127.0.0.1:{h2_port} http2;"
        if kind == "tls":
            cert, key, _ = tls_files(work)
            listen = f"listen 127.0.0.1:{port} ssl http2;"
            # nginx 1.22's default ssl_protocols has no TLSv1.3 (added in 1.23.4): set what the
            # other proxies offer.
            tls = f"ssl_certificate {cert};\n    ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;"
        server = f"""
  upstream origin {{ server 127.0.0.1:{origin['h1']}; keepalive {UPSTREAM_IDLE}; }}
  server {{
    {listen}
    {tls}
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }}
  }}"""
    return f"""
worker_processes {workers};
worker_rlimit_nofile 20000;
daemon off;
pid {work}/{label or f'nginx-{kind}-{workers}'}.pid;
error_log /dev/null;
events {{ worker_connections {19000 if kind == "idle" else 8192}; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  {server}
}}
"""


def haproxy_conf(port, h2_port, origin, work, kind="h1"):
    # idle: 9,990 is the most the 20,000-fd hard limit here allows (HAProxy wants 2 fds per
    # connection and refuses to start otherwise); scenario 7c opens that many to HAProxy.
    maxconn = HAPROXY_IDLE_MAXCONN if kind == "idle" else 8000
    if kind == "h2up":
        fronts = f"""frontend f2
  bind 127.0.0.1:{port} proto h2
  default_backend b
backend b
  server o 127.0.0.1:{origin['h2']} proto h2
"""
    elif kind == "tls":
        _, _, both = tls_files(work)
        fronts = f"""frontend f1
  bind 127.0.0.1:{port} ssl crt {both} alpn h2,http/1.1
  default_backend b
backend b
  server o 127.0.0.1:{origin['h1']}
"""
    else:
        fronts = f"""frontend f1
  bind 127.0.0.1:{port}
  default_backend b
frontend f2
  bind 127.0.0.1:{h2_port} proto h2
  default_backend b
backend b
  server o 127.0.0.1:{origin['h1']}
"""
    return f"""
global
  nbthread 1
  maxconn {maxconn}{chr(10) + "  ulimit-n 20000" if kind == "idle" else ""}
defaults
  mode http
  maxconn {maxconn}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
{fronts}"""


def envoy_conf(port, h2_port, origin, work, kind="h1"):
    def listener(name, p, tls=False):
        ts = ""
        if tls:
            cert, key, _ = tls_files(work)
            ts = f"""
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: ["h2", "http/1.1"]
            tls_certificates:
            - certificate_chain: {{ filename: "{cert}" }}
              private_key: {{ filename: "{key}" }}"""
        return f"""
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: origin }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{ts}
"""
    h2 = ""
    if kind == "h2up":
        listeners = listener("l1", port)
        up = origin["h2"]
        h2 = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}"""
    elif kind == "tls":
        listeners = listener("l1", port, tls=True)
        up = origin["h1"]
    else:
        listeners = listener("l1", port) + listener("l2", h2_port)
        up = origin["h1"]
    return f"""
static_resources:
  listeners:{listeners}
  clusters:
  - name: origin
    type: STATIC
    connect_timeout: 1s{h2}
    load_assignment:
      cluster_name: origin
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up} }} }} }}
"""


def portico_conf(port, origin, mappings=1, kind="h1", work=None, probe=None):
    listener = f"""apiVersion: portico.dev/v1
kind: Listener
metadata: {{ name: bench }}
spec: {{ address: 127.0.0.1, port: {port} }}
"""
    up_port, proto = origin["h1"], ""
    if kind == "h2up":
        up_port, proto = origin["h2"], ", protocol: h2c"
    if kind == "tls":
        cert, key, _ = tls_files(work)
        listener = f"""apiVersion: portico.dev/v1
kind: Listener
metadata: {{ name: bench }}
spec: {{ address: 127.0.0.1, port: {port}, protocol: HTTPS }}
---
apiVersion: portico.dev/v1
kind: Host
metadata: {{ name: any }}
spec:
  hostname: "*"
  tls: {{ cert_chain_file: "{cert}", private_key_file: "{key}" }}
"""
    docs = [listener + f"""---
apiVersion: portico.dev/v1
kind: Upstream
metadata: {{ name: origin }}
spec: {{ endpoints: ["127.0.0.1:{up_port}"]{proto}, max_idle_connections_per_endpoint: {UPSTREAM_IDLE} }}
"""]
    if probe is not None:  # reload scenario: a route whose answer tells which config is applied
        docs.append(f"""apiVersion: portico.dev/v1
kind: Mapping
metadata: {{ name: probe }}
spec: {{ prefix: /__probe, prefix_exact: true, direct_response: {{ status: 200, body: "{probe}" }} }}
""")
    for i in range(mappings - 1):
        docs.append(f"""apiVersion: portico.dev/v1
kind: Mapping
metadata: {{ name: m{i} }}
spec: {{ prefix: /svc{i}/api/, service: origin }}
""")
    docs.append("""apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: last }
spec: { prefix: /, service: origin, timeout_ms: 0 }
""")
    return "---\n".join(docs)


# ---------------------------------------------------------------- targets

def start_origin(work):
    """The origin nginx on the load core: {"h1": port, "h2": port, "proc": Proc}."""
    origin = {"h1": free_port(), "h2": free_port()}
    (work / "origin.conf").write_text(origin_conf(origin["h1"], origin["h2"], work))
    origin["proc"] = Proc("origin", ["nginx", "-c", str(work / "origin.conf"), "-p", str(work)], origin["h1"],
                          core=LOAD_CORE)
    wait_port(origin["h2"])
    return origin


def portico_argv(cfg, workers=1):
    return [str(PORTICO), "run", "-c", str(cfg), "--workers", str(workers), "--access-log", "off",
            "--admin", f"127.0.0.1:{free_port()}"]


def start_portico(work, origin, label, mappings=1, kind="h1", workers=1, core=PROXY_CORE):
    port = free_port()
    cfg = work / f"portico-{label}.yaml"
    cfg.write_text(portico_conf(port, origin, mappings, kind, work))
    p = Proc(label, portico_argv(cfg, workers), port, core=core)
    p.h2_port = port  # h2c by prior knowledge on the same port
    return p


def peer_command(name, work, origin, kind="h1", label=None, mappings=1, single_process=False):
    """Writes one proxy's config and returns (argv, port, h2_port): port serves HTTP/1.1 (h2c
    for h2up), h2_port h2c. label: distinct file names, for two instances of one peer.
    single_process: nginx without its master (for callgrind)."""
    label = label or name
    port, h2_port = free_port(), free_port()
    if name == "portico":
        cfg = work / f"{label}-{kind}-{mappings}.yaml"
        cfg.write_text(portico_conf(port, origin, mappings, kind, work))
        return portico_argv(cfg), port, port  # h2c by prior knowledge on the same port
    if name == "nginx":
        cfg = work / f"{label}-{kind}.conf"
        cfg.write_text(nginx_conf(port, h2_port, origin, work, kind, label=f"{label}-{kind}"))
        argv = ["nginx", "-c", str(cfg), "-p", str(work)]
        argv += ["-g", "master_process off;"] if single_process else []
    elif name == "haproxy":
        cfg = work / f"{label}-{kind}.cfg"
        cfg.write_text(haproxy_conf(port, h2_port, origin, work, kind))
        argv = ["haproxy", "-f", str(cfg)]
    elif name == "envoy":
        if not ENVOY.exists():
            raise RuntimeError(f"no Envoy binary at {ENVOY}")
        cfg = work / f"{label}-{kind}.yaml"
        cfg.write_text(envoy_conf(port, h2_port, origin, work, kind))
        argv = [str(ENVOY), "-c", str(cfg), "--concurrency", "1", "--log-level", "error",
                "--base-id", str(free_port())]
    else:
        raise ValueError(f"unknown peer {name!r}")
    return argv, port, (port if kind == "h2up" else h2_port)


def start_peer(name, work, origin, kind="h1", label=None, mappings=1):
    """Starts one proxy on the proxy core and returns its Proc (.port, .h2_port as in
    peer_command)."""
    argv, port, h2_port = peer_command(name, work, origin, kind, label, mappings)
    p = Proc(label or name, argv, port, h2_port)
    p.h2_port = h2_port
    return p


def start_targets(work, origin, names, mappings=1, kind="h1"):
    """{name: (name, port, h2_port, Proc or None)}; "direct" is the origin itself. A peer that
    does not start is left out, loudly."""
    targets = {}
    for name in names:
        if name == "direct":
            if kind in ("h1", "idle"):
                targets[name] = ("direct", origin["h1"], None, None)
            elif kind == "h2up":
                targets[name] = ("direct", origin["h2"], origin["h2"], None)
            continue
        if name == "envoy" and not ENVOY.exists():
            continue
        try:
            p = start_peer(name, work, origin, kind, mappings=mappings)
            targets[name] = (name, p.port, p.h2_port, p)
        except Exception as e:
            print(f"  {name}: not started: {e}", file=sys.stderr)
    return targets


def stop_all(targets):
    for (_, _, _, p) in targets.values():
        if p:
            p.stop()
