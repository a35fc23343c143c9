"""Settings every command shares: which app, where to find it, logging."""
from bridge.config import COMMANDS, setting

ALL = COMMANDS

setting("app", metavar="APP", positional=True, commands=ALL, section="app", restart="preload",
        help="the WSGI application: module:callable, module:factory() or module (means module:application)")
setting("config", "--config", "-c", metavar="FILE", commands=ALL, section="app", in_file=False,
        help="read settings from this TOML file (keys are the setting names: workers = 4; a "
             "[COMMAND] table for one command's); the command line and BRIDGE_* win over it")
setting("check_config", "--check-config", type=bool, default=False, commands=ALL, section="app",
        flag_only=True,
        help="check the settings and load the app, print every setting in force and where it came "
             "from (flag, env, file, default), then exit: 0 when all is well, else 2 with the problem "
             "(for deploy scripts and systemd ExecStartPre=)")
setting("pythonpath", "--pythonpath", multiple=True, default=[], metavar="DIR", commands=ALL,
        section="app", restart="preload", help="add DIR to sys.path before loading the app (repeatable)")
setting("chdir", "--chdir", metavar="DIR", commands=ALL, section="app", restart="preload",
        help="change to DIR before loading the app (it is also put on sys.path)")
setting("script_name", "--script-name", metavar="PREFIX", commands=ALL, section="app",
        help="mount prefix: moved from PATH_INFO to SCRIPT_NAME when the web server gets it wrong")
setting("log_level", "--log-level", default="info", metavar="LEVEL", commands=ALL, section="logging",
        choices=("debug", "info", "warning", "error", "critical"),
        help="error log level")
setting("error_log", "--error-log", "--error-logfile", "--log-file", default="-", metavar="FILE", commands=("fcgi", "http"),
        section="logging", help="where the error log goes: - for stderr, or a file (reopened on SIGUSR1)")
