"""etcd-style flags: spellings, env vars, defaults, errors (exit 2 naming the flag)."""
import subprocess
import sys

import pytest

from fastkv import config


def test_defaults_are_etcds():
    cfg = config.parse([], environ={})
    assert cfg.name == "default" and cfg.data_dir == "default.fastkv"
    assert cfg.listen_client_urls == ["http://127.0.0.1:2379"]
    assert cfg.listen_peer_urls == ["http://127.0.0.1:2380"]
    assert cfg.snapshot_count == 100000 and cfg.max_request_bytes == 1572864
    assert cfg.max_txn_ops == 128 and cfg.heartbeat_interval == 100
    assert cfg.election_timeout == 1000 and cfg.enable_v2 is False


@pytest.mark.parametrize("argv", [
    ["-snapshot-count", "5"], ["--snapshot-count", "5"],
    ["-snapshot-count=5"], ["--snapshot-count=5"],
])
def test_flag_spellings(argv):
    assert config.parse(argv, environ={}).snapshot_count == 5


def test_fault_file_flag_is_off_by_default():
    # Testing only (tests/chaos/nemesis.py): without it the server starts no fault-file reader.
    assert config.parse([], environ={}).experimental_fault_file == ""
    assert config.parse(["--experimental-fault-file", "/tmp/x.drop"],
                        environ={}).experimental_fault_file == "/tmp/x.drop"


def test_bool_flags():
    assert config.parse(["--enable-v2"], environ={}).enable_v2 is True
    assert config.parse(["--enable-v2=false"], environ={}).enable_v2 is False
    assert config.parse(["-enable-v2=true"], environ={}).enable_v2 is True


def test_env_vars_and_flag_precedence():
    env = {"ETCD_NAME": "n1", "ETCD_SNAPSHOT_COUNT": "7",
           "ETCD_INITIAL_CLUSTER": "n1=http://127.0.0.1:2380"}
    cfg = config.parse([], environ=env)
    assert cfg.name == "n1" and cfg.snapshot_count == 7 and cfg.data_dir == "n1.fastkv"
    assert config.parse(["--snapshot-count", "9"], environ=env).snapshot_count == 9


@pytest.mark.parametrize("argv,needle", [
    (["--no-such-flag"], "-no-such-flag"),
    (["--snapshot-count", "many"], "-snapshot-count"),
    (["--listen-client-urls", "127.0.0.1:2379"], "-listen-client-urls"),
    (["--enable-v2=maybe"], "-enable-v2"),
    (["--log-level", "loud"], "-log-level"),
    (["--initial-cluster-state", "old"], "-initial-cluster-state"),
    (["--max-request-bytes"], "-max-request-bytes"),
])
def test_bad_flags_name_the_flag(argv, needle):
    with pytest.raises(config.ConfigError) as exc:
        config.parse(argv, environ={})
    assert needle in str(exc.value)


def test_name_must_be_in_initial_cluster():
    with pytest.raises(config.ConfigError, match="couldn't find local name"):
        config.parse(["--name", "other"], environ={})


def test_cli_exit_codes():
    run = lambda *a: subprocess.run([sys.executable, "-m", "fastkv", *a],
                                    capture_output=True, text=True, timeout=60)
    bad = run("--bogus")
    assert bad.returncode == 2 and "-bogus" in bad.stderr
    version = run("--version")
    assert version.returncode == 0 and "fastkv Version:" in version.stdout
    helped = run("--help")
    assert helped.returncode == 0 and "--snapshot-count" in helped.stdout
