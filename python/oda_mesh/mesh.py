"""The client: a node's local API over HTTP (standard library only, synchronous)."""

from __future__ import annotations

import json
import os
import platform
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import blake3

from .errors import AnalysisError, IntegrityError, JobFailed, NodeUnreachable, OdaError, from_status

#: Bytes read per chunk while downloading.
_CHUNK = 1 << 20
#: Longest single long poll of ``Job.wait``, seconds (the node caps it at 300).
_POLL = 30.0


def default_data_dir() -> Path:
    """The node's data dir as ``oda`` and ``oda-node`` find it: ``$ODA_DATA_DIR``,
    else the platform's data dir for ``org.oda-hub.oda-mesh``."""
    env = os.environ.get("ODA_DATA_DIR")
    if env:
        return Path(env)
    home = Path.home()
    if platform.system() == "Darwin":
        return home / "Library" / "Application Support" / "org.oda-hub.oda-mesh"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else home / ".local" / "share") / "oda-mesh"


class Mesh:
    """A running node's local API.

    ``Mesh()`` finds the node as the command line does (``api.addr`` and
    ``api.token`` in the data dir; ``$ODA_API_TOKEN`` overrides the token);
    ``api`` (``host:port`` or a URL) and ``token`` override them.
    """

    def __init__(
        self,
        data_dir: Union[str, Path, None] = None,
        *,
        api: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 60.0,
    ) -> None:
        directory = Path(data_dir) if data_dir is not None else default_data_dir()
        if api is None:
            try:
                api = (directory / "api.addr").read_text().strip()
            except OSError:
                raise NodeUnreachable(
                    f"no node is running with data dir {directory} (it has no api.addr)"
                ) from None
        self.base = api.rstrip("/") if api.startswith(("http://", "https://")) else f"http://{api}"
        if token is None:
            token = os.environ.get("ODA_API_TOKEN", "").strip() or None
        if token is None:
            try:
                token = (directory / "api.token").read_text().strip()
            except OSError as e:
                raise NodeUnreachable(f"cannot read the API token in {directory}: {e}") from None
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Mesh({self.base!r})"

    # -- HTTP ---------------------------------------------------------------

    def _open(self, method: str, path: str, body: Any = None, timeout: Optional[float] = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw).get("error", "")
            except (ValueError, AttributeError):
                message = raw.decode(errors="replace")
            raise from_status(e.code, message) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise NodeUnreachable(f"cannot reach the node's API at {self.base}: {e}") from None

    def _json(self, method: str, path: str, body: Any = None, timeout: Optional[float] = None) -> Any:
        with self._open(method, path, body, timeout) as reply:
            return json.loads(reply.read())

    # -- calls ---------------------------------------------------------------

    def submit(
        self,
        workflow: str,
        *,
        no_cache: bool = False,
        quorum: Optional[int] = None,
        **args: Any,
    ) -> "Job":
        """Ask for ``workflow`` applied to ``args`` (keyword arguments by input
        name; an :class:`Output` of an earlier result, a number, a string, a
        list...). The mesh's cache is asked first; the node computes only what
        nobody has. Returns the job at once: ``.wait()`` for its result."""
        body: dict[str, Any] = {
            "workflow": workflow,
            "args": {name: _argument(value) for name, value in args.items()},
            "no_cache": no_cache,
        }
        if quorum is not None:
            body["quorum"] = quorum
        return Job(self, self._json("POST", "/v1/jobs", body))

    def job(self, job_id: str) -> "Job":
        """A job submitted earlier, by id."""
        return Job(self, self._json("GET", f"/v1/jobs/{_quote(job_id)}"))

    def jobs(self) -> list["Job"]:
        """Every job of this node, oldest first."""
        return [Job(self, j) for j in self._json("GET", "/v1/jobs")]

    def facts(self, expr: str, *, mesh: bool = False) -> list[dict[str, Any]]:
        """The signed facts of an expression, each with ``trusted`` and
        ``trust`` (why); with ``mesh=True`` also those the mesh holds."""
        query = "?mesh=true" if mesh else ""
        return self._json("GET", f"/v1/exprs/{_quote(expr)}/facts{query}")["facts"]

    def prov(self, expr: str, *, format: str = "json", mesh: bool = False) -> Any:
        """How a result was made: the DAG of signed facts behind it — a dict
        for ``format="json"``, W3C PROV-O text for ``"turtle"`` or ``"jsonld"``."""
        query = urllib.parse.urlencode({"format": format, **({"mesh": "true"} if mesh else {})})
        with self._open("GET", f"/v1/exprs/{_quote(expr)}/prov?{query}") as reply:
            text = reply.read().decode()
        return json.loads(text) if format == "json" else text

    def workflows(self) -> list[dict[str, Any]]:
        """The workflows this node knows."""
        return self._json("GET", "/v1/workflows")

    def add_workflow(self, path: Union[str, Path]) -> dict[str, Any]:
        """Add the workflow folder at ``path`` (on the node's machine)."""
        return self._json("POST", "/v1/workflows", {"path": str(Path(path).resolve())})

    def blob(self, blob_id: str) -> bytes:
        """A blob's bytes, checked against its BLAKE3 id."""
        chunks = list(self._blob_chunks(blob_id))
        return b"".join(chunks)

    def _blob_chunks(self, blob_id: str) -> Iterator[bytes]:
        expected = blob_id.split(":", 1)[-1].lower()
        hasher = blake3.blake3()
        with self._open("GET", f"/v1/blobs/{_quote(blob_id)}", timeout=max(self.timeout, 600.0)) as reply:
            while True:
                chunk = reply.read(_CHUNK)
                if not chunk:
                    break
                hasher.update(chunk)
                yield chunk
        if hasher.hexdigest() != expected:
            raise IntegrityError(
                f"the bytes received for {blob_id} hash to {hasher.hexdigest()}: not that blob"
            )


