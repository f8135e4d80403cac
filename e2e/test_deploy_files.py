"""The files in deploy/ (Docker cannot run here): they parse, agree with each other and with what the rest of the
suite runs, and Traefik 3.7 runs deploy/traefik/traefik.yml -- only its entrypoint address and provider directory
moved to the temp dir -- in front of the real gateway on deploy/policies/mcp.yaml.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import e2e_support as s
import proxy_support as ps

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: python3 -m pip install PyYAML")

DEPLOY = s.REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
TRAEFIK_STATIC = DEPLOY / "traefik" / "traefik.yml"
DEPLOY_POLICY_DIR = DEPLOY / "policies"
DEPLOY_POLICY = DEPLOY_POLICY_DIR / "mcp.yaml"
EXAMPLE_POLICY = s.REPO_ROOT / "policies" / "example.yaml"
URL_VARIABLES = {"OPENMEMORY_URL": "openmemory", "FFMPEG_URL": "ffmpeg", "TRELLO_URL": "trello"}


def load(path: Path):
    with open(path) as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def authctl() -> Path:
    try:
        return s.gateway_binaries()[1]
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)


def compose_env(compose: dict) -> dict:
    """The gateway container's environment as compose would give it (no ${...} left in the values we use)."""
    env = {}
    for name, value in compose["services"]["authgateway"]["environment"].items():
        value = str(value)
        env[name] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    env["TRELLO_TOKEN"] = env.get("TRELLO_TOKEN") or "placeholder-token"
    return env


# --------------------------------------------------------------------------------------------------------------


def test_every_yaml_file_parses():
    for path in [COMPOSE, TRAEFIK_STATIC, DEPLOY_POLICY]:
        assert isinstance(load(path), dict), path
    dummy = {name: "127.0.0.1" if name.endswith("_HOST") else 1 for name in (
        "LISTEN_HOST", "LISTEN_PORT", "GATEWAY_HOST", "GATEWAY_PORT", "OPENMEMORY_HOST", "OPENMEMORY_PORT",
        "FFMPEG_HOST", "FFMPEG_PORT", "TRELLO_HOST", "TRELLO_PORT")}
    assert "static_resources" in yaml.safe_load(ps.render("envoy.yaml", dummy))


def test_traefik_static_file_has_the_entrypoint_authctl_prescribes(authctl):
    static = load(TRAEFIK_STATIC)
    prescribed = yaml.safe_load(s.run_checked([str(authctl), "traefik-config", "--static"]))
    assert static["entryPoints"]["web"]["address"] == ":80"
    assert static["entryPoints"]["web"]["http"] == prescribed["entryPoints"]["web"]["http"], (
        "deploy/traefik/traefik.yml's entrypoint settings differ from `authctl traefik-config --static`")
    assert static["providers"] == {"file": {"directory": "/etc/traefik/dynamic", "watch": True}}


def test_compose_topology(compose):
    services = compose["services"]
    assert set(services) == {"traefik", "authgateway", "openmemory", "ffmpeg", "trello"}
    assert services["traefik"]["image"] == "traefik:v3.7"
    build = services["authgateway"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
    # Only Traefik is published; everything is on the one `mcp` network.
    assert [name for name, service in services.items() if service.get("ports")] == ["traefik"]
    assert set(compose["networks"]) == {"mcp"}
    for name, service in services.items():
        assert "mcp" in service["networks"], name
    # Traefik mounts the static file and the directory the file provider watches.
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in services["traefik"]["volumes"]}
    assert mounts["/etc/traefik/traefik.yml"] == "./traefik/traefik.yml"
    assert mounts["/etc/traefik/dynamic"] == "./traefik/dynamic"
    assert (DEPLOY / "traefik" / "traefik.yml").is_file() and (DEPLOY / "traefik" / "dynamic").is_dir()
    # The gateway reads the mounted policy directory and keeps its store in the volume authctl also uses.
    gateway = services["authgateway"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in gateway["volumes"]}
    assert mounts["/etc/authgateway/policies"] == "./policies" and DEPLOY_POLICY.is_file()
    command = gateway["command"]
    assert command[command.index("--policy") + 1] == "/etc/authgateway/policies"
    db = command[command.index("--db") + 1]
    assert gateway["environment"]["AUTHGATEWAY_DB"] == db
    assert mounts["/var/lib/authgateway"] == "authgateway-data" and db.startswith("/var/lib/authgateway/")
    assert "authgateway-data" in compose["volumes"]
    # Backend URLs name the placeholder services and the ports they listen on.
    for variable, service in URL_VARIABLES.items():
        url = urlsplit(gateway["environment"][variable])
        assert url.hostname == service, variable
        argv = services[service]["command"]
        assert argv[argv.index("--port") + 1] == str(url.port), service


