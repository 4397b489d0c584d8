"""docker-compose.yml as a real compose implementation reads it (Debian's docker-compose:
`docker-compose config` needs no Docker engine), and the invariants an operator relies on:
a password and a memory policy on Redis, healthchecks and log rotation everywhere, nothing
published beyond this machine but the proxy, each service with its own secrets and no other
(the receiver with the webhook secrets alone, Flower with its login), and a sandbox profile
that runs on its own. Also: the example files it mounts work."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml
from conftest import ROOT

SECRET_NAMES = re.compile(r"MSB1_SB1_|SMTP_PASSWORD|SMTP_USER|SENTRY_DSN|MOMENT|WEBHOOK_SECRET")
SECRETS_EXAMPLE = ROOT / "deploy" / "secrets.example"
# every secret setting, and every name of a secret an integration refers to
SECRET_VARIABLES = re.compile(r"^(MSB1_(SMTP_PASSWORD|SENTRY_DSN|SB1_P12_PASSWORD|SB1_CLIENT_SECRET)|"
                              r"\w+_MOMENT_API_KEY|\w+_WEBHOOK_SECRET|FLOWER_BASIC_AUTH|MSB1_CONSOLE_SECRET)$")


def marker(name: str) -> str:
    """The value each secret gets in the tests: found wherever it went."""
    return f"user:SECRET-{name}-0123456789" if name == "FLOWER_BASIC_AUTH" else f"SECRET-{name}-0123456789"


def example_secrets() -> dict[str, dict[str, str]]:
    """The secret files of deploy/secrets.example, each variable with its marker."""
    out = {}
    for path in sorted(SECRETS_EXAMPLE.iterdir()):
        names = [line.split("=", 1)[0] for line in path.read_text().splitlines()
                 if "=" in line and not line.startswith("#")]
        out[path.name] = {name: marker(name) for name in names}
    return out


def compose_config(tmp_path, env_text: str, *profiles: str,
                   secrets: dict[str, dict[str, str]] | None = None) -> subprocess.CompletedProcess:
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is not installed (scripts/setup installs it as root: apt-get install docker-compose)")
    for name in ("docker-compose.yml", "Dockerfile", "deploy"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / ".env").write_text(env_text)
    (tmp_path / "integrations.toml").write_text("")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "sb1-client.pem").write_text("SECRET-PRIVATE-KEY")
    for name, values in (example_secrets() if secrets is None else secrets).items():
        (tmp_path / "secrets" / name).write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    args = ["docker-compose", "--project-directory", str(tmp_path), "-f", str(tmp_path / "docker-compose.yml")]
    for profile in profiles:
        args += ["--profile", profile]
    return subprocess.run([*args, "config"], capture_output=True, text=True, timeout=60, cwd=tmp_path)


def example_env(**changes: str | None) -> str:
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else None
        if name in changes:
            if changes[name] is not None:
                lines.append(f"{name}={changes[name]}")
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    out = compose_config(tmp_path_factory.mktemp("compose"), example_env(), "proxy", "sandbox")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_every_service_has_a_healthcheck_and_rotated_logs(config):
    services = config["services"]
    assert set(services) == {"redis", "worker", "worker-live", "beat", "webhooks", "proxy", "flower", "sandbox",
                             "mailpit", "sandbox-worker", "prometheus", "console"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file" and logging["options"]["max-size"], f"{name} logs unrotated"
        assert service.get("restart") == "unless-stopped", name
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "moment-sb1", "health", "worker"]
    assert services["beat"]["healthcheck"]["test"] == ["CMD", "moment-sb1", "health", "beat"]


def test_redis_has_a_password_a_cap_and_never_evicts(config):
    redis = config["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == "change-me-to-a-long-random-string"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--maxmemory") + 1] == "1gb"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "ports" not in redis
    assert config["services"]["worker-live"]["command"][2:4] == ["--lanes", "live"]
    for name in ("worker", "worker-live", "beat", "webhooks", "flower"):
        url = config["services"][name]["environment"]["MSB1_REDIS_URL"]
        assert url == "redis://:change-me-to-a-long-random-string@redis:6379/0", name


def test_nothing_but_the_proxy_is_published_beyond_this_machine(config):
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            if name == "proxy":
                continue
            assert host_ip == "127.0.0.1", f"{name} publishes {port}"
    assert {p["published"] for p in config["services"]["proxy"]["ports"]} in ({"80", "443"}, {80, 443})


def test_flower_has_a_login_and_no_other_secret(config):
    flower = config["services"]["flower"]
    env = flower["environment"]
    assert env["FLOWER_BASIC_AUTH"] == marker("FLOWER_BASIC_AUTH")
    assert set(env) == {"MSB1_REDIS_URL", "FLOWER_BASIC_AUTH"}
    assert not [k for k in env if SECRET_NAMES.search(k)]
    assert "volumes" not in flower and flower["build"]["target"] == "flower"


def secrets_of(service: dict) -> set[str]:
    """Which of the tests' secrets a rendered service holds, wherever: its environment, its
    command, a mounted secret (the private key, by the secret's name)."""
    text = json.dumps(service)
    found = {name for values in example_secrets().values() for name, value in values.items() if value in text}
    found |= {f"secret:{s['source'] if isinstance(s, dict) else s}" for s in service.get("secrets", [])}
    return found


def test_each_service_gets_its_own_secrets_and_no_other(config):
    """The workers the Moment API keys, the mail password, Sentry and the private key; the
    receiver (it faces the internet) the webhook secrets alone; Flower its login; beat, Redis
    and the proxy none. Nothing mounts the secrets directory."""
    files = example_secrets()
    worker = set(files["worker.env"]) | {"secret:sb1_client_key"}
    assert {"ACME_MOMENT_API_KEY", "MSB1_SMTP_PASSWORD", "MSB1_SENTRY_DSN"} <= worker
    expected = {"worker": worker, "worker-live": worker, "webhooks": set(files["webhooks.env"]),
                "flower": {"FLOWER_BASIC_AUTH"}, "beat": set(), "redis": set(), "proxy": set(),
                "sandbox": set(), "mailpit": set(), "sandbox-worker": set(), "prometheus": set(),
                "console": {"MSB1_CONSOLE_SECRET"}}
    assert expected["webhooks"] == {"ACME_WEBHOOK_SECRET"}
    got = {name: secrets_of(service) for name, service in config["services"].items()}
    assert got == expected
    assert config["secrets"]["sb1_client_key"]["file"].endswith("/secrets/sb1-client.pem")
    for name, service in config["services"].items():
        mounts = [v["source"] if isinstance(v, dict) else str(v).split(":")[0] for v in service.get("volumes", [])]
        assert not [m for m in mounts if "secrets" in m], f"{name} mounts {mounts}"
    receiver = config["services"]["webhooks"]["environment"]
    assert [k for k in receiver if SECRET_VARIABLES.match(k)] == ["ACME_WEBHOOK_SECRET"]


def test_the_checks_of_secrets_can_fail(tmp_path):
    """A secret put in .env reaches every service, the receiver and beat included: the test
    above would see it."""
    out = compose_config(tmp_path, example_env() + "MSB1_SMTP_PASSWORD=" + marker("MSB1_SMTP_PASSWORD") + "\n")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert "MSB1_SMTP_PASSWORD" in secrets_of(services["webhooks"]) and "MSB1_SMTP_PASSWORD" in secrets_of(services["beat"])


def test_env_example_holds_no_secret():
    """.env goes to every service: a secret's line in it is commented out, pointing at its file."""
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name = line.split("=", 1)[0]
            assert not SECRET_VARIABLES.match(name), f".env.example sets {name}, a secret: it belongs in secrets/"


def test_flower_does_not_start_without_a_login(config, tmp_path):
    """compose's command for Flower, run by a real shell with a stand-in for celery."""
    script = config["services"]["flower"]["command"]
    assert script[:2] == ["sh", "-c"]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "celery").write_text("#!/bin/sh\necho started \"$@\"\n")
    (fake / "celery").chmod(0o755)
    for login, started in (("", False), ("nocolon", False), (":pw", False), ("operator:pw", True)):
        env = {"PATH": f"{fake}:/usr/bin:/bin", "FLOWER_BASIC_AUTH": login}
        out = subprocess.run(["sh", "-c", script[2].replace("$$", "$")], env=env, capture_output=True, text=True,
                             timeout=10)
        assert (out.returncode == 0 and out.stdout.startswith("started -A worker.app flower")) == started, login
        if not started:
            assert out.returncode == 2 and "set FLOWER_BASIC_AUTH=user:password in secrets/flower.env" in out.stderr


