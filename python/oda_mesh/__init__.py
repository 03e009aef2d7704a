"""ODA mesh from Python: submit analyses to your ``oda-node``, wait, and read
verified results.

>>> from oda_mesh import Mesh
>>> mesh = Mesh()
>>> events = mesh.submit("events", obs_id=1).wait()
>>> events.outputs["events"].save("events.json")
"""

from .errors import (
    AnalysisError,
    BadArgument,
    BadRequest,
    IntegrityError,
    JobFailed,
    NodeUnreachable,
    NotFound,
    OdaError,
    Unauthorized,
)
from .mesh import Job, Mesh, Output, Result, default_data_dir

__all__ = [
    "AnalysisError",
    "BadArgument",
    "BadRequest",
    "IntegrityError",
    "Job",
    "JobFailed",
    "Mesh",
    "NodeUnreachable",
    "NotFound",
    "OdaError",
    "Output",
    "Result",
    "Unauthorized",
    "default_data_dir",
]
