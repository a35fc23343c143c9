"""Settings of bridge.http (declared with bridge.config.setting)."""
from bridge.config import setting  # noqa: F401
