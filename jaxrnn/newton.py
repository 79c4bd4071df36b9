# The public path of Newton/DEER evaluation; the implementation lives in jaxrnn._scan.newton
# (beside the other evaluation methods of jr.scan), whose docstring this module shows.
from jaxrnn._scan import newton as _impl
from jaxrnn._scan.newton import (
    AUTO_FULL_MAX,
    Newton,
    NewtonConvergenceError,
    NewtonInfo,
    newton_scan,
)

__doc__ = _impl.__doc__
__all__ = ["AUTO_FULL_MAX", "Newton", "NewtonConvergenceError", "NewtonInfo", "newton_scan"]
