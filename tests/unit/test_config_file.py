"""--config-file (etcd's YAML configuration) and the logging flags (fastkv/logsetup.py)."""
from __future__ import annotations

import io
import json
import logging

import pytest

from fastkv import config, logsetup

YAML = """
name: 'infra0'
data-dir: /var/lib/fastkv/infra0
listen-client-urls: http://127.0.0.1:12379,http://127.0.0.1:22379
advertise-client-urls: [http://127.0.0.1:12379]
listen-peer-urls: http://127.0.0.1:12380
initial-advertise-peer-urls: http://127.0.0.1:12380
initial-cluster: infra0=http://127.0.0.1:12380,infra1=http://127.0.0.1:22380
initial-cluster-token: 'etcd-cluster-1'
initial-cluster-state: 'new'
snapshot-count: 10000
enable-v2: true
quota-backend-bytes: 8589934592
logger: zap
log-outputs: [stderr, /tmp/fastkv.log]
wal-dir:            # etcd knows it; fastkv has no such flag: ignored, as etcd ignores
  unknown-key: 1
client-transport-security:
  cert-file: /etc/fastkv/server.crt
  key-file: /etc/fastkv/server.key
  client-cert-auth: true
  trusted-ca-file: /etc/fastkv/ca.crt
peer-transport-security:
  auto-tls: true
"""


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "fastkv.conf.yml"
    path.write_text(text)
    return str(path)


def test_a_configuration_file_sets_what_its_flags_would(tmp_path):
    path = _write(tmp_path, YAML)
    cfg = config.parse(["--config-file", path], {})
    assert (cfg.name, cfg.data_dir) == ("infra0", "/var/lib/fastkv/infra0")
    assert cfg.listen_client_urls == ["http://127.0.0.1:12379", "http://127.0.0.1:22379"]
    assert cfg.advertise_client_urls == ["http://127.0.0.1:12379"]
    assert cfg.initial_cluster == {"infra0": ["http://127.0.0.1:12380"],
                                   "infra1": ["http://127.0.0.1:22380"]}
    assert cfg.initial_cluster_token == "etcd-cluster-1" and cfg.initial_cluster_token_given
    assert (cfg.snapshot_count, cfg.enable_v2, cfg.quota_backend_bytes) == (10000, True, 8 << 30)
    assert (cfg.logger, cfg.log_outputs) == ("zap", ["stderr", "/tmp/fastkv.log"])
    assert (cfg.cert_file, cfg.key_file, cfg.trusted_ca_file) == (
        "/etc/fastkv/server.crt", "/etc/fastkv/server.key", "/etc/fastkv/ca.crt")
    assert cfg.client_cert_auth and cfg.peer_auto_tls


def test_with_a_file_other_flags_and_variables_are_ignored(tmp_path):
    """etcd: "if a configuration file is provided, other command line flags and
    environment variables will be ignored"; ETCD_CONFIG_FILE names the file too."""
    path = _write(tmp_path, "name: a\ninitial-cluster: a=http://127.0.0.1:2380\n"
                            "snapshot-count: 7\n")
    cfg = config.parse(["--config-file", path, "--snapshot-count", "99", "--name", "b"],
                       {"ETCD_ENABLE_V2": "true"})
    assert (cfg.name, cfg.snapshot_count, cfg.enable_v2) == ("a", 7, False)
    cfg = config.parse([], {"ETCD_CONFIG_FILE": path, "ETCD_SNAPSHOT_COUNT": "99"})
    assert (cfg.name, cfg.snapshot_count) == ("a", 7)
    assert config.parse(["--snapshot-count", "99"], {}).snapshot_count == 99   # no file


@pytest.mark.parametrize("text,message", [
    ("name: [unclosed", "error converting YAML"),
    ("- a\n- b\n", "is not a YAML mapping"),
    ("snapshot-count: many\n", 'invalid value "many" for flag -snapshot-count'),
    ("logger: syslog\n", "invalid value \"syslog\" for flag -logger"),
])
def test_a_bad_file_is_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(config.ConfigError) as err:
        config.parse(["--config-file", _write(tmp_path, text)], {})
    assert message in str(err.value)
    with pytest.raises(config.ConfigError) as err:
        config.parse(["--config-file", str(tmp_path / "missing.yml")], {})
    assert "cannot read the configuration file" in str(err.value)


def test_zap_logs_are_json_lines_in_every_output(tmp_path, monkeypatch):
    log_file = tmp_path / "member.log"
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logsetup.configure("info", "zap", ["stderr", str(log_file)])
        logging.getLogger("fastkv.zaptest.server").info("ready to serve %s", "clients")
        logging.getLogger("fastkv.zaptest.server").debug("not at info")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("fastkv.zaptest").exception("failed")
        for h in root.handlers:
            h.flush()
        for text in (err.getvalue(), log_file.read_text()):
            lines = [json.loads(line) for line in text.splitlines()]
            assert [(r["level"], r["logger"], r["msg"]) for r in lines] == [
                ("info", "fastkv.zaptest.server", "ready to serve clients"),
                ("error", "fastkv.zaptest", "failed")]
            assert lines[0]["ts"].endswith("Z") and lines[0]["caller"].startswith(
                "tests/unit/test_config_file.py:")
            assert "ValueError: boom" in lines[1]["error"]
        logsetup.configure("warn", "capnslog", ["stderr"])
        logging.getLogger("fastkv.x").warning("plain")
        assert err.getvalue().splitlines()[-1].endswith(" WARNING fastkv.x: plain")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
