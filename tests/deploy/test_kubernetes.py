"""The Kubernetes files of deploy/: what the rendered manifests hold, and that bailiwick runs on them.

The manifests are rendered as deploy/kubernetes/check renders them (tests/support/manifests.py):
the kustomizations by kubectl kustomize where it is installed, else by the substitute of
tests/support/kustomize.py; the charts by Helm's own engine (helm-python-sdk). They are then
read as objects: probes, security context, resources, mounts, Secrets, NetworkPolicies, what
the regions share. The configuration and policy folder each container
would see are laid out as the kubelet lays them out and loaded by bailiwick's own code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.cli import _parser
from proxy.config import Config, load_config
from proxy.errors import ConfigError
from proxy.reload import fingerprint, load_checked
from proxy.s3.resign import request_signer
from tests.support import kustomize as substitute
from tests.support.certs import make_ca, server_certificate, write_crl
from tests.support.kubelet import MountError, mount
from tests.support.kustomize import KustomizeError
from tests.support.manifests import HelmFailed, compare, helm_template, kubectl_version, kustomize, merge_values

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
HELM = ROOT / "deploy" / "helm"
KUSTOMIZATIONS = ("base", "overlays/eu-west-1", "overlays/us-east-1", "variants/separate-proxy", "variants/audit-ship")
REGIONS = ("eu-west-1", "us-east-1")
STORAGE_HOSTS = {"eu-west-1": "https://objects.eu-west-1.example.net",
                 "us-east-1": "https://objects.us-east-1.example.net"}
KEY_SERVICE_MOUNT = "/var/run/secrets/bailiwick/key-service"
KEY_SERVICE_PORT = 8200
POLICY_MOUNT = "/etc/bailiwick/policies"
CONFIG_MOUNT = "/etc/bailiwick/config"
CREDENTIALS_DIR = "/var/run/secrets/bailiwick/s3"
SCRATCH = "/tmp"  # noqa: S108  (the containers' emptyDir, not a file of this test)
AUDIT_LOG = "/var/log/bailiwick"  # the emptyDir of an audit log that is shipped (audit.ship)
ANY_ADDRESS = "0.0.0.0"  # noqa: S104  (what the containers listen on)
# Stand-ins for what the Secrets hold (each at least the 32 bytes bailiwick requires).
SECRET_VALUES = {
    "jwt-hs256-secret": "jwt-secret-for-the-test-0123456789abcdef",
    "tag-signing-key": "tag-key-for-the-test-0123456789abcdef",
    "audit-checkpoint-key": "audit-key-for-the-test-0123456789abcdef",
}

Obj = dict[str, Any]


def policy_values(folder: Path) -> dict[str, Any]:
    return {"files": {p.name: p.read_text() for p in sorted(folder.glob("*.yaml"))},
            "tests": {p.name: p.read_text() for p in sorted((folder / "tests").glob("*_test.yaml"))}}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """Every kustomization and the example chart (with bailiwick as its subchart), rendered."""
    out: dict[str, list[Obj]] = {name: kustomize(KUBERNETES / name) for name in KUSTOMIZATIONS}
    chart = example_app_chart(tmp_path_factory.mktemp("charts"))
    out["helm"] = helm_template(chart, {"bailiwick": {"policies": policy_values(ROOT / "policies")}},
                                release="mail", namespace="mail-eu-west-1")
    return out


def example_app_chart(folder: Path) -> Path:
    """deploy/helm/example-app with deploy/helm/bailiwick unpacked as its subchart (helm dependency update)."""
    shutil.copytree(HELM / "example-app", folder / "example-app")
    shutil.copytree(HELM / "bailiwick", folder / "example-app" / "charts" / "bailiwick")
    return folder / "example-app"


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    obj: Obj = found[0]
    return obj


def pod_of(objects: list[Obj], name: str) -> Obj:
    spec: Obj = one(objects, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def container(pod: Obj, name: str) -> Obj:
    found = [c for group in ("initContainers", "containers") for c in pod.get(group) or [] if c["name"] == name]
    assert len(found) == 1, f"{len(found)} containers named {name}"
    spec: Obj = found[0]
    return spec


def sidecar_pods(rendered: dict[str, list[Obj]]) -> Iterator[tuple[str, Obj]]:
    for name in ("base", "overlays/eu-west-1", "overlays/us-east-1"):
        yield name, pod_of(rendered[name], "mail-app")
    yield "variants/separate-proxy", pod_of(rendered["variants/separate-proxy"], "bailiwick")
    yield "variants/audit-ship", pod_of(rendered["variants/audit-ship"], "mail-app")
    yield "helm", pod_of(rendered["helm"], "mail")


def environment(c: Obj) -> dict[str, str]:
    """The container's environment, with each Secret's value replaced by a stand-in."""
    env: dict[str, str] = {}
    for item in c.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            env[item["name"]] = SECRET_VALUES[item["valueFrom"]["secretKeyRef"]["key"]]
    return env


def mounted(objects: list[Obj], container_name: str, path: str, to: Path) -> list[Path]:
    """The folder a container sees at `path`, laid out as the kubelet does (..data)."""
    return mount(objects, container_name, path, to / "mnt")


def effective_config(objects: list[Obj], pod_name: str, tmp_path: Path) -> tuple[Config, Path]:
    """bailiwick's configuration as the container would load it: its args, its env, its mounted file."""
    pod = pod_of(objects, pod_name)
    proxy = container(pod, "bailiwick")
    assert proxy["command"] == ["bailiwick"]
    args = _parser().parse_args(proxy["args"])
    assert args.command == "serve"
    assert str(args.config).startswith(CONFIG_MOUNT + "/")
    (folder,) = [f for f in mounted(objects, "bailiwick", CONFIG_MOUNT, tmp_path)
                 if f.name.endswith(one(objects, "Deployment", pod_name)["metadata"]["name"])]
    path = with_test_certificates(folder / args.config.relative_to(CONFIG_MOUNT), pod, proxy, tmp_path)
    config = load_config(path, overrides={
        "listen": args.listen, "admin_listen": args.admin_listen, "upstream": args.upstream,
        "policies": args.policies, "region": args.region, "workers": args.workers, "access_log": args.access_log,
    }, environ=environment(proxy))
    return config, folder


