"""Real cluster engines on this machine, loopback only, for tests/test_cluster.py.

Each engine is started from its Debian or PyPI package in a fresh temporary folder (its
configuration, state, sockets and logs live there), listens on 127.0.0.1 at free ports, and is
stopped by ending the processes it started: each daemon's session, and what carries the engine's
marker in its environment (nothing else):

- ``Slurm``: munge (authentication), MariaDB + slurmdbd (accounting: submitit reads job states
  with ``sacct``, so a cancelled job is seen as cancelled), slurmctld and slurmd: a one-node
  cluster with one partition. Every address in its configuration is 127.0.0.1; slurmctld, slurmd
  and slurmdbd still listen on all interfaces (Slurm 22.05 has no bind setting), at free ports,
  and take only requests signed with this cluster's fresh munge key.
- ``RayHead``: ``ray start --head --block`` on 127.0.0.1.
- ``MlflowServer``: PostgreSQL (run as the ``postgres`` user when we are root: it refuses root)
  and ``mlflow server`` with that backend and an artifact root, with MLflow's basic
  authentication switched on.

``.ci/run`` installs the packages (Debian: slurmctld, slurmd, slurmdbd, slurm-client, munge,
mariadb-server, postgresql; PyPI: the ``test``, ``ray`` and ``server`` extras).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SLURM_DEBIAN = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch", "sacct")


class EngineError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    logs: list[Path] = (),
    procs: list[subprocess.Popen] = (),
) -> None:
    """Poll ``check`` until it holds; fail with the tail of the engines' logs otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        if any(p.poll() is not None for p in procs):
            why = "exited"
            break
        time.sleep(0.25)
    else:
        why = f"did not come up in {timeout:.0f} s"
    raise EngineError(f"{what}: {why}" + "".join(f"\n--- {log} ---\n{tail(log)}" for log in logs))


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Engine:
    """A set of daemons started in their own sessions; ``stop`` ends exactly those."""

    name = "engine"

    def __init__(self) -> None:
        # short paths: unix sockets (munge, Ray) live here, and sun_path holds 107 bytes
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir="/tmp"))
        self.procs: list[subprocess.Popen] = []
        # every process of this engine inherits this variable, also those that leave the
        # daemons' sessions (jobs get the submitter's environment); stop() ends them too
        self.markers = [f"DERELAYL_TEST_ENGINE={self.dir}"]
        self.env = dict(os.environ, DERELAYL_TEST_ENGINE=str(self.dir))

    def spawn(self, cmd: list[str], log: str, **kwargs) -> subprocess.Popen:
        out = open(self.dir / log, "ab")  # noqa: SIM115 (the daemon writes to it after we return)
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=kwargs.pop("env", self.env),
            **kwargs,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _end_group(proc)
        self.procs.clear()
        for sig in (signal.SIGTERM, signal.SIGKILL):  # what escaped: by its environment
            left = _marked(self.markers)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while left and time.monotonic() < deadline and _marked(self.markers):
                time.sleep(0.1)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self) -> None:
        raise NotImplementedError


