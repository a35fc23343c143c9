"""bridge.server.malloc: the allocator thresholds a server process sets for itself."""
from bridge.server import malloc


def test_thresholds_are_applied_on_glibc():
    # Debian's CPython runs on glibc: mallopt exists and accepts both values.
    assert malloc.tune() is True


def test_operator_settings_in_the_environment_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert malloc.tune() is False


def test_serve_applies_them_before_it_opens_sockets_or_forks(monkeypatch):
    import bridge.server
    from bridge.config import Config
    calls = []
    monkeypatch.setattr(malloc, "tune", lambda: calls.append("tune") or True)
    config = Config.build("http", {"bind": ["256.0.0.1:1"], "log_level": "error"}, environ={})
    # An address that cannot be bound: serve() stops with 2 right after its set-up.
    assert bridge.server.serve(config, lambda app, config: None, app=lambda e, s: []) == 2
    assert calls == ["tune"]