class Output:
    """One output of a result: its name and blob; ``read_bytes()`` and
    ``save(path)`` download it with BLAKE3 verification. Passing it as an
    argument of ``submit`` feeds it to the next step."""

    def __init__(self, mesh: Mesh, expr: str, name: str, blob: str, size: int) -> None:
        self.mesh, self.expr, self.name, self.blob, self.size = mesh, expr, name, blob, size

    def __repr__(self) -> str:
        return f"Output({self.name!r}, {self.blob}, {self.size} bytes)"

    def read_bytes(self) -> bytes:
        """The bytes, verified."""
        return self.mesh.blob(self.blob)

    def read_text(self, encoding: str = "utf-8") -> str:
        """The bytes as text, verified."""
        return self.read_bytes().decode(encoding)

    def save(self, path: Union[str, Path]) -> Path:
        """Write the bytes to ``path`` (a directory gets a file named after the
        output); written to ``<path>.part`` and renamed only once verified."""
        target = Path(path)
        if target.is_dir():
            target = target / self.name
        part = target.with_name(target.name + ".part")
        try:
            with open(part, "wb") as f:
                for chunk in self.mesh._blob_chunks(self.blob):
                    f.write(chunk)
            os.replace(part, target)
        finally:
            if part.exists():
                part.unlink()
        return target


class Result:
    """A job's accepted fact: outputs by name, who computed it, whether it
    came from a cache, and this node's trust verdict."""

    def __init__(self, mesh: Mesh, job: dict[str, Any]) -> None:
        fact = job["result"]
        self.job_id: str = job["id"]
        self.expr: str = job["expr"]
        self.fact: dict[str, Any] = fact
        self.from_cache: bool = job["from_cache"]
        self.worker_key: str = fact["worker_key"]
        self.trusted: bool = fact["trusted"]
        self.trust: str = fact["trust"]
        self.outputs: dict[str, Output] = {
            name: Output(mesh, self.expr, name, o["blob"], o["size"])
            for name, o in fact["outputs"].items()
        }

    def __repr__(self) -> str:
        source = "from cache" if self.from_cache else "computed"
        return f"Result({self.expr}, {source}, outputs={sorted(self.outputs)})"


class Job:
    """A submitted job."""

    def __init__(self, mesh: Mesh, view: dict[str, Any]) -> None:
        self.mesh = mesh
        self.id: str = view["id"]
        self.expr: str = view["expr"]
        self._view = view

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.expr}, {self._view['state']})"

    @property
    def view(self) -> dict[str, Any]:
        """The job as the API last showed it."""
        return self._view

    @property
    def status(self) -> str:
        """The state now: ``queued``, ``resolving-inputs``, ``advertised``,
        ``assigned``, ``running``, ``done``, ``failed`` or ``cancelled``."""
        self._view = self.mesh._json("GET", f"/v1/jobs/{self.id}")
        return self._view["state"]

    def wait(self, timeout: Optional[float] = 600.0) -> Result:
        """Wait for the result (long polls of at most 30 s) up to ``timeout``
        seconds (``None``: forever). Raises :class:`AnalysisError` for an
        analysis exception, :class:`JobFailed` when the job ended without a
        result, ``TimeoutError`` when it is still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._view["terminal"]:
            left = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"job {self.id} is still {self._view['state']} after {timeout} s")
            self._view = self.mesh._json(
                "GET", f"/v1/jobs/{self.id}/wait?timeout_ms={int(left * 1000)}", timeout=left + 30
            )
        return self._result()

    def _result(self) -> Result:
        view = self._view
        fact = view.get("result")
        if fact and fact.get("error_kind"):
            raise AnalysisError(fact["error_kind"], fact.get("error_message") or "", view)
        if view["state"] != "done" or not fact:
            raise JobFailed(f"job {self.id} {view['state']}: {view.get('error') or 'no result'}", view)
        return Result(self.mesh, view)

    def logs(self) -> list[str]:
        """The job's log lines so far."""
        return self.mesh._json("GET", f"/v1/jobs/{self.id}/logs")["lines"]

    def cancel(self) -> None:
        """Cancel the job."""
        self._view = self.mesh._json("POST", f"/v1/jobs/{self.id}/cancel")


def _argument(value: Any) -> Any:
    """An argument in the forms the API takes."""
    if isinstance(value, Output):
        return {"output": {"expr": value.expr, "name": value.name}}
    if isinstance(value, (list, tuple)):
        return [_argument(v) for v in value]
    if isinstance(value, Path):
        raise OdaError("pass a blob as {'blob': 'bl:<hex>'} or an Output, not a local path")
    return value


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe=":")