def test_the_sandbox_profile_runs_on_its_own(config):
    services = config["services"]
    worker = services["sandbox-worker"]["environment"]
    assert worker["MSB1_SMTP_HOST"] == "mailpit" and worker["MSB1_SB1_TOKEN_URL"] == "http://sandbox:8082/connect/token"
    assert worker["MSB1_REDIS_URL"].endswith("@redis:6379/1") and worker["MSB1_KEY_PREFIX"] == "sandbox"
    for name in ("sandbox", "mailpit", "sandbox-worker"):
        assert services[name]["profiles"] == ["sandbox"]
    assert services["proxy"]["profiles"] == ["proxy"]
    assert services["worker"]["build"]["target"] == "app" and services["sandbox"]["build"]["target"] == "sandbox"


def test_a_missing_password_or_login_stops_compose_with_a_reason(tmp_path):
    (tmp_path / "a").mkdir()
    out = compose_config(tmp_path / "a", example_env(REDIS_PASSWORD=None))
    assert out.returncode != 0 and "set REDIS_PASSWORD in .env" in out.stderr
    (tmp_path / "b").mkdir()
    secrets = {name: values for name, values in example_secrets().items() if name != "flower.env"}
    out = compose_config(tmp_path / "b", example_env(), secrets=secrets)
    assert out.returncode != 0 and "secrets/flower.env" in out.stderr