def _end_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the daemon this engine started, then end what is left of its session.

    Each daemon was started in a session of its own (``start_new_session``), so its session id
    is its pid; children that moved to process groups of their own (Ray's workers) are still
    members of that session and are found by it, and nothing outside it is touched."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        members = _session_members(proc.pid)
        if proc.poll() is None:
            members.append(proc.pid)
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (_session_members(proc.pid) or proc.poll() is None):
            time.sleep(0.1)
    if proc.poll() is None:
        proc.wait(timeout=5)


def _marked(markers: list[str]) -> list[int]:
    """Live processes whose environment holds one of ``markers`` (``NAME=value``), but this."""
    needles = [b"\0" + m.encode() + b"\0" for m in markers]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = b"\0" + f.read() + b"\0"
            if not any(needle in environ for needle in needles):
                continue
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            found.append(int(entry))
    return found


def _session_members(sid: int) -> list[int]:
    """Live processes (not zombies) of session ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == sid:
            continue
        try:
            if os.getsid(int(entry)) != sid:
                continue
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            members.append(int(entry))
    return members


def run(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 60, **kwargs
) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        raise EngineError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc


# -- SLURM -----------------------------------------------------------------------------------------
SLURM_CONF = """\
ClusterName={cluster}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/run/slurmctld.pid
SlurmdPidFile={dir}/run/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
# no cgroups in a container: processes tracked through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
# accounting (sacct), which submitit polls for job states
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
# for slurmdbd connections this names the munge socket
AccountingStoragePass={munge_socket}
JobCompType=jobcomp/none
# the node as declared here, whatever the machine has: a 4-job array runs at once on 2 cores
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""

SLURMDBD_CONF = """\
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost={host}
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser={user}
PidFile={dir}/run/slurmdbd.pid
LogFile={dir}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
"""


class Slurm(Engine):
    """A one-node SLURM cluster with accounting; ``env`` points the SLURM clients at it."""

    name = "slurm"
    partition = "debug"
    cluster = "derelayl"

    def start(self) -> None:
        d = self.dir
        d.chmod(0o755)  # munged wants its socket folder reachable by all
        for sub in ("state", "spool", "run", "log", "munge", "mysql"):
            (d / sub).mkdir()
        (d / "munge").chmod(0o700)
        host = socket.gethostname().split(".")[0]
        self.values = dict(
            cluster=self.cluster,
            host=host,
            dir=d,
            user=pwd.getpwuid(os.getuid()).pw_name,
            ctld_port=free_port(),
            slurmd_port=free_port(),
            dbd_port=free_port(),
            db_port=free_port(),
            munge_socket=d / "run/munge.socket",
            cpus=max(4, os.cpu_count() or 1),
            memory_mb=_memory_mb(),
            partition=self.partition,
        )
        v = self.values
        self.env["SLURM_CONF"] = str(d / "slurm.conf")
        self.markers.append(f"SLURM_CONF={d}/slurm.conf")  # all slurmstepd keeps of its environ
        (d / "slurm.conf").write_text(SLURM_CONF.format(**v))
        (d / "slurmdbd.conf").write_text(SLURMDBD_CONF.format(**v))
        (d / "slurmdbd.conf").chmod(0o600)  # slurmdbd refuses a readable one
        logs = [
            d / "log/slurmctld.log",
            d / "log/slurmd.log",
            d / "log/slurmdbd.log",
            d / "munged.out",
            d / "mariadb.out",
            d / "slurmctld.out",
            d / "slurmd.out",
            d / "slurmdbd.out",
        ]

        # munge: a fresh key, a socket in this folder
        (d / "munge/munge.key").write_bytes(secrets.token_bytes(1024))
        (d / "munge/munge.key").chmod(0o400)
        munged = self.spawn(
            [
                "munged",
                "-F",
                f"--key-file={d}/munge/munge.key",
                f"--socket={v['munge_socket']}",
                f"--pid-file={d}/run/munged.pid",
                f"--log-file={d}/log/munged.log",
                f"--seed-file={d}/munge/seed",
            ],
            "munged.out",
        )
        wait_for(lambda: Path(v["munge_socket"]).exists(), 30, "munged", logs, [munged])

        # MariaDB for slurmdbd, root without password, loopback only
        run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={d}/mysql",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            timeout=120,
        )
        maria = self.spawn(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={d}/mysql",
                "--user=root",
                f"--socket={d}/run/mysqld.sock",
                f"--port={v['db_port']}",
                "--bind-address=127.0.0.1",
                f"--pid-file={d}/run/mysqld.pid",
                "--skip-log-bin",
                "--innodb-use-native-aio=0",
                "--innodb-buffer-pool-size=32M",
            ],
            "mariadb.out",
        )
        wait_for(lambda: port_open(v["db_port"]), 60, "MariaDB", logs, [maria])

        dbd = self.spawn(
            ["slurmdbd", "-D"], "slurmdbd.out"
        )  # reads slurmdbd.conf beside $SLURM_CONF
        wait_for(lambda: port_open(v["dbd_port"]), 60, "slurmdbd", logs, [dbd])
        # register the cluster (and let it be) before its controller first starts
        wait_for(
            lambda: (
                subprocess.run(
                    ["sacctmgr", "-i", "add", "cluster", self.cluster],
                    env=self.env,
                    capture_output=True,
                    timeout=30,
                ).returncode
                == 0
            ),
            60,
            "sacctmgr add cluster",
            logs,
            [dbd],
        )

        ctld = self.spawn(["slurmctld", "-D", "-i", "-f", str(d / "slurm.conf")], "slurmctld.out")
        wait_for(lambda: port_open(v["ctld_port"]), 60, "slurmctld", logs, [ctld])
        slurmd = self.spawn(["slurmd", "-D", "-N", host, "-f", str(d / "slurm.conf")], "slurmd.out")
        wait_for(self._node_idle, 60, "slurmd (node idle)", logs, [slurmd])

    def _node_idle(self) -> bool:
        state = run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, timeout=20).stdout.strip()
        return state.startswith("idle")

    def cmd(self, *args: str, timeout: float = 30) -> str:
        return run(list(args), env=self.env, timeout=timeout).stdout


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return kb // 1024 // 2  # declare half: slurmd drains a node that claims more than it has


def slurm_missing() -> list[str]:
    return [
        exe
        for exe in SLURM_DEBIAN
        if shutil.which(exe) is None and not Path("/usr/sbin", exe).exists()
    ]


