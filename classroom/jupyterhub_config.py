# The class server: one JupyterHub, each student a Unix account with their own copy of the exercises,
# one shared read-only artifact store. Set up and run it as root (docs/class-server.md):
#
#   python -m mono_utils.classroom prepare --bundle class.tar --root /srv/monolab
#   make hub-proxy                                   # configurable-http-proxy from npm, into classroom/
#   MONO_CLASS_ROOT=/srv/monolab .venv/bin/jupyterhub -f classroom/jupyterhub_config.py
#
# Settings from the environment (defaults in brackets):
#   MONO_CLASS_ROOT      the class folder prepared above [/srv/monolab]
#   MONO_CLASS_IP        the address the hub listens on [127.0.0.1: this machine only]; 0.0.0.0 serves a
#                        network, and then put it behind HTTPS (docs/class-server.md)
#   MONO_CLASS_PORT      [8000]
#   MONO_CLASS_GROUP     the Unix group whose members may log in [students]
#   MONO_CLASS_ADMINS    comma-separated accounts that administer the hub (the teacher) [none]
#   MONO_CLASS_PRESET    the preset the bundle was built on [default]
#   MONO_CLASS_MEM_LIMIT memory a student's server may use, e.g. 3G [none: LocalProcessSpawner cannot
#                        enforce it; the Kubernetes recipe does]
import os
import pwd
import sys
from pathlib import Path

from mono_utils.classroom import EXERCISES, STORE, prepare_student_home

c = get_config()  # noqa: F821 - JupyterHub's config loader defines it

ROOT = Path(os.environ.get("MONO_CLASS_ROOT", "/srv/monolab")).resolve()
BIN = Path(sys.executable).parent   # this venv: the hub, the students' servers and kernels share it
REPO = Path(__file__).resolve().parent

# Where: this machine only unless told otherwise
c.JupyterHub.ip = os.environ.get("MONO_CLASS_IP", "127.0.0.1")
c.JupyterHub.port = int(os.environ.get("MONO_CLASS_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.ConfigurableHTTPProxy.command = [str(REPO / "node_modules" / ".bin" / "configurable-http-proxy")]

# Who: real Unix accounts, checked by PAM (their passwords), members of one group
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {os.environ.get("MONO_CLASS_GROUP", "students")}
c.Authenticator.admin_users = {u.strip() for u in os.environ.get("MONO_CLASS_ADMINS", "").split(",") if u.strip()}
c.LocalAuthenticator.create_system_users = False   # accounts come from the teacher (useradd), not the web

# The hub's own state: root's only (prepare makes <root>/hub 0700)
c.JupyterHub.db_url = f"sqlite:///{ROOT / 'hub' / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(ROOT / "hub" / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(ROOT / "hub" / "jupyterhub.pid")
c.ConfigurableHTTPProxy.pid_file = str(ROOT / "hub" / "jupyterhub-proxy.pid")

# Each student: their own server process under their own account, opening their own exercises
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = f"/lab/tree/{EXERCISES}"
c.Spawner.environment = {
    "MONO_ARTIFACTS": str(ROOT / STORE),           # the shared store, read-only
    "MONO_PRESET": os.environ.get("MONO_CLASS_PRESET", "default"),
    "MONO_RATINGS_DIR": lambda spawner: str(Path(pwd.getpwnam(spawner.user.name).pw_dir) / "ratings"),
    "TQDM_DISABLE": os.environ.get("TQDM_DISABLE", "0"),
}
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV"]
if os.environ.get("MONO_CLASS_MEM_LIMIT"):
    c.Spawner.mem_limit = os.environ["MONO_CLASS_MEM_LIMIT"]
c.Spawner.http_timeout = 120   # a first start imports torch: slow on a loaded 2-core machine
c.Spawner.start_timeout = 180


def copy_exercises_first(spawner):
    """Home 0700 and the exercises the student lacks, copied as the student (mono_utils/classroom.py)."""
    prepare_student_home(spawner.user.name, ROOT)


c.Spawner.pre_spawn_hook = copy_exercises_first

