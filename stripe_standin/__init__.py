"""A small HTTP server that speaks Stripe's wire protocol for Checkout, for tests and dev."""

from stripe_standin.app import create_standin_app
from stripe_standin.runner import RunningStandin, run_standin
from stripe_standin.state import StandinState, get_state

__all__ = ["RunningStandin", "StandinState", "create_standin_app", "get_state", "run_standin"]