def test_gateway_trusts_exactly_traefiks_address(compose):
    subnet = ipaddress.ip_network(compose["networks"]["mcp"]["ipam"]["config"][0]["subnet"])
    traefik_ip = ipaddress.ip_address(compose["services"]["traefik"]["networks"]["mcp"]["ipv4_address"])
    assert traefik_ip in subnet
    trusted = ipaddress.ip_network(compose["services"]["authgateway"]["environment"]["TRUSTED_PROXY"])
    assert trusted == ipaddress.ip_network(f"{traefik_ip}/32")
    default = re.search(r"\$\{TRUSTED_PROXY:-([^}]+)\}", DEPLOY_POLICY.read_text()).group(1)
    assert ipaddress.ip_network(default) == trusted


def test_deploy_policy_is_the_example_policy_but_for_trusted_proxies_and_backend_urls():
    def normalised(path: Path) -> dict:
        policy = load(path)
        policy["gateway"].pop("trusted_proxies")
        for route in policy["routes"]:
            if "backend" in route and "url" in route["backend"]:
                route["backend"]["url"] = re.sub(r":-[^}]*\}", "}", route["backend"]["url"])
        return policy

    assert normalised(DEPLOY_POLICY) == normalised(EXAMPLE_POLICY)


def test_deploy_policy_is_valid_and_generates_traefik_config_for_the_compose_services(compose, authctl):
    env = {**ps.child_env(Path("/tmp")), **compose_env(compose)}
    s.run_checked([str(authctl), "policy", "check", str(DEPLOY_POLICY_DIR)], env=env)
    generated = yaml.safe_load(s.run_checked(
        [str(authctl), "traefik-config", "--policy", str(DEPLOY_POLICY_DIR), "--gateway-url",
         "http://authgateway:8080"], env=env))
    http = generated["http"]
    assert http["middlewares"]["authgateway"]["forwardAuth"]["address"] == "http://authgateway:8080/auth"
    hosts = {urlsplit(server["url"]).hostname for service in http["services"].values()
             for server in service["loadBalancer"]["servers"]}
    # OpenMemory is reached only through the gateway's own proxy route (issue 11 finding I): Traefik sends it to
    # the gateway, which talks to the openmemory service itself.
    assert hosts == {"authgateway", "ffmpeg", "trello"}, hosts


# --------------------------------------------------------------------------------------------------------------
# Traefik runs deploy/traefik/traefik.yml


