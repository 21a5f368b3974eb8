"""What a user names that lives elsewhere, checked before anything is written: a Ray address, a
tracking URI, a port; and the credentials a tracking URI may carry, kept out of every record.

Each check raises `UserInputError` (one line, exit 2) and takes at most a few seconds: a Ray address
or tracking server nothing listens on would otherwise be retried by Ray or MLflow for minutes, after
the run directory and the MLflow run already exist.

Credentials: `http(s)://user:password@host` works with MLflow, but the URI is echoed, stored in
tracking.json, logged as a param or tag and shown in the report. `adopt_credentials` moves the user
and password into `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` (what MLflow's REST client
reads; this process's environment only) and returns the URI without them, which is all that is ever
recorded or printed.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from ncsearch.errors import UserInputError

__all__ = ["adopt_credentials", "check_port_free", "check_ray_address", "check_tracking_uri", "redact_uri"]

#: Seconds a TCP connect to a named server may take before it counts as not listening.
CONNECT_TIMEOUT_S = 3.0
#: Tracking-store schemes MLflow itself understands (plugins may add more; see `_plugin_schemes`).
_TRACKING_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks",
                     "databricks-uc", "uc")


def redact_uri(uri: str) -> str:
    """`uri` with the password of its user info replaced by `***` (unchanged when it has none)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def adopt_credentials(uri: str | None) -> str | None:
    """An http(s) tracking URI without its user info, which moves into this process's
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the URI's, when given, win over set ones)."""
    if not uri:
        return uri
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    if parts.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username)
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _connect(host: str, port: int) -> str | None:
    """None when something accepts a TCP connection at host:port, else why not (one line)."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as err:
        return err.strerror or type(err).__name__


def check_ray_address(address: str | None) -> None:
    """A Ray cluster to join (`--address`, else $RAY_ADDRESS) must be listening; "local" and no address
    (a new local Ray) need nothing. "auto" must name a running cluster (Ray's own lookup)."""
    shown = f"--address {address!r}"
    if not address and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        shown = f"$RAY_ADDRESS={address!r}"
    if not address or address == "local":
        return
    if address.startswith("ray://"):
        target = address[len("ray://"):]
    else:
        try:  # what ray.init joins: "auto" read from the cluster file, localhost as the node's address
            from ray._private.services import canonicalize_bootstrap_address_or_die

            target = canonicalize_bootstrap_address_or_die(address)
        except ConnectionError as err:
            raise UserInputError(f"{shown}: {str(err).splitlines()[0]}") from None
        except (ImportError, ValueError):  # an address Ray cannot parse: checked below as written
            target = address
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserInputError(f"{shown}: expected HOST:PORT, ray://HOST:PORT, 'auto' or 'local'")
    problem = _connect(host, int(port))
    if problem:
        raise UserInputError(f"{shown}: no Ray cluster listens at {host}:{port} ({problem}); start one with "
                             "'ray start --head' or leave --address out for a local Ray")


def _plugin_schemes() -> set[str]:
    """Schemes that installed MLflow plugins add (their `mlflow.tracking_store` entry points)."""
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="mlflow.tracking_store")}


def check_tracking_uri(uri: str | None, *, existing: bool, what: str = "--tracking-uri") -> None:
    """A tracking URI MLflow can use, checked without touching it: a known scheme; with `existing`
    (commands that read a search) a local store that exists, since MLflow would create an empty one;
    a server that accepts a connection. A local store to be created needs its parent folder."""
    if not uri:
        return
    shown = f"{what} {redact_uri(uri)!r}"
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    base = scheme.split("+", 1)[0]
    if scheme and base not in _TRACKING_SCHEMES and scheme not in _plugin_schemes():
        raise UserInputError(f"{shown}: unsupported scheme {scheme!r}; use a folder, sqlite:///PATH, "
                             "http(s)://HOST:PORT or a database URI")
    if base == "sqlite":
        # SQLAlchemy's form: everything after "sqlite:///" is the path ("/abs" with four slashes).
        raw = unquote(uri[len("sqlite:///"):].split("?", 1)[0]) if uri.lower().startswith("sqlite:///") else ""
        if raw in ("", ":memory:"):
            return
        path = Path(raw)
        if existing and not path.is_file():
            raise UserInputError(f"{shown}: no MLflow store at {path} (the file does not exist)")
        if not existing and not path.parent.is_dir():
            raise UserInputError(f"{shown}: the folder {path.parent} does not exist")
    elif base in ("", "file"):
        path = Path(unquote(parts.path if scheme else uri)).expanduser()
        if existing and not path.is_dir():
            raise UserInputError(f"{shown}: no MLflow store at {path} (the folder does not exist)")
    elif base in ("http", "https"):
        if not parts.hostname:
            raise UserInputError(f"{shown}: no host")
        try:
            port = parts.port or (443 if base == "https" else 80)
        except ValueError:
            raise UserInputError(f"{shown}: the port is not a number") from None
        problem = _connect(parts.hostname, port)
        if problem:
            raise UserInputError(f"{shown}: no tracking server answers at {parts.hostname}:{port} ({problem})")


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """`port` on `host` can be bound (a server started on it would otherwise fail after starting)."""
    if not 0 < port < 65536:
        raise UserInputError(f"--port must be 1..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UserInputError(f"--port {port}: {host}:{port} is in use ({err.strerror}); choose another port") from None