def test_env_example_lists_every_setting_and_every_secret_the_examples_use():
    """Every setting in .env.example (a secret one commented out there) and every secret in
    the secret file of the service that uses it: the workers' settings and Moment API keys
    in worker.env, the webhook secrets in webhooks.env."""
    from dataclasses import fields

    from worker.config.settings import Settings, secret_settings, unknown_variables
    lines = (ROOT / ".env.example").read_text().splitlines()
    listed = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    commented = {line.lstrip("# ").split("=", 1)[0] for line in lines if re.match(r"# ?MSB1_\w+=", line)}
    missing = {f"MSB1_{f.name.upper()}" for f in fields(Settings)} - listed - (commented & secret_settings())
    assert not missing, f".env.example lacks {sorted(missing)}"
    files = example_secrets()
    assert secret_settings() - {"MSB1_CONSOLE_SECRET"} <= set(files["worker.env"])
    assert set(files["console.env"]) == {"MSB1_CONSOLE_SECRET"}          # the console's only secret
    example = [line for line in (ROOT / "integrations.example.toml").read_text().splitlines()
               if not line.lstrip().startswith("#")]
    keys = set(re.findall(r'moment_api_key = \{ env = "([A-Z0-9_]+)"', "\n".join(example)))
    hooks = set(re.findall(r'webhook_secret = \{ env = "([A-Z0-9_]+)"', "\n".join(example)))
    assert keys and keys <= set(files["worker.env"]), f"worker.env lacks {sorted(keys - set(files['worker.env']))}"
    assert hooks and hooks <= set(files["webhooks.env"])
    assert unknown_variables({k: "x" for k in listed | set(files["worker.env"])}) == []