# ---- the policies ----------------------------------------------------------------------------

def test_the_base_holds_an_exact_copy_of_the_policies() -> None:
    # kustomize reads no file outside the kustomization's folder, so base/policies is a copy.
    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    assert files(KUBERNETES / "base" / "policies") == files(ROOT / "policies")


def test_the_policy_configmaps_hold_every_policy_file(rendered: dict[str, list[Obj]]) -> None:
    for name in ("base", *(f"overlays/{r}" for r in REGIONS)):
        expected = policy_values(ROOT / "policies")
        assert one(rendered[name], "ConfigMap", "bailiwick-policies")["data"] == expected["files"], name
        assert one(rendered[name], "ConfigMap", "bailiwick-policy-tests")["data"] == expected["tests"], name


@pytest.mark.parametrize("folder", [KUBERNETES / "base" / "policies", ROOT / "policies"])
def test_bailiwick_policy_check_and_test_pass_on_the_copy(folder: Path) -> None:
    for command in ("check", "test"):
        done = subprocess.run(["bailiwick", "policy", command, str(folder)], capture_output=True, text=True,
                              check=False, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_mounted_policy_folder_loads_and_reloads_on_a_configmap_update(
    rendered: dict[str, list[Obj]], tmp_path: Path,
) -> None:
    for name, objects in rendered.items():
        folders = mounted(objects, "bailiwick", POLICY_MOUNT, tmp_path / name.replace("/", "_"))
        assert len(folders) == 1, name
        folder = folders[0]
        assert (folder / "tests").is_dir(), f"{name}: the policy tests are not under tests/"
        first = load_checked(folder, run_tests=True)
        assert first.policy is not None, (name, first.problems)
        # The kubelet's update: the new files in a new folder, then ..data swapped in one rename.
        before = fingerprint(folder)
        old = (folder / "..data").resolve()
        new = folder / "..2026_01_02_00_00_00.000000002"
        shutil.copytree(old, new)
        mail = new / "mail.yaml"
        mail.write_text(mail.read_text().replace("Customer mailboxes of an Irish customer",
                                                 "Mailboxes of an Irish customer"))
        (folder / "..data_tmp").symlink_to(new.name)
        os.replace(folder / "..data_tmp", folder / "..data")
        shutil.rmtree(old)
        assert fingerprint(folder) != before, f"{name}: the update is not seen"
        second = load_checked(folder, run_tests=True)
        assert second.policy is not None, (name, second.problems)
        assert second.policy.version != first.policy.version


# ---- the sidecar ------------------------------------------------------------------------------

def test_the_sidecar_has_probes_on_the_admin_port(rendered: dict[str, list[Obj]]) -> None:
    for name, pod in sidecar_pods(rendered):
        proxy = container(pod, "bailiwick")
        admin = [p for p in proxy["ports"] if p["name"] == "admin"]
        assert admin == [{"name": "admin", "containerPort": 9090, "protocol": "TCP"}], name
        assert proxy["args"][-2:] == ["--admin-listen", "0.0.0.0:9090"], name
        probes = {kind: proxy[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert probes == {
            "startupProbe": {"path": "/healthz", "port": "admin"},
            "livenessProbe": {"path": "/healthz", "port": "admin"},
            "readinessProbe": {"path": "/readyz", "port": "admin"},
        }, name


def test_the_sidecar_is_locked_down(rendered: dict[str, list[Obj]]) -> None:
    for name, pod in sidecar_pods(rendered):
        proxy = container(pod, "bailiwick")
        assert proxy["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        tmp = [m for m in proxy["volumeMounts"] if m["mountPath"] == SCRATCH]
        assert len(tmp) == 1, name
        assert any(v["name"] == tmp[0]["name"] and "emptyDir" in v for v in pod["volumes"]), name
        # Every mount but /tmp is read-only.
        assert all(m.get("readOnly") for m in proxy["volumeMounts"] if m["mountPath"] not in (SCRATCH, AUDIT_LOG)), name


def test_the_sidecar_is_sized_from_the_benchmark(rendered: dict[str, list[Obj]]) -> None:
    for name, pod in sidecar_pods(rendered):
        assert container(pod, "bailiwick")["resources"] == {
            "requests": {"cpu": "250m", "memory": "96Mi"}, "limits": {"cpu": "1", "memory": "192Mi"},
        }, name


def test_the_sidecar_is_a_native_sidecar(rendered: dict[str, list[Obj]]) -> None:
    for name in ("base", "overlays/eu-west-1", "overlays/us-east-1", "helm"):
        pod = pod_of(rendered[name], "mail" if name == "helm" else "mail-app")
        (proxy,) = [c for c in pod["initContainers"] if c["name"] == "bailiwick"]
        assert proxy["restartPolicy"] == "Always", name
        assert all(c["name"] != "bailiwick" for c in pod["containers"]), name


def test_the_pod_outlasts_the_drain(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    for name, objects, workload in (("overlays/eu-west-1", rendered["overlays/eu-west-1"], "mail-app"),
                                    ("overlays/us-east-1", rendered["overlays/us-east-1"], "mail-app"),
                                    ("variants/separate-proxy", rendered["variants/separate-proxy"], "bailiwick"),
                                    ("helm", rendered["helm"], "mail")):
        config, _ = effective_config(objects, workload, tmp_path / name.replace("/", "_"))
        grace = pod_of(objects, workload)["terminationGracePeriodSeconds"]
        assert grace > config.shutdown_grace_seconds, name


def test_the_policies_are_mounted_whole_from_configmaps(rendered: dict[str, list[Obj]]) -> None:
    for name, pod in sidecar_pods(rendered):
        for c in (*(pod.get("initContainers") or []), *pod["containers"]):
            assert all("subPath" not in m and "subPathExpr" not in m for m in c.get("volumeMounts") or []), name
        proxy = container(pod, "bailiwick")
        (mount,) = [m for m in proxy["volumeMounts"] if m["mountPath"] == POLICY_MOUNT]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        sources = volume["projected"]["sources"]
        assert [set(s) for s in sources] == [{"configMap"}, {"configMap"}], name
        assert "items" not in sources[0]["configMap"], f"{name}: every policy file must appear"
    # The policy ConfigMaps keep their names (updated in place: live reload); the
    # configuration's name carries its content hash (a change rolls the pods).
    for name in ("base", "overlays/eu-west-1", "overlays/us-east-1"):
        names = {o["metadata"]["name"] for o in rendered[name] if o["kind"] == "ConfigMap"}
        assert {"bailiwick-policies", "bailiwick-policy-tests"} <= names, name
        assert [n for n in names if n.startswith("bailiwick-config-")], name


def test_keys_come_from_secrets_into_the_sidecar_only(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    for name, pod in sidecar_pods(rendered):
        proxy = container(pod, "bailiwick")
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in proxy["env"] if "valueFrom" in e}
        assert set(refs) == {"BAILIWICK_JWT_HS256_SECRET", "BAILIWICK_TAG_KEY", "BAILIWICK_AUDIT_KEY"}, name
        assert {r["key"] for r in refs.values()} == set(SECRET_VALUES), name
        (mount,) = [m for m in proxy["volumeMounts"] if m["mountPath"] == CREDENTIALS_DIR]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"], name
        # The app container gets no key, no Secret and none of the proxy's volumes.
        for c in pod["containers"]:
            if c["name"] == "bailiwick":
                continue
            assert all("valueFrom" not in e for e in c.get("env") or []), name
            assert not c.get("envFrom"), name
            assert {m["name"] for m in c.get("volumeMounts") or []}.isdisjoint(
                {m["name"] for m in proxy["volumeMounts"]}), name
    for name, objects, workload in (("overlays/eu-west-1", rendered["overlays/eu-west-1"], "mail-app"),
                                    ("helm", rendered["helm"], "mail")):
        config, _ = effective_config(objects, workload, tmp_path / name.replace("/", "_"))
        assert config.s3.sign is not None
        assert str(config.s3.sign.credentials_file) == f"{CREDENTIALS_DIR}/credentials", name
        assert config.tag.signing_key == SECRET_VALUES["tag-signing-key"].encode(), name
        assert config.audit.checkpoint_key == SECRET_VALUES["audit-checkpoint-key"].encode(), name


def volume_file(pod: Obj, proxy: Obj, path: str) -> tuple[str, str, str]:
    """(volume kind, object, key) the container reads at `path`: a read-only mount of a Secret's or ConfigMap's key."""
    folder, name = path.rsplit("/", 1)
    (mount_,) = [m for m in proxy["volumeMounts"] if m["mountPath"] == folder]
    assert mount_.get("readOnly") is True, path
    assert "subPath" not in mount_, "a subPath mount is never updated when the Secret or ConfigMap changes"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount_["name"]]
    (kind,) = {"secret", "configMap"} & set(volume)
    (item,) = [i for i in volume[kind]["items"] if i["path"] == name]
    return kind, volume[kind]["secretName" if kind == "secret" else "name"], item["key"]


def secret_file(pod: Obj, proxy: Obj, path: str) -> tuple[str, str]:
    """(Secret, key) the container reads at `path`: a read-only mount of one key of a Secret volume."""
    kind, name, key = volume_file(pod, proxy, path)
    assert kind == "secret", f"{path} is mounted from a {kind}"
    return name, key


def configmap_file(pod: Obj, proxy: Obj, path: str) -> tuple[str, str]:
    """(ConfigMap, key) the container reads at `path`: a read-only mount of one key of a ConfigMap volume."""
    kind, name, key = volume_file(pod, proxy, path)
    assert kind == "configMap", f"{path} is mounted from a {kind}"
    return name, key


# Where each `listen_tls` file comes from: a Secret for the pair and the client CA (cert-manager
# writes them), a ConfigMap for the CRL (public, as the CA publishes it).
TLS_FILE_SOURCES = {"certificate": "secret", "key": "secret", "client_ca": "secret", "crl": "configMap"}


def with_test_certificates(path: Path, pod: Obj, proxy: Obj, tmp_path: Path) -> Path:
    """The configuration at `path`, its `listen_tls` files (each checked to be mounted read-only) made at test time."""
    raw = yaml.safe_load(path.read_text())
    tls = raw.get("listen_tls")
    if not tls:
        return path
    ca = make_ca()
    server = server_certificate(ca, ("bailiwick", "127.0.0.1"))
    content = {"tls.crt": server.cert_pem, "tls.key": server.key_pem, "ca.crt": ca.cert_pem}
    for field, source in TLS_FILE_SOURCES.items():
        if field in tls:
            kind, _, key = volume_file(pod, proxy, tls[field])
            assert kind == source, f"listen_tls.{field} is mounted from a {kind}"
            made = tmp_path / "secrets" / field / key
            made.parent.mkdir(parents=True, exist_ok=True)
            if key == "ca.crl":
                write_crl(made, ca, ())   # the client CA's own, as an operator publishes it
            else:
                made.write_bytes(content[key])
            tls[field] = str(made)
    rewritten = tmp_path / "bailiwick-with-test-certificates.yaml"
    rewritten.write_text(yaml.safe_dump(raw))
    return rewritten


# ---- the configuration bailiwick is given ---------------------------------------------------------

# Each rendering that runs a proxy: (rendered name, the workload with the bailiwick container, its region).
PROXIES = [
    ("overlays/eu-west-1", "mail-app", "eu-west-1"),
    ("overlays/us-east-1", "mail-app", "us-east-1"),
    ("variants/separate-proxy", "bailiwick", "eu-west-1"),
    ("helm", "mail", "eu-west-1"),
]


@pytest.mark.parametrize(("name", "workload", "region"), PROXIES)
def test_the_configuration_loads_as_the_container_gets_it(
    rendered: dict[str, list[Obj]], tmp_path: Path, name: str, workload: str, region: str,
) -> None:
    config, _ = effective_config(rendered[name], workload, tmp_path)
    assert config.region == region
    assert config.upstream.url == STORAGE_HOSTS[region]
    assert config.admin_listen == (ANY_ADDRESS, 9090)
    assert config.policies == Path(POLICY_MOUNT)
    assert config.audit.path == "-"
    if name == "variants/separate-proxy":
        assert config.listen == (ANY_ADDRESS, 8080)
        assert "bailiwick" in config.s3.endpoints
        # Reached over the pod network: TLS, its files mounted from a Secret (with_test_certificates).
        assert config.listen_tls is not None
        assert config.listen_tls.min_version == "1.2"
    else:
        # Loopback only: nothing outside the pod reaches the data port, and the loopback
        # caller is the pod's app.
        assert config.listen == ("127.0.0.1", 8080)
        assert "127.0.0.1" in config.s3.endpoints
        assert [str(n.cidr) for n in config.identity.networks] == ["127.0.0.1/32"]
        app = container(pod_of(rendered[name], workload), "app")
        assert {"name": "S3_ENDPOINT", "value": "http://127.0.0.1:8080"} in app["env"]
    assert len(config.identity.jwt) == 1
    assert region in config.identity.jwt[0].issuer
    # Re-sign mode starts with the mounted credentials file (here a stand-in at the same name).
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = AKIATEST\naws_secret_access_key = test\n")
    assert config.s3.sign is not None
    signed = replace(config, s3=replace(config.s3, sign=replace(config.s3.sign, credentials_file=credentials)))
    assert request_signer(signed) is not None


def test_the_base_alone_refuses_to_start(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    config, _ = effective_config(rendered["base"], "mail-app", tmp_path)
    assert config.region is None
    with pytest.raises(ConfigError, match="re-sign mode needs the signing region"):
        request_signer(config)


# ---- the NetworkPolicies ------------------------------------------------------------------------

DNS_RULE = {
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}


def address_rules(policy: Obj) -> dict[int, str]:
    """The policy's egress rules that are not DNS, each an ipBlock on one TCP port: port -> CIDR."""
    egress = policy["spec"]["egress"]
    assert DNS_RULE in egress
    rules: dict[int, str] = {}
    for rule in egress:
        if rule == DNS_RULE:
            continue
        (port,) = rule["ports"]
        assert port["protocol"] == "TCP"
        (peer,) = rule["to"]
        assert set(peer) == {"ipBlock"}
        assert set(peer["ipBlock"]) == {"cidr"}
        assert port["port"] not in rules
        rules[port["port"]] = peer["ipBlock"]["cidr"]
    # The storage endpoint, and where one is configured the region's key service.
    assert set(rules) in ({443}, {443, KEY_SERVICE_PORT}), rules
    return rules


def storage_rule(policy: Obj) -> str:
    """The CIDR of the policy's egress rule to the storage endpoint: an ipBlock on 443."""
    return address_rules(policy)[443]


def key_service_rule(policy: Obj) -> str | None:
    """The CIDR of the policy's egress rule to the key service (an ipBlock on 8200), if it has one."""
    return address_rules(policy).get(KEY_SERVICE_PORT)


def test_the_app_pods_reach_the_storage_endpoint_and_dns_only(rendered: dict[str, list[Obj]]) -> None:
    cidrs = {}
    for region in REGIONS:
        objects = rendered[f"overlays/{region}"]
        policy = one(objects, "NetworkPolicy", "mail-app")
        labels = one(objects, "Deployment", "mail-app")["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
        cidrs[region] = storage_rule(policy)
        (ingress,) = policy["spec"]["ingress"]
        assert ingress["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert len(set(cidrs.values())) == len(REGIONS), "each region reaches its own storage endpoint"
    assert "192.0.2.0/24" not in cidrs.values(), "the base's placeholder range is replaced"


def test_the_separate_proxy_variant_separates_the_app_from_the_storage(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["variants/separate-proxy"]
    app_pod = pod_of(objects, "mail-app")
    assert [c["name"] for c in app_pod["containers"]] == ["app"]
    assert not app_pod.get("initContainers")
    app = container(app_pod, "app")
    assert {"name": "S3_ENDPOINT", "value": "https://bailiwick"} in app["env"]
    # The app trusts the issuer's CA, and gets nothing else of the Secret (never the key).
    assert {"name": "AWS_CA_BUNDLE", "value": "/etc/bailiwick-ca/ca.crt"} in app["env"]
    assert secret_file(app_pod, app, "/etc/bailiwick-ca/ca.crt") == ("bailiwick-tls", "ca.crt")
    (ca_volume,) = [v for v in app_pod["volumes"] if v["name"] == "bailiwick-ca"]
    assert [i["key"] for i in ca_volume["secret"]["items"]] == ["ca.crt"]
    app_policy = one(objects, "NetworkPolicy", "mail-app")
    assert not app_policy["spec"].get("ingress")
    assert app_policy["spec"]["egress"] == [
        {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "bailiwick"}}}],
         "ports": [{"port": 8080, "protocol": "TCP"}]},
        DNS_RULE,
    ]
    proxy_policy = one(objects, "NetworkPolicy", "bailiwick")
    assert storage_rule(proxy_policy) == storage_rule(one(rendered["overlays/eu-west-1"], "NetworkPolicy", "mail-app"))
    service = one(objects, "Service", "bailiwick")
    assert service["spec"]["selector"] == proxy_policy["spec"]["podSelector"]["matchLabels"]
    assert {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"} in service["spec"]["ports"]
    assert {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mail-app"}}}],
            "ports": [{"port": "https", "protocol": "TCP"}]} in proxy_policy["spec"]["ingress"]
    # cert-manager issues the certificate for the Service's names into the Secret the proxy mounts.
    certificate = one(objects, "Certificate", "bailiwick")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["metadata"]["namespace"] == "mail-eu-west-1"
    assert {"bailiwick", "bailiwick.mail-eu-west-1.svc.cluster.local"} <= set(certificate["spec"]["dnsNames"])
    assert certificate["spec"]["issuerRef"]["name"]
    assert all(o["metadata"]["name"] != "mail-app-bailiwick-admin" for o in objects)
    # The proxy is the eu-west-1 sidecar but for what a container of its own needs.
    sidecar = dict(container(pod_of(rendered["overlays/eu-west-1"], "mail-app"), "bailiwick"))
    own = dict(container(pod_of(objects, "bailiwick"), "bailiwick"))
    assert sidecar.pop("restartPolicy") == "Always"
    assert own.pop("lifecycle") == {"preStop": {"sleep": {"seconds": 5}}}
    assert own.pop("ports") == [{"name": "https", "containerPort": 8080, "protocol": "TCP"}, *sidecar.pop("ports")]
    own_mounts = own.pop("volumeMounts")
    assert [m for m in own_mounts if m["name"] == "tls"] == [
        {"name": "tls", "mountPath": "/etc/bailiwick/tls", "readOnly": True}]
    assert secret_file(pod_of(objects, "bailiwick"), {"volumeMounts": own_mounts}, "/etc/bailiwick/tls/tls.key") == \
        (certificate["spec"]["secretName"], "tls.key")
    assert [m for m in own_mounts if m["name"] != "tls"] == sidecar.pop("volumeMounts")
    assert sorted(own.pop("env"), key=str) == sorted(sidecar.pop("env"), key=str)
    assert own == sidecar


CLIENT_CERTIFICATES = ("# -- client certificates", "# -- end client certificates")


def uncomment(text: str, block: tuple[str, str]) -> str:
    """`text` with the lines between the block's markers uncommented, as an operator does ("# " removed)."""
    start, end = block
    out: list[str] = []
    inside = False
    for line in text.splitlines(keepends=True):
        if line.strip() in block:
            inside = line.strip() == start
            continue
        if inside:
            indent = line[:len(line) - len(line.lstrip())]
            assert line.lstrip().startswith("# "), f"not a commented line in the block: {line!r}"
            line = indent + line.lstrip()[2:]
        out.append(line)
    assert not inside, f"{start!r} is not closed by {end!r}"
    return "".join(out)


def test_the_separate_proxy_variant_shows_client_certificates_with_a_crl(
    rendered: dict[str, list[Obj]], tmp_path: Path,
) -> None:
    """The commented client CA and CRL blocks, uncommented as documented, render to a proxy that loads them."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, tree)
    variant = tree / "variants" / "separate-proxy"
    for name in ("bailiwick.yaml", "bailiwick-deployment.yaml"):
        text = (variant / name).read_text()
        assert CLIENT_CERTIFICATES[0] in text, name
        (variant / name).write_text(uncomment(text, CLIENT_CERTIFICATES))
    objects = kustomize(variant)
    pod = pod_of(objects, "bailiwick")
    proxy = container(pod, "bailiwick")
    (raw,) = [yaml.safe_load(o["data"]["bailiwick.yaml"]) for o in objects
              if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("bailiwick-config")]
    # Each path the configuration names is the key of the object it documents, mounted read-only and whole.
    assert secret_file(pod, proxy, raw["listen_tls"]["client_ca"]) == ("bailiwick-client-ca", "ca.crt")
    assert configmap_file(pod, proxy, raw["listen_tls"]["crl"]) == ("bailiwick-client-crl", "ca.crl")
    config, _ = effective_config(objects, "bailiwick", tmp_path)
    assert config.listen_tls is not None
    assert config.listen_tls.client_ca is not None
    assert config.listen_tls.crl is not None
    # Uncommented, it is still a valid Deployment, and the rest of the variant is as shipped.
    manifest = tmp_path / "separate-proxy-client-certificates.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    done = subprocess.run(["kubernetes-validate", "--strict", "--quiet", "-k", "1.33.0", str(manifest)],
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = rendered["variants/separate-proxy"]
    assert compare([o for o in objects if o["kind"] not in ("Deployment", "ConfigMap")],
                   [o for o in shipped if o["kind"] not in ("Deployment", "ConfigMap")]) == []
    shipped_config, _ = effective_config(shipped, "bailiwick", tmp_path / "shipped")
    assert shipped_config.listen_tls is not None
    assert (shipped_config.listen_tls.client_ca, shipped_config.listen_tls.crl) == (None, None)


@pytest.mark.parametrize(("text", "expected"), [
    ("a: 1\n  # -- client certificates\n  # b: 2\n  #   c: 3\n  # -- end client certificates\nd: 4\n",
     "a: 1\n  b: 2\n    c: 3\nd: 4\n"),
    ("a: 1\n# b: 2\n", "a: 1\n# b: 2\n"),   # a comment outside the block stays one
])
def test_uncomment_removes_the_comment_marks_of_the_block_only(text: str, expected: str) -> None:
    assert uncomment(text, CLIENT_CERTIFICATES) == expected


# ---- the regions ------------------------------------------------------------------------------

def secret_names(objects: list[Obj]) -> set[str]:
    names: set[str] = set()
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        names |= {v["secret"]["secretName"] for v in pod.get("volumes") or [] if "secret" in v}
        for c in (*(pod.get("initContainers") or []), *pod["containers"]):
            names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env") or [] if "valueFrom" in e}
    return names


def test_the_regions_run_the_same_policies_and_share_nothing_else(
    rendered: dict[str, list[Obj]], tmp_path: Path,
) -> None:
    eu, us = (rendered[f"overlays/{r}"] for r in REGIONS)
    for kind in ("bailiwick-policies", "bailiwick-policy-tests"):
        assert one(eu, "ConfigMap", kind)["data"] == one(us, "ConfigMap", kind)["data"]
    configs = {r: effective_config(rendered[f"overlays/{r}"], "mail-app", tmp_path / r)[0] for r in REGIONS}
    assert [configs[r].region for r in REGIONS] == list(REGIONS)
    assert configs["eu-west-1"].upstream.url != configs["us-east-1"].upstream.url
    assert configs["eu-west-1"].identity.jwt[0].issuer != configs["us-east-1"].identity.jwt[0].issuer
    assert [n.jurisdiction for n in configs["eu-west-1"].identity.networks] == ["IE"]
    assert [n.jurisdiction for n in configs["us-east-1"].identity.networks] == ["US"]
    secrets = {r: secret_names(rendered[f"overlays/{r}"]) for r in REGIONS}
    assert secrets["eu-west-1"].isdisjoint(secrets["us-east-1"]), "no Secret is shared between regions"
    for region in REGIONS:
        assert secrets[region], region
        assert all(name.endswith(region) for name in secrets[region]), secrets[region]
        namespaces = {o["metadata"].get("namespace") for o in rendered[f"overlays/{region}"]
                      if o["kind"] != "Namespace"}
        assert namespaces == {f"mail-{region}"}
        namespace = one(rendered[f"overlays/{region}"], "Namespace")
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert secret_names(rendered["base"]) == {"bailiwick-keys", "bailiwick-s3"}


def key_service_secret(objects: list[Obj], pod: Obj) -> str:
    """The Secret mounted at the key service's token path of the pod's bailiwick container."""
    (mount,) = [m for m in container(pod, "bailiwick")["volumeMounts"] if m["mountPath"] == KEY_SERVICE_MOUNT]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    name: str = volume["secret"]["secretName"]
    return name


@pytest.mark.parametrize(("name", "workload", "region"), PROXIES)
def test_each_region_names_its_own_key_service(
    rendered: dict[str, list[Obj]], tmp_path: Path, name: str, workload: str, region: str,
) -> None:
    objects = rendered[name]
    config, _ = effective_config(objects, workload, tmp_path)
    encryption = config.encryption
    assert encryption.key_service == "transit"
    assert encryption.transit is not None
    assert encryption.transit.address == f"https://bao.{region}.internal:8200"
    assert encryption.transit.key == f"bailiwick-{region}"
    # The token comes from this region's own Secret, mounted into the proxy's container only.
    assert str(encryption.transit.token_file) == f"{KEY_SERVICE_MOUNT}/token"
    pod = pod_of(objects, workload)
    assert key_service_secret(objects, pod) == f"bailiwick-key-service-{region}"
    for app in pod["containers"]:
        if app["name"] != "bailiwick":
            assert all(m["mountPath"] != KEY_SERVICE_MOUNT for m in app.get("volumeMounts") or [])
    # Off by default: every read asks the key service.
    assert encryption.key_cache.max_keys == 0
    # The proxy's pods may reach this region's key service (and no other region's).
    policy_name = {"variants/separate-proxy": "bailiwick", "helm": None}.get(name, "mail-app")
    key_service_ranges = {"eu-west-1": "10.1.8.0/28", "us-east-1": "10.2.8.0/28"}
    assert key_service_rule(one(objects, "NetworkPolicy", policy_name)) == key_service_ranges[region]


def test_the_base_names_no_key_service(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    config, _ = effective_config(rendered["base"], "mail-app", tmp_path)
    assert not config.encryption.enabled
    pod = pod_of(rendered["base"], "mail-app")
    assert all(m["mountPath"] != KEY_SERVICE_MOUNT for m in container(pod, "bailiwick")["volumeMounts"])
    assert key_service_rule(one(rendered["base"], "NetworkPolicy", "mail-app")) is None


# ---- Helm -----------------------------------------------------------------------------------

def test_the_chart_injects_the_same_sidecar(rendered: dict[str, list[Obj]]) -> None:
    """The sidecar from the chart is the kustomize base's, but for the names of its volumes."""
    chart = dict(container(pod_of(rendered["helm"], "mail"), "bailiwick"))
    base = dict(container(pod_of(rendered["overlays/eu-west-1"], "mail-app"), "bailiwick"))
    chart_mounts, base_mounts = chart.pop("volumeMounts"), base.pop("volumeMounts")
    assert [m["mountPath"] for m in chart_mounts] == [m["mountPath"] for m in base_mounts]
    assert sorted(chart.pop("env"), key=str) == sorted(base.pop("env"), key=str)
    assert chart == base
    service = one(rendered["helm"], "Service")
    assert service["spec"]["ports"] == [{"name": "admin", "port": 9090, "targetPort": "admin", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= \
        one(rendered["helm"], "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    assert storage_rule(one(rendered["helm"], "NetworkPolicy")) == "198.51.100.0/24"


@pytest.mark.parametrize(("values", "message"), [
    ({"region": None, "policies": policy_values(ROOT / "policies")}, "set region"),
    ({}, "give the policy files"),
    ({"policies": policy_values(ROOT / "policies"), "encryption": {"key_service": "file"}},
     "the key file is for development and the demo only"),
    ({"policies": policy_values(ROOT / "policies"), "secrets": {"keyService": {"name": ""}}},
     "set secrets.keyService.name"),
    ({"policies": policy_values(ROOT / "policies"), "networkPolicy": {"keyServiceCIDR": ""}},
     "set networkPolicy.keyServiceCIDR"),
])
def test_the_chart_refuses_to_render_without_what_it_needs(tmp_path: Path, values: Obj, message: str) -> None:
    with pytest.raises(HelmFailed, match=message):
        helm_template(example_app_chart(tmp_path), {"bailiwick": values})


def test_the_chart_without_a_key_service_mounts_none(tmp_path: Path) -> None:
    values = {"policies": policy_values(ROOT / "policies"), "encryption": {"key_service": None}}
    objects = helm_template(example_app_chart(tmp_path), {"bailiwick": values}, release="mail",
                            namespace="mail-eu-west-1")
    pod = pod_of(objects, "mail")
    assert all(m["mountPath"] != KEY_SERVICE_MOUNT for m in container(pod, "bailiwick")["volumeMounts"])
    assert all(v["name"] != "bailiwick-key-service" for v in pod["volumes"])
    assert key_service_rule(one(objects, "NetworkPolicy")) is None
    config, _ = effective_config(objects, "mail", tmp_path)
    assert config.encryption == Config().encryption


def test_the_chart_renders_its_optional_objects() -> None:
    standalone = yaml.safe_load((HELM / "bailiwick" / "ci" / "standalone-values.yaml").read_text())
    objects = helm_template(HELM / "bailiwick", merge_values({"policies": policy_values(ROOT / "policies")},
                                                             standalone), lint=True)
    assert sorted(o["kind"] for o in objects) == [
        "Certificate", "ConfigMap", "ConfigMap", "ConfigMap", "NetworkPolicy", "Service", "ServiceMonitor"]
    config = yaml.safe_load(one(objects, "ConfigMap", "release-bailiwick-config")["data"]["bailiwick.yaml"])
    assert config["listen_tls"]["crl"] == "/etc/bailiwick/tls-crl/ca.crl"
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "admin", "path": "/metrics", "interval": "30s"}]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= one(objects, "Service")["metadata"]["labels"].items()


# ---- the kustomize substitute ---------------------------------------------------------------------

@pytest.mark.skipif(kubectl_version() is None, reason="kubectl is not installed: nothing to hold the substitute to")
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_kustomize_substitute_renders_what_kubectl_kustomize_renders(name: str) -> None:
    assert compare(substitute.build(KUBERNETES / name), kustomize(KUBERNETES / name)) == []


@pytest.mark.parametrize(("kustomization", "message"), [
    ("resources: [cm.yaml]\nimages: [{name: x, newTag: y}]\n", "'images' is not supported"),
    ("resources: [cm.yaml]\nlabels: [{pairs: {a: b}, includeSelectors: true}]\n", "includeSelectors"),
    ("resources: [cm.yaml]\npatches: [{path: patch.yaml, target: {kind: ConfigMap}}]\n", "'target' is not supported"),
    ("resources: [cm.yaml]\npatches: [{path: patch.yaml}]\n", "does not know how to merge this list"),
    ("resources: [cm.yaml]\nconfigMapGenerator: [{name: c, behavior: merge, files: [cm.yaml]}]\n",
     "behavior 'merge' is not supported"),
    ("resources: [../outside.yaml]\n", "outside"),
])
def test_the_kustomize_substitute_refuses_what_it_does_not_know(tmp_path: Path, kustomization: str,
                                                                message: str) -> None:
    folder = tmp_path / "k"
    folder.mkdir()
    (tmp_path / "outside.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: o}\n")
    (folder / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n")
    (folder / "patch.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nfinalizers: [x]\n")
    (folder / "kustomization.yaml").write_text(kustomization)
    with pytest.raises(KustomizeError, match=message):
        substitute.build(folder)


def test_a_test_file_left_unmapped_is_refused(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    objects = [dict(o) for o in rendered["overlays/eu-west-1"]]
    tests = one(objects, "ConfigMap", "bailiwick-policy-tests")
    tests["data"] = {**tests["data"], "new_test.yaml": "cases: []\n"}
    with pytest.raises(MountError, match=r"'new_test\.yaml' of ConfigMap bailiwick-policy-tests is not mapped"):
        mount(objects, "bailiwick", POLICY_MOUNT, tmp_path)


# ---- validation -------------------------------------------------------------------------------

def test_kubernetes_validate_is_strict(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump_all(rendered["overlays/eu-west-1"]))
    bad_objects = yaml.safe_load(yaml.safe_dump(rendered["overlays/eu-west-1"]))
    pod_of(bad_objects, "mail-app")["initContainers"][0]["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(bad_objects))
    for path, code in ((good, 0), (bad, 1)):
        done = subprocess.run(["kubernetes-validate", "--strict", "--quiet", str(path)], capture_output=True,
                              text=True, check=False, timeout=300)
        assert done.returncode == code, done.stdout + done.stderr


def test_the_check_script_passes() -> None:
    """Renders everything, compares with kubectl kustomize and Helm where present, validates, checks policies."""
    done = subprocess.run([str(KUBERNETES / "check")], capture_output=True, text=True, check=False, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checks passed" in done.stdout


def test_the_audit_ship_variant_ships_from_a_writable_folder_as_its_own_role(
    rendered: dict[str, list[Obj]], tmp_path: Path,
) -> None:
    objects = rendered["variants/audit-ship"]
    config, _ = effective_config(objects, "mail-app", tmp_path)
    assert config.audit.ship is not None
    assert config.audit.ship.bucket == "mail-audit-eu-west-1"
    assert str(config.audit.path).startswith(AUDIT_LOG + "/")
    pod = pod_of(objects, "mail-app")
    mount = [m for m in container(pod, "bailiwick")["volumeMounts"] if m["mountPath"] == AUDIT_LOG]
    assert len(mount) == 1
    assert any(v["name"] == mount[0]["name"] and "emptyDir" in v for v in pod["volumes"])
    account = one(objects, "ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_the_chart_ships_the_audit_log_when_asked(tmp_path: Path) -> None:
    values = {"policies": policy_values(ROOT / "policies"),
              "auditShip": {"enabled": True, "bucket": "mail-audit-eu-west-1", "required": True}}
    objects = helm_template(example_app_chart(tmp_path), {"bailiwick": values}, release="mail",
                            namespace="mail-eu-west-1")
    config, _ = effective_config(objects, "mail", tmp_path)
    assert config.audit.ship is not None
    assert (config.audit.ship.bucket, config.audit.ship.required) == ("mail-audit-eu-west-1", True)
    assert config.audit.path == AUDIT_LOG + "/audit.jsonl"
    assert config.audit.checkpoint_key is not None   # the chart's other audit settings stay
    pod = pod_of(objects, "mail")
    assert [m for m in container(pod, "bailiwick")["volumeMounts"] if m["mountPath"] == AUDIT_LOG]


# ---- TLS on the data port ------------------------------------------------------------------------

CHART_TLS: Obj = {"enabled": True, "clientCaSecret": "mail-clients-ca",
             "certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "internal-ca"},
                             "ipAddresses": ["127.0.0.1"], "dnsNames": ["localhost"]}}


def test_the_chart_serves_tls_with_a_cert_manager_certificate(tmp_path: Path) -> None:
    values = {"policies": policy_values(ROOT / "policies"), "tls": CHART_TLS}
    objects = helm_template(example_app_chart(tmp_path), {"bailiwick": values}, release="mail",
                            namespace="mail-eu-west-1")
    certificate = one(objects, "Certificate")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer",
                                                "name": "internal-ca"}
    assert certificate["spec"]["ipAddresses"] == ["127.0.0.1"]
    assert (certificate["spec"]["duration"], certificate["spec"]["renewBefore"]) == ("2160h", "360h")
    config, _ = effective_config(objects, "mail", tmp_path)
    assert config.listen_tls is not None
    pod = pod_of(objects, "mail")
    proxy = container(pod, "bailiwick")
    # The files the configuration names are the Secret cert-manager writes, mounted read-only.
    assert secret_file(pod, proxy, "/etc/bailiwick/tls/tls.crt") == (certificate["spec"]["secretName"], "tls.crt")
    assert secret_file(pod, proxy, "/etc/bailiwick/tls/tls.key") == (certificate["spec"]["secretName"], "tls.key")
    assert secret_file(pod, proxy, "/etc/bailiwick/tls-client-ca/ca.crt") == ("mail-clients-ca", "ca.crt")
    assert config.listen_tls.client_ca is not None
    assert config.listen_tls.crl is None   # no revocation check unless a CRL is given
    assert config.listen_tls.reload_interval_seconds == 5
    # The key into bailiwick's container only; the app gets the CA alone, and speaks https.
    app = container(pod, "app")
    assert not {m["name"] for m in app.get("volumeMounts") or []} & {"bailiwick-tls", "bailiwick-tls-client-ca"}
    assert {"name": "S3_ENDPOINT", "value": "https://127.0.0.1:8080"} in app["env"]
    assert {"name": "AWS_CA_BUNDLE", "value": "/etc/bailiwick-ca/ca.crt"} in app["env"]
    assert secret_file(pod, app, "/etc/bailiwick-ca/ca.crt") == (certificate["spec"]["secretName"], "ca.crt")


def test_the_chart_serves_tls_from_a_secret_of_ones_own(tmp_path: Path) -> None:
    values = {"policies": policy_values(ROOT / "policies"), "tls": {"enabled": True, "secretName": "mail-tls"}}
    objects = helm_template(example_app_chart(tmp_path), {"bailiwick": values}, release="mail",
                            namespace="mail-eu-west-1")
    assert all(o["kind"] != "Certificate" for o in objects)
    config, _ = effective_config(objects, "mail", tmp_path)
    assert config.listen_tls is not None
    assert config.listen_tls.client_ca is None
    pod = pod_of(objects, "mail")
    assert secret_file(pod, container(pod, "bailiwick"), "/etc/bailiwick/tls/tls.crt") == ("mail-tls", "tls.crt")


def test_the_chart_serves_plain_http_unless_asked(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    assert all(o["kind"] != "Certificate" for o in rendered["helm"])
    config, _ = effective_config(rendered["helm"], "mail", tmp_path)
    assert config.listen_tls is None


def test_the_chart_checks_client_certificates_against_a_crl_configmap(tmp_path: Path) -> None:
    values = {"policies": policy_values(ROOT / "policies"), "tls": {**CHART_TLS, "crlConfigMap": "mail-clients-crl"}}
    objects = helm_template(example_app_chart(tmp_path), {"bailiwick": values}, release="mail",
                            namespace="mail-eu-west-1")
    rendered_tls = yaml.safe_load(one(objects, "ConfigMap", "mail-bailiwick-config")["data"]["bailiwick.yaml"])
    assert rendered_tls["listen_tls"]["crl"] == "/etc/bailiwick/tls-crl/ca.crl"
    pod = pod_of(objects, "mail")
    proxy = container(pod, "bailiwick")
    # The file the setting names is the ConfigMap's key ca.crl, mounted read-only and whole (a new CRL reaches it).
    assert configmap_file(pod, proxy, "/etc/bailiwick/tls-crl/ca.crl") == ("mail-clients-crl", "ca.crl")
    assert secret_file(pod, proxy, "/etc/bailiwick/tls-client-ca/ca.crt") == ("mail-clients-ca", "ca.crt")
    # The proxy's own loader takes the configuration, with a CRL of the client CA at that place.
    config, _ = effective_config(objects, "mail", tmp_path)
    assert config.listen_tls is not None
    assert config.listen_tls.client_ca is not None
    assert config.listen_tls.crl is not None
    assert config.listen_tls.crl.name == "ca.crl"
    assert all(m["name"] != "bailiwick-tls-crl" for m in container(pod, "app").get("volumeMounts") or [])


@pytest.mark.parametrize(("tls", "message"), [
    ({**CHART_TLS, "certManager": {**CHART_TLS["certManager"], "issuerRef": {"kind": "Issuer", "name": ""}}},
     "set tls.certManager.issuerRef.name"),
    ({**CHART_TLS, "certManager": {**CHART_TLS["certManager"], "ipAddresses": [], "dnsNames": []}},
     "set tls.certManager.dnsNames or tls.certManager.ipAddresses"),
    # A CRL revokes client certificates: without a client CA there are none to revoke.
    ({**CHART_TLS, "clientCaSecret": "", "crlConfigMap": "mail-clients-crl"},
     "tls.crlConfigMap revokes client certificates: set tls.clientCaSecret"),
    ({"enabled": True, "secretName": "mail-tls", "crlConfigMap": "mail-clients-crl"},
     "tls.crlConfigMap revokes client certificates: set tls.clientCaSecret"),
])
def test_the_chart_refuses_tls_settings_it_cannot_serve(tmp_path: Path, tls: Obj, message: str) -> None:
    with pytest.raises(HelmFailed, match=message):
        helm_template(example_app_chart(tmp_path), {"bailiwick": {"policies": policy_values(ROOT / "policies"),
                                                                  "tls": tls}})