@pytest.fixture(scope="module")
def deploy_stack(request, services, tmp_path_factory, compose, authctl):
    try:
        traefik_bin = s.traefik_binary()
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)
    issuer, ffmpeg, trello, openmemory, token, session_env = services
    gateway_bin, _ = s.gateway_binaries()
    workdir = tmp_path_factory.mktemp("deploy")
    processes = s.Processes()
    request.addfinalizer(processes.stop_all)

    # The gateway on the deploy policy, with the compose environment except what must point at loopback.
    env = {**session_env, **compose_env(compose), "TRUSTED_PROXY": "127.0.0.1/32",
           "CORP_ISSUER": issuer.issuer, "CORP_JWKS_URL": issuer.jwks_url, "OPENMEMORY_URL": openmemory.url,
           "FFMPEG_URL": ffmpeg.url, "TRELLO_URL": trello.url, "TRELLO_TOKEN": token}
    env.pop("AUTHGATEWAY_DB")
    db = workdir / "authgateway.sqlite"
    _, gateway_port = s.start_gateway(processes, gateway_bin, DEPLOY_POLICY_DIR, db, env, workdir / "authgateway.log")
    key = s.issue_key(authctl, db, "alice", "ffmpeg", name="e2e-deploy")

    dynamic = workdir / "dynamic"
    dynamic.mkdir()
    (dynamic / "authgateway.yml").write_text(s.run_checked(
        [str(authctl), "traefik-config", "--policy", str(DEPLOY_POLICY_DIR), "--gateway-url",
         f"http://127.0.0.1:{gateway_port}"], env=env))

    for attempt in range(3):
        port = s.free_port()
        static = load(TRAEFIK_STATIC)
        static["entryPoints"]["web"]["address"] = f"127.0.0.1:{port}"
        static["providers"]["file"]["directory"] = str(dynamic)
        config = workdir / f"traefik-{attempt}.yml"
        config.write_text(yaml.safe_dump(static, sort_keys=False))
        log_path = workdir / f"traefik-{attempt}.log"
        child = processes.start("traefik", [str(traefik_bin), f"--configFile={config}"], log_path, cwd=workdir,
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)})

        def routed():
            if not child.alive():
                raise RuntimeError(f"traefik exited with {child.popen.returncode}")
            try:
                return s.request(port, "/ffmpeg/x", timeout=2).status == 401
            except OSError:
                return False

        try:
            s.wait_until(routed, 30, interval=0.2, what="Traefik (deploy/traefik/traefik.yml) to route /ffmpeg/x")
        except RuntimeError:
            processes.stop(child)
            continue
        except TimeoutError as error:
            pytest.fail(f"{error}\n--- config:\n{config.read_text()}\n--- log:\n{s.tail(log_path)}", pytrace=False)
        s.ACTIVE_LOGS.append(("traefik (deploy)", log_path))
        request.addfinalizer(lambda: s.ACTIVE_LOGS.remove(("traefik (deploy)", log_path)))
        return port, key, log_path
    pytest.fail("traefik did not start on deploy/traefik/traefik.yml after 3 attempts", pytrace=False)


def test_traefik_runs_the_deploy_static_file_in_front_of_the_gateway(deploy_stack):
    port, key, log_path = deploy_stack
    reply = s.request(port, "/ffmpeg/tools?x=1", [s.bearer(key["key"]), ("X-Auth-Subject", "mallory")])
    assert reply.status == 200, reply
    echo = reply.json()
    assert ps.only(echo, "X-Auth-Subject") == "alice"
    ps.assert_no_secret(echo, key["key"])
    ps.assert_never_spoofed(echo)
    reply = s.request(port, "/ffmpeg/x")
    assert reply.status == 401 and "resource_metadata=" in ps.challenge(reply), reply
    # encodedCharacters from the static file: Traefik itself refuses an encoded '/' before any router.
    assert s.request(port, "/ffmpeg/a%2Fb", [s.bearer(key["key"])]).status == 400
    # aliasHeadersStrategy: delete -- the underscore spelling never reaches the backend.
    echo = s.request(port, "/ffmpeg/x", [s.bearer(key["key"]), ("X_Auth_Subject", "mallory")]).json()
    ps.assert_never_spoofed(echo)
    # Traefik refuses unknown static fields at start ("field not found"), so running at all means the file was
    # accepted as written; and nothing was logged at error level while it served.
    assert not re.search(r'\bERR\b|\bFTL\b|"level":"(error|fatal)"', log_path.read_text()), s.tail(log_path)