def test_the_sandbox_profiles_example_files_work(tmp_path):
    from worker.config.integrations import load_integrations
    compose_env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["sandbox-worker"]["environment"]
    [integration] = load_integrations(ROOT / "deploy" / "integrations.sandbox.toml",
                                      env={"SANDBOX_MOMENT_KEY": "sandbox-moment-key",
                                           "MSB1_INSECURE_HTTP_HOSTS": compose_env["MSB1_INSECURE_HTTP_HOSTS"]}).values()
    config = json.loads((ROOT / "deploy" / "sandbox.example.json").read_text())
    [company] = config["companies"]
    assert company["company_key"] == integration.company_key
    assert company["moment_api_key"] == "sandbox-moment-key" and company["moment_company"] == integration.moment_company
    [client] = config["clients"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["sandbox-worker"]["environment"]
    assert env["MSB1_SB1_CLIENT_ID"] == client["client_id"] and env["MSB1_SB1_CLIENT_SECRET"] == client["client_secret"]
    tomllib.loads((ROOT / "deploy" / "integrations.sandbox.toml").read_text())


def test_the_caddyfile_forwards_only_webhooks_with_timeouts():
    text = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "handle /webhooks/*" in text and "reverse_proxy webhooks:8000" in text
    assert re.search(r"read_header\s+\d+s", text) and re.search(r"max_size\s+64KB", text)
    assert "/metrics" not in text.replace("(never /metrics or /healthz)", "")


def host_ports(service: dict) -> list[tuple[str, str]]:
    """The (address, port) pairs a rendered service publishes on the host."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if port.get("published"):
                out.append((port.get("host_ip", "0.0.0.0"), str(port["published"])))
        else:
            parts = str(port).split(":")
            if len(parts) > 1:
                out.append(("0.0.0.0" if len(parts) == 2 else parts[0], parts[-2]))
    return out


def test_three_workers_scale_without_a_port_clash(config):
    """`docker compose up --scale worker=3` (and three live workers): every replica of a
    service publishes what the service publishes, so a scaled service must publish no host
    port, and no two services the same one. The metrics stay reachable over the compose
    network (Prometheus scrapes worker:9100)."""
    scale = {"worker": 3, "worker-live": 3}
    published = [pair for name, service in config["services"].items()
                 for pair in host_ports(service) * scale.get(name, 1)]
    assert len(published) == len(set(published)), sorted(published)
    for name in scale:
        service = config["services"][name]
        assert not host_ports(service), f"{name} publishes {service['ports']}"
        assert service["environment"]["MSB1_METRICS_PORT"] == "9100" and "9100" in map(str, service["expose"])
        assert "container_name" not in service


def test_the_scale_check_can_fail(config):
    worker = dict(config["services"]["worker"], ports=["127.0.0.1:9100:9100"])
    assert host_ports(worker) * 3 == [("127.0.0.1", "9100")] * 3


def size(value: str | int) -> int:
    """A compose memory size (2g, 512m, or bytes) in bytes."""
    text = str(value).lower().rstrip("b")
    factor = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}.get(text[-1:], 1)
    return int(float(text.rstrip("kmg")) * factor)


def test_every_service_has_resource_limits(config):
    for name, service in config["services"].items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        memory = service.get("mem_limit") or limits.get("memory")
        cpus = service.get("cpus") or limits.get("cpus")
        assert memory and cpus, f"{name} has no memory or CPU limit"
    redis = config["services"]["redis"]
    assert size(redis["mem_limit"]) > 1024 ** 3, "Redis' limit must be above its maxmemory (1gb): an AOF rewrite forks"


def test_images_are_versioned_from_one_place(config):
    """No :latest and no bare name: moment-sb1's images carry pyproject.toml's version, the
    others a pinned release."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in config["services"].items():
        image = service.get("image", "")
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image}"
        if repo.startswith("moment-sb1"):
            assert tag == version, f"{name}: {image} is not the release {version}"
        else:
            assert re.fullmatch(r"v?\d+\.\d+\.\d+(-alpine)?", tag), f"{name}: {image} is not pinned to a release"
    assert "latest" not in (ROOT / "docker-compose.yml").read_text().replace("never :latest", "")


def test_another_release_is_one_setting(tmp_path):
    out = compose_config(tmp_path, example_env() + "MOMENT_SB1_VERSION=0.2.0\n")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {services[n]["image"] for n in ("worker", "worker-live", "beat", "webhooks")} == {"moment-sb1:0.2.0"}


def test_the_images_base_is_a_pinned_release():
    """A rebuild of one version gives the same Python: the base image names its patch release."""
    import re
    bases = re.findall(r"^FROM (\S+) AS base$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert bases and all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", b) for b in bases), bases


# .env.example's values that are examples of a deployment's own (hosts, addresses, files), not tuning
EXAMPLE_VALUES = {"MSB1_SMTP_HOST", "MSB1_SMTP_PORT", "MSB1_SMTP_USER", "MSB1_SMTP_TLS", "MSB1_SMTP_SENDER",
                  "MSB1_SB1_CLIENT_ID", "MSB1_SB1_PRIVATE_KEY_FILE", "MSB1_SB1_P12_FILE", "MSB1_SB1_TOKEN_URL",
                  "MSB1_INSECURE_HTTP_HOSTS", "MSB1_EVENTS_URL", "MSB1_OPERATOR_EMAIL"}


def test_env_example_tuning_values_are_the_codes_defaults():
    """Copied to .env, the example must not pin an old default (a rate limit, a window)."""
    from dataclasses import MISSING, fields

    from worker.config.settings import Settings
    defaults = {f"MSB1_{f.name.upper()}": f.default for f in fields(Settings) if f.default is not MISSING}
    stale = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if not sep or line.startswith("#") or name not in defaults or name in EXAMPLE_VALUES:
            continue
        default = defaults[name]
        if isinstance(default, bool):
            same = value.lower() == str(default).lower()
        elif isinstance(default, (int, float)):
            same = value != "" and float(value) == float(default)
        else:
            same = value == ("" if default is None else str(default))
        if not same:
            stale[name] = (value, default)
    assert not stale, stale
