"""How `segment --ray [ADDRESS]` reaches Ray: the ADDRESS argument, joining or starting an
instance, and token authentication. Ray itself is imported only when a connection is made, so the
command line can check its arguments without it.

ADDRESS forms (Ray's own): none (a local instance of our own, or the cluster `ray start` runs on
this machine / $RAY_ADDRESS names), 'auto' (the cluster running on this node), 'HOST:PORT' (a
cluster's GCS, default port 6379) and 'ray://HOST[:PORT]' (Ray Client, default port 10001; needs
`ray[client]`, which our `ray` extra installs).

Token authentication (Ray >= 2.52): Ray sends its token to a cluster it finds by itself (no
address, 'auto') but, so that a token never goes to a server it wasn't meant for, to an explicit
address only when RAY_AUTH_MODE=token. The token comes from $RAY_AUTH_TOKEN, the file
$RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (`ray get-auth-token` on the head node prints it).
"""

import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .job import JobError

LOCAL = "local"  # `--ray` given without an address
# HOST:PORT (a name, IPv4 or [IPv6]) or ray://HOST[:PORT]
_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"
GCS_ADDRESS = re.compile(rf"^{_HOST}:\d{{1,5}}$")
CLIENT_ADDRESS = re.compile(rf"^ray://{_HOST}(:\d{{1,5}})?$")

PROBE_SECONDS = 5
# ray.init options that only a new instance takes (joining a running cluster refuses them)
NEW_INSTANCE_ONLY = ("include_dashboard", "object_store_memory", "num_cpus", "num_gpus", "resources", "_memory")


def is_ray_address(value: str) -> bool:
    """True for the forms `--ray` takes: local, auto, HOST:PORT, ray://HOST[:PORT]."""
    return value in (LOCAL, "auto") or bool(GCS_ADDRESS.match(value) or CLIENT_ADDRESS.match(value))


def address_error(value: str) -> Optional[str]:
    """Why `--ray VALUE` is not an address (None when it is one)."""
    if is_ray_address(value):
        return None
    return (
        f"--ray {value!r}: not a Ray address. Give nothing (a local instance), 'auto' (the cluster "
        "running on this node), HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:10001"
    )


def give_back_input(argv: Sequence[str]) -> List[str]:
    """`--ray FOLDER --out X`: argparse hands the optional ADDRESS the next word, the input folder,
    and then misses INPUT. A word after a bare `--ray` that is no address but an existing path is
    the input: the `--ray` becomes `--ray=local`."""
    out = list(argv)
    for i, word in enumerate(out[:-1]):
        following = out[i + 1]
        if word == "--ray" and not is_ray_address(following) and Path(following).exists():
            out[i] = f"--ray={LOCAL}"
    return out


def local_token() -> Optional[str]:
    """The Ray token at hand where Ray looks for one ($RAY_AUTH_TOKEN, the file
    $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token), if any."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() or None if path.is_file() else None


def auth_failure(address: str) -> str:
    """What to do when the cluster at `address` refused this command's (missing) token."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        why = "this command sent none: Ray sends a token to an explicit address only when RAY_AUTH_MODE=token"
    elif not local_token():
        why = "RAY_AUTH_MODE=token, but no token was found"
    else:
        why = "it refused the token this command sent (another cluster's, or an old one)"
    return (
        f"the Ray cluster at {address} asks for its authentication token, and {why}. Run with "
        "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN (`ray get-auth-token` on the head "
        "node prints it), in a file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token; on a node of "
        "the cluster, `--ray auto` finds both by itself"
    )


def probe(address: str, token: Optional[str] = None) -> Optional[str]:
    """Ask the cluster at ADDRESS (with `token`, if given) whether it lets us in:
    'unauthenticated' (it wants a token, or another one), 'unreachable' (nothing answers), or
    None (it does, or we can't tell: no grpcio). Ray itself would retry for 20-30 s, then blame a
    crashed instance."""
    try:
        import grpc
    except ImportError:
        return None
    client = address.startswith("ray://")
    target = address[len("ray://") :] if client else address
    if client and not re.search(r":\d+$", target):
        target += ":10001"
    metadata = [("authorization", f"Bearer {token}")] if token else None  # as Ray's own clients send it
    with grpc.insecure_channel(target) as channel:
        try:
            if client:
                from ray.core.generated import ray_client_pb2 as pb
                from ray.core.generated import ray_client_pb2_grpc as rpc

                ping = pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING)
                rpc.RayletDriverStub(channel).ClusterInfo(ping, timeout=PROBE_SECONDS, metadata=metadata)
            else:
                from ray.core.generated import gcs_service_pb2 as pb
                from ray.core.generated import gcs_service_pb2_grpc as rpc

                rpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                    pb.GetClusterIdRequest(), timeout=PROBE_SECONDS, metadata=metadata
                )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return "unauthenticated"
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return "unreachable"
    return None


def log_ray(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _is_auth_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(
        s in text for s in ("AuthenticationError", "UNAUTHENTICATED", "InvalidAuthToken", "authentication token")
    )


def init_ray(address: Optional[str] = None, **init_kwargs) -> bool:
    """Connect to ADDRESS (a running cluster), or start a local Ray instance (joining the cluster
    already running here, if any). Returns True when this call started / connected Ray (and the
    caller should shut it down). A refused token is a JobError that says what to set."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        # ship this package's code so every worker runs the driver's version (its dependencies
        # -- onnxruntime, torch, ... -- must be installed on every node)
        init_kwargs.setdefault("runtime_env", {"py_modules": [str(Path(__file__).resolve().parents[1])]})
        # the token goes only where Ray would send it: RAY_AUTH_MODE=token
        token_mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
        answer = None if address == "auto" else probe(address, local_token() if token_mode else None)
        if answer == "unreachable":
            raise JobError(
                f"nothing answers at {address}: is Ray running there (`ray status` on the head node)? "
                "HOST:PORT is the head's GCS port (6379 unless `ray start --port` said otherwise); "
                "ray://HOST:PORT its Ray Client port (10001)"
            )
        if answer == "unauthenticated":
            raise JobError(auth_failure(address))
        try:
            ray.init(address=address, **init_kwargs)
        except Exception as exc:
            if not _is_auth_error(exc):
                raise
            raise JobError(auth_failure(address)) from None
        return True
    path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p)
    init_kwargs.setdefault("runtime_env", {"env_vars": {"PYTHONPATH": path}})
    own = {"include_dashboard": False, "object_store_memory": 512 << 20}  # only for an instance of our own
    try:
        ray.init(**{**own, **init_kwargs})
    except ValueError as exc:
        # `ray start` (or $RAY_ADDRESS) already runs a cluster here: Ray joins it, and refuses
        # the options of a new instance. Join it as it is, and say so.
        if "existing cluster" not in str(exc):
            raise
        ray.init(**{k: v for k, v in init_kwargs.items() if k not in NEW_INSTANCE_ONLY})
        log_ray(f"Ray: joined the cluster already running on this machine ({ray.get_runtime_context().gcs_address})")
    return True
