import json

import pytest

from tuneloop.config import Settings, load_settings
from tuneloop.errors import ConfigError

SEED_002 = {
    "db_path": "~/.context/training/continuous/usage.db",
    "output_dir": "~/.context/training/continuous",
    "check_interval_seconds": 3600,
    "trigger_config": {"min_new_samples": 1000, "schedule_interval_hours": 168,
                       "quality_drop_threshold": 0.1, "cooldown_hours": 24},
    "generator_config": {"min_quality_score": 0.7, "min_user_feedback": 1,
                         "deduplicate": True, "format_type": "chatml"},
    "ab_test_config": {"initial_challenger_traffic": 0.1, "min_improvement_threshold": 0.05,
                       "enable_auto_promotion": True, "promotion_threshold": 0.05, "min_duration_hours": 48},
    "enable_ab_testing": True,
    "enable_auto_promotion": True,
}


def test_defaults():
    s = load_settings(env={})
    assert s.db_url is None and s.db_path == "./.tuneloop/tuneloop.db"
    assert s.port == 8000 and s.max_body_bytes == 10 * 1024 * 1024 and not s.insecure_dev


def test_seed_002_json_loads(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(SEED_002))
    s = load_settings(p, env={})
    assert s.ab_test_config["initial_challenger_traffic"] == 0.1
    assert s.trigger_config["min_new_samples"] == 1000
    assert s.generator_config["format_type"] == "chatml"
    assert s.check_interval_seconds == 3600 and s.enable_ab_testing


def test_toml_and_yaml(tmp_path):
    t = tmp_path / "c.toml"
    t.write_text('port = 9100\nlog_level = "debug"\n[ab_test_config]\ninitial_challenger_traffic = 0.2\n')
    s = load_settings(t, env={})
    assert (s.port, s.log_level, s.ab_test_config) == (9100, "debug", {"initial_challenger_traffic": 0.2})
    y = tmp_path / "c.yaml"
    y.write_text("host: 0.0.0.0\nloop:\n  max_cycles: 3\n")
    s = load_settings(y, env={})
    assert s.host == "0.0.0.0" and s.loop == {"max_cycles": 3}


def test_env_overrides_file_and_reaches_into_sections(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(SEED_002))
    env = {"TUNELOOP_PORT": "9200", "TUNELOOP_DB_URL": "sqlite:///x.db",
           "TUNELOOP_AB_TEST_CONFIG__INITIAL_CHALLENGER_TRAFFIC": "0.25",
           "TUNELOOP_TRIGGER_CONFIG__MODE": "nightly", "TUNELOOP_INSECURE_DEV": "true",
           "TUNELOOP_TEST_DB": "postgres"}  # shares the prefix, names no setting: ignored
    s = load_settings(p, env=env)
    assert s.port == 9200 and s.db_url == "sqlite:///x.db" and s.insecure_dev is True
    assert s.ab_test_config["initial_challenger_traffic"] == 0.25
    assert s.ab_test_config["min_duration_hours"] == 48  # the rest of the section survives
    assert s.trigger_config["mode"] == "nightly"


def test_config_path_from_env(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"port": 7000}')
    assert load_settings(env={"TUNELOOP_CONFIG": str(p)}).port == 7000


def test_explicit_overrides_win_and_none_is_ignored(tmp_path):
    s = load_settings(env={"TUNELOOP_PORT": "9000"}, port=9999, host=None)
    assert s.port == 9999 and s.host == "127.0.0.1"


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("prot = 80\n")
    with pytest.raises(ConfigError) as e:
        load_settings(p, env={})
    assert "prot" in str(e.value) and str(p) in str(e.value) and "unknown setting" in str(e.value)


def test_bad_value_names_key_and_source(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("port: not-a-port\n")
    with pytest.raises(ConfigError, match=r"port.*c\.yaml"):
        load_settings(p, env={})
    with pytest.raises(ConfigError, match=r"max_body_bytes.*TUNELOOP_MAX_BODY_BYTES"):
        load_settings(env={"TUNELOOP_MAX_BODY_BYTES": "-1"})
    with pytest.raises(ConfigError, match="log_level"):
        load_settings(env={"TUNELOOP_LOG_LEVEL": "loud"})


@pytest.mark.parametrize("name,text,match", [
    ("c.ini", "x=1", "unknown format"),
    ("c.json", "{bad", "cannot be parsed"),
    ("c.toml", "= 1", "cannot be parsed"),
    ("c.yaml", "- 1\n- 2\n", "must hold a mapping"),
])
def test_bad_files(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(p, env={})


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/tuneloop.toml", env={})


def test_database_url(tmp_path):
    assert Settings(db_path=str(tmp_path / "a" / "t.db")).database_url().endswith("/a/t.db")
    assert (tmp_path / "a").is_dir()
    assert Settings(db_url="postgresql+psycopg://u@h/db").database_url() == "postgresql+psycopg://u@h/db"


def test_settings_forbid_extra():
    with pytest.raises(Exception):
        Settings(nope=1)
