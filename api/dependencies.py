"""The services as Litestar injects them into the route handlers (apart from api/services.py,
which the command line imports without the web framework)."""

from litestar.di import NamedDependency

from api.services import Services

ServicesDependency = NamedDependency[Services]
"""Declares a route's ``services`` parameter as the injected Services."""
