"""A local eMAG Marketplace API for demos, tests and benchmarks."""

from sandbox.faults import Fault, FaultPlan, load_fault_file, parse_faults
from sandbox.market import DEFAULT_LOGINS, Account, Login, Market
from sandbox.runner import Sandbox
from sandbox.server import create_app

__all__ = [
    "DEFAULT_LOGINS",
    "Account",
    "Fault",
    "FaultPlan",
    "Login",
    "Market",
    "Sandbox",
    "create_app",
    "load_fault_file",
    "parse_faults",
]