# -- Ray -------------------------------------------------------------------------------------------
class RayHead(Engine):
    """``ray start --head --block`` on 127.0.0.1; ``address`` is what RAY_ADDRESS takes."""

    name = "ray"

    def __init__(self, num_cpus: int | None = None) -> None:
        super().__init__()
        self.num_cpus = num_cpus or os.cpu_count() or 1

    def start(self) -> None:
        port = free_port()
        # Ray replaces 127.0.0.1 by the machine's routable address unless told to stay on loopback
        self.env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        self.address = f"127.0.0.1:{port}"
        ray = [sys.executable, "-m", "ray.scripts.scripts"]
        head = self.spawn(
            [
                *ray,
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                f"--num-cpus={self.num_cpus}",
                "--num-gpus=0",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={self.dir}",
                "--object-store-memory=100000000",
            ],
            "ray.out",
            cwd=self.dir,
        )  # workers start here, not where a sweep is
        wait_for(
            lambda: (
                subprocess.run(
                    [*ray, "status", f"--address={self.address}"],
                    capture_output=True,
                    env=self.env,
                    timeout=30,
                ).returncode
                == 0
            ),
            120,
            "Ray head",
            [self.dir / "ray.out"],
            [head],
        )


# -- PostgreSQL + MLflow server --------------------------------------------------------------------
def postgres_bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3])
    )
    return Path(found[-1]).parent if found else None


class MlflowServer(Engine):
    """PostgreSQL on loopback (a fresh cluster in a temp folder) and ``mlflow server`` on it,
    with basic authentication: ``uri``, a user's ``username``/``password`` and ``env`` (which
    holds them as MLFLOW_TRACKING_USERNAME/PASSWORD)."""

    name = "mlflow"

    def start(self) -> None:
        d = self.dir
        d.chmod(0o755)
        bindir = postgres_bindir()
        if bindir is None:
            raise EngineError("PostgreSQL is not installed (apt-get install postgresql)")
        as_user = {}
        if os.getuid() == 0:  # initdb and postgres refuse to run as root
            pg = pwd.getpwnam("postgres")
            as_user = {"user": pg.pw_uid, "group": pg.pw_gid, "extra_groups": []}
        data, self.db_password = d / "pgdata", secrets.token_hex(12)
        data.mkdir(mode=0o700)
        (d / "pgpass").write_text(self.db_password + "\n")
        if as_user:
            os.chown(data, as_user["user"], as_user["group"])
            os.chown(d / "pgpass", as_user["user"], as_user["group"])
        run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "mlflow",
                "--auth=scram-sha-256",
                f"--pwfile={d}/pgpass",
                "--no-sync",
            ],
            timeout=120,
            cwd=d,
            **as_user,
        )
        (d / "pgpass").unlink()
        self.db_port = free_port()
        pg_proc = self.spawn(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.db_port),
                "-k",
                str(data),
                "-c",
                "fsync=off",
            ],
            "postgres.out",
            cwd=d,
            **as_user,
        )
        pg_env = dict(self.env, PGPASSWORD=self.db_password)
        wait_for(
            lambda: (
                subprocess.run(
                    [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.db_port)],
                    capture_output=True,
                ).returncode
                == 0
            ),
            60,
            "PostgreSQL",
            [d / "postgres.out"],
            [pg_proc],
        )
        for db in ("mlflow", "mlflow_auth"):
            run(
                [
                    str(bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.db_port),
                    "-U",
                    "mlflow",
                    db,
                ],
                env=pg_env,
            )
        db = f"postgresql+psycopg://mlflow:{self.db_password}@127.0.0.1:{self.db_port}"

        # basic auth: users and permissions in their own database; an admin, who then creates
        # the user that the jobs log as (as docs/cluster.md does for a team)
        admin, admin_password = "admin", secrets.token_hex(12)
        (d / "auth.ini").write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {db}/mlflow_auth\n"
            f"admin_username = {admin}\nadmin_password = {admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # without it every request pays a deliberately slow password hash (~0.1 s of CPU)
            "auth_cache_ttl_seconds = 60\n"
        )
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = d / "artifacts"
        server_env = dict(
            self.env,
            MLFLOW_AUTH_CONFIG_PATH=str(d / "auth.ini"),
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        )
        mlflow = self.spawn(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--app-name",
                "basic-auth",
                "--backend-store-uri",
                f"{db}/mlflow",
                "--artifacts-destination",
                str(self.artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "2",
            ],
            "mlflow.out",
            env=server_env,
            cwd=d,
        )
        wait_for(self._healthy, 180, "mlflow server", [d / "mlflow.out"], [mlflow])
        self.username, self.password = "researcher", secrets.token_hex(12)
        run(
            [
                sys.executable,
                "-c",
                "import sys; from mlflow.server import get_app_client; "
                "get_app_client('basic-auth', tracking_uri=sys.argv[1]).create_user(*sys.argv[2:])",
                self.uri,
                self.username,
                self.password,
            ],
            env=dict(
                self.env, MLFLOW_TRACKING_USERNAME=admin, MLFLOW_TRACKING_PASSWORD=admin_password
            ),
        )
        self.env.update(
            MLFLOW_TRACKING_USERNAME=self.username, MLFLOW_TRACKING_PASSWORD=self.password
        )

    def _healthy(self) -> bool:
        import urllib.request

        with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
            return resp.status == 200
